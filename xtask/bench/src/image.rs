//! The benchmark's synthetic release: a qcow2 built by `qemu-img` from a sparse
//! raw file holding system files and random bytes at scattered offsets, packed
//! the way upstream packs it (`testkit::pack_disk`), cached on disk between
//! runs together with a stamp that describes it.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, ensure, Context, Result};
use serde::{Deserialize, Serialize};

use super::measure::Tools;
use super::Params;
use testkit::{AssetSpec, Compression, DiskFixture};

pub const OS: &str = "focal";
pub const ARCH: &str = "amd64";
/// Bumped when the image recipe changes, so stale caches are rebuilt.
const RECIPE: u32 = 1;
const STAMP: &str = "stamp.json";

/// What the cache holds; written last, so its presence means "complete".
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct Stamp {
    pub recipe: u32,
    pub virtual_bytes: u64,
    pub data_bytes: u64,
    pub part_size: u64,
    /// Part file names in split order, relative to the pack directory.
    pub parts: Vec<String>,
    pub sums: String,
    pub archive_bytes: u64,
    pub qcow2_bytes: u64,
    pub sha256: String,
    /// Bytes of system files (the rest of `data_bytes` is random).
    pub system_bytes: u64,
}

/// A built (or cached) release ready to serve.
pub struct Image {
    pub stamp: Stamp,
    /// `pack/`: parts, sums, and `temp/disk-image.qcow2`.
    pub pack: PathBuf,
}

impl Image {
    pub fn qcow2(&self) -> PathBuf {
        self.pack.join("temp").join("disk-image.qcow2")
    }

    pub fn part_paths(&self) -> Vec<PathBuf> {
        self.stamp.parts.iter().map(|p| self.pack.join(p)).collect()
    }

    /// Kernel, client, parts and sums, as upstream names them.
    pub fn assets(&self) -> Vec<AssetSpec> {
        let mut assets: Vec<AssetSpec> = self
            .stamp
            .parts
            .iter()
            .map(|p| AssetSpec::file(p, &self.pack.join(p)))
            .collect();
        assets.push(AssetSpec::file(
            &self.stamp.sums,
            &self.pack.join(&self.stamp.sums),
        ));
        let disk = DiskFixture {
            qcow2: self.qcow2(),
            sha256_hex: self.stamp.sha256.clone(),
            assets,
        };
        testkit::upstream_assets(OS, ARCH, &disk)
    }
}

/// The cached image in `cache` if its stamp matches `p`, else a new one.
pub fn get(cache: &Path, p: &Params, tools: &Tools) -> Result<Image> {
    let pack = cache.join("pack");
    let stamp_path = cache.join(STAMP);
    if let Ok(text) = fs::read_to_string(&stamp_path) {
        if let Ok(stamp) = serde_json::from_str::<Stamp>(&text) {
            let img = Image { stamp, pack };
            if img.stamp.recipe == RECIPE
                && img.stamp.virtual_bytes == p.virtual_bytes
                && img.stamp.data_bytes == p.data_bytes
                && img.stamp.part_size == p.part_size
                && img.qcow2().is_file()
                && img.part_paths().iter().all(|p| p.is_file())
            {
                eprintln!("bench: using cached image in {}", cache.display());
                return Ok(img);
            }
        }
        eprintln!(
            "bench: cache in {} is stale or incomplete; rebuilding",
            cache.display()
        );
    }
    build(cache, p, tools)
}

