//! The qcow2 → raw converters against `qemu-img convert -O raw`: ONE matrix
//! of images made with qemu-img at test time (skipped with a reason when
//! qemu-img is absent), each converted by BOTH the built-in file converter
//! (and its in-memory path) and the stream converter (fed in random-sized
//! chunks, 1 byte to 1 MiB, while written to a file, as the unpacker does);
//! committed fixtures with known raw sha256 (always run); hostile headers,
//! tables and mappings built by patching valid images; byte mutations;
//! `compare_with_raw`; reflinks on an XFS loop mount the test makes itself;
//! and full runs on odd-sized and version-2 images.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{have, have_qemu, resources, REPO};
use qcow2::Image;
use qcow2::{compare_with_raw, convert_bytes, convert_native};
use qcow2::{StreamConvert, StreamStats};
use sha2::{Digest, Sha256};
use testkit::{make_qcow2, pack_disk, upstream_assets, Compression, ReleaseSpec, Server, TempDir};

/// A unique directory under `base`, removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        TmpDir::under(&std::env::temp_dir(), tag)
    }
    fn under(base: &Path, tag: &str) -> TmpDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = base.join(format!("xtask-qcow2-{tag}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TmpDir(dir)
    }
    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("error") && !stdout.contains("failed"),
        "{tool} {args:?}: {stdout}"
    );
}

fn qemu_img(args: &[&str]) {
    run("qemu-img", args)
}

fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut args = Vec::new();
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(img.to_str().unwrap());
    run("qemu-io", &args)
}

/// `qemu-img convert -O raw`; None when qemu-img refuses the image.
fn qemu_raw(qcow2: &Path, out: &Path) -> Option<Vec<u8>> {
    let ok = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(qcow2)
        .arg(out)
        .output()
        .unwrap()
        .status
        .success();
    let r = ok.then(|| fs::read(out).unwrap());
    let _ = fs::remove_file(out);
    r
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let x = &mut self.0;
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }
    /// 1 byte to 1 MiB, log-uniform, so tiny and large chunks both occur.
    fn chunk(&mut self) -> usize {
        let bits = self.next() % 21;
        1 + (self.next() % (1u64 << bits)) as usize
    }
}

/// Deterministic test data: random-looking runs, repeated bytes, and zero
/// blocks inside otherwise written regions; `size` bytes.
fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let mut r = Rng(seed | 1);
    let mut pos = 0;
    while pos < size {
        let len = ((r.next() % 40 + 1) * 1024) as usize;
        let end = (pos + len).min(size);
        match r.next() % 4 {
            0 => {}
            1 => v[pos..end].fill((r.next() % 255 + 1) as u8),
            _ => v[pos..end].iter_mut().for_each(|b| *b = r.next() as u8),
        }
        pos = end + (r.next() % 3) as usize * 100 * 1024;
    }
    v
}

fn write_raw(dir: &TmpDir, size: usize, seed: u64) -> PathBuf {
    let p = dir.join("src.raw");
    fs::write(&p, pattern(size, seed)).unwrap();
    p
}

fn create_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .unwrap()
}

/// Feeds `qcow2`'s bytes in random chunks while writing them to
/// `work/streamed.qcow2` (as the unpacker does), then finishes. The raw file
/// is `work/stream.img`.
fn stream(
    bytes: &[u8],
    work: &Path,
    seed: u64,
    reflink: bool,
) -> (anyhow::Result<StreamStats>, PathBuf, bool) {
    let copy = work.join("streamed.qcow2");
    let raw_path = work.join("stream.img");
    let mut qf = create_rw(&copy);
    let raw = create_rw(&raw_path);
    let mut sc = StreamConvert::new(
        bytes.len() as u64,
        &copy.display().to_string(),
        raw,
        &raw_path.display().to_string(),
        true,
    );
    let cloning = reflink && sc.prefer_reflink(&qf);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut pos = 0;
    while pos < bytes.len() {
        let n = rng.chunk().min(bytes.len() - pos);
        let chunk = &bytes[pos..pos + n];
        qf.write_all(chunk).unwrap();
        if let Err(e) = sc.feed(chunk) {
            return (Err(e), raw_path, cloning);
        }
        pos += n;
    }
    (sc.finish(&qf), raw_path, cloning)
}

fn blocks(p: &Path) -> u64 {
    fs::metadata(p).unwrap().blocks()
}

fn first_diff(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

/// Converts `qcow2` with qemu-img once, then with both converters, each
/// checked against it; the stream converter's stats (of its last chunking).
fn check(dir: &TmpDir, qcow2: &Path) -> StreamStats {
    let theirs = dir.join("theirs.img");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        qcow2.to_str().unwrap(),
        theirs.to_str().unwrap(),
    ]);
    check_file(dir, qcow2, &theirs);
    let stats = check_stream(dir, qcow2, &theirs);
    let _ = fs::remove_file(&theirs);
    stats
}

/// The file converter (and its in-memory path) on `qcow2`: the output must
/// equal qemu-img's (`theirs`) and be no less sparse (one 4 KiB block of
/// slack).
fn check_file(dir: &TmpDir, qcow2: &Path, theirs: &Path) {
    let ours = dir.join("ours.img");
    let stats = convert_native(qcow2, &ours, true).unwrap();
    let (a, b) = (fs::read(&ours).unwrap(), fs::read(theirs).unwrap());
    assert_eq!(a.len(), b.len(), "{}: size", qcow2.display());
    assert_eq!(stats.virtual_size, a.len() as u64);
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("{}: first difference at byte {i}", qcow2.display());
    }
    let (ba, bb) = (blocks(&ours), blocks(theirs));
    assert!(
        ba <= bb + 8,
        "{}: ours uses {ba} sectors, qemu-img's {bb}",
        qcow2.display()
    );
    assert_eq!(compare_with_raw(qcow2, theirs).unwrap(), None);
    // The in-memory path must agree with the file path.
    let mem = convert_bytes(&fs::read(qcow2).unwrap(), 1 << 30).unwrap();
    assert!(
        mem == b,
        "{}: in-memory conversion differs",
        qcow2.display()
    );
    let _ = fs::remove_file(&ours);
}

