//! `cargo xtask resources convert [INPUT [OUTPUT]]`: the built-in
//! converter or `qemu-img`; refuses to write onto its input; with the
//! default OUTPUT (the installed raw image) keeps the user's own changes
//! unless `--force`, and records the new image in the manifest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::guard;
use super::Opts;
use install::layout::{CLIENT, KERNEL, QCOW2, RAW};
use install::manifest::{self, FileEntry};
use qcow2::convert_file;
use util::fmt::human_bytes;
use util::fs::TempFile;

/// The arguments of `cargo xtask resources convert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertArgs {
    pub input: Option<PathBuf>,
    pub output: Option<PathBuf>,
    pub with_qemu_img: bool,
    pub sparse_detect: bool,
}

/// CLI entry: `cargo xtask resources convert [INPUT [OUTPUT]]`. With the
/// default OUTPUT (the installed raw image) the user's own changes to it are
/// kept unless `--force`, and the manifest records the new one.
pub fn run(opts: &Opts, args: ConvertArgs) -> Result<()> {
    let ConvertArgs {
        input,
        output,
        with_qemu_img,
        sparse_detect,
    } = args;
    let installed_raw = opts.output.join(RAW);
    let input = input.unwrap_or_else(|| opts.output.join(QCOW2));
    let output = output.unwrap_or_else(|| installed_raw.clone());
    if !input.exists() {
        bail!(
            "{}: no such file; run `cargo xtask resources decompress` first or pass INPUT",
            input.display()
        );
    }
    refuse_same_file(&input, &output)?;
    for other in [KERNEL, CLIENT, QCOW2, manifest::FILE] {
        if same_path(&output, &opts.output.join(other)) {
            bail!(
                "OUTPUT {} is the installed {other}; a raw image does not go there, name \
                 another OUTPUT",
                output.display()
            );
        }
    }
    let tracked = same_path(&output, &installed_raw);
    let mut m = if tracked {
        guard::load_manifest(opts)?
    } else {
        None
    };
    if tracked {
        guard::refuse_pending(opts, m.as_ref())?;
        guard::guard_names(opts, m.as_ref(), &[RAW])?;
    }
    let before = m.clone();
    // Record the coming raw image as pending, so a run killed midway does
    // not leave an image the next run takes for the user's.
    let qcow2_entry = m
        .as_ref()
        .and_then(|m| m.entry(QCOW2).cloned())
        .filter(|_| same_path(&input, &opts.output.join(QCOW2)));
    if let (Some(mm), Some(q)) = (m.as_mut(), &qcow2_entry) {
        let mut pending = mm.clone();
        pending.pending = None;
        pending.set_entry(raw_entry(q, 0, 0));
        mm.pending = Some(Box::new(pending));
        manifest::store(&opts.output, mm)?;
    }
    let start = Instant::now();
    let converted = if with_qemu_img {
        convert_qemu_img(&input, &output, sparse_detect).map(|()| {
            format!(
                "convert: {} written by qemu-img in {:.1} s",
                output.display(),
                start.elapsed().as_secs_f64()
            )
        })
    } else {
        convert_file(&input, &output, sparse_detect, opts.progress).map(|stats| {
            format!(
                "convert: {} written ({} virtual, {} data) in {:.1} s",
                output.display(),
                human_bytes(stats.virtual_size),
                human_bytes(stats.data_bytes),
                start.elapsed().as_secs_f64()
            )
        })
    };
    match converted {
        Ok(line) => {
            say!("{line}");
            let size = std::fs::metadata(&output).map(|m| m.len()).ok();
            util::say::report(
                "files",
                serde_json::json!([{ "name": RAW, "path": output, "size": size, "source": "converted" }]),
            );
        }
        Err(e) => {
            // Nothing was replaced: the manifest goes back to what it said.
            if let (Some(orig), Some(_)) = (&before, &qcow2_entry) {
                manifest::store(&opts.output, orig)?;
            }
            return Err(e);
        }
    }
    if let (Some(mut mm), Some(q)) = (m, qcow2_entry) {
        let (size, ns) = manifest::modified_ns(&output)?;
        mm.pending = None;
        mm.set_entry(raw_entry(&q, size, ns));
        manifest::store(&opts.output, &mm)?;
    }
    Ok(())
}

fn raw_entry(qcow2: &FileEntry, size: u64, ns: u128) -> FileEntry {
    FileEntry {
        name: RAW.into(),
        size,
        sha256: None,
        modified_ns: ns,
        sources: qcow2.sources.clone(),
    }
}

/// Whether `a` and `b` name the same place (both may be absent).
fn same_path(a: &Path, b: &Path) -> bool {
    let canon = |p: &Path| {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::canonicalize(dir)
            .ok()
            .map(|d| d.join(p.file_name().unwrap_or_default()))
    };
    match (canon(a), canon(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// Converting a file onto itself would destroy the input.
fn refuse_same_file(input: &Path, output: &Path) -> Result<()> {
    if util::fs::same_file(input, output) || same_path(input, output) {
        bail!(
            "INPUT {} and OUTPUT {} are the same file; converting would destroy the input. \
             Name another OUTPUT",
            input.display(),
            output.display()
        );
    }
    Ok(())
}

/// `qemu-img convert -O raw` into the temporary name, then the usual rename.
fn convert_qemu_img(input: &Path, output: &Path, sparse_detect: bool) -> Result<()> {
    let sh = xshell::Shell::new()?;
    if xshell::cmd!(sh, "qemu-img --version")
        .quiet()
        .ignore_stdout()
        .run()
        .is_err()
    {
        bail!("--with-qemu-img: qemu-img is not installed; install qemu-utils (apt-get install qemu-utils) or drop --with-qemu-img");
    }
    let tmp = TempFile::create(output)?;
    let tmp_path = tmp.path().to_path_buf();
    let sparse: &[&str] = if sparse_detect { &[] } else { &["-S", "0"] };
    xshell::cmd!(sh, "qemu-img convert -O raw {sparse...} {input} {tmp_path}")
        .run()
        .with_context(|| format!("{}: qemu-img convert failed", input.display()))?;
    tmp.commit()
}
