//! Tests of the packing core (`mgzip`, `par_pack`) and the parallel
//! decoders (`par_decode`): real gzip/pigz/python/xz/zstd CLIs read what we
//! write; we read what gzp, Python's mgzip and bgzip write (fixtures); and
//! hand-built streams with lying sizes, corruption, truncation and failing
//! readers must decode exactly as the serial reference does, or fail with a
//! clear error, never panic or hang; members that inflate to far more than a
//! piece keep the decoder's peak memory bounded (measured in a child run).
//! Tests needing a CLI that is missing say so and skip that part.

use crate::common::*;
use archive::pack::{self as par_pack, GzipOptions, XzOptions, ZstdOptions};
use archive::unpack::XzMtDecoder;
use mgzip::{member_header, DecodeStats, ParallelGzDecoder, MAX_PARALLEL_MEMBER, PIECE};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use std::{fs, io};
use testkit::TempDir;

// ---------------------------------------------------------------------------
// helpers

/// Deterministic data that compresses like a disk image: text-like runs,
/// zeros and noise.
fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        let kind = next() % 4;
        let run = 512 + (next() % 8192) as usize;
        match kind {
            0 => out.extend((0..run).map(|_| (next() >> 24) as u8)),
            1 => out.extend(std::iter::repeat_n(0u8, run)),
            _ => {
                let word = format!("lib{}.so.{} ", next() % 97, next() % 13);
                for _ in 0..run / word.len() {
                    out.extend_from_slice(word.as_bytes());
                }
            }
        }
    }
    out.truncate(len);
    out
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mgzip-test-{}-{}-{name}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
    fn file(&self, name: &str, data: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        fs::write(&p, data).unwrap();
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs `cmd args… file` and returns its stdout; panics if it fails.
fn run_on(cmd: &str, args: &[&str], file: &Path) -> Vec<u8> {
    let out = Command::new(cmd)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn python_gunzip(file: &Path) -> Vec<u8> {
    run_on(
        "python3",
        &[
            "-c",
            "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(open(sys.argv[1],'rb').read()))",
        ],
        file,
    )
}

fn ours(data: &[u8], threads: usize) -> (io::Result<Vec<u8>>, DecodeStats) {
    let mut d = ParallelGzDecoder::with_threads(data, threads);
    let mut out = Vec::new();
    let r = d.read_to_end(&mut out).map(|_| out);
    (r, d.stats())
}

fn flate2(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(data)
        .read_to_end(&mut out)
        .map(|_| out)
}

fn compress(data: &[u8], block: usize, threads: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let opts = GzipOptions {
        block_size: block,
        threads,
        ..Default::default()
    };
    par_pack::compress_gzip(data, &mut out, &opts).unwrap();
    out
}

/// Raw deflate of `data`.
fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A gzip member built by hand: `extra` is the FEXTRA content (None: no
/// FEXTRA), `name` an FNAME; `claim(header_len, deflate_len)` gives the
/// bytes of the extra field to patch in once sizes are known.
struct Member<'a> {
    extra: Option<Vec<u8>>,
    name: Option<&'a str>,
}

fn member(data: &[u8], m: &Member, patch: impl Fn(usize, usize) -> Option<Vec<u8>>) -> Vec<u8> {
    let body = deflate(data);
    let mut flags = 0u8;
    let mut h = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    if let Some(x) = &m.extra {
        flags |= 4;
        h.extend_from_slice(&(x.len() as u16).to_le_bytes());
        h.extend_from_slice(x);
    }
    if let Some(n) = m.name {
        flags |= 8;
        h.extend_from_slice(n.as_bytes());
        h.push(0);
    }
    h[3] = flags;
    if let Some(bytes) = patch(h.len(), body.len()) {
        // The claim's value sits in the last bytes of the extra field.
        let end = 12 + m.extra.as_ref().map_or(0, |x| x.len());
        h[end - bytes.len()..end].copy_from_slice(&bytes);
    }
    let mut crc = flate2::Crc::new();
    crc.update(data);
    h.extend_from_slice(&body);
    h.extend_from_slice(&crc.sum().to_le_bytes());
    h.extend_from_slice(&(data.len() as u32).to_le_bytes());
    h
}

/// Member boundaries found by following the IG sizes from the start.
fn walk_ig(data: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut starts = Vec::new();
    while at < data.len() {
        assert_eq!(&data[at..at + 4], &[0x1f, 0x8b, 8, 4], "member at {at}");
        assert_eq!(&data[at + 10..at + 16], b"\x08\x00IG\x04\x00");
        starts.push(at);
        at += u32::from_le_bytes(data[at + 16..at + 20].try_into().unwrap()) as usize;
    }
    assert_eq!(at, data.len(), "the last member's size runs past the end");
    starts
}

fn decode(data: &[u8], threads: usize) -> Vec<u8> {
    ours(data, threads).0.expect("decode")
}

/// A reader that fails after `ok` bytes.
struct FailsAfter<'a> {
    data: &'a [u8],
    ok: usize,
}

impl Read for FailsAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.ok == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "network went away",
            ));
        }
        let n = buf.len().min(self.ok).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.ok -= n;
        Ok(n)
    }
}