/// The stream converter on `qcow2` with a few chunkings: each output must
/// equal qemu-img's (`theirs_path`) and be no less sparse (one 4 KiB block
/// of slack).
fn check_stream(dir: &TmpDir, qcow2: &Path, theirs_path: &Path) -> StreamStats {
    let mut last = StreamStats::default();
    let bytes = fs::read(qcow2).unwrap();
    let theirs = fs::read(theirs_path).unwrap();
    let their_blocks = blocks(theirs_path);
    for seed in 1..=3 {
        let (r, raw, _) = stream(&bytes, &dir.0, seed, false);
        let stats = r.unwrap_or_else(|e| panic!("{}: {e:#}", qcow2.display()));
        let ours = fs::read(&raw).unwrap();
        if let Some(i) = first_diff(&ours, &theirs) {
            panic!(
                "{} (seed {seed}): first difference at byte {i}",
                qcow2.display()
            );
        }
        assert_eq!(stats.virtual_size, theirs.len() as u64);
        let b = blocks(&raw);
        assert!(
            b <= their_blocks + 8,
            "{}: ours uses {b} sectors, qemu-img's {their_blocks}",
            qcow2.display()
        );
        last = stats;
    }
    last
}

fn from_raw(tag: &str, size: usize, extra: &[&str]) {
    if !have_qemu() {
        return;
    }
    let dir = TmpDir::new(tag);
    let raw = write_raw(&dir, size, size as u64 ^ 0x5eed);
    let q = dir.join("img.qcow2");
    let mut args = vec!["convert", "-O", "qcow2"];
    args.extend_from_slice(extra);
    args.extend([raw.to_str().unwrap(), q.to_str().unwrap()]);
    qemu_img(&args);
    let stats = check(&dir, &q);
    // qemu-img writes each L2 table before the clusters it maps: all of them
    // are written (or inflated) while streaming.
    assert_eq!(stats.streamed, stats.data_bytes, "{tag}: {stats:?}");
}

#[test]
fn plain_v3() {
    from_raw("plain", 24 << 20, &[]);
}

#[test]
fn version_2() {
    from_raw("v2", 12 << 20, &["-o", "compat=0.10"]);
}

#[test]
fn cluster_512() {
    from_raw("c512", 6 << 20, &["-o", "cluster_size=512"]);
}

#[test]
fn cluster_2m() {
    from_raw("c2m", 24 << 20, &["-o", "cluster_size=2M"]);
}

#[test]
fn compressed_deflate() {
    from_raw("deflate", 12 << 20, &["-c"]);
}

#[test]
fn compressed_zstd() {
    from_raw("zstd", 12 << 20, &["-c", "-o", "compression_type=zstd"]);
}

#[test]
fn compressed_512_byte_clusters() {
    // The descriptor's offset/size split depends on cluster_bits.
    from_raw("c512z", 2 << 20, &["-c", "-o", "cluster_size=512"]);
}

#[test]
fn extended_l2_partial_subclusters() {
    if !have_qemu() {
        return;
    }
    let dir = TmpDir::new("extl2");
    let q = dir.join("img.qcow2");
    let qs = q.to_str().unwrap();
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=128k",
        qs,
        "20M",
    ]);
    qemu_io(
        &q,
        &[
            "write -P 0x11 0 4k",
            "write -P 0x22 12k 5k",
            "write -P 0x33 130k 1k",
            "write -z 256k 64k",
            "write -P 0x44 1M 256k",
            "write -z 1100k 8k",
            "write -P 0x55 2047k 3k",
            "write -P 0x66 20476k 4k",
        ],
    );
    check(&dir, &q);
    // Compressed clusters with extended L2 entries.
    let raw = write_raw(&dir, 4 << 20, 77);
    let qc = dir.join("c.qcow2");
    qemu_img(&[
        "convert",
        "-c",
        "-O",
        "qcow2",
        "-o",
        "extended_l2=on,cluster_size=64k",
        raw.to_str().unwrap(),
        qc.to_str().unwrap(),
    ]);
    check(&dir, &qc);
}

#[test]
fn zero_clusters() {
    if !have_qemu() {
        return;
    }
    let dir = TmpDir::new("zero");
    let raw = write_raw(&dir, 8 << 20, 3);
    let q = dir.join("img.qcow2");
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    // Zero flags on allocated clusters (kept allocation) and on unallocated ones.
    qemu_io(
        &q,
        &[
            "write -z 0 256k",
            "write -z -u 1M 128k",
            "write -z 7M 1M",
            "write -P 0x9 64k 1k",
        ],
    );
    check(&dir, &q);
}

#[test]
fn last_cluster_and_odd_virtual_size() {
    if !have_qemu() {
        return;
    }
    let dir = TmpDir::new("tail");
    for (opts, size) in [
        ("cluster_size=64k", "10486272"), // 10 MiB + 1.5 KiB
        ("cluster_size=2M", "5243392"),
        ("cluster_size=512", "1049088"),
        ("cluster_size=64k,extended_l2=on", "10486272"),
    ] {
        let q = dir.join("img.qcow2");
        let qs = q.to_str().unwrap();
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, qs, size]);
        let size: u64 = size.parse().unwrap();
        let last = format!("write -P 0xee {} 512", size - 512);
        let near = format!("write -P 0xdd {} 1k", size - 5000);
        qemu_io(&q, &["write -P 1 0 1k", &near, &last]);
        check(&dir, &q);
        // A size that is not a multiple of 512, with data in the last
        // partial sector: qemu-img reads whole sectors only.
        check(&dir, &with_header_size(&q, size - 505));
        // Compressed last cluster, cut at the virtual size.
        let qc = dir.join("c.qcow2");
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            opts,
            qs,
            qc.to_str().unwrap(),
        ]);
        check(&dir, &qc);
        check(&dir, &with_header_size(&qc, size - 505));
    }
}

/// A copy of `q` (beside it, `odd.qcow2`) whose header states `size`:
/// `qemu-img create` rounds sizes up to 512, so only a patched header has
/// another.
fn with_header_size(q: &Path, size: u64) -> PathBuf {
    let mut b = fs::read(q).unwrap();
    b[24..32].copy_from_slice(&size.to_be_bytes());
    let odd = q.with_file_name("odd.qcow2");
    fs::write(&odd, b).unwrap();
    odd
}

// ---- committed fixtures: always run ----

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qcow2")
}

fn sha256(b: &[u8]) -> String {
    util::fmt::hex(&Sha256::digest(b))
}

