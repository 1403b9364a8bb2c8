//! `cargo xtask resources decompress --from DIR|PREFIX`: the parts and sums
//! in a directory (what `pack` wrote, a CI artifact) or at a prefix
//! (`DIR/disk-image.qcow2` for `DIR/disk-image.qcow2.tar.gz.aa`…, as
//! `artifacts.sh decompress-split` takes it) unpacked into
//! `<output>/disk-image.qcow2` and checked against the sums, with no release
//! and no network. An output directory holding an installed set is refused;
//! a file of the user's at the image's name is replaced only with `--force`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::local::{dir_files, is_archive_name, set_in};
use crate::commands::session::{report_image, sha_from_sums, Session};
use crate::commands::Command;
use archive::unpack;
use github::assets::{self, Arch, Os};
use github::release::Asset;
use install::layout::{self, QCOW2};
use util::fmt::human_bytes;
use util::fs as fsutil;
use util::io::Chain;
use util::text::Shown;

/// `cargo xtask resources decompress --from DIR|PREFIX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecompressFromArgs {
    pub(crate) from: PathBuf,
}

impl Command for DecompressFromArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        let root = layout::downloads_root(s.out());
        let existed = root.exists();
        let r = from_set(s, &self.from);
        if !existed {
            // The working directory served only as the lock.
            s.release();
            let _ = fs::remove_dir(&root);
        }
        r
    }
}

/// A set found on disk: its directory, its disk archive, its sums.
type LocalSet = (PathBuf, assets::Disk, Asset);

/// The set `--from` names: a directory's os/arch set (or its one
/// un-renamed set), else the set at a prefix.
fn find_from(os: Os, arch: Arch, from: &Path) -> Result<LocalSet> {
    let fix = "copy the missing part into that directory";
    if !fs::metadata(from).is_ok_and(|m| m.is_dir()) {
        return at_prefix(from, fix);
    }
    let files = dir_files(from)?;
    let mut base = assets::disk_base(os, arch);
    let mut what = format!(" for {}/{}", os, arch);
    let mut advice = "; give the directory `pack` wrote (or pass --os-version/--arch)";
    if !files.iter().any(|a| a.name.starts_with(&base)) {
        let others = unrenamed_bases(&files);
        match others.as_slice() {
            [one] => {
                (base, what) = (one.clone(), String::new());
                advice = "";
            }
            [] => {}
            many => bail!(
                "--from: {} holds no set for {}/{} but {} others ({}); name one by its \
                 prefix: --from {}",
                from.display(),
                os,
                arch,
                many.len(),
                many.join(", "),
                from.join(&many[0]).display()
            ),
        }
    }
    let found =
        set_in(from, &files, &base, &what, fix).map_err(|e| anyhow!("--from: {e:#}{advice}"))?;
    Ok((from.to_path_buf(), found.0, found.1))
}

/// The set at `prefix`: `PREFIX.tar.gz.aa`… (or another form) and
/// `PREFIX.sums` in the prefix's directory, whatever the prefix is named.
fn at_prefix(prefix: &Path, fix: &str) -> Result<LocalSet> {
    let shown = prefix.display();
    let form = "a directory, or the prefix of a set's files (DIR/disk-image.qcow2 for \
                DIR/disk-image.qcow2.tar.gz.aa, … and DIR/disk-image.qcow2.sums)";
    let base = prefix.file_name().and_then(|n| n.to_str());
    let Some(base) = base.filter(|b| assets::check_name(b).is_ok()) else {
        bail!("--from {shown}: expected {form}");
    };
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
        bail!(
            "--from {shown}: {} is not a directory; expected {form}",
            dir.display()
        );
    }
    let files = dir_files(&dir)?;
    if !files
        .iter()
        .any(|a| a.name.starts_with(&format!("{base}.")))
    {
        // A part or the sums given for the prefix: say which prefix it has.
        let own = assets::disk_base_of(base);
        let hint = if base.starts_with(&format!("{own}.")) {
            format!(
                "; this is a file of the set {}: give that",
                dir.join(&own).display()
            )
        } else {
            format!("; expected {form}")
        };
        bail!(
            "--from {shown}: {} holds no {base}.* file: looked for the parts {base}.tar.gz.aa, \
             .ab, … (or .tar.xz.*, .tar.zst.*, or one {base}.tar.gz, .tar.xz, .tar.zst) and \
             {base}.sums{hint}",
            dir.display()
        );
    }
    let (disk, sums) = set_in(&dir, &files, base, "", fix).map_err(|e| {
        anyhow!(
            "--from {shown}: {e:#}; a set is the parts and {base}.sums, as `pack` and \
             `artifacts.sh compress-split` write them"
        )
    })?;
    Ok((dir, disk, sums))
}