/// The fixtures' content: "i i*i\n" for i in 0..6000.
fn fixture_lines() -> Vec<u8> {
    (0..6000u64)
        .flat_map(|i| format!("{} {}\n", i, i * i).into_bytes())
        .collect()
}

fn fixture(name: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mgzip")
        .join(name);
    fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn plain_member(data: &[u8]) -> Vec<u8> {
    member(
        data,
        &Member {
            extra: None,
            name: None,
        },
        |_, _| None,
    )
}

/// A member whose IG subfield holds `f(true total)`.
fn ig_member(data: &[u8], f: impl Fn(u64) -> u64) -> Vec<u8> {
    let m = Member {
        extra: Some(b"IG\x04\x00\0\0\0\0".to_vec()),
        name: None,
    };
    member(data, &m, |h, d| {
        Some((f((h + d + 8) as u64) as u32).to_le_bytes().to_vec())
    })
}

/// Input chunks of `data`, `n` members of different sizes.
fn pieces(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = data;
    for i in 0..n {
        let k = if i + 1 == n {
            rest.len()
        } else {
            (rest.len() / (n - i)) * (i % 3 + 1) / 2
        };
        let (a, b) = rest.split_at(k.min(rest.len()));
        out.push(a);
        rest = b;
    }
    out
}

// ---------------------------------------------------------------------------
// corruption, truncation, failing input

fn three_members() -> (Vec<u8>, Vec<u8>) {
    let data = sample(300_000, 12);
    (compress(&data, 100_000, 2), data)
}

/// A reader that hands out at most `step` bytes per read.
struct Trickle<'a> {
    data: &'a [u8],
    step: usize,
}

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.step).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

/// BGZF members built by hand (BC = total size - 1), 16 KiB of input each.
fn fixture_free_bgzf(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for chunk in data.chunks(16 << 10) {
        let m = Member {
            extra: Some(b"BC\x02\x00\0\0".to_vec()),
            name: None,
        };
        out.extend(member(chunk, &m, |h, d| {
            Some(((h + d + 8 - 1) as u16).to_le_bytes().to_vec())
        }));
    }
    out
}

// ---------------------------------------------------------------------------
// The parallel gzip decoder's memory

/// Set in a child run of this test binary: `THREADS:FILE` to decode.
const CHILD: &str = "REVIEW3_GZIP_DECODE";

/// In a child run: decodes the file named by `CHILD` and prints the bytes
/// it gave and the process's peak RSS. Returns whether this is a child.
fn decode_if_child() -> bool {
    let Ok(job) = std::env::var(CHILD) else {
        return false;
    };
    let (threads, file) = job.split_once(':').unwrap();
    let f = fs::File::open(file).unwrap();
    let mut d = ParallelGzDecoder::with_threads(BufReader::new(f), threads.parse().unwrap());
    // 1 MiB reads, as the unpacker makes.
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match d.read(&mut buf).unwrap() {
            0 => break,
            k => n += k as u64,
        }
    }
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    let kib = hwm.split_whitespace().nth(1).unwrap();
    println!("decoded={n} peak_kib={kib}");
    true
}

/// Decodes `gz` with `threads` workers in a child run of this test binary
/// (only test `name`), so that the peak RSS is the decoder's alone: (bytes
/// decoded, peak RSS in MiB).
fn decode_in_child(name: &str, gz: &Path, threads: usize) -> (u64, u64) {
    // libtest names a test by its path below the crate root: `gzip::NAME`.
    let test = format!("{}::{name}", module_path!().split_once("::").unwrap().1);
    let out = Command::new(std::env::current_exe().unwrap())
        .args([test.as_str(), "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, format!("{threads}:{}", gz.display()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // libtest's "test NAME ... " may precede it on the line.
    let rest = text
        .lines()
        .find_map(|l| l.split_once("decoded="))
        .unwrap()
        .1;
    let (n, kib) = rest.split_once(" peak_kib=").unwrap();
    let peak_mib = kib.trim().parse::<u64>().unwrap() >> 10;
    eprintln!("{name}: {threads} threads, peak RSS {peak_mib} MiB");
    (n.parse().unwrap(), peak_mib)
}

/// One gzip member as `pack` writes it (an `IG` total size in FEXTRA)
/// holding `len` zero bytes.
fn zeros_member(len: usize) -> Vec<u8> {
    let zeros = vec![0u8; 1 << 20];
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut crc = flate2::Crc::new();
    let mut left = len;
    while left > 0 {
        let k = left.min(zeros.len());
        e.write_all(&zeros[..k]).unwrap();
        crc.update(&zeros[..k]);
        left -= k;
    }
    let body = e.finish().unwrap();
    let mut m = member_header((20 + body.len() + 8) as u32, 1).to_vec();
    m.extend(&body);
    m.extend(crc.sum().to_le_bytes());
    m.extend((len as u32).to_le_bytes());
    m
}

/// Decodes `gz` to the end or the first error: (bytes, error message).
fn decode_all(gz: &[u8], threads: usize) -> (Vec<u8>, Option<String>) {
    let mut d = ParallelGzDecoder::with_threads(gz, threads);
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match d.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(k) => out.extend_from_slice(&buf[..k]),
            Err(e) => return (out, Some(e.to_string())),
        }
    }
}

