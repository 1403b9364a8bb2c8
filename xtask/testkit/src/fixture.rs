//! Release fixtures built the way upstream builds them: a small recognisable
//! qcow2 (qemu-img + qemu-io), packed with the same system tools and naming
//! (`sha256sum`, `tar | gzip|pigz|xz`, `split -a 2`), fake ELF kernels and
//! clients, and a self-removing temp dir. Going through the real tools rather
//! than Rust reimplementations keeps the fixtures honest about tar format
//! details and split naming.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, ensure, Context, Result};
use sha2::{Digest, Sha256};
use util::fmt::hex;

use crate::spec::AssetSpec;
pub use archive::unpack::Compression;

pub struct DiskFixture {
    /// The packed image (`work/temp/disk-image.qcow2`, a copy of the input).
    pub qcow2: PathBuf,
    pub sha256_hex: String,
    /// The split parts in order, then the `.sums` file.
    pub assets: Vec<AssetSpec>,
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// sha256 of a file, streamed.
pub fn sha256_file_hex(path: &Path) -> Result<String> {
    Ok(hex(&util::fs::sha256_file(path)?))
}

/// The first `name` on PATH.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn tool(name: &str, why: &str) -> Result<PathBuf> {
    find_tool(name).with_context(|| format!("`{name}` not found in PATH (needed to {why})"))
}

/// Packs `qcow2` like upstream: copy to `work/temp/disk-image.qcow2`, write
/// `sha256sum temp/disk-image.qcow2` into `disk-image-{os}-{arch}.qcow2.sums`,
/// `tar c temp/disk-image.qcow2 | gzip -c` (pigz if present) or `xz -T0 -c`,
/// then `split -b part_size -a 2` into `disk-image-{os}-{arch}.qcow2.tar.gz.aa…`
/// (`.tar.xz.` for xz). All files land in `work`.
pub fn pack_disk(
    qcow2: &Path,
    os: &str,
    arch: &str,
    part_size: u64,
    compression: Compression,
    work: &Path,
) -> Result<DiskFixture> {
    ensure!(part_size > 0, "part_size must be positive");
    let why = "pack the disk fixture";
    let sha256sum = tool("sha256sum", why)?;
    let tar = tool("tar", why)?;
    let split = tool("split", why)?;
    let (compressor, args, ext): (PathBuf, &[&str], &str) = match compression {
        Compression::Gzip => match find_tool("pigz") {
            Some(p) => (p, &["-c"], "tar.gz"),
            None => (tool("gzip", why)?, &["-c"], "tar.gz"),
        },
        Compression::Xz => (tool("xz", why)?, &["-T0", "-c"], "tar.xz"),
        Compression::Zstd => (tool("zstd", why)?, &["-q", "-c"], "tar.zst"),
        other => bail!("pack_disk: {} packing is not supported", other.name()),
    };

    let temp = work.join("temp");
    fs::create_dir_all(&temp).with_context(|| format!("create {}", temp.display()))?;
    let image = temp.join("disk-image.qcow2");
    fs::copy(qcow2, &image)
        .with_context(|| format!("copy {} to {}", qcow2.display(), image.display()))?;

    let out = Command::new(&sha256sum)
        .arg("temp/disk-image.qcow2")
        .current_dir(work)
        .output()
        .context("run sha256sum")?;
    ensure!(out.status.success(), "sha256sum failed: {}", out.status);
    let line = String::from_utf8(out.stdout).context("sha256sum output")?;
    let sha = line.split_whitespace().next().unwrap_or("").to_string();
    ensure!(sha.len() == 64, "unexpected sha256sum output {line:?}");
    let sums_name = format!("disk-image-{os}-{arch}.qcow2.sums");
    let sums = work.join(&sums_name);
    fs::write(&sums, &line).with_context(|| format!("write {}", sums.display()))?;

    // Stale parts from an earlier run would be picked up as extra parts.
    let prefix = format!("disk-image-{os}-{arch}.qcow2.{ext}.");
    for part in parts_with_prefix(work, &prefix)? {
        fs::remove_file(&part)?;
    }

    let mut tar_child = Command::new(&tar)
        .args(["c", "temp/disk-image.qcow2"])
        .current_dir(work)
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn tar")?;
    let mut comp_child = Command::new(&compressor)
        .args(args)
        .stdin(tar_child.stdout.take().expect("piped"))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawn {}", compressor.display()))?;
    let split_status = Command::new(&split)
        .args(["-b", &part_size.to_string(), "-a", "2", "-", &prefix])
        .current_dir(work)
        .stdin(comp_child.stdout.take().expect("piped"))
        .status()
        .context("run split")?;
    let tar_status = tar_child.wait()?;
    let comp_status = comp_child.wait()?;
    ensure!(tar_status.success(), "tar failed: {tar_status}");
    ensure!(
        comp_status.success(),
        "{} failed: {comp_status}",
        compressor.display()
    );
    ensure!(split_status.success(), "split failed: {split_status}");

    let parts = parts_with_prefix(work, &prefix)?;
    ensure!(!parts.is_empty(), "split produced no parts");
    let mut assets: Vec<AssetSpec> = parts
        .iter()
        .map(|p| {
            let name = p.file_name().expect("file").to_string_lossy();
            AssetSpec::file(&name, p)
        })
        .collect();
    assets.push(AssetSpec::file(&sums_name, &sums));
    Ok(DiskFixture {
        qcow2: image,
        sha256_hex: sha,
        assets,
    })
}

