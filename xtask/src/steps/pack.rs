//! `cargo xtask resources pack DISK`: a qcow2 (and optionally a kernel and a
//! test client) made into the assets of a release, as upstream's
//! `artifacts.sh compress-split` made them, but on every core and in
//! archives that also decode on every core.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::verify::check_elf;
use super::Opts;
use archive::pack::GzipOptions;
use archive::pack::{pack_image, Codec, MEMBER};
use archive::pack::{Part, Splitter};
use archive::pack::{XzOptions, ZstdOptions};
use archive::unpack::Compression;
use github::assets::{
    client_name, disk_base, kernel_name, split_suffix, split_suffix_index, sums_name,
};
use qcow2::{self, Image};
use util::fmt::{hex, human_bytes};
use util::fs::{self as fsutil, TempFile};
use util::lock;
use util::progress::Progress;

/// GitHub refuses release assets of 2 GiB or more.
pub const MAX_PART: u64 = (2 << 30) - 1;
/// Two-letter split suffixes (aa…yz): any shell glob still lists them in order.
pub const MAX_PARTS: u64 = 650;
pub const DEFAULT_PART: u64 = 500 << 20;

/// The arguments of `cargo xtask resources pack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackArgs {
    pub disk: PathBuf,
    pub compression: Compression,
    pub part_size: u64,
    pub level: Option<u32>,
    pub kernel: Option<PathBuf>,
    pub client: Option<PathBuf>,
}

/// The level range and default of each codec `pack` writes.
pub fn levels(c: Compression) -> Option<(u32, u32, u32)> {
    match c {
        Compression::Gzip => Some((1, 12, 6)),
        Compression::Xz => Some((0, 9, 6)),
        Compression::Zstd => Some((1, 19, 3)),
        _ => None,
    }
}