// ---------------------------------------------------------------------------
// compression

#[test]
fn compressed_output_is_read_by_every_gzip_reader() {
    let data = sample(3 << 20, 1);
    let block = 256 << 10;
    let gz = compress(&data, block, 3);
    let starts = walk_ig(&gz);
    assert_eq!(starts.len(), data.len().div_ceil(block));

    let s = Scratch::new("readers");
    let f = s.file("x.gz", &gz);
    if have("gzip") {
        assert!(run_on("gzip", &["-dc"], &f) == data, "gzip -dc differs");
        // gzip -t also checks every member's CRC and length.
        run_on("gzip", &["-t"], &f);
    }
    if have("pigz") {
        assert!(run_on("pigz", &["-dc"], &f) == data, "pigz -dc differs");
    }
    if have("python3") {
        assert!(python_gunzip(&f) == data, "python gzip differs");
    }
    assert!(flate2(&gz).unwrap() == data);
    for threads in [0, 1, 2, 4] {
        let (out, stats) = ours(&gz, threads);
        assert!(out.unwrap() == data, "threads {threads}");
        if threads > 0 {
            assert_eq!(stats.parallel_members, starts.len() as u64, "{stats:?}");
            assert_eq!(stats.fallbacks, 0);
        } else {
            assert_eq!(stats.serial_members, starts.len() as u64);
        }
    }
}

#[test]
fn compression_is_deterministic_and_checks_its_options() {
    let data = sample(1 << 20, 2);
    let a = compress(&data, 100_000, 1);
    let b = compress(&data, 100_000, 4);
    assert!(a == b, "output depends on the thread count");
    for level in [1, 9, 12] {
        let mut out = Vec::new();
        let o = GzipOptions {
            level,
            block_size: 300_000,
            threads: 2,
        };
        let st = par_pack::compress_gzip(&data[..], &mut out, &o).unwrap();
        assert_eq!(st.input_bytes, data.len() as u64);
        assert_eq!(st.output_bytes, out.len() as u64);
        assert_eq!(st.blocks, 4);
        assert!(decode(&out, 2) == data, "level {level}");
    }
    let bad = [
        GzipOptions {
            level: 0,
            ..Default::default()
        },
        GzipOptions {
            level: 13,
            ..Default::default()
        },
        GzipOptions {
            block_size: 0,
            ..Default::default()
        },
        GzipOptions {
            block_size: 2 << 30,
            ..Default::default()
        },
    ];
    for o in bad {
        let e = par_pack::compress_gzip(&data[..], io::sink(), &o).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{o:?}: {e}");
    }
}

#[test]
fn empty_input_gives_one_empty_member() {
    let gz = compress(b"", 1 << 20, 2);
    assert_eq!(walk_ig(&gz).len(), 1);
    assert_eq!(decode(&gz, 2), b"");
    assert_eq!(flate2(&gz).unwrap(), b"");
    if have("gzip") {
        let s = Scratch::new("empty");
        assert_eq!(run_on("gzip", &["-dc"], &s.file("e.gz", &gz)), b"");
    }
}

#[test]
fn compression_passes_on_read_and_write_errors() {
    let data = sample(2 << 20, 3);
    let o = GzipOptions {
        block_size: 64 << 10,
        threads: 2,
        ..Default::default()
    };
    let e = par_pack::compress_gzip(
        FailsAfter {
            data: &data,
            ok: 1 << 20,
        },
        io::sink(),
        &o,
    )
    .unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);

    struct Full;
    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("disk full"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let e = par_pack::compress_gzip(&data[..], Full, &o).unwrap_err();
    assert!(e.to_string().contains("disk full"), "{e}");
}