#[test]
fn fixtures_match_recorded_sha256() {
    let dir = TmpDir::new("fixtures");
    let sums = fs::read_to_string(fixtures().join("raw.sha256")).unwrap();
    let mut n = 0;
    for line in sums.lines().filter(|l| !l.starts_with('#')) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (sum, size, name) = (f[0], f[1].parse::<u64>().unwrap(), f[2]);
        let path = fixtures().join(name);
        // The file converter and its in-memory path.
        let out = dir.join(&format!("{name}.img"));
        let stats = convert_native(&path, &out, true).unwrap();
        assert_eq!(stats.virtual_size, size, "{name}");
        let raw = fs::read(&out).unwrap();
        assert_eq!(sha256(&raw), sum, "{name}");
        assert_eq!(
            sha256(&convert_bytes(&fs::read(&path).unwrap(), 1 << 30).unwrap()),
            sum
        );
        assert_eq!(compare_with_raw(&path, &out).unwrap(), None, "{name}");
        // Without zero detection the content is the same, only denser.
        let dense = dir.join(&format!("{name}.dense"));
        convert_native(&path, &dense, false).unwrap();
        assert_eq!(sha256(&fs::read(&dense).unwrap()), sum, "{name}");
        // The stream converter, with several chunkings.
        let bytes = fs::read(&path).unwrap();
        for seed in 0..8 {
            let (r, raw, _) = stream(&bytes, &dir.0, seed, false);
            let stats = r.unwrap();
            assert_eq!(stats.virtual_size, size, "{name}");
            assert_eq!(sha256(&fs::read(&raw).unwrap()), sum, "{name} seed {seed}");
        }
        n += 1;
    }
    assert_eq!(n, 5);
}

#[test]
fn output_replaced_only_when_complete() {
    let dir = TmpDir::new("replace");
    let out = dir.join("disk-image.img");
    fs::write(&out, b"old good image").unwrap();
    // A failing conversion leaves the old output and no temporary behind.
    let bad = dir.join("bad.qcow2");
    let mut img = fs::read(fixtures().join("plain.qcow2")).unwrap();
    img.truncate(img.len() / 2);
    fs::write(&bad, &img).unwrap();
    assert!(convert_native(&bad, &out, true).is_err());
    assert_eq!(fs::read(&out).unwrap(), b"old good image");
    assert_eq!(fs::read_dir(&dir.0).unwrap().count(), 2);
    convert_native(&fixtures().join("plain.qcow2"), &out, true).unwrap();
    assert_eq!(fs::metadata(&out).unwrap().len(), 1 << 20);
}

// ---- hostile images: errors that name the problem, never panics ----

fn plain() -> Vec<u8> {
    fs::read(fixtures().join("plain.qcow2")).unwrap()
}

/// A change to a valid image's bytes.
type Patch = Box<dyn Fn(&mut Vec<u8>)>;

/// The error text of converting `img` from memory and from a file.
fn refuse(img: &[u8], dir: &TmpDir) -> String {
    let e = convert_bytes(img, 1 << 30).expect_err("must be refused");
    let p = dir.join("hostile.qcow2");
    fs::write(&p, img).unwrap();
    let fe = convert_native(&p, &dir.join("hostile.img"), true).expect_err("must be refused");
    let msg = format!("{fe:#}");
    assert!(
        msg.contains("hostile.qcow2"),
        "error must name the file: {msg}"
    );
    assert!(!dir.join("hostile.img").exists());
    format!("{e:#}")
}

#[test]
fn refuses_unsupported_features() {
    let dir = TmpDir::new("features");
    let cases: Vec<(&str, Patch)> = vec![
        ("encrypted", Box::new(|b| put32(b, 32, 1))),
        ("crypt_method=2", Box::new(|b| put32(b, 32, 2))),
        ("dirty", Box::new(|b| b[79] |= 1)),
        ("corrupt", Box::new(|b| b[79] |= 2)),
        ("external data file", Box::new(|b| b[79] |= 4)),
        ("unknown incompatible", Box::new(|b| b[79] |= 0x20)),
        ("unknown incompatible", Box::new(|b| b[72] |= 0x80)),
        ("compression_type", Box::new(|b| b[104] = 9)),
        ("version 4", Box::new(|b| put32(b, 4, 4))),
        ("cluster_bits", Box::new(|b| put32(b, 20, 22))),
        ("cluster_bits", Box::new(|b| put32(b, 20, 8))),
        ("not a qcow2", Box::new(|b| b[0] = b'X')),
        ("header_length", Box::new(|b| put32(b, 100, 50))),
        (
            "backing file `base-image.qcow2`",
            Box::new(|b| {
                let name = b"base-image.qcow2";
                b[3000..3000 + name.len()].copy_from_slice(name);
                put64(b, 8, 3000);
                put32(b, 16, name.len() as u32);
            }),
        ),
        (
            "backing file (name out of bounds)",
            Box::new(|b| {
                put64(b, 8, u64::MAX - 3);
                put32(b, 16, u32::MAX);
            }),
        ),
    ];
    for (want, patch) in cases {
        let mut img = plain();
        patch(&mut img);
        let msg = refuse(&img, &dir);
        assert!(msg.contains(want), "want `{want}` in: {msg}");
    }
}