/// Files in `dir` named `prefix` + two letters, sorted (split's order).
fn parts_with_prefix(dir: &Path, prefix: &str) -> Result<Vec<PathBuf>> {
    let mut parts = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(suffix) = name.strip_prefix(prefix) {
            if suffix.len() == 2 && suffix.bytes().all(|b| b.is_ascii_lowercase()) {
                parts.push(entry.path());
            }
        }
    }
    parts.sort();
    Ok(parts)
}

/// A small qcow2 of `virtual_mib` MiB holding about `data_mib` MiB of data:
/// a run of distinct byte patterns at 0, a hole, pseudo-random bytes, a run
/// of written zeros, and a pattern in the last 64 KiB (so the tail is
/// allocated). Needs qemu-img and qemu-io.
pub fn make_qcow2(path: &Path, virtual_mib: u64, data_mib: u64) -> Result<()> {
    let why = "make the qcow2 fixture";
    let qemu_img = tool("qemu-img", why)?;
    let qemu_io = tool("qemu-io", why)?;
    ensure!(data_mib > 0, "data_mib must be positive");
    let data_kib = data_mib * 1024;
    let pattern_kib = data_kib / 2;
    let random_kib = data_kib / 4;
    let zero_kib = data_kib - pattern_kib - random_kib;
    ensure!(
        virtual_mib * 1024 >= data_kib + 1024 + 64,
        "virtual_mib {virtual_mib} too small for {data_mib} MiB of data plus holes"
    );

    let st = Command::new(&qemu_img)
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(format!("{virtual_mib}M"))
        .status()
        .context("run qemu-img")?;
    ensure!(st.success(), "qemu-img create failed: {st}");

    let mut cmds = Vec::new();
    // Distinct pattern per 256 KiB so misplaced clusters are visible.
    let mut off = 0;
    let mut k = 0u64;
    while off < pattern_kib {
        let len = (pattern_kib - off).min(256);
        let pat = 0x11 * (k % 15 + 1);
        cmds.push(format!("write -q -P {pat:#x} {off}k {len}k"));
        off += len;
        k += 1;
    }
    let random_at = pattern_kib + 1024; // leave an unallocated hole
    let random_file = path.with_extension("random.tmp");
    if random_kib > 0 {
        fs::write(&random_file, pseudo_random(random_kib * 1024, data_mib))?;
        cmds.push(format!(
            "write -q -s {} {random_at}k {random_kib}k",
            random_file.display()
        ));
    }
    if zero_kib > 0 {
        cmds.push(format!(
            "write -q -P 0 {}k {zero_kib}k",
            random_at + random_kib
        ));
    }
    cmds.push(format!("write -q -P 0xee {}k 64k", virtual_mib * 1024 - 64));

    let mut c = Command::new(&qemu_io);
    c.args(["-f", "qcow2"]);
    for cmd in &cmds {
        c.arg("-c").arg(cmd);
    }
    let out = c.arg(path).output().context("run qemu-io");
    let _ = fs::remove_file(&random_file);
    let out = out?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    // qemu-io exits 0 even when a -c command fails, so read what it said.
    if !out.status.success() || text.to_ascii_lowercase().contains("fail") {
        bail!("qemu-io failed ({}): {text}", out.status);
    }
    Ok(())
}