#[test]
fn zstd_output_is_independent_frames_read_by_the_zstd_cli() {
    let data = sample(3 << 20, 4);
    let mut out = Vec::new();
    let o = ZstdOptions {
        block_size: 512 << 10,
        threads: 2,
        ..Default::default()
    };
    let st = par_pack::compress_zstd(&data[..], &mut out, &o).unwrap();
    assert_eq!(st.blocks, 6);
    // Walk the frames: each is complete on its own.
    let mut rest = &out[..];
    let mut frames = 0;
    while !rest.is_empty() {
        let n = zstd::zstd_safe::find_frame_compressed_size(rest).unwrap();
        let one = zstd::bulk::decompress(&rest[..n], 1 << 20).unwrap();
        assert_eq!(one.len(), 512 << 10);
        rest = &rest[n..];
        frames += 1;
    }
    assert_eq!(frames, 6);
    assert!(zstd::stream::decode_all(&out[..]).unwrap() == data);
    if have("zstd") {
        let s = Scratch::new("zstd");
        assert!(run_on("zstd", &["-dc"], &s.file("x.zst", &out)) == data);
    }
    let bad = ZstdOptions {
        level: 0,
        ..Default::default()
    };
    assert!(par_pack::compress_zstd(&data[..], io::sink(), &bad).is_err());
}

#[test]
fn xz_output_has_sized_blocks_and_decodes_on_threads() {
    let data = sample(3 << 20, 5);
    let mut out = Vec::new();
    let o = XzOptions {
        preset: 1,
        block_size: 512 << 10,
        threads: 2,
    };
    let st = par_pack::compress_xz(&data[..], &mut out, &o).unwrap();
    assert_eq!(st.input_bytes, data.len() as u64);
    assert_eq!(st.output_bytes, out.len() as u64);
    let s = Scratch::new("xz");
    let f = s.file("x.xz", &out);
    if have("xz") {
        assert!(run_on("xz", &["-dc"], &f) == data);
        // `cu`: the block header records both sizes (what lets a
        // multithreaded decoder split the work).
        let list = String::from_utf8(run_on("xz", &["--robot", "-lvv"], &f)).unwrap();
        let blocks: Vec<&str> = list.lines().filter(|l| l.starts_with("block")).collect();
        assert_eq!(blocks.len(), 6, "{list}");
        assert!(
            blocks.iter().all(|l| l.split('\t').nth(12) == Some("cu")),
            "{list}"
        );
    }
    for threads in [1, 2] {
        let mut got = Vec::new();
        XzMtDecoder::new(&out[..], threads)
            .unwrap()
            .read_to_end(&mut got)
            .unwrap();
        assert!(got == data);
    }
    // Two streams with stream padding between them, as `cat` + padding.
    let mut two = out.clone();
    two.extend_from_slice(&[0; 8]);
    two.extend_from_slice(&out);
    let mut got = Vec::new();
    XzMtDecoder::new(&two[..], 2)
        .unwrap()
        .read_to_end(&mut got)
        .unwrap();
    assert_eq!(got.len(), 2 * data.len());
    // Bad padding, truncation, garbage: errors, not panics.
    let mut bad = out.clone();
    bad.extend_from_slice(&[0; 3]);
    let e = XzMtDecoder::new(&bad[..], 2)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .unwrap_err();
    assert!(e.to_string().contains("padding"), "{e}");
    let cut = &out[..out.len() / 2];
    assert!(XzMtDecoder::new(cut, 2)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .is_err());
    let mut garbage = out.clone();
    garbage.extend_from_slice(b"trailing");
    assert!(XzMtDecoder::new(&garbage[..], 2)
        .unwrap()
        .read_to_end(&mut Vec::new())
        .is_err());
}

// ---------------------------------------------------------------------------
// decoding what others write

#[test]
fn foreign_sized_formats_decode_in_parallel() {
    let want = fixture_lines();
    // gzp 2.0.4 (Mgzip, IG = total size), Python mgzip 0.2.5 (MZ = deflate
    // size, with FNAME), bgzip 1.16 (BC = size - 1, plus its EOF member);
    // see tests/fixtures/mgzip/README.md.
    for name in ["gzp-mgzip.txt.gz", "python-mgzip.txt.gz", "bgzip.txt.gz"] {
        let gz = fixture(name);
        assert!(flate2(&gz).unwrap() == want, "{name}: fixture");
        for threads in [1, 3] {
            let (out, stats) = ours(&gz, threads);
            assert!(out.unwrap() == want, "{name}");
            assert!(stats.parallel_members >= 2, "{name}: {stats:?}");
            assert_eq!(stats.fallbacks, 0, "{name}: {stats:?}");
            assert_eq!(stats.serial_members, 0, "{name}: {stats:?}");
        }
    }
}