pub fn run(opts: &Opts, args: PackArgs) -> Result<()> {
    let dir = &opts.output;
    let (os, arch) = (opts.os, opts.arch);
    let archive = format!("{}.tar.{}", disk_base(os, arch), args.compression.ext());
    let sums = sums_name(os, arch);

    // Inputs first: nothing is written for a bad one. The image is opened
    // once, so what is checked is what is packed.
    let src = fsutil::open_input(&args.disk)
        .with_context(|| format!("cannot open {}", args.disk.display()))?;
    check_disk(&src, &args.disk)?;
    let kernel = extra(
        args.kernel.as_deref(),
        "--kernel",
        arch.as_str(),
        dir,
        kernel_name(os, arch),
    )?;
    let client = extra(
        args.client.as_deref(),
        "--client",
        arch.as_str(),
        dir,
        client_name(arch),
    )?;

    if fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        bail!("--output {} is not a directory", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let what = dir.display().to_string();
    let how = lock::How {
        kind: lock::Kind::Exclusive,
        what: &what,
        wait: opts.wait,
        own: false,
    };
    let _lock = lock::lock(dir, &how)?;
    let base = disk_base(os, arch);
    remove_stale_temporaries(dir, &base, &sums);
    let old = old_set(dir, &base, &sums)?;
    // Never pack from, or ship, a file of the set being replaced.
    let inputs = [Some(&args.disk), args.kernel.as_ref(), args.client.as_ref()];
    for input in inputs.into_iter().flatten() {
        if let Some(name) = old.iter().find(|n| fsutil::same_file(input, &dir.join(n))) {
            bail!(
                "{} is {}, a file of the set in {} that pack replaces; move it elsewhere first",
                input.display(),
                name,
                dir.display()
            );
        }
    }
    let mut ours: Vec<&str> = Vec::new();
    for e in [&kernel, &client].into_iter().flatten() {
        if !e.in_place {
            ours.push(&e.name);
        }
    }
    let clashes: Vec<&str> = old
        .iter()
        .map(String::as_str)
        .chain(
            ours.iter()
                .copied()
                .filter(|n| dir.join(n).symlink_metadata().is_ok()),
        )
        .collect();
    if !clashes.is_empty() && !opts.force {
        return Err(fsutil::users_files(format!(
            "{} already holds {}; pass --force to replace that set (its old parts are removed), \
             or choose another --output",
            dir.display(),
            list(&clashes)
        )));
    }
    // What --force will remove must be removable, before anything is written.
    for name in &old {
        let path = dir.join(name);
        if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            bail!(
                "{} is a directory where a part of the old set would be; move it away",
                path.display()
            );
        }
    }

    let started = Instant::now();
    let before = src
        .metadata()
        .with_context(|| format!("cannot read {}", args.disk.display()))?;
    let size = before.len();
    let level = args.level;
    let codec = match args.compression {
        Compression::Gzip => Codec::Gzip(GzipOptions {
            level: level.unwrap_or(GzipOptions::default().level),
            ..GzipOptions::default()
        }),
        Compression::Xz => Codec::Xz(XzOptions {
            preset: level.unwrap_or(XzOptions::default().preset),
            ..XzOptions::default()
        }),
        Compression::Zstd => Codec::Zstd(ZstdOptions {
            level: level.map_or(ZstdOptions::default().level, |l| l as i32),
            ..ZstdOptions::default()
        }),
        other => bail!("pack cannot write {} archives", other.name()),
    };
    let name_of = |i: u64| format!("{archive}.{}", split_suffix(i));
    let mut splitter = Splitter::new(dir, args.part_size, MAX_PARTS, &name_of);
    let progress = Progress::new("pack", size, 0, opts.progress);
    let packed = pack_image(
        &src,
        size,
        before.mtime().max(0) as u64,
        &codec,
        &mut splitter,
        &|n| progress.add(n),
    );
    progress.finish();
    let packed = packed.with_context(|| format!("cannot pack {}", args.disk.display()))?;
    let parts = splitter.finish()?;
    let after =
        fs::metadata(&args.disk).with_context(|| format!("cannot read {}", args.disk.display()))?;
    if after.len() != size
        || after.mtime() != before.mtime()
        || after.mtime_nsec() != before.mtime_nsec()
    {
        bail!(
            "{} changed while it was packed; nothing was written, pack it again when nothing writes to it",
            args.disk.display()
        );
    }

    let mut sums_file = TempFile::create(&dir.join(&sums))?;
    std::io::Write::write_all(
        sums_file.file(),
        format!("{}  {MEMBER}\n", hex(&packed.sha256)).as_bytes(),
    )
    .with_context(|| format!("cannot write {}", sums_file.path().display()))?;
    let mut copies = Vec::new();
    for e in [&kernel, &client]
        .into_iter()
        .flatten()
        .filter(|e| !e.in_place)
    {
        copies.push(copy_to_temp(&e.path, &dir.join(&e.name))?);
    }

    let listing: Vec<(String, u64)> = parts.iter().map(|p| (p.name.clone(), p.size)).collect();
    commit_set(dir, opts.force, &old, &sums, parts, copies, sums_file)?;

    let secs = started.elapsed().as_secs_f64();
    say!(
        "packed {} ({}) into {} in {:.1} s ({}/s, {:.1}% of its size, {} {})",
        args.disk.display(),
        human_bytes(size),
        human_bytes(packed.stats.output_bytes),
        secs,
        human_bytes((size as f64 / secs.max(0.001)) as u64),
        100.0 * packed.stats.output_bytes as f64 / size.max(1) as f64,
        packed.stats.blocks.max(1),
        match args.compression {
            Compression::Gzip => "gzip members",
            Compression::Zstd => "zstd frames",
            _ => "xz stream",
        }
    );
    let mut assets: Vec<(String, u64)> = listing.clone();
    for e in [&kernel, &client].into_iter().flatten() {
        assets.push((e.name.clone(), e.size));
    }
    assets.push((sums.clone(), fs::metadata(dir.join(&sums))?.len()));
    for (name, size) in &assets {
        out!("{}\t{size}", dir.join(name).display());
    }
    let listed: Vec<_> = assets
        .iter()
        .map(|(n, size)| serde_json::json!({ "name": n, "size": size, "path": dir.join(n) }))
        .collect();
    util::say::report("assets", serde_json::json!(listed));
    util::say::report("sha256", serde_json::json!(hex(&packed.sha256)));
    say!("sha256 {}  {MEMBER}", hex(&packed.sha256));
    Ok(())
}

