//! `cargo xtask resources pack DISK`: a qcow2 (and optionally a kernel and a
//! test client) made into the assets of a release, as upstream's
//! `artifacts.sh compress-split` made them, but on every core and in
//! archives that also decode on every core.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::local::is_archive_name;
use crate::commands::session::Session;
use crate::commands::Command;
use archive::pack::{pack_image, Codec, Packed, MEMBER};
use archive::pack::{GzipOptions, Part, Splitter, XzOptions, ZstdOptions};
use archive::unpack::Compression;
use github::assets::{client_name, disk_base, kernel_name, split_suffix, sums_name, Arch, Os};
use qcow2::{Header, Image};
use util::fmt::{hex, human_bytes};
use util::fs::{self as fsutil, TempFile};
use util::progress::{Progress, Style};

/// Two-letter split suffixes (aa…yz): any shell glob still lists them in order.
pub(crate) const MAX_PARTS: u64 = 650;
pub(crate) const DEFAULT_PART: u64 = 500 << 20;

/// The arguments of `cargo xtask resources pack`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackArgs {
    pub(crate) disk: PathBuf,
    pub(crate) compression: Compression,
    pub(crate) part_size: u64,
    pub(crate) level: Option<u32>,
    pub(crate) kernel: Option<PathBuf>,
    pub(crate) client: Option<PathBuf>,
}

/// The level range and default of each codec `pack` writes.
pub(crate) fn levels(c: Compression) -> Option<(u32, u32, u32)> {
    match c {
        Compression::Gzip => Some((1, 12, 6)),
        Compression::Xz => Some((0, 9, 6)),
        Compression::Zstd => Some((1, 19, 3)),
        _ => None,
    }
}

/// The names of the set `pack` writes for one os/arch.
struct Names {
    /// `disk-image-<os>-<arch>.qcow2`.
    base: String,
    /// The archive, before the split suffix.
    archive: String,
    sums: String,
    kernel: String,
    client: String,
}

impl Names {
    fn of(os: Os, arch: Arch, c: Compression) -> Names {
        let base = disk_base(os, arch);
        Names {
            archive: format!("{base}.tar.{}", c.ext()),
            base,
            sums: sums_name(os, arch),
            kernel: kernel_name(os, arch),
            client: client_name(arch),
        }
    }
}

/// What `pack` reads: the image (opened once, so that what is checked is
/// what is packed) and the kernel and client to ship beside it.
struct Inputs {
    disk: fs::File,
    kernel: Option<Extra>,
    client: Option<Extra>,
}

impl Inputs {
    fn extras(&self) -> impl Iterator<Item = &Extra> {
        [&self.kernel, &self.client].into_iter().flatten()
    }
}

impl Command for PackArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        let (os, arch, force) = (s.opts().os, s.opts().arch, s.opts().force);
        let dir = s.out().to_path_buf();
        let names = Names::of(os, arch, self.compression);
        // Inputs first: nothing is written for a bad one.
        let inputs = self.inputs(&dir, arch, &names)?;
        if fs::metadata(&dir).is_ok_and(|m| !m.is_dir()) {
            bail!("--output {} is not a directory", dir.display());
        }
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        s.lock_output()?;
        let old = self.clear_the_way(&dir, &names, &inputs, force)?;
        let started = Instant::now();
        let (packed, parts, size) = self.pack(&inputs.disk, &dir, &names, s.opts().progress)?;
        let (sums_file, copies) = stage_the_rest(&dir, &names.sums, &packed, &inputs)?;
        let listing: Vec<(String, u64)> = parts.iter().map(|p| (p.name.clone(), p.size)).collect();
        commit_set(&dir, force, &old, &names.sums, parts, copies, sums_file)?;
        self.say_packed(size, &packed, started);
        let mut assets = listing;
        for e in inputs.extras() {
            assets.push((e.name.clone(), e.size));
        }
        assets.push((
            names.sums.clone(),
            fs::metadata(dir.join(&names.sums))?.len(),
        ));
        report(&dir, &assets, &packed);
        Ok(())
    }
}