#[test]
fn streams_without_sizes_decode_serially_like_multigzdecoder() {
    let data = sample(2 << 20, 7);
    let s = Scratch::new("plain");
    let f = s.file("x", &data);
    let mut streams = vec![];
    if have("gzip") {
        streams.push(run_on("gzip", &["-c"], &f));
        // Two gzip files concatenated: two members, no sizes.
        let mut two = run_on("gzip", &["-c", "-1"], &f);
        two.extend(run_on("gzip", &["-c"], &f));
        streams.push(two);
    }
    if have("pigz") {
        streams.push(run_on("pigz", &["-c"], &f));
    }
    streams.push(plain_member(&data));
    for gz in streams {
        let want = flate2(&gz).unwrap();
        for threads in [0, 2] {
            let (out, stats) = ours(&gz, threads);
            assert!(out.unwrap() == want);
            assert_eq!(stats.parallel_members, 0);
            assert!(stats.serial_members >= 1);
        }
    }
}

#[test]
fn sized_and_unsized_members_mixed() {
    let data = sample(1 << 20, 8);
    let p = pieces(&data, 7);
    let mut gz = Vec::new();
    gz.extend(compress(p[0], 50_000, 2));
    gz.extend(plain_member(p[1]));
    gz.extend(compress(p[2], 64 << 10, 2));
    gz.extend(plain_member(p[3]));
    gz.extend(plain_member(p[4]));
    gz.extend(ig_member(p[5], |t| t));
    gz.extend(compress(p[6], 1 << 20, 1));
    assert!(flate2(&gz).unwrap() == data);
    for threads in [0, 1, 2, 5] {
        let (out, stats) = ours(&gz, threads);
        assert!(out.unwrap() == data, "threads {threads}");
        if threads > 0 {
            assert_eq!(stats.serial_members, 3, "{stats:?}");
            assert!(stats.parallel_members >= 4, "{stats:?}");
            assert_eq!(stats.fallbacks, 0);
        }
    }
}

// ---------------------------------------------------------------------------
// headers that lie

#[test]
fn lying_sizes_never_change_the_output() {
    let data = sample(600_000, 9);
    let p = pieces(&data, 5);
    type Lie = fn(u64) -> u64;
    let lies: &[(&str, Lie)] = &[
        ("too big by one", |t| t + 1),
        ("too big by a member", |t| t + 5000),
        ("too small by one", |t| t - 1),
        ("too small", |t| t / 2),
        ("zero", |_| 0),
        ("tiny", |_| 29),
        ("past the end", |_| 50 << 20),
        ("over the parallel cap", |_| MAX_PARALLEL_MEMBER + 1),
        ("u32 max", |_| u32::MAX as u64),
    ];
    for (what, lie) in lies {
        // The lie sits in the middle member and in the last one.
        for liar in [2, 4] {
            let mut gz = Vec::new();
            for (i, piece) in p.iter().enumerate() {
                if i == liar {
                    gz.extend(ig_member(piece, lie));
                } else {
                    gz.extend(ig_member(piece, |t| t));
                }
            }
            // Still valid gzip: every reader ignores FEXTRA.
            assert!(flate2(&gz).unwrap() == data, "{what}");
            for threads in [0, 1, 3] {
                let (out, stats) = ours(&gz, threads);
                let out = out.unwrap_or_else(|e| panic!("{what}, member {liar}: {e}"));
                assert!(out == data, "{what}, member {liar}, threads {threads}");
                if threads > 0 {
                    assert!(stats.parallel_members >= 2, "{what}: {stats:?}");
                }
            }
        }
    }
}

#[test]
fn ig_holding_the_deflate_size_is_understood() {
    // Python mgzip's convention (deflate size) in an IG subfield, with a
    // file name in the header: decoded in parallel without fallbacks.
    let data = sample(400_000, 10);
    let mut gz = Vec::new();
    for piece in pieces(&data, 4) {
        let m = Member {
            extra: Some(b"IG\x04\x00\0\0\0\0".to_vec()),
            name: Some("disk-image.qcow2"),
        };
        gz.extend(member(piece, &m, |_, d| {
            Some((d as u32).to_le_bytes().to_vec())
        }));
    }
    let (out, stats) = ours(&gz, 2);
    assert!(out.unwrap() == data);
    assert_eq!(
        (stats.parallel_members, stats.fallbacks),
        (4, 0),
        "{stats:?}"
    );
}

#[test]
fn malformed_extra_fields_are_ignored_like_gzip_does() {
    let data = sample(200_000, 11);
    let p = pieces(&data, 4);
    let extras: [&[u8]; 4] = [
        b"IG\x09\x00\x01\x02",                        // subfield longer than the field
        b"IG\x04\x00\x10\x00\x00",                    // truncated value
        b"ab\x01\x00xIG\x04\x00\x00\x00\x00\x00\x01", // trailing byte
        b"",                                          // FEXTRA with XLEN 0
    ];
    let mut gz = Vec::new();
    for (piece, x) in p.iter().zip(extras) {
        let m = Member {
            extra: Some(x.to_vec()),
            name: None,
        };
        gz.extend(member(piece, &m, |_, _| None));
    }
    assert!(flate2(&gz).unwrap() == data);
    let (out, stats) = ours(&gz, 2);
    assert!(out.unwrap() == data);
    assert_eq!(stats.serial_members, 4, "{stats:?}");
}