/// Puts the new set in place of the `old` one (its names in `dir`). No
/// rename of several files is atomic, so the order decides what a kill can
/// leave, and every such state is one `upload` refuses and the next `pack`
/// replaces: the old sums go first (a set without sums is visibly
/// incomplete), then every old part, `…aa` first (so no old fragment stands
/// beside new parts, and none starts where readers start); the new parts
/// arrive last one first, so `…aa` appears only once all its parts are
/// there; the sums come last, as the mark that the set is whole.
fn commit_set(
    dir: &Path,
    force: bool,
    old: &[String],
    sums: &str,
    parts: Vec<Part>,
    copies: Vec<TempFile>,
    sums_file: TempFile,
) -> Result<()> {
    let commit = |t: TempFile| if force { t.commit() } else { t.commit_new() };
    if force && !old.is_empty() {
        let first = old.iter().filter(|n| *n == sums);
        // `old` is sorted: each archive's parts in split's order.
        for name in first.chain(old.iter().filter(|n| *n != sums)) {
            let path = dir.join(name);
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e)
                        .with_context(|| format!("cannot remove the old {}", path.display()));
                }
                _ => {}
            }
        }
        fsutil::sync_dir(dir)?;
    }
    for Part { file, .. } in parts.into_iter().rev() {
        commit(file)?;
    }
    for t in copies {
        commit(t)?;
    }
    commit(sums_file)
}

/// The checks `convert` applies: a qcow2 header we read, tables inside the
/// file, no more bytes than its virtual size can explain.
fn check_disk(src: &fs::File, disk: &Path) -> Result<()> {
    let image = Image::from_reader(src, &disk.display().to_string())?;
    image
        .allocated_bytes()
        .with_context(|| format!("{} is not a readable qcow2", disk.display()))?;
    let mut head = [0u8; 72];
    image
        .read_padded(&mut head, 0)
        .with_context(|| format!("cannot read {}", disk.display()))?;
    check_tables(&head, image.file_len(), disk)?;
    if qcow2::max_file_len(&head).is_some_and(|max| image.file_len() > max) {
        bail!(
            "{}: the file is larger ({} bytes) than a qcow2 of its virtual size can be; \
             it is damaged, rebuild it with `qemu-img convert -O qcow2`",
            disk.display(),
            image.file_len()
        );
    }
    Ok(())
}

/// The tables `convert` does not read but QEMU opens: the refcount table
/// and the snapshot table must lie inside the file, within QEMU's limits
/// (8 MiB of refcount table, 65536 snapshots), or `qemu-img` refuses the
/// image that users would download.
fn check_tables(h: &[u8; 72], file_len: u64, disk: &Path) -> Result<()> {
    let be32 = |at: usize| u64::from(u32::from_be_bytes(h[at..at + 4].try_into().unwrap()));
    let be64 = |at: usize| u64::from_be_bytes(h[at..at + 8].try_into().unwrap());
    let cluster = 1u64 << be32(20).min(63);
    let inside = |off: u64, len: u64| {
        off != 0
            && off.is_multiple_of(cluster)
            && off.checked_add(len).is_some_and(|e| e <= file_len)
    };
    let (rt_off, rt_clusters) = (be64(48), be32(56));
    let rt_len = rt_clusters.saturating_mul(cluster);
    if rt_clusters == 0 || rt_len > 8 << 20 || !inside(rt_off, rt_len) {
        bail!(
            "{}: the refcount table ({rt_clusters} clusters at {rt_off:#x}) is empty, too large or \
             outside the file; QEMU would not open it: repair it with `qemu-img check -r all` or \
             rebuild it with `qemu-img convert -O qcow2`",
            disk.display()
        );
    }
    let (snapshots, sn_off) = (be32(60), be64(64));
    if snapshots > 65536 || (snapshots > 0 && !inside(sn_off, 1)) {
        bail!(
            "{}: the snapshot table ({snapshots} snapshots at {sn_off:#x}) is too large or outside \
             the file; QEMU would not open it: rebuild it with `qemu-img convert -O qcow2`",
            disk.display()
        );
    }
    Ok(())
}