impl PackArgs {
    /// DISK, a qcow2 `convert` reads, and the kernel and client, ELF files
    /// of `arch`, opened and checked.
    fn inputs(&self, dir: &Path, arch: Arch, names: &Names) -> Result<Inputs> {
        let disk = fsutil::open_input(&self.disk)
            .with_context(|| format!("cannot open {}", self.disk.display()))?;
        check_disk(&disk, &self.disk)?;
        let arch = arch.as_str();
        let kernel = extra(self.kernel.as_deref(), "--kernel", arch, dir, &names.kernel)?;
        let client = extra(self.client.as_deref(), "--client", arch, dir, &names.client)?;
        Ok(Inputs {
            disk,
            kernel,
            client,
        })
    }

    /// What an earlier set in `dir` leaves in the way, checked before
    /// anything is written: its temporaries are removed, an input inside it
    /// is refused, and so is the set itself (or a kernel or client at its
    /// name) without `--force`. The old set's names.
    fn clear_the_way(
        &self,
        dir: &Path,
        names: &Names,
        inputs: &Inputs,
        force: bool,
    ) -> Result<Vec<String>> {
        remove_stale_temporaries(dir, &names.base, &names.sums);
        let old = old_set(dir, &names.base, &names.sums)?;
        // Never pack from, or ship, a file of the set being replaced.
        let given = [Some(&self.disk), self.kernel.as_ref(), self.client.as_ref()];
        for input in given.into_iter().flatten() {
            if let Some(name) = old.iter().find(|n| fsutil::same_file(input, &dir.join(n))) {
                bail!(
                    "{} is {}, a file of the set in {} that pack replaces; move it elsewhere first",
                    input.display(),
                    name,
                    dir.display()
                );
            }
        }
        let ours = inputs
            .extras()
            .filter(|e| !e.in_place)
            .map(|e| e.name.as_str());
        let clashes: Vec<&str> = old
            .iter()
            .map(String::as_str)
            .chain(ours.filter(|n| dir.join(n).symlink_metadata().is_ok()))
            .collect();
        if !clashes.is_empty() && !force {
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
        Ok(old)
    }

    /// The archive's codec, at `--level` or its default.
    fn codec(&self) -> Result<Codec> {
        let level = self.level;
        Ok(match self.compression {
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
        })
    }

    /// Packs the image `src` into parts staged under temporary names in
    /// `dir`; DISK must not change meanwhile. The parts and the image's size.
    fn pack(
        &self,
        src: &fs::File,
        dir: &Path,
        names: &Names,
        style: Style,
    ) -> Result<(Packed, Vec<Part>, u64)> {
        let disk = &self.disk;
        let before = src
            .metadata()
            .with_context(|| format!("cannot read {}", disk.display()))?;
        let size = before.len();
        let codec = self.codec()?;
        let name_of = |i: u64| format!("{}.{}", names.archive, split_suffix(i));
        let mut splitter = Splitter::new(dir, self.part_size, MAX_PARTS, &name_of);
        let progress = Progress::new("pack", size, 0, style);
        let mtime = before.mtime().max(0) as u64;
        let packed = pack_image(src, size, mtime, &codec, &mut splitter, &|n| {
            progress.add(n)
        });
        progress.finish();
        let packed = packed.with_context(|| format!("cannot pack {}", disk.display()))?;
        let parts = splitter.finish()?;
        let after =
            fs::metadata(disk).with_context(|| format!("cannot read {}", disk.display()))?;
        if after.len() != size
            || after.mtime() != before.mtime()
            || after.mtime_nsec() != before.mtime_nsec()
        {
            bail!(
                "{} changed while it was packed; nothing was written, pack it again when nothing writes to it",
                disk.display()
            );
        }
        Ok((packed, parts, size))
    }

    fn say_packed(&self, size: u64, packed: &Packed, started: Instant) {
        let secs = started.elapsed().as_secs_f64();
        say!(
            "packed {} ({}) into {} in {:.1} s ({}/s, {:.1}% of its size, {} {})",
            self.disk.display(),
            human_bytes(size),
            human_bytes(packed.stats.output_bytes),
            secs,
            human_bytes((size as f64 / secs.max(0.001)) as u64),
            100.0 * packed.stats.output_bytes as f64 / size.max(1) as f64,
            packed.stats.blocks.max(1),
            match self.compression {
                Compression::Gzip => "gzip members",
                Compression::Zstd => "zstd frames",
                _ => "xz stream",
            }
        );
    }
}

/// The sums file and the copies of the kernel and client (those not
/// already at their names), staged under temporary names.
fn stage_the_rest(
    dir: &Path,
    sums: &str,
    packed: &Packed,
    inputs: &Inputs,
) -> Result<(TempFile, Vec<TempFile>)> {
    let mut sums_file = TempFile::create(&dir.join(sums))?;
    std::io::Write::write_all(
        sums_file.file(),
        format!("{}  {MEMBER}\n", hex(&packed.sha256)).as_bytes(),
    )
    .with_context(|| format!("cannot write {}", sums_file.path().display()))?;
    let mut copies = Vec::new();
    for e in inputs.extras().filter(|e| !e.in_place) {
        copies.push(copy_to_temp(&e.path, &dir.join(&e.name))?);
    }
    Ok((sums_file, copies))
}

/// Each asset and its size, on stdout and for `--json`, then the sha256.
fn report(dir: &Path, assets: &[(String, u64)], packed: &Packed) {
    for (name, size) in assets {
        out!("{}\t{size}", dir.join(name).display());
    }
    let listed: Vec<_> = assets
        .iter()
        .map(|(n, size)| serde_json::json!({ "name": n, "size": size, "path": dir.join(n) }))
        .collect();
    util::say::report("assets", serde_json::json!(listed));
    util::say::report("sha256", serde_json::json!(hex(&packed.sha256)));
    say!("sha256 {}  {MEMBER}", hex(&packed.sha256));
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
    let header = image.header();
    check_tables(header, image.file_len(), disk)?;
    if header
        .max_file_len()
        .is_some_and(|max| image.file_len() > max)
    {
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
fn check_tables(t: &Header, file_len: u64, disk: &Path) -> Result<()> {
    let cluster = t.cluster_size();
    let inside = |off: u64, len: u64| {
        off != 0
            && off.is_multiple_of(cluster)
            && off.checked_add(len).is_some_and(|e| e <= file_len)
    };
    let (rt_off, rt_clusters) = (
        t.refcount_table_offset,
        u64::from(t.refcount_table_clusters),
    );
    let rt_len = rt_clusters.saturating_mul(cluster);
    if rt_clusters == 0 || rt_len > 8 << 20 || !inside(rt_off, rt_len) {
        bail!(
            "{}: the refcount table ({rt_clusters} clusters at {rt_off:#x}) is empty, too large or \
             outside the file; QEMU would not open it: repair it with `qemu-img check -r all` or \
             rebuild it with `qemu-img convert -O qcow2`",
            disk.display()
        );
    }
    let (snapshots, sn_off) = (t.nb_snapshots, t.snapshots_offset);
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
    name: &str,
) -> Result<Option<Extra>> {
    let Some(path) = path else { return Ok(None) };
    let f = fsutil::open_input(path).with_context(|| format!("{flag} {}", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("{flag} {}", path.display()))?;
    install::elf::check(path, arch).map_err(|why| {
        anyhow::anyhow!("{flag} {}: {why}; give the {arch} build", path.display())
    })?;
    let target = dir.join(name);
    // The file at the asset's name itself (not through a link there).
    let in_place = fs::symlink_metadata(&target).is_ok_and(|t| t.file_type().is_file())
        && fsutil::same_file(path, &target);
    Ok(Some(Extra {
        path: path.to_path_buf(),
        name: name.to_string(),
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