#[test]
fn large_members_are_handed_on_in_pieces() {
    // 300 MiB of zeros: inflated on a worker and handed on in pieces, never
    // as one 300 MiB buffer.
    let len: u64 = 300 << 20;
    let zeros = vec![0u8; 1 << 20];
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut crc = flate2::Crc::new();
    for _ in 0..len >> 20 {
        e.write_all(&zeros).unwrap();
        crc.update(&zeros);
    }
    let body = e.finish().unwrap();
    let mut gz = mgzip::member_header((20 + body.len() + 8) as u32, 1).to_vec();
    gz.extend(&body);
    gz.extend(crc.sum().to_le_bytes());
    gz.extend((len as u32).to_le_bytes());
    gz.extend(ig_member(b"tail", |t| t));

    let mut d = ParallelGzDecoder::with_threads(&gz[..], 2);
    let mut buf = vec![0u8; 1 << 20];
    let (mut n, mut check) = (0u64, flate2::Crc::new());
    loop {
        let k = d.read(&mut buf).unwrap();
        if k == 0 {
            break;
        }
        check.update(&buf[..k]);
        n += k as u64;
    }
    assert_eq!(n, len + 4);
    let mut want = flate2::Crc::new();
    want.update(&b"tail"[..]);
    crc.combine(&want);
    assert_eq!(check.sum(), crc.sum());
    let stats = d.stats();
    assert_eq!(
        (
            stats.serial_members,
            stats.parallel_members,
            stats.fallbacks
        ),
        (0, 2, 0),
        "{stats:?}"
    );
}

#[test]
fn corrupt_data_names_the_member_and_the_byte() {
    let (gz, data) = three_members();
    let starts = walk_ig(&gz);
    for threads in [0, 2] {
        // A flipped byte inside the second member's deflate data.
        let mut bad = gz.clone();
        let at = starts[1] + 20 + (starts[2] - starts[1]) / 2;
        bad[at] ^= 0x55;
        let mut d = ParallelGzDecoder::with_threads(&bad[..], threads);
        let mut out = Vec::new();
        let e = d.read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        let msg = e.to_string();
        assert!(msg.contains("gzip member #2"), "{msg}");
        assert!(msg.contains(&format!("at byte {}", starts[1])), "{msg}");
        // The first member came out whole. (What the damaged member
        // yields before its CRC fails is unchecked, as with any streaming
        // gzip reader.)
        assert!(out.len() >= 100_000 && out[..100_000] == data[..100_000]);
        // Later reads keep failing.
        assert!(d.read(&mut [0u8; 10]).is_err());

        // CRC and length fields.
        let mut bad = gz.clone();
        bad[starts[2] - 8] ^= 1;
        let e = ours(&bad, threads).0.unwrap_err();
        assert!(e.to_string().contains("CRC32"), "{e}");
        let mut bad = gz.clone();
        bad[starts[2] - 2] ^= 1;
        let e = ours(&bad, threads).0.unwrap_err();
        assert!(e.to_string().contains("trailer says"), "{e}");
        // A header that is not gzip, and a bad method.
        let mut bad = gz.clone();
        bad[starts[1]] = b'X';
        let e = ours(&bad, threads).0.unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("unexpected data at byte {}", starts[1])),
            "{e}"
        );
        let mut bad = gz.clone();
        bad[starts[2] + 2] = 9;
        let e = ours(&bad, threads).0.unwrap_err();
        assert!(e.to_string().contains("compression method 9"), "{e}");
    }
}

#[test]
fn truncation_anywhere_is_an_early_end() {
    let (gz, data) = three_members();
    let starts = walk_ig(&gz);
    let mut cuts: Vec<usize> = (0..gz.len()).step_by(997).collect();
    for &s in &starts[1..] {
        cuts.extend([s - 9, s - 8, s - 1, s + 1, s + 10, s + 19, s + 20, s + 21]);
    }
    cuts.extend([gz.len() - 1, 1]);
    // Cuts between members leave a valid, shorter stream (checked below).
    cuts.retain(|c| !starts.contains(c));
    for cut in cuts {
        let t = &gz[..cut];
        for threads in [0, 2] {
            match ours(t, threads).0 {
                Ok(out) => panic!("cut at {cut}: decoded {} bytes without error", out.len()),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "cut {cut}: {e}");
                    if cut > 0 {
                        assert!(
                            e.to_string().contains(&format!("ends early at byte {cut}")),
                            "{e}"
                        );
                    }
                }
            }
        }
    }
    // Cut exactly between members: a shorter but valid stream.
    let (out, _) = ours(&gz[..starts[2]], 2);
    assert!(out.unwrap() == data[..200_000]);
}