#[test]
fn refuses_bad_tables() {
    let dir = TmpDir::new("tables");
    let base = plain();
    let l1 = get64(&base, 40) as usize;
    let l2 = (get64(&base, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let cases: Vec<(&str, Patch)> = vec![
        ("too large", Box::new(|b| put32(b, 36, 0x7fff_ffff))),
        ("too large", Box::new(|b| put64(b, 24, u64::MAX))),
        ("too large", Box::new(|b| put64(b, 24, 1 << 60))),
        ("too small", Box::new(|b| put32(b, 36, 0))),
        ("outside the file", Box::new(|b| put64(b, 40, 1 << 50))),
        ("outside the file", Box::new(|b| put64(b, 40, !0xfff))),
        (
            "unaligned",
            Box::new(move |b| put64(b, l1, (1 << 63) | 0x1200)),
        ),
        ("past the end", Box::new(move |b| put64(b, l1, 1 << 40))),
        (
            "past the end",
            Box::new(move |b| put64(b, l2, (1 << 63) | (1 << 40))),
        ),
        (
            "unaligned",
            Box::new(move |b| put64(b, l2, (1 << 63) | 0x10200)),
        ),
        (
            "past the end",
            Box::new(move |b| put64(b, l2, (1 << 62) | (1 << 50))),
        ),
        // A compressed descriptor whose data is garbage.
        (
            "decompress",
            Box::new(move |b| put64(b, l2, (1 << 62) | 0x200)),
        ),
    ];
    for (want, patch) in cases {
        let mut img = base.clone();
        patch(&mut img);
        let msg = refuse(&img, &dir);
        assert!(msg.contains(want), "want `{want}` in: {msg}");
    }
    // Truncated files: inside the header, inside the L1 table, before the data.
    for cut in [0, 3, 50, 100, l1 + 4, l2 + 8, base.len() - 4096 * 3] {
        let msg = refuse(&base[..cut], &dir);
        assert!(!msg.is_empty());
    }
}

#[test]
fn extended_l2_invalid_bitmap() {
    let dir = TmpDir::new("bitmap");
    let base = fs::read(fixtures().join("extl2.qcow2")).unwrap();
    let l1 = get64(&base, 40) as usize;
    let l2 = (get64(&base, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let mut img = base.clone();
    put64(&mut img, l2 + 8, get64(&base, l2 + 8) | (1 << 32) | 1); // alloc and zero
    assert!(refuse(&img, &dir).contains("subcluster bitmap"));
    let mut img = base.clone();
    put64(&mut img, l2 + 16, 0); // no host cluster but allocated subclusters
    put64(&mut img, l2 + 24, 1);
    assert!(refuse(&img, &dir).contains("subcluster bitmap"));
}

/// Cheap in-test fuzzing: byte mutations of every fixture must give a result
/// or an error, never a panic or an allocation from an unchecked value.
#[test]
fn mutations_never_panic() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for name in ["plain", "v2", "zstd", "deflate", "extl2"] {
        let base = fs::read(fixtures().join(format!("{name}.qcow2"))).unwrap();
        // Every header byte, set to a few telling values.
        for at in 0..112.min(base.len()) {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut img = base.clone();
                img[at] = v;
                let _ = convert_bytes(&img, 64 << 20);
            }
        }
        // Random flips anywhere (tables, compressed streams).
        for _ in 0..300 {
            let mut img = base.clone();
            for _ in 0..1 + rnd() % 4 {
                let at = (rnd() % img.len() as u64) as usize;
                img[at] ^= 1 << (rnd() % 8);
            }
            let _ = convert_bytes(&img, 64 << 20);
        }
    }
}

#[test]
fn compare_with_raw_finds_first_difference() {
    let dir = TmpDir::new("compare");
    let q = fixtures().join("plain.qcow2");
    let raw = dir.join("plain.img");
    convert_native(&q, &raw, true).unwrap();
    assert_eq!(compare_with_raw(&q, &raw).unwrap(), None);
    let good = fs::read(&raw).unwrap();
    // One flipped byte: in data, in a zero cluster, in an unallocated range.
    for at in [5usize, 4096 + 17, 300 * 1024 + 1, 700_000, (1 << 20) - 1] {
        let mut b = good.clone();
        b[at] ^= 0x40;
        fs::write(&raw, &b).unwrap();
        assert_eq!(compare_with_raw(&q, &raw).unwrap(), Some(at as u64));
    }
    fs::write(&raw, &good[..good.len() - 10]).unwrap();
    assert_eq!(
        compare_with_raw(&q, &raw).unwrap(),
        Some(good.len() as u64 - 10)
    );
    let mut longer = good.clone();
    longer.push(0);
    fs::write(&raw, &longer).unwrap();
    assert_eq!(compare_with_raw(&q, &raw).unwrap(), Some(good.len() as u64));
    let img = Image::open(&q).unwrap();
    assert_eq!(img.virtual_size(), 1 << 20);
}

// ---- rearranged and hostile images, built by patching real ones ----

const COPIED: u64 = 1 << 63;

const MASK: u64 = 0x00ff_ffff_ffff_fe00;

fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// An image's layout: cluster size, L1 offset, the L2 table offsets.
struct Layout {
    cs: usize,
    l1: usize,
    l2: Vec<usize>,
}

fn layout(b: &[u8]) -> Layout {
    let cs = 1usize << u32::from_be_bytes(b[20..24].try_into().unwrap());
    let l1 = get64(b, 40) as usize;
    let n = u32::from_be_bytes(b[36..40].try_into().unwrap()) as usize;
    let l2 = (0..n)
        .map(|i| (get64(b, l1 + 8 * i) & MASK) as usize)
        .collect();
    Layout { cs, l1, l2 }
}

/// Data clusters the table at `l2` maps (standard entries).
fn data_hosts(b: &[u8], lay: &Layout, l2: usize) -> Vec<usize> {
    (0..lay.cs / 8)
        .map(|i| get64(b, l2 + 8 * i))
        .filter(|e| e & (1 << 62) == 0)
        .map(|e| (e & MASK) as usize)
        .filter(|&h| h != 0)
        .collect()
}

/// Pads to a cluster boundary and appends `cluster`; returns its offset.
fn append_cluster(b: &mut Vec<u8>, cs: usize, cluster: &[u8]) -> usize {
    b.resize(b.len().div_ceil(cs) * cs, 0);
    let at = b.len();
    b.extend_from_slice(cluster);
    at
}

/// A qemu image of `size` bytes of test data with `opts`.
fn qemu_image(dir: &TmpDir, size: usize, seed: u64, opts: &str) -> Vec<u8> {
    let raw = write_raw(dir, size, seed);
    let q = dir.join("base.qcow2");
    qemu_img(&[
        "convert",
        "-O",
        "qcow2",
        "-o",
        opts,
        raw.to_str().unwrap(),
        q.to_str().unwrap(),
    ]);
    fs::read(&q).unwrap()
}

/// Stream output must equal the file-based converter's (and qemu-img's where
/// it accepts the image), or both must fail; the raw file never grows past
/// the virtual size. Returns our stats or error.
fn compare(dir: &TmpDir, img: &[u8], what: &str, with_qemu: bool) -> Result<StreamStats, String> {
    let q = dir.join("case.qcow2");
    fs::write(&q, img).unwrap();
    let reference = convert_bytes(img, 1 << 30);
    let vsize = Image::from_reader(img, "x").map(|i| i.virtual_size()).ok();
    let mut ours = Err(String::new());
    for seed in 0..3 {
        let (r, raw, _) = stream(img, &dir.0, seed, false);
        let len = fs::metadata(&raw).unwrap().len();
        assert!(
            len == 0 || Some(len) == vsize,
            "{what}: raw file is {len} bytes, virtual size {vsize:?}"
        );
        match (&r, &reference) {
            (Ok(stats), Ok(want)) => {
                let got = fs::read(&raw).unwrap();
                if let Some(i) = first_diff(&got, want) {
                    panic!("{what} (seed {seed}): differs from convert_bytes at {i}");
                }
                ours = Ok(*stats);
            }
            (Err(e), Err(_)) => {
                let msg = format!("{e:#}");
                assert!(msg.contains("streamed.qcow2"), "{what}: unnamed: {msg}");
                ours = Err(msg);
            }
            (Ok(_), Err(e)) => panic!("{what}: stream succeeded, convert_bytes failed: {e:#}"),
            (Err(e), Ok(_)) => panic!("{what}: stream failed, convert_bytes succeeded: {e:#}"),
        }
    }
    if with_qemu && ours.is_ok() {
        if let Some(theirs) = qemu_raw(&q, &dir.join("q.img")) {
            let want = reference.as_ref().unwrap();
            assert!(
                first_diff(want, &theirs).is_none(),
                "{what}: qemu-img differs"
            );
        }
    }
    ours
}

#[test]
fn l2_tables_after_their_data() {
    if !have_qemu() {
        return;
    }
    let dir = TmpDir::new("late");
    // One L2 table (64 KiB clusters): moved behind all the data.
    let base = qemu_image(&dir, 24 << 20, 11, "cluster_size=64k");
    let lay = layout(&base);
    let mut img = base.clone();
    let t = base[lay.l2[0]..lay.l2[0] + lay.cs].to_vec();
    let at = append_cluster(&mut img, lay.cs, &t);
    put64(&mut img, lay.l1, COPIED | at as u64);
    let s = compare(&dir, &img, "L2 at the end", true).unwrap();
    assert_eq!(s.streamed, 0, "{s:?}");

    // The L1 table behind everything: nothing is known during the stream.
    let mut img = base.clone();
    let l1 = base[lay.l1..lay.l1 + lay.cs].to_vec();
    let at = append_cluster(&mut img, lay.cs, &l1);
    put64(&mut img, 40, at as u64);
    let s = compare(&dir, &img, "L1 at the end", true).unwrap();
    assert_eq!(s.streamed, 0, "{s:?}");

    // Many tables (4 KiB clusters); each swapped with a data cluster further
    // on, so part of its data comes before it and part after.
    let base = qemu_image(&dir, 12 << 20, 12, "cluster_size=4k");
    let lay = layout(&base);
    let mut img = base.clone();
    let mut swapped = 0;
    for (i, &l2) in lay.l2.iter().enumerate() {
        if l2 == 0 {
            continue;
        }
        let hosts = data_hosts(&base, &lay, l2);
        let Some(&d) = hosts.get(hosts.len() / 2).filter(|&&d| d > l2) else {
            continue;
        };
        // Data cluster d moves to the table's place and the table to d.
        let (tbl, dat) = (img[l2..l2 + lay.cs].to_vec(), img[d..d + lay.cs].to_vec());
        img[l2..l2 + lay.cs].copy_from_slice(&dat);
        img[d..d + lay.cs].copy_from_slice(&tbl);
        put64(&mut img, lay.l1 + 8 * i, COPIED | d as u64);
        for e in 0..lay.cs / 8 {
            if get64(&img, d + 8 * e) & MASK == d as u64 {
                put64(&mut img, d + 8 * e, COPIED | l2 as u64);
            }
        }
        swapped += 1;
    }
    assert!(swapped >= 3, "{swapped}");
    let s = compare(&dir, &img, "tables among data", true).unwrap();
    assert!(s.streamed > 0 && s.streamed < s.data_bytes, "{s:?}");
}

#[test]
fn hostile_mappings() {
    if !have_qemu() {
        return;
    }
    let dir = TmpDir::new("hostile");
    let base = qemu_image(&dir, 8 << 20, 13, "cluster_size=4k");
    let lay = layout(&base);
    let tables: Vec<usize> = lay.l2.iter().copied().filter(|&t| t != 0).collect();
    assert!(tables.len() >= 3);
    let (t0, t1, tl) = (tables[0], tables[1], *tables.last().unwrap());
    let entry = |img: &[u8], t: usize, i: usize| get64(img, t + 8 * i);
    let first_data = (0..lay.cs / 8)
        .find(|&i| entry(&base, t0, i) & MASK != 0)
        .unwrap();
    let later_data = (0..lay.cs / 8)
        .rev()
        .find(|&i| entry(&base, t1, i) & MASK != 0)
        .unwrap();

    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Patch)> = vec![
        (
            "two guests, one host cluster",
            Box::new(move |b| {
                let e = entry(b, t1, later_data);
                put64(b, t0 + 8 * (first_data + 1), e);
                put64(b, t0 + 8 * first_data, e);
            }),
        ),
        (
            "data cluster that is a later L2 table",
            Box::new(move |b| put64(b, t0 + 8 * first_data, COPIED | tl as u64)),
        ),
        (
            "data cluster that is its own L2 table",
            Box::new(move |b| put64(b, t1 + 8 * later_data, COPIED | t1 as u64)),
        ),
        (
            "data cluster that is the L1 table",
            Box::new(move |b| put64(b, t1 + 8 * 3, COPIED | lay.l1 as u64)),
        ),
        (
            "data cluster in the refcount table",
            Box::new(move |b| {
                let rt = get64(b, 48);
                put64(b, t1 + 8 * 4, COPIED | rt);
            }),
        ),
        (
            "L2 table that is the L1 table",
            Box::new(move |b| put64(b, lay.l1 + 8, COPIED | lay.l1 as u64)),
        ),
        (
            "two L1 entries, one L2 table",
            Box::new(move |b| put64(b, lay.l1 + 16, COPIED | t0 as u64)),
        ),
        (
            "L2 table that is a data cluster seen earlier",
            Box::new(move |b| {
                let d = (entry(b, t0, first_data) & MASK) as usize;
                let t = b[tl..tl + 4096].to_vec();
                b[d..d + 4096].copy_from_slice(&t);
                put64(b, lay.l1 + 8 * (lay.l2.len() - 1), COPIED | d as u64);
            }),
        ),
    ];
    for (what, patch) in cases {
        let mut img = base.clone();
        patch(&mut img);
        if let Err(e) = compare(&dir, &img, what, true) {
            panic!("{what}: {e}");
        }
    }

    // Refused, as the file-based converter refuses them.
    let bad: Vec<(&str, Patch)> = vec![
        (
            "past the end",
            Box::new(move |b| put64(b, t0 + 8 * first_data, COPIED | (1 << 40))),
        ),
        (
            "past the end",
            Box::new(move |b| put64(b, lay.l1, COPIED | (1 << 40))),
        ),
        (
            "unaligned",
            Box::new(move |b| put64(b, t1 + 8 * later_data, COPIED | 0x10200)),
        ),
        (
            "unaligned",
            Box::new(move |b| put64(b, lay.l1 + 8, COPIED | 0x1200)),
        ),
        (
            "decompress",
            Box::new(move |b| put64(b, t1, (1 << 62) | 0x200)),
        ),
    ];
    for (want, patch) in bad {
        let mut img = base.clone();
        patch(&mut img);
        let msg = compare(&dir, &img, want, false).expect_err("must be refused");
        assert!(msg.contains(want), "want `{want}` in: {msg}");
    }
}

#[test]
fn corrupt_compressed_cluster_after_its_table() {
    if !have_qemu() {
        return;
    }
    let dir = TmpDir::new("badz");
    for ctype in ["zlib", "zstd"] {
        let raw = write_raw(&dir, 4 << 20, 14);
        let q = dir.join("c.qcow2");
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &format!("cluster_size=64k,compression_type={ctype}"),
            raw.to_str().unwrap(),
            q.to_str().unwrap(),
        ]);
        let good = fs::read(&q).unwrap();
        let s = compare(&dir, &good, ctype, true).unwrap();
        assert_eq!(s.streamed, s.data_bytes, "{ctype}: {s:?}");
        let lay = layout(&good);
        let t = lay.l2[0];
        let host = (0..lay.cs / 8)
            .map(|i| get64(&good, t + 8 * i))
            .filter(|e| e & (1 << 62) != 0)
            // 64 KiB clusters: the offset is the low 62 - (16 - 8) bits.
            .map(|e| (e & ((1u64 << 54) - 1)) as usize)
            .find(|&h| h > t + lay.cs)
            .expect("a compressed cluster after the table");
        let mut bad = good.clone();
        bad[host..host + 64].fill(0xa5);
        let msg = compare(&dir, &bad, ctype, false).expect_err("must be refused");
        assert!(msg.contains("decompress"), "{msg}");
    }
}

