//! Faults and hostile input that the other suites do not reach: unsafe asset
//! names in the release JSON, a disk that fills up mid-run, corrupt xz, and
//! qcow2 images the converter must refuse. Each case checks the exit code, that
//! the message names the cause, and that an installed good set is untouched.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;
use testkit::{
    make_qcow2, pack_disk, upstream_assets, AssetSpec, Compression, DiskFixture, ReleaseSpec,
    Server, TempDir,
};

/// Installs a good v1 set into `out`; returns the server for more releases.
fn good_set(out: &Path, fx: &Path) -> (Server, DiskFixture) {
    let img = fx.join("good.qcow2");
    make_qcow2(&img, 32, 2).unwrap();
    let d = pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, fx).unwrap();
    let server = Server::start(
        REPO,
        vec![ReleaseSpec::new(
            "v1",
            upstream_assets("focal", "amd64", &d),
        )],
    );
    resources(None, out, &server.api_url(), &["--version", "v1"], &[]).ok();
    (server, d)
}

/// Packs `qcow2` as release v2 next to v1.
fn publish_v2(
    server: &Server,
    good: &DiskFixture,
    qcow2: &Path,
    compression: Compression,
    work: &Path,
) {
    fs::create_dir_all(work).unwrap();
    let d = pack_disk(qcow2, "focal", "amd64", 1 << 20, compression, work).unwrap();
    server.set_releases(vec![
        ReleaseSpec::new("v2", upstream_assets("focal", "amd64", &d)),
        ReleaseSpec::new("v1", upstream_assets("focal", "amd64", good)),
    ]);
}

#[test]
fn unsafe_asset_names_are_refused() {
    for bad in ["../../evil", "sub/dir", ".hidden"] {
        let mut spec = bytes_release("v1", "focal", "amd64", &[100]);
        spec.assets.push(AssetSpec::bytes(bad, b"x".to_vec()));
        let server = Server::start(REPO, vec![spec]);
        let root = TempDir::new("ft-names");
        let out = root.path().join("out");
        let run = resources(Some("download"), &out, &server.api_url(), &[], &[]);
        run.failed();
        assert!(run.stderr.contains("unsafe name"), "{bad}: {}", run.stderr);
        assert!(
            !server.requests().iter().any(|r| r.host == "assets"),
            "{bad}: downloaded anyway"
        );
        // Nothing lands outside the output directory and its download cache.
        assert!(fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .all(|e| e.file_name() == "out" || e.file_name() == "out.cache"));
        assert!(!root.path().join("evil").exists() && !root.path().join("sub").exists());
    }
}

#[test]
fn disk_full_mid_run_keeps_the_old_set() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("ft-full-fx");
    let out = TempDir::new("ft-full");
    let (server, good) = good_set(out.path(), fx.path());
    let before = snapshot(out.path());
    let big = fx.path().join("big.qcow2");
    make_qcow2(&big, 64, 12).unwrap();
    publish_v2(
        &server,
        &good,
        &big,
        Compression::Gzip,
        &fx.path().join("v2"),
    );

    // A file-size limit stands in for a full disk: every write past 4 MiB
    // fails with EFBIG, as it would with ENOSPC. The parts (1 MiB) fit; the
    // unpacked image does not.
    let o = xtask_with_file_limit(
        &[
            "resources",
            "--version",
            "v2",
            "--output",
            out.path().to_str().unwrap(),
            "--github-api",
            &server.api_url(),
        ],
        4 << 20,
    );
    let stderr = &o.stderr;
    assert_ne!(o.code, 0, "{stderr}");
    assert!(
        stderr.contains("disk-image"),
        "the message names the file: {stderr}"
    );
    assert!(stderr.to_lowercase().contains("file too large"), "{stderr}");
    assert!(snapshot(out.path()) == before, "the installed set changed");
    // The next run without the limit completes.
    resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", "v2"],
        &[],
    )
    .ok();
}

#[test]
fn corrupt_xz_names_the_archive() {
    if !have("qemu-img") || !have("xz") {
        eprintln!("skipped: qemu-img or xz is not installed");
        return;
    }
    let fx = TempDir::new("ft-xz-fx");
    let out = TempDir::new("ft-xz");
    let (server, good) = good_set(out.path(), fx.path());
    let before = snapshot(out.path());
    let img = fx.path().join("x.qcow2");
    make_qcow2(&img, 32, 3).unwrap();
    let d = pack_disk(
        &img,
        "focal",
        "amd64",
        1 << 30,
        Compression::Xz,
        &fx.path().join("xz"),
    )
    .unwrap();
    let mut assets = upstream_assets("focal", "amd64", &d);
    let part = assets
        .iter_mut()
        .find(|a| a.name.ends_with(".tar.xz.aa"))
        .unwrap();
    let mut data = match &part.body {
        testkit::Body::Bytes(b) => b.to_vec(),
        testkit::Body::File(p) => fs::read(p).unwrap(),
    };
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    data[mid + 1] ^= 0xff;
    *part = AssetSpec::bytes(&part.name.clone(), data);
    server.set_releases(vec![
        ReleaseSpec::new("v2", assets),
        ReleaseSpec::new("v1", upstream_assets("focal", "amd64", &good)),
    ]);
    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", "v2"],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("disk-image-focal-amd64.qcow2.tar.xz"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("xz"), "{}", run.stderr);
    assert!(snapshot(out.path()) == before);
}

#[test]
fn hostile_qcow2_images_are_refused_by_name() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("ft-q-fx");
    let out = TempDir::new("ft-q");
    let (server, good) = good_set(out.path(), fx.path());
    let before = snapshot(out.path());

    let base = fx.path().join("base.qcow2");
    make_qcow2(&base, 32, 1).unwrap();
    let backed = fx.path().join("backed.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&backed)
        .output()
        .unwrap();
    assert!(st.status.success());
    let enc = fx.path().join("enc.qcow2");
    let st = Command::new("qemu-img")
        .args([
            "create",
            "--object",
            "secret,id=sec0,data=123456",
            "-f",
            "qcow2",
            "-o",
            "encrypt.format=luks,encrypt.key-secret=sec0",
        ])
        .arg(&enc)
        .arg("16M")
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    // A header whose L1 table lies far past the end of the file.
    let lie = fx.path().join("lie.qcow2");
    let mut bytes = fs::read(&base).unwrap();
    bytes[40..48].copy_from_slice(&(1u64 << 50).to_be_bytes());
    fs::write(&lie, bytes).unwrap();

    for (i, (img, needle)) in [(&backed, "backing file"), (&enc, "encrypt"), (&lie, "L1")]
        .into_iter()
        .enumerate()
    {
        publish_v2(
            &server,
            &good,
            img,
            Compression::Gzip,
            &fx.path().join(format!("h{i}")),
        );
        let run = resources(
            None,
            out.path(),
            &server.api_url(),
            &["--version", "v2", "--force"],
            &[],
        );
        run.failed();
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        assert!(
            snapshot(out.path()) == before,
            "{needle}: the installed set changed"
        );
    }
}
