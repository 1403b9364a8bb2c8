//! The third hostile review's format findings (issue 15, items 3–5): a
//! qcow2 whose virtual size is not a multiple of 512 gives the raw image
//! qemu-img gives, in every converter; a version-2 qcow2 with a zero flag is
//! refused and nothing is installed; the parallel gzip decoder keeps its
//! memory bound on members that inflate to far more than a piece.

mod common;

use std::fs;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use archive::pack::{compress_gzip as compress, GzipOptions};
use common::*;
use mgzip::member_header;
use mgzip::{ParallelGzDecoder, PIECE};
use testkit::{make_qcow2, pack_disk, upstream_assets, Compression, ReleaseSpec, Server, TempDir};

/// `qemu-img convert -O raw`: the raw image's bytes, or qemu-img's error.
fn qemu_raw(qcow2: &Path, out: &Path) -> Result<Vec<u8>, String> {
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

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}
fn get64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
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

#[test]
fn an_odd_sized_image_gives_qemu_imgs_raw_image_in_every_converter() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("r3-odd-fx");
    let q = odd_sized_image(fx.path());
    let theirs = qemu_raw(&q, &fx.path().join("theirs.img")).unwrap();
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
fn a_version_2_image_with_a_zero_flag_is_refused_and_nothing_is_installed() {
    if !have("qemu-img") || !have("qemu-io") {
        eprintln!("skipped: qemu-img or qemu-io is not installed");
        return;
    }
    let fx = TempDir::new("r3-v2z-fx");
    for alloc in [true, false] {
        let q = v2_with_zero_flag(fx.path(), alloc);
        // qemu-img refuses it (its `check` finds nothing wrong).
        let err = qemu_raw(&q, &fx.path().join("q.img")).unwrap_err();
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
    let out = Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
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
    compress(&data[..], &mut gz, &GzipOptions::default()).unwrap();
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
    compress(&data[..], &mut gz, &opts).unwrap();
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
