//! `cargo xtask resources convert [INPUT [OUTPUT]]`: the built-in
//! converter, or `qemu-img` (`--with-qemu-img`: for images the built-in one
//! refuses, and to cross-check it against QEMU's output); refuses to write
//! onto its input; with the default OUTPUT (the installed raw image) keeps
//! the user's own changes unless `--force`, and records the new image in
//! the manifest.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::session::Session;
use super::Command;
use install::layout::{CLIENT, KERNEL, QCOW2, RAW};
use install::manifest::{self, FileEntry, Manifest};
use qcow2::convert_file;
use util::fmt::human_bytes;
use util::fs::TempFile;
use util::progress::Style;

/// The arguments of `cargo xtask resources convert`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConvertArgs {
    pub(crate) input: Option<PathBuf>,
    pub(crate) output: Option<PathBuf>,
    pub(crate) with_qemu_img: bool,
    pub(crate) sparse_detect: bool,
}

impl Command for ConvertArgs {
    /// With the default OUTPUT (the installed raw image) the user's own
    /// changes to it are kept unless `--force`, and the manifest records the
    /// new one.
    fn run(self, s: &mut Session) -> Result<()> {
        let out = s.out().to_path_buf();
        let installed_raw = out.join(RAW);
        let input = self.input.clone().unwrap_or_else(|| out.join(QCOW2));
        let output = self.output.clone().unwrap_or_else(|| installed_raw.clone());
        check_paths(&input, &output, &out)?;
        if same_path(&output, &installed_raw) {
            s.load_manifest()?;
            s.refuse_pending()?;
            s.guard_names(&[RAW])?;
        }
        // The manifest records the new raw image when it comes from the
        // installed qcow2.
        let record = match s.installed() {
            Some(m) if same_path(&input, &out.join(QCOW2)) => {
                m.entry(QCOW2).cloned().map(|q| (m.clone(), q))
            }
            _ => None,
        };
        if let Some((m, q)) = &record {
            // Recorded as pending, so a run killed midway does not leave an
            // image the next run takes for the user's.
            manifest::store(&out, &with_pending(m, q))?;
        }
        let line = match self.convert(&input, &output, s.opts().progress) {
            Ok(line) => line,
            Err(e) => {
                // Nothing was replaced: the manifest goes back to what it said.
                if let Some((m, _)) = &record {
                    manifest::store(&out, m)?;
                }
                return Err(e);
            }
        };
        say!("{line}");
        let size = std::fs::metadata(&output).map(|m| m.len()).ok();
        util::say::report(
            "files",
            serde_json::json!([{ "name": RAW, "path": output, "size": size, "source": "converted" }]),
        );
        if let Some((mut m, q)) = record {
            let (size, ns) = manifest::modified_ns(&output)?;
            m.pending = None;
            m.set_entry(raw_entry(&q, size, ns));
            manifest::store(&out, &m)?;
        }
        Ok(())
    }
}

impl ConvertArgs {
    /// Converts with the built-in converter or `qemu-img`; the line that
    /// says what was written.
    fn convert(&self, input: &Path, output: &Path, progress: Style) -> Result<String> {
        let start = Instant::now();
        if self.with_qemu_img {
            convert_qemu_img(input, output, self.sparse_detect)?;
            return Ok(format!(
                "convert: {} written by qemu-img in {:.1} s",
                output.display(),
                start.elapsed().as_secs_f64()
            ));
        }
        let stats = convert_file(input, output, self.sparse_detect, progress)?;
        Ok(format!(
            "convert: {} written ({} virtual, {} data) in {:.1} s",
            output.display(),
            human_bytes(stats.virtual_size),
            human_bytes(stats.data_bytes),
            start.elapsed().as_secs_f64()
        ))
    }
}

/// INPUT must exist, and OUTPUT must be neither INPUT nor another file of
/// the installed set in `out`.
fn check_paths(input: &Path, output: &Path, out: &Path) -> Result<()> {
    if !input.exists() {
        bail!(
            "{}: no such file; run `cargo xtask resources decompress` first or pass INPUT",
            input.display()
        );
    }
    refuse_same_file(input, output)?;
    for other in [KERNEL, CLIENT, QCOW2, manifest::FILE] {
        if same_path(output, &out.join(other)) {
            bail!(
                "OUTPUT {} is the installed {other}; a raw image does not go there, name \
                 another OUTPUT",
                output.display()
            );
        }
    }
    Ok(())
}

/// `m` with the raw image made from `qcow2` recorded as its pending install.
fn with_pending(m: &Manifest, qcow2: &FileEntry) -> Manifest {
    let mut pending = m.clone();
    pending.pending = None;
    pending.set_entry(raw_entry(qcow2, 0, 0));
    let mut m = m.clone();
    m.pending = Some(Box::new(pending));
    m
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