/// The bases of the sets in a listing whose names carry no os/arch (a CI
/// artifact's `disk-image.qcow2.sums`, `disk-image.qcow2.tar.gz.aa`…),
/// sorted.
fn unrenamed_bases(files: &[Asset]) -> Vec<String> {
    let named: Vec<String> = Os::ALL
        .into_iter()
        .flat_map(|o| Arch::ALL.map(|a| assets::disk_base(o, a)))
        .collect();
    let mut bases: Vec<String> = files
        .iter()
        .filter_map(|a| {
            let base = assets::disk_base_of(&a.name);
            let of_set = a.name.strip_suffix(".sums") == Some(base.as_str())
                || is_archive_name(&a.name, &base);
            (of_set && base.ends_with(".qcow2") && !named.contains(&base)).then_some(base)
        })
        .collect();
    bases.sort();
    bases.dedup();
    bases
}

fn from_set(s: &mut Session, from: &Path) -> Result<()> {
    let (os, arch) = (s.opts().os, s.opts().arch);
    let (dir, (parts, _, archive), sums) = find_from(os, arch, from)?;
    s.open()?;
    let sums_path = dir.join(&sums.name);
    let expected = expected_sha(&sums_path, &dir, &archive)?;
    let dest = s.out().join(QCOW2);
    if fsutil::is_regular(&dest) && fsutil::sha256_file(&dest)? == expected {
        out!(
            "{} already holds this image (its sha256 matches {})",
            dest.display(),
            sums.name
        );
        return Ok(());
    }
    refuse_installed(s)?;
    let started = Instant::now();
    let out = unpack_set(s.out(), &dir, &parts, &archive, &sums.name, expected)?;
    say!(
        "  {QCOW2}: {} unpacked and checked against {} in {:.1} s",
        human_bytes(out.size),
        sums.name,
        started.elapsed().as_secs_f64()
    );
    out!("{} is ready", dest.display());
    report_image(&dest, &out.sha256);
    Ok(())
}

/// The qcow2's sha256 in the sums file at `sums_path` of the set in `dir`.
fn expected_sha(sums_path: &Path, dir: &Path, archive: &str) -> Result<[u8; 32]> {
    let text = fsutil::read_input(sums_path, assets::MAX_SUMS)
        .with_context(|| format!("cannot read the checksum file {}", sums_path.display()))?;
    // No release and no downloads here: the set in DIR is at fault.
    let advice = format!(
        "the sums file in {} is damaged or does not belong to these parts: re-make the set with `pack`, \
         or fetch the artifact again",
        dir.display()
    );
    let sums_shown = sums_path.display().to_string();
    sha_from_sums(&text, &sums_shown, archive, &advice)
}

/// A set's files belong together: an image of no release is not put among
/// them, even with `--force` (which would leave the set unverifiable). A
/// file of the user's at the image's name is refused unless `--force`.
fn refuse_installed(s: &mut Session) -> Result<()> {
    s.load_manifest()?;
    s.refuse_pending()?;
    if let Some(m) = s.installed().filter(|m| !m.files.is_empty()) {
        bail!(
            "{} holds {} {}/{} installed from {}; `decompress --from` makes a disk image of no \
             release, so it goes elsewhere: pass another --output",
            s.out().display(),
            Shown(&m.tag),
            Shown(&m.os),
            Shown(&m.arch),
            Shown(&m.repo)
        );
    }
    s.guard_names(&[QCOW2])
}

/// Unpacks `parts` of the set in `dir` into `out/disk-image.qcow2`,
/// checked against `expected` (from the sums file `sums_name`).
fn unpack_set(
    out: &Path,
    dir: &Path,
    parts: &[Asset],
    archive: &str,
    sums_name: &str,
    expected: [u8; 32],
) -> Result<unpack::Unpacked> {
    let mut files = Vec::with_capacity(parts.len());
    for p in parts {
        let path = dir.join(&p.name);
        let f =
            fsutil::open_input(&path).with_context(|| format!("cannot open {}", path.display()))?;
        files.push(io::BufReader::with_capacity(1 << 20, f));
    }
    let source = match parts.len() {
        1 => dir.join(&parts[0].name).display().to_string(),
        n => format!("{} ({n} parts)", dir.join(archive).display()),
    };
    let mut check = |size: u64| fsutil::ensure_space(out, size, "the disk image");
    let dest = out.join(QCOW2);
    let req = unpack::Request {
        source: &source,
        dest: &dest,
        expected: Some(expected),
        size_hint: Some(parts.iter().map(|p| p.size).sum()),
        raw: None,
        mismatch_advice: Some(&format!(
            "the parts in {} do not match {sums_name} (a part is damaged, or the sums are \
             another set's): re-make the set with `pack`, or fetch the artifact again",
            dir.display()
        )),
    };
    unpack::unpack(Chain::new(files), &req, &mut check).with_context(|| {
        format!(
            "cannot unpack the parts in {}; if they are damaged or incomplete, copy them again",
            dir.display()
        )
    })
}