#[test]
fn empty_input_and_trailing_garbage_are_errors() {
    let (gz, _) = three_members();
    for threads in [0, 2] {
        let e = ours(b"", threads).0.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("empty"), "{e}");
        let e = ours(b"hello world", threads).0.unwrap_err();
        assert!(e.to_string().contains("not gzip data"), "{e}");
        for tail in [&b"garbage"[..], &[0u8; 16], &[0x1f]] {
            let mut t = gz.clone();
            t.extend_from_slice(tail);
            let (r, _) = ours(&t, threads);
            let e = r.unwrap_err();
            assert!(flate2(&t).is_err(), "flate2 accepts {tail:?}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!("byte {}", gz.len())),
                "{tail:?}: {msg}"
            );
        }
    }
}

#[test]
fn input_errors_arrive_after_the_data_before_them() {
    let (gz, data) = three_members();
    let starts = walk_ig(&gz);
    for ok in [0, 10, starts[1] + 100, starts[2], gz.len() - 1] {
        for threads in [0, 2] {
            let mut d = ParallelGzDecoder::with_threads(FailsAfter { data: &gz, ok }, threads);
            let mut out = Vec::new();
            let e = d.read_to_end(&mut out).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "ok {ok}: {e}");
            assert!(data.starts_with(&out));
            // Whole members before the failure point come out in full.
            let whole = starts
                .iter()
                .filter(|&&s| s <= ok)
                .count()
                .saturating_sub(1);
            assert!(out.len() >= whole * 100_000, "ok {ok}: {} bytes", out.len());
        }
    }
}

#[test]
fn trickling_input_and_tiny_reads() {
    let data = sample(500_000, 13);
    let mut gz = compress(&data[..300_000], 40_000, 2);
    gz.extend(plain_member(&data[300_000..400_000]));
    gz.extend(fixture_free_bgzf(&data[400_000..]));
    for step in [1, 3, 7, 4096] {
        for threads in [0, 1, 2] {
            let mut d = ParallelGzDecoder::with_threads(Trickle { data: &gz, step }, threads);
            let mut out = Vec::new();
            let mut buf = [0u8; 13];
            let mut i = 0;
            loop {
                let want = 1 + i % buf.len();
                i += 1;
                match d.read(&mut buf[..want]).unwrap() {
                    0 => break,
                    k => out.extend_from_slice(&buf[..k]),
                }
            }
            assert!(out == data, "step {step}, threads {threads}");
            if threads > 0 {
                assert_eq!(d.stats().fallbacks, 0);
            }
        }
    }
}