/// A kernel or client to ship beside the disk.
struct Extra {
    path: PathBuf,
    name: String,
    size: u64,
    /// It already is the file at its asset name in the output directory.
    in_place: bool,
}

fn extra(
    path: Option<&Path>,
    flag: &str,
    arch: &str,
    dir: &Path,
    name: String,
) -> Result<Option<Extra>> {
    let Some(path) = path else { return Ok(None) };
    let f = fsutil::open_input(path).with_context(|| format!("{flag} {}", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("{flag} {}", path.display()))?;
    check_elf(path, arch).map_err(|why| {
        anyhow::anyhow!("{flag} {}: {why}; give the {arch} build", path.display())
    })?;
    let target = dir.join(&name);
    // The file at the asset's name itself (not through a link there).
    let in_place = fs::symlink_metadata(&target).is_ok_and(|t| t.file_type().is_file())
        && fsutil::same_file(path, &target);
    Ok(Some(Extra {
        path: path.to_path_buf(),
        name,
        size: meta.len(),
        in_place,
    }))
}

fn copy_to_temp(from: &Path, dest: &Path) -> Result<TempFile> {
    let mut src =
        fsutil::open_input(from).with_context(|| format!("cannot open {}", from.display()))?;
    let mut t = TempFile::create(dest)?;
    std::io::copy(&mut src, t.file())
        .with_context(|| format!("cannot copy {} to {}", from.display(), t.path().display()))?;
    Ok(t)
}

/// Whether `name` is one `pack` (or upstream's `split`) writes for the disk
/// `base`: `{base}.tar`, `{base}.tar.{gz,xz,zst}`, or either followed by a
/// split suffix.
pub(super) fn is_archive_name(name: &str, base: &str) -> bool {
    let Some(rest) = name.strip_prefix(base).and_then(|r| r.strip_prefix(".tar")) else {
        return false;
    };
    let rest = ["gz", "xz", "zst"]
        .iter()
        .find_map(|ext| {
            rest.strip_prefix('.')
                .and_then(|r| r.strip_prefix(ext))
                .filter(|r| r.is_empty() || r.starts_with('.'))
        })
        .unwrap_or(rest);
    match rest.strip_prefix('.') {
        None => rest.is_empty(),
        Some(suffix) => split_suffix_index(suffix).is_some(),
    }
}

/// Removes the hidden temporaries an interrupted `pack` left for this set.
fn remove_stale_temporaries(dir: &Path, base: &str, sums: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        let Some(inner) = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".partial"))
        else {
            continue;
        };
        let ours = inner == sums || is_archive_name(inner, base);
        if ours && e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// What `dir` holds of an earlier set: the sums and every archive or part
/// of the disk, in any compression, by the exact names `pack` writes.
fn old_set(dir: &Path, base: &str, sums: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        // A name that is not UTF-8 is no asset this tool wrote.
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if name == sums || is_archive_name(&name, base) {
            out.push(name);
        }
    }
    out.sort();
    Ok(out)
}

fn list(names: &[&str]) -> String {
    match names {
        [] => String::new(),
        [one] => one.to_string(),
        [a, b] => format!("{a} and {b}"),
        [a, b, rest @ ..] => format!("{a}, {b} and {} more", rest.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::is_archive_name;

    #[test]
    fn only_the_names_pack_writes_belong_to_a_set() {
        let base = "disk-image-focal-amd64.qcow2";
        for yes in [
            ".tar",
            ".tar.gz",
            ".tar.xz",
            ".tar.zst",
            ".tar.gz.aa",
            ".tar.gz.yz",
            ".tar.xz.ab",
            ".tar.aa",
            ".tar.zst.zaaa",
        ] {
            assert!(is_archive_name(&format!("{base}{yes}"), base), "{yes}");
        }
        for no in [
            ".tar.gz.backup",
            ".tarball-notes.txt",
            ".tar.orig.qcow2",
            ".tar.gzz",
            ".tar.gz.zz",
            ".tar.gz.",
            ".tar.gz.AA",
            ".tar.bz2",
            ".sums",
            "",
        ] {
            assert!(!is_archive_name(&format!("{base}{no}"), base), "{no}");
        }
    }
}