/// More L2 tables than the stream tracks (512-byte clusters, one data
/// cluster per table, built by hand): the first ones are written in the
/// stream, the rest by `finish`, and the result is the guest content.
#[test]
fn more_tables_than_the_stream_tracks() {
    let dir = TmpDir::new("many");
    let tables: u64 = 140_000;
    let cs = 512u64;
    let l1_off = cs;
    let first = (l1_off + tables * 8).div_ceil(cs) * cs;
    let len = first + tables * 2 * cs;
    let mut img = vec![0u8; len as usize];
    img[..4].copy_from_slice(b"QFI\xfb");
    put32(&mut img, 4, 3);
    put32(&mut img, 20, 9);
    put64(&mut img, 24, tables * 64 * cs);
    put32(&mut img, 36, tables as u32);
    put64(&mut img, 40, l1_off);
    put32(&mut img, 96, 4);
    put32(&mut img, 100, 104);
    for i in 0..tables {
        let l2 = first + i * 2 * cs;
        put64(&mut img, (l1_off + i * 8) as usize, COPIED | l2);
        put64(&mut img, l2 as usize, COPIED | (l2 + cs));
        let d = (l2 + cs) as usize;
        img[d..d + 8].copy_from_slice(&(i + 1).to_le_bytes());
    }
    let (r, raw, _) = stream(&img, &dir.0, 9, false);
    let s = r.unwrap();
    // Clusters cut by a chunk boundary count only their non-zero part.
    assert!(
        s.data_bytes <= tables * cs && s.data_bytes > tables * 8,
        "{s:?}"
    );
    assert!(s.streamed > 0 && s.streamed < s.data_bytes, "{s:?}");
    assert_eq!(fs::metadata(&raw).unwrap().len(), tables * 64 * cs);
    // Each table's cluster at its guest offset, and nothing else allocated
    // (one 4 KiB block per cluster).
    let f = File::open(&raw).unwrap();
    let mut got = [0u8; 512];
    for i in 0..tables {
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut got, i * 64 * cs).unwrap();
        let d = (first + i * 2 * cs + cs) as usize;
        assert!(got[..] == img[d..d + 512], "table {i}");
    }
    assert!(blocks(&raw) <= tables * 8, "{} sectors", blocks(&raw));
}