#[test]
fn random_damage_matches_the_serial_reference() {
    // Differential check: whatever damage, the parallel decoder gives the
    // same bytes and the same verdict as the serial one, and agrees with
    // flate2 on success or failure.
    let data = sample(120_000, 14);
    let mut gz = compress(&data[..60_000], 20_000, 2);
    let mut starts = walk_ig(&gz);
    starts.push(gz.len());
    gz.extend(plain_member(&data[60_000..80_000]));
    starts.push(gz.len());
    gz.extend(fixture_free_bgzf(&data[80_000..]));
    let mut x = 0x1234_5678_9abc_def1u64;
    let mut rnd = move |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for round in 0..400 {
        let mut bad = gz.clone();
        for _ in 0..1 + rnd(3) {
            // Aim at headers (and their size fields) half the time.
            let at = if round % 2 == 0 {
                starts[rnd(starts.len())] + rnd(20)
            } else {
                rnd(bad.len())
            };
            bad[at] ^= 1 << rnd(8);
        }
        let (serial, _) = ours(&bad, 0);
        let (par, _) = ours(&bad, 3);
        let reference = flate2(&bad);
        match (&serial, &par) {
            (Ok(a), Ok(b)) => assert!(a == b, "round {round}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string(), "round {round}"),
            _ => panic!("round {round}: serial {serial:?} vs parallel {par:?}"),
        }
        assert_eq!(
            serial.is_ok(),
            reference.is_ok(),
            "round {round}: {serial:?} vs {reference:?}"
        );
        if let (Ok(a), Ok(b)) = (&serial, &reference) {
            assert!(a == b, "round {round}");
        }
    }
}

#[test]
fn dropping_the_decoder_mid_stream_stops_its_threads() {
    let data = sample(32 << 20, 15);
    let gz = compress(&data, 1 << 20, 2);
    let t = Instant::now();
    for _ in 0..5 {
        let mut d = ParallelGzDecoder::with_threads(&gz[..], 3);
        let mut buf = vec![0u8; 100_000];
        d.read_exact(&mut buf).unwrap();
        assert!(data.starts_with(&buf));
        drop(d);
    }
    assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
}

#[test]
fn gzip_members_that_inflate_to_255_mib_keep_the_peak_memory_under_300_mib() {
    if decode_if_child() {
        return;
    }
    let dir = TempDir::new("r3-bomb");
    let member = zeros_member(255 << 20);
    let gz = dir.path().join("bomb.gz");
    fs::write(&gz, member.repeat(3)).unwrap();
    let name = "gzip_members_that_inflate_to_255_mib_keep_the_peak_memory_under_300_mib";
    let (n, peak) = decode_in_child(name, &gz, 2);
    assert_eq!(n, 3 * (255 << 20));
    assert!(
        peak < 300,
        "peak RSS {peak} MiB decoding 3 members of 255 MiB"
    );
}

#[test]
fn gzip_as_pack_writes_it_decodes_in_under_64_mib_on_16_threads() {
    if decode_if_child() {
        return;
    }
    let dir = TempDir::new("r3-pack");
    // 96 MiB like a disk image: noise, text and zeros, in 1 MiB members.
    let mut data = noise(32 << 20, 7);
    data.extend(b"lib42.so.7 /usr/share/doc ".repeat(48 << 20 >> 5));
    data.resize(96 << 20, 0);
    let mut gz = Vec::new();
    par_pack::compress_gzip(&data[..], &mut gz, &GzipOptions::default()).unwrap();
    let path = dir.path().join("pack.gz");
    fs::write(&path, gz).unwrap();
    let name = "gzip_as_pack_writes_it_decodes_in_under_64_mib_on_16_threads";
    let (n, peak) = decode_in_child(name, &path, 16);
    assert_eq!(n, data.len() as u64);
    assert!(
        peak < 64,
        "peak RSS {peak} MiB decoding pack's 1 MiB members"
    );
}

#[test]
fn members_handed_on_in_pieces_decode_as_the_serial_decoder_does_when_damaged() {
    // Three members of several pieces each; damage in the second, after
    // some of its pieces were handed on, must give what the serial decoder
    // gives: the same bytes (none twice) and the same error.
    let data = noise(3 * PIECE + 12345, 3);
    let mut data = [data.clone(), vec![0; PIECE * 5 / 2], data].concat();
    data.truncate(data.len() / 3 * 3);
    let third = data.len() / 3;
    let mut gz = Vec::new();
    let opts = GzipOptions {
        block_size: third,
        ..Default::default()
    };
    par_pack::compress_gzip(&data[..], &mut gz, &opts).unwrap();
    let total = |at: usize| u32::from_le_bytes(gz[at + 16..at + 20].try_into().unwrap()) as usize;
    let (m1, m2) = (total(0), total(0) + total(total(0)));
    type Damage = Box<dyn Fn(&mut Vec<u8>)>;
    let cases: Vec<(&str, Damage)> = vec![
        ("none", Box::new(|_| {})),
        (
            "deflate data late in it",
            Box::new(move |g| g[m2 - 300] ^= 0x40),
        ),
        ("its CRC", Box::new(move |g| g[m2 - 8] ^= 1)),
        ("its ISIZE", Box::new(move |g| g[m2 - 4] ^= 1)),
        (
            "its size claim, too big",
            Box::new(move |g| g[m1 + 16] ^= 8),
        ),
        (
            "its size claim, too small",
            Box::new(move |g| g[m1 + 17] ^= 1),
        ),
        (
            "truncated inside it",
            Box::new(move |g| g.truncate(m2 - 1000)),
        ),
    ];
    for (what, damage) in cases {
        let mut bad = gz.clone();
        damage(&mut bad);
        let (serial, serial_err) = decode_all(&bad, 0);
        for threads in [1, 3] {
            let (par, par_err) = decode_all(&bad, threads);
            assert_eq!(par_err, serial_err, "{what}, {threads} threads");
            let n = par.len().min(serial.len());
            assert!(
                par[..n] == serial[..n],
                "{what}, {threads} threads: bytes differ"
            );
            if serial_err.is_none() {
                assert!(par == data, "{what}, {threads} threads");
            }
        }
    }
}

/// gzip and pigz read a name or comment of any length (flate2 caps them at
/// 64 KiB); so does the decoder, serially and in parallel, and a stream cut
/// inside such a header is said as that.
#[test]
fn file_names_of_any_length_decode_as_gzip_reads_them() {
    let data = sample(100_000, 7);
    for len in [70_000, 200_000] {
        let name = "n".repeat(len);
        let m = Member {
            extra: None,
            name: Some(&name),
        };
        let gz = member(&data, &m, |_, _| None);
        for threads in [0, 2] {
            let (out, err) = decode_all(&gz, threads);
            assert_eq!(err, None, "a {len}-byte name, {threads} threads");
            assert_eq!(out, data, "a {len}-byte name, {threads} threads");
            let cut = 10 + len / 2;
            let e = ours(&gz[..cut], threads).0.unwrap_err();
            assert!(
                e.to_string()
                    .contains(&format!("ends early at byte {cut}, inside the header")),
                "{e}"
            );
        }
    }
}
