//! The native qcow2 → raw converter against `qemu-img convert -O raw`: a
//! matrix of images made with qemu-img at test time (skipped with a reason
//! when qemu-img is absent), committed fixtures with known raw sha256 (always
//! run), hostile headers and tables built by patching a valid image, and
//! `compare_with_raw`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use qcow2::{compare_with_raw, Image};
use qcow2::{convert_bytes, convert_native};
use sha2::{Digest, Sha256};

/// A unique directory under the system temp dir, removed on drop.
struct TmpDir(PathBuf);

impl TmpDir {
    fn new(tag: &str) -> TmpDir {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("xtask-convert-{tag}-{}-{n}", std::process::id()));
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

fn have_qemu() -> bool {
    let ok = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let have = ok("qemu-img") && ok("qemu-io");
    if !have {
        eprintln!("skipped: qemu-img/qemu-io not installed (apt-get install qemu-utils)");
    }
    have
}

fn run(tool: &str, args: &[&str]) {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // qemu-io reports some failures on stdout with a zero exit status.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        !stdout.contains("error") && !stdout.contains("failed"),
        "{tool} {args:?}: {stdout}"
    );
}

fn qemu_img(args: &[&str]) {
    run("qemu-img", args)
}

/// `qemu-io -c CMD...` on `img`.
fn qemu_io(img: &Path, cmds: &[&str]) {
    let mut args = Vec::new();
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(img.to_str().unwrap());
    run("qemu-io", &args)
}

/// Deterministic test data: random-looking runs, repeated bytes, and zero
/// blocks inside otherwise written regions; `size` bytes.
fn pattern(size: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; size];
    let mut x = seed | 1;
    let mut rnd = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut pos = 0;
    while pos < size {
        let len = ((rnd() % 40 + 1) * 1024) as usize;
        let end = (pos + len).min(size);
        match rnd() % 4 {
            0 => {}                                                     // zeros
            1 => v[pos..end].fill((rnd() % 255 + 1) as u8),             // compressible
            _ => v[pos..end].iter_mut().for_each(|b| *b = rnd() as u8), // noise
        }
        pos = end + (rnd() % 3) as usize * 100 * 1024; // gaps of zeros
    }
    v
}

fn write_raw(dir: &TmpDir, size: usize, seed: u64) -> PathBuf {
    let p = dir.join("src.raw");
    fs::write(&p, pattern(size, seed)).unwrap();
    p
}

/// Converts with both tools; contents must be equal and ours no less sparse
/// (one 4 KiB block of slack).
fn check(dir: &TmpDir, qcow2: &Path) {
    let ours = dir.join("ours.img");
    let theirs = dir.join("theirs.img");
    let stats = convert_native(qcow2, &ours, true).unwrap();
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        qcow2.to_str().unwrap(),
        theirs.to_str().unwrap(),
    ]);
    let (a, b) = (fs::read(&ours).unwrap(), fs::read(&theirs).unwrap());
    assert_eq!(a.len(), b.len(), "{}: size", qcow2.display());
    assert_eq!(stats.virtual_size, a.len() as u64);
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("{}: first difference at byte {i}", qcow2.display());
    }
    let (ba, bb) = (
        fs::metadata(&ours).unwrap().blocks(),
        fs::metadata(&theirs).unwrap().blocks(),
    );
    assert!(
        ba <= bb + 8,
        "{}: ours uses {ba} sectors, qemu-img's {bb}",
        qcow2.display()
    );
    assert_eq!(compare_with_raw(qcow2, &theirs).unwrap(), None);
    // The in-memory path must agree with the file path.
    let mem = convert_bytes(&fs::read(qcow2).unwrap(), 1 << 30).unwrap();
    assert!(
        mem == b,
        "{}: in-memory conversion differs",
        qcow2.display()
    );
    let _ = fs::remove_file(&ours);
    let _ = fs::remove_file(&theirs);
}

/// raw → qcow2 with `opts`, then check.
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
    check(&dir, &q);
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

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

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