#[test]
fn header_refusals_match_and_write_nothing() {
    let dir = TmpDir::new("refuse");
    let plain = fs::read(fixtures().join("plain.qcow2")).unwrap();
    type Patch = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Patch)> = vec![
        ("encrypted", Box::new(|b| put32(b, 32, 1))),
        ("dirty", Box::new(|b| b[79] |= 1)),
        ("corrupt", Box::new(|b| b[79] |= 2)),
        ("external data file", Box::new(|b| b[79] |= 4)),
        ("unknown incompatible", Box::new(|b| b[79] |= 0x20)),
        ("compression_type", Box::new(|b| b[104] = 9)),
        ("version 4", Box::new(|b| put32(b, 4, 4))),
        ("cluster_bits", Box::new(|b| put32(b, 20, 22))),
        ("not a qcow2", Box::new(|b| b[0] = b'X')),
        ("too large", Box::new(|b| put64(b, 24, 1 << 60))),
        ("outside the file", Box::new(|b| put64(b, 40, 1 << 50))),
        (
            "backing file `base-image.qcow2`",
            Box::new(|b| {
                let name = b"base-image.qcow2";
                b[3000..3000 + name.len()].copy_from_slice(name);
                put64(b, 8, 3000);
                put32(b, 16, name.len() as u32);
            }),
        ),
    ];
    for (want, patch) in cases {
        let mut img = plain.clone();
        patch(&mut img);
        let (r, raw, _) = stream(&img, &dir.0, 5, false);
        let msg = format!("{:#}", r.expect_err(want));
        let copy = dir.join("streamed.qcow2").display().to_string();
        let mem = format!("{:#}", convert_bytes(&img, 1 << 30).unwrap_err());
        assert_eq!(msg.replace(&copy, "<memory>"), mem, "{want}");
        assert!(msg.contains(want), "want `{want}` in: {msg}");
        assert_eq!(fs::metadata(&raw).unwrap().len(), 0, "{want}: raw written");
    }
    // Truncated files: refused (or padded) as the file-based converter does.
    for cut in [0, 50, 4096, plain.len() - 4096 * 3, plain.len() - 1] {
        let _ = compare(&dir, &plain[..cut], "truncated", false);
    }
    // A member that ends early, and one with too many bytes.

    let raw = create_rw(&dir.join("x.img"));
    let mut sc = StreamConvert::new(plain.len() as u64 - 10, "x.qcow2", raw, "x.img", true);
    let e = sc.feed(&plain).unwrap_err();
    assert!(format!("{e:#}").contains("x.qcow2"));
    let copy = create_rw(&dir.join("y.qcow2"));
    let raw = create_rw(&dir.join("y.img"));
    let mut sc = StreamConvert::new(plain.len() as u64, "y.qcow2", raw, "y.img", true);
    sc.feed(&plain[..1000]).unwrap();
    let e = sc.finish(&copy).unwrap_err();
    assert!(format!("{e:#}").contains("1000 of"), "{e:#}");
}