fn build(cache: &Path, p: &Params, tools: &Tools) -> Result<Image> {
    if cache.exists() {
        fs::remove_dir_all(cache)
            .with_context(|| format!("remove the stale cache {}", cache.display()))?;
    }
    fs::create_dir_all(cache).with_context(|| format!("create {}", cache.display()))?;
    let started = std::time::Instant::now();
    eprintln!(
        "bench: building a {} virtual / {} data image in {} (once; cached)",
        util::fmt::human_bytes(p.virtual_bytes),
        util::fmt::human_bytes(p.data_bytes),
        cache.display()
    );

    let raw = cache.join("build.raw");
    let system_bytes = write_raw(&raw, p)?;
    let qcow2 = cache.join("build.qcow2");
    let out = Command::new(&tools.qemu_img)
        .args([
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "qcow2",
            "-o",
            "cluster_size=65536",
        ])
        .arg(&raw)
        .arg(&qcow2)
        .output()
        .with_context(|| format!("run {}", tools.qemu_img.display()))?;
    ensure!(
        out.status.success(),
        "`qemu-img convert -O qcow2 {}` failed ({}): {}",
        raw.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    fs::remove_file(&raw).with_context(|| format!("remove {}", raw.display()))?;

    let pack = cache.join("pack");
    fs::create_dir_all(&pack)?;
    let disk = testkit::pack_disk(&qcow2, OS, ARCH, p.part_size, Compression::Gzip, &pack)
        .context("pack the benchmark image like upstream (tar | gzip | split)")?;
    // pack_disk copied it to pack/temp/; one copy is enough.
    fs::remove_file(&qcow2).with_context(|| format!("remove {}", qcow2.display()))?;

    let mut parts = Vec::new();
    let mut sums = None;
    for a in &disk.assets {
        if a.name.ends_with(".sums") {
            sums = Some(a.name.clone());
        } else {
            parts.push(a.name.clone());
        }
    }
    let mut archive_bytes = 0;
    for part in &parts {
        archive_bytes += fs::metadata(pack.join(part))?.len();
    }
    let stamp = Stamp {
        recipe: RECIPE,
        virtual_bytes: p.virtual_bytes,
        data_bytes: p.data_bytes,
        part_size: p.part_size,
        parts,
        sums: sums.context("pack_disk returned no .sums asset")?,
        archive_bytes,
        qcow2_bytes: fs::metadata(&disk.qcow2)?.len(),
        sha256: disk.sha256_hex,
        system_bytes,
    };
    let stamp_path = cache.join(STAMP);
    fs::write(&stamp_path, serde_json::to_string_pretty(&stamp)?)
        .with_context(|| format!("write {}", stamp_path.display()))?;
    eprintln!(
        "bench: image built in {:.0} s: qcow2 {}, archive {} in {} parts",
        started.elapsed().as_secs_f64(),
        util::fmt::human_bytes(stamp.qcow2_bytes),
        util::fmt::human_bytes(stamp.archive_bytes),
        stamp.parts.len()
    );
    Ok(Image { stamp, pack })
}

/// Writes a sparse raw disk of `p.virtual_bytes` with `p.data_bytes` of data
/// in chunks of 64 KiB–2 MiB at scattered 4 KiB-aligned offsets (so clusters
/// are partly filled, as on a real filesystem); about 4 in 5 chunks are system
/// files, the rest random. Returns the bytes taken from system files.
fn write_raw(path: &Path, p: &Params) -> Result<u64> {
    const ALIGN: u64 = 4096;
    let mut rng = XorShift(0x005e_ed0f_b3c4 ^ p.data_bytes);
    let mut lens = Vec::new();
    let mut total = 0;
    while total < p.data_bytes {
        let len = (16 + rng.below(497)) * ALIGN; // 64 KiB ..= 2 MiB
        let len = len.min(p.data_bytes - total);
        lens.push(len);
        total += len;
    }
    let stride = p.virtual_bytes / lens.len() as u64;
    ensure!(
        stride >= 2 * 1024 * 1024 + ALIGN,
        "virtual size too small for the data"
    );

    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    file.set_len(p.virtual_bytes)
        .with_context(|| format!("size {}", path.display()))?;
    let mut system = SystemFiles::new(&["/usr/lib", "/usr/share"]);
    let mut system_bytes = 0;
    let mut buf = Vec::new();
    for (i, len) in lens.iter().enumerate() {
        buf.resize(*len as usize, 0);
        if rng.below(5) == 0 {
            rng.fill(&mut buf);
        } else {
            system.fill(&mut buf)?;
            system_bytes += len;
        }
        let slack = (stride - len) / ALIGN;
        let at = i as u64 * stride + rng.below(slack + 1) * ALIGN;
        file.write_all_at(&buf, at)
            .with_context(|| format!("write {}", path.display()))?;
    }
    // The last sector allocated too, as a partition table's backup would be.
    file.write_all_at(b"bench end of disk", p.virtual_bytes - 512)?;
    file.sync_all().ok();
    Ok(system_bytes)
}

/// Deterministic xorshift64: reproducible layouts and incompressible bytes.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0 | 1;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// The regular files under some roots, read one after another in sorted
/// order (walked lazily, so a small image reads only a few), starting over
/// when all are used.
struct SystemFiles {
    roots: Vec<PathBuf>,
    /// Directories and files still to visit, last = next.
    stack: Vec<PathBuf>,
    current: Option<File>,
    produced_any: bool,
}

impl SystemFiles {
    fn new(roots: &[&str]) -> SystemFiles {
        let roots: Vec<PathBuf> = roots.iter().rev().map(PathBuf::from).collect();
        SystemFiles {
            stack: roots.clone(),
            roots,
            current: None,
            produced_any: false,
        }
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            if let Some(f) = &mut self.current {
                match f.read(&mut buf[filled..]) {
                    Ok(0) | Err(_) => self.current = None,
                    Ok(n) => {
                        filled += n;
                        self.produced_any = true;
                    }
                }
                continue;
            }
            self.current = self.next_file()?;
        }
        Ok(())
    }

    fn next_file(&mut self) -> Result<Option<File>> {
        loop {
            let Some(path) = self.stack.pop() else {
                if !self.produced_any {
                    bail!(
                        "no readable files under {:?} to fill the benchmark image with",
                        self.roots
                    );
                }
                self.stack = self.roots.clone();
                continue;
            };
            // Symlinks are skipped: they would revisit files or loop.
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                let mut entries: Vec<PathBuf> = match fs::read_dir(&path) {
                    Ok(rd) => rd.filter_map(|e| e.ok().map(|e| e.path())).collect(),
                    Err(_) => continue,
                };
                entries.sort();
                self.stack.extend(entries.into_iter().rev());
            } else if meta.is_file() && meta.len() > 0 {
                match File::open(&path) {
                    Ok(f) => return Ok(Some(f)),
                    Err(e) if e.kind() == io::ErrorKind::PermissionDenied => continue,
                    Err(_) => continue,
                }
            }
        }
    }
}