/// Deterministic xorshift bytes: incompressible, reproducible across runs.
pub fn pseudo_random(len: u64, seed: u64) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
    let mut out = Vec::with_capacity(len as usize + 8);
    while (out.len() as u64) < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len as usize);
    out
}

/// A minimal valid little-endian ELF64 executable header with one PT_LOAD
/// program header, padded to 4 KiB with a recognisable text. `arch` is
/// "amd64" (EM_X86_64) or "arm64" (EM_AARCH64); anything else panics.
pub fn fake_elf(arch: &str) -> Vec<u8> {
    let machine: u16 = match arch {
        "amd64" => 62,
        "arm64" => 183,
        other => panic!("fake_elf: unknown arch {other:?}"),
    };
    const SIZE: usize = 4096;
    const BASE: u64 = 0x40_0000;
    let mut e = Vec::with_capacity(SIZE);
    e.extend_from_slice(b"\x7fELF");
    e.extend_from_slice(&[2, 1, 1, 0]); // ELFCLASS64, little-endian, EV_CURRENT, SYSV ABI
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    e.extend_from_slice(&machine.to_le_bytes());
    e.extend_from_slice(&1u32.to_le_bytes()); // e_version
    e.extend_from_slice(&(BASE + 120).to_le_bytes()); // e_entry: right after the headers
    e.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
    e.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
    e.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    e.extend_from_slice(&64u16.to_le_bytes()); // e_ehsize
    e.extend_from_slice(&56u16.to_le_bytes()); // e_phentsize
    e.extend_from_slice(&1u16.to_le_bytes()); // e_phnum
    e.extend_from_slice(&64u16.to_le_bytes()); // e_shentsize
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shnum
    e.extend_from_slice(&0u16.to_le_bytes()); // e_shstrndx
    debug_assert_eq!(e.len(), 64);
    e.extend_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    e.extend_from_slice(&5u32.to_le_bytes()); // PF_R | PF_X
    e.extend_from_slice(&0u64.to_le_bytes()); // p_offset
    e.extend_from_slice(&BASE.to_le_bytes()); // p_vaddr
    e.extend_from_slice(&BASE.to_le_bytes()); // p_paddr
    e.extend_from_slice(&(SIZE as u64).to_le_bytes()); // p_filesz
    e.extend_from_slice(&(SIZE as u64).to_le_bytes()); // p_memsz
    e.extend_from_slice(&0x1000u64.to_le_bytes()); // p_align
    debug_assert_eq!(e.len(), 120);
    let text = format!("testkit fake ELF for {arch}\n");
    while e.len() < SIZE {
        let take = (SIZE - e.len()).min(text.len());
        e.extend_from_slice(&text.as_bytes()[..take]);
    }
    e
}

/// Everything of one upstream release for (os, arch): `vmlinux-{os}-{arch}`,
/// `test-client-{arch}`, then the disk parts and sums.
pub fn upstream_assets(os: &str, arch: &str, disk: &DiskFixture) -> Vec<AssetSpec> {
    let vmlinux = fake_elf(arch);
    // A different tail so the two ELFs never hash alike.
    let mut client = fake_elf(arch);
    let mark = format!("test-client {os}");
    client[4096 - mark.len()..].copy_from_slice(mark.as_bytes());
    let mut assets = vec![
        AssetSpec::bytes(&format!("vmlinux-{os}-{arch}"), vmlinux),
        AssetSpec::bytes(&format!("test-client-{arch}"), client),
    ];
    assets.extend(disk.assets.iter().cloned());
    assets
}

/// A unique directory under `std::env::temp_dir()`, removed on drop.
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        loop {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let path =
                std::env::temp_dir().join(format!("{prefix}-{}-{n}-{nanos}", std::process::id()));
            match fs::create_dir(&path) {
                Ok(()) => return TempDir { path },
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("TempDir: create {}: {e}", path.display()),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        // The download cache the tests give a run whose output is this
        // directory (see `cache_dir_for`).
        let _ = fs::remove_dir_all(cache_dir_for(&self.path));
    }
}

/// The download cache (`VSWARM_CACHE_DIR`) the tests give a run into
/// `out`: `OUT.cache` beside it, so the runs of one test share it as a
/// user's runs do, tests never share one, and `TempDir` removes it.
pub fn cache_dir_for(out: &Path) -> PathBuf {
    let mut name = out.file_name().unwrap_or_default().to_os_string();
    name.push(".cache");
    out.with_file_name(name)
}