/// Random byte flips in every fixture: the stream converter agrees with the
/// file-based one (same bytes, or both refuse), never panics, never grows
/// the raw file past the virtual size.
#[test]
fn mutations_agree_with_convert_bytes() {
    let dir = TmpDir::new("mut");
    let mut rng = Rng(0x1234_5678_9abc_def1);
    for name in ["plain", "v2", "zstd", "deflate", "extl2"] {
        let base = fs::read(fixtures().join(format!("{name}.qcow2"))).unwrap();
        for _ in 0..60 {
            let mut img = base.clone();
            for _ in 0..1 + rng.next() % 4 {
                let at = (rng.next() % img.len() as u64) as usize;
                img[at] ^= 1 << (rng.next() % 8);
            }
            let vsize = Image::from_reader(&img[..], "x").map(|i| i.virtual_size());
            if vsize.is_ok_and(|v| v > 64 << 20) {
                continue;
            }
            let _ = compare(&dir, &img, name, false);
        }
    }
}

// ---- reflinks on an XFS loop mount ----

/// An XFS file system with reflinks on a loop device, unmounted on drop.
struct XfsMount {
    dir: PathBuf,
    image: PathBuf,
}

impl XfsMount {
    fn new(tag: &str) -> Result<XfsMount, String> {
        let base = std::env::temp_dir().join(format!("xtask-xfs-{tag}-{}", std::process::id()));
        let image = base.with_extension("img");
        let _ = fs::create_dir_all(&base);
        let sh = |cmd: &str, args: &[&str]| -> Result<(), String> {
            match Command::new(cmd).args(args).output() {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(format!(
                    "{cmd} {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                )),
                Err(e) => Err(format!("{cmd}: {e}")),
            }
        };
        let img = image.to_str().unwrap();
        let r = sh("truncate", &["-s", "1G", img])
            .and_then(|()| sh("mkfs.xfs", &["-q", "-f", "-m", "reflink=1", img]))
            .and_then(|()| sh("mount", &["-o", "loop", img, base.to_str().unwrap()]));
        if let Err(e) = r {
            let _ = fs::remove_dir(&base);
            let _ = fs::remove_file(&image);
            return Err(e);
        }
        Ok(XfsMount { dir: base, image })
    }
}

impl Drop for XfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
        let _ = fs::remove_dir(&self.dir);
        let _ = fs::remove_file(&self.image);
    }
}

/// Number of shared extents `filefrag -v` reports, if it runs.
fn shared_extents(p: &Path) -> Option<usize> {
    let o = Command::new("filefrag").arg("-v").arg(p).output().ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).matches("shared").count())
}

#[test]
fn reflinks_on_xfs() {
    if !have_qemu() {
        return;
    }
    let mnt = match XfsMount::new("reflink") {
        Ok(m) => m,
        Err(why) => {
            eprintln!("skipped: cannot mount an XFS loop file system ({why})");
            return;
        }
    };
    let dir = TmpDir::under(&mnt.dir, "r");
    for (tag, opts, compress) in [
        ("64k", "cluster_size=64k", false),
        ("512", "cluster_size=512", false),
        ("extl2", "cluster_size=64k,extended_l2=on", false),
        ("deflate", "cluster_size=64k", true),
    ] {
        let raw_src = write_raw(&dir, 16 << 20, 21);
        let q = dir.join("img.qcow2");
        let mut args = vec!["convert", "-O", "qcow2", "-o", opts];
        if compress {
            args.push("-c");
        }
        args.extend([raw_src.to_str().unwrap(), q.to_str().unwrap()]);
        qemu_img(&args);
        let bytes = fs::read(&q).unwrap();
        let theirs = qemu_raw(&q, &dir.join("q.img")).unwrap();
        for reflink in [false, true] {
            let (r, raw, cloning) = stream(&bytes, &dir.0, 7, reflink);
            let stats = r.unwrap();
            assert_eq!(cloning, reflink, "{tag}: probe");
            assert!(
                first_diff(&fs::read(&raw).unwrap(), &theirs).is_none(),
                "{tag} reflink={reflink}"
            );
            if reflink && tag != "deflate" && tag != "512" {
                assert_eq!(stats.streamed, 0);
                assert!(stats.cloned * 10 > stats.data_bytes * 9, "{tag}: {stats:?}");
                if let Some(n) = shared_extents(&raw) {
                    assert!(n > 0, "{tag}: no shared extents");
                }
            }
            if tag == "deflate" {
                // Only the clusters qemu-img left uncompressed (noise) are shared.
                assert!(stats.cloned < stats.data_bytes, "{stats:?}");
            }
        }
        // The standalone converter shares too.
        let out = dir.join("native.img");
        convert_native(&q, &out, true).unwrap();
        assert!(first_diff(&fs::read(&out).unwrap(), &theirs).is_none());
        if tag == "64k" {
            if let Some(n) = shared_extents(&out) {
                assert!(n > 0, "convert_native did not share");
            }
        }
    }
}

#[test]
fn no_reflink_on_tmpfs_or_ext4() {
    let dir = TmpDir::new("noref");
    let bytes = fs::read(fixtures().join("plain.qcow2")).unwrap();
    let (r, _, cloning) = stream(&bytes, &dir.0, 3, true);
    let stats = r.unwrap();
    // /tmp may be on a reflink file system; then the data is shared.
    assert_eq!(stats.cloned > 0, cloning);
}

/// `qemu-img convert -O raw`: the raw image's bytes, or qemu-img's error.
fn qemu_raw_or_error(qcow2: &Path, out: &Path) -> Result<Vec<u8>, String> {
    let o = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(qcow2)
        .arg(out)
        .output()
        .unwrap();
    if !o.status.success() {
        return Err(String::from_utf8_lossy(&o.stderr).into_owned());
    }
    let b = fs::read(out).unwrap();
    fs::remove_file(out).unwrap();
    Ok(b)
}

/// Serves `qcow2` packed like upstream as release v1.
fn serve(qcow2: &Path, work: &Path) -> Server {
    fs::create_dir_all(work).unwrap();
    let d = pack_disk(qcow2, "focal", "amd64", 1 << 20, Compression::Gzip, work).unwrap();
    Server::start(
        REPO,
        vec![ReleaseSpec::new(
            "v1",
            upstream_assets("focal", "amd64", &d),
        )],
    )
}

/// A 4 MiB image whose last 64 KiB hold data, its header patched to state
/// 505 bytes less: `qemu-img create` rounds sizes up to 512, so only a
/// patched header has such a size, and the last partial sector holds data.
fn odd_sized_image(dir: &Path) -> PathBuf {
    let q = dir.join("odd.qcow2");
    make_qcow2(&q, 4, 1).unwrap();
    let mut b = fs::read(&q).unwrap();
    put64(&mut b, 24, (4 << 20) - 505);
    fs::write(&q, b).unwrap();
    q
}

/// Every file under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        if e.file_type().unwrap().is_dir() {
            v.extend(files_under(&e.path()));
        } else {
            v.push(e.path().display().to_string());
        }
    }
    v
}

/// A version-2 image with data, one of whose L2 entries has the zero flag
/// set: the allocated one at guest 0 (`alloc`) or the unallocated one after
/// it.
fn v2_with_zero_flag(dir: &Path, alloc: bool) -> PathBuf {
    let q = dir.join(format!("v2-zero-{alloc}.qcow2"));
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o", "compat=0.10"])
        .arg(&q)
        .arg("4M")
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("qemu-io")
        .args([
            "-c",
            "write -q -P 0x11 0 64k",
            "-c",
            "write -q -P 0x22 128k 64k",
        ])
        .arg(&q)
        .status()
        .unwrap();
    assert!(st.success());
    let mut b = fs::read(&q).unwrap();
    let l1 = get64(&b, 40) as usize;
    let l2 = (get64(&b, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    let at = l2 + if alloc { 0 } else { 8 };
    let e = get64(&b, at);
    put64(&mut b, at, e | 1);
    fs::write(&q, b).unwrap();
    q
}

#[test]
fn an_odd_sized_image_gives_qemu_imgs_raw_image_in_every_converter() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("r3-odd-fx");
    let q = odd_sized_image(fx.path());
    let theirs = qemu_raw_or_error(&q, &fx.path().join("theirs.img")).unwrap();
    assert_eq!(
        theirs.len(),
        (4 << 20) - 512,
        "qemu-img reads whole sectors"
    );

    // The full run: the one-pass converter, then verify (size) and --deep.
    let server = serve(&q, &fx.path().join("pack"));
    let out = TempDir::new("r3-odd");
    let api = server.api_url();
    resources(None, out.path(), &api, &["--version", "v1"], &[]).ok();
    let raw = fs::read(out.path().join("disk-image.img")).unwrap();
    assert_eq!(raw.len(), theirs.len(), "the full run's raw image");
    assert!(
        raw == theirs,
        "the full run's raw image differs from qemu-img's"
    );
    resources(Some("verify"), out.path(), &api, &["--deep"], &[]).ok();

    // `convert`, built in and with qemu-img, give the same bytes.
    for (name, extra) in [("ours.img", None), ("qemu.img", Some("--with-qemu-img"))] {
        let dest = fx.path().join(name);
        let mut args = vec![q.to_str().unwrap(), dest.to_str().unwrap()];
        args.extend(extra);
        resources(Some("convert"), out.path(), &api, &args, &[]).ok();
        assert!(fs::read(&dest).unwrap() == theirs, "convert {extra:?}");
    }
}

#[test]
fn a_version_2_image_with_a_zero_flag_is_refused_and_nothing_is_installed() {
    if !have("qemu-img") || !have("qemu-io") {
        eprintln!("skipped: qemu-img or qemu-io is not installed");
        return;
    }
    let fx = TempDir::new("r3-v2z-fx");
    for alloc in [true, false] {
        let q = v2_with_zero_flag(fx.path(), alloc);
        // qemu-img refuses it (its `check` finds nothing wrong).
        let err = qemu_raw_or_error(&q, &fx.path().join("q.img")).unwrap_err();
        assert!(
            err.contains("Zero cluster entry found in pre-v3 image"),
            "{err}"
        );

        // `convert` refuses it, and leaves no output.
        let out = TempDir::new("r3-v2z");
        let dest = fx.path().join("ours.img");
        let run = resources(
            Some("convert"),
            out.path(),
            "http://127.0.0.1:9",
            &[q.to_str().unwrap(), dest.to_str().unwrap()],
            &[],
        );
        run.failed();
        assert!(run.stderr.contains("pre-v3"), "{}", run.stderr);
        assert!(run.stderr.contains(q.to_str().unwrap()), "{}", run.stderr);
        assert!(!dest.exists());

        // The full run (the one-pass converter): refused, fetched once,
        // nothing installed.
        let server = serve(&q, &fx.path().join(format!("pack-{alloc}")));
        let run = resources(None, out.path(), &server.api_url(), &[], &[]);
        run.failed();
        assert!(run.stderr.contains("pre-v3"), "{}", run.stderr);
        assert!(!run.stderr.contains("fetching again"), "{}", run.stderr);
        let mut parts: Vec<String> = server
            .requests()
            .into_iter()
            .filter(|r| r.host == "assets" && r.path.contains(".tar.gz."))
            .map(|r| r.path)
            .collect();
        parts.sort();
        let mut once = parts.clone();
        once.dedup();
        assert_eq!(parts, once, "a part was fetched twice");
        for name in ["disk-image.qcow2", "disk-image.img", "manifest.json"] {
            assert!(!out.path().join(name).exists(), "{name} was installed");
        }
        let left = files_under(out.path());
        assert!(
            !left.iter().any(|p| p.contains(".img")),
            "a raw image was left: {left:?}"
        );
    }
}
