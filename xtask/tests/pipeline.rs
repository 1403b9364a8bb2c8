//! The full `resources` run and the disk steps (decompress, convert) on real
//! archives packed the way upstream packs them, served by the loopback GitHub.

mod common;

use std::fs;
use std::io::Write;
use std::path::Path;

use common::*;
use testkit::{
    fake_elf, make_qcow2, pack_disk, sha256_file_hex, upstream_assets, AssetSpec, Compression,
    DiskFixture, ReleaseSpec, Server, TempDir,
};

/// A qcow2 packed like upstream, or None (with a note) where qemu-img is absent.
fn disk(work: &Path, compression: Compression, part: u64) -> Option<DiskFixture> {
    disk_of(work, compression, part, 6)
}

/// As [`disk`], with `data_mib` of guest data (another content).
fn disk_of(work: &Path, compression: Compression, part: u64, data_mib: u64) -> Option<DiskFixture> {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return None;
    }
    fs::create_dir_all(work).unwrap();
    let img = work.join("src.qcow2");
    make_qcow2(&img, 64, data_mib).expect("make qcow2");
    Some(pack_disk(&img, "focal", "amd64", part, compression, work).expect("pack disk"))
}

fn release(tag: &str, d: &DiskFixture) -> ReleaseSpec {
    ReleaseSpec::new(tag, upstream_assets("focal", "amd64", d))
}

fn qemu_raw(qcow2: &Path, out: &Path) {
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(qcow2)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn full_pipeline_installs_exactly_the_set() {
    let fx = TempDir::new("pl-full-fx");
    let Some(d) = disk(fx.path(), Compression::Gzip, 300_000) else {
        return;
    };
    assert!(d.assets.len() > 3, "several parts");
    let server = Server::start(REPO, vec![release("v1.0.0", &d)]);
    let out = TempDir::new("pl-full");
    let run = resources(None, out.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert_eq!(
        entries(out.path()),
        [
            "client",
            "disk-image.img",
            "disk-image.qcow2",
            "kernel",
            "manifest.json"
        ]
    );
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
    let raw = fx.path().join("qemu.raw");
    qemu_raw(&d.qcow2, &raw);
    assert!(fs::read(&raw).unwrap() == fs::read(out.path().join("disk-image.img")).unwrap());
    assert_eq!(
        fs::read(out.path().join("kernel")).unwrap(),
        fake_elf("amd64")
    );
    let manifest = fs::read_to_string(out.path().join("manifest.json")).unwrap();
    assert!(manifest.contains("\"tag\": \"v1.0.0\""), "{manifest}");
    assert!(manifest.contains(&d.sha256_hex), "{manifest}");
    assert!(
        run.stdout.contains("Installed v1.0.0 focal/amd64"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("gem5"), "{}", run.stdout);

    // The same request again: no network at all, and quick.
    let before = server.request_count();
    let again = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", "v1.0.0"],
        &[],
    );
    again.ok();
    assert_eq!(
        server.request_count(),
        before,
        "a re-run of a pinned tag asks nothing"
    );
    assert!(again.stdout.contains("Up to date"), "{}", again.stdout);

    // verify: all fine, deep too.
    resources(
        Some("verify"),
        out.path(),
        &server.api_url(),
        &["--deep"],
        &[],
    )
    .ok();
}

#[test]
fn xz_release_and_kept_downloads() {
    if !have("xz") {
        eprintln!("skipped: xz is not installed");
        return;
    }
    let fx = TempDir::new("pl-xz-fx");
    let Some(d) = disk(fx.path(), Compression::Xz, 700_000) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v2", &d)]);
    let out = TempDir::new("pl-xz");
    resources(
        None,
        out.path(),
        &server.api_url(),
        &["--keep-downloads"],
        &[],
    )
    .ok();
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
    // The parts stay in the download cache.
    let work = cache_entry(out.path(), &server.api_url(), "v2");
    assert!(work
        .join("disk-image-focal-amd64.qcow2.tar.xz.aa")
        .is_file());
}

#[test]
fn decompress_then_convert_as_steps_give_the_release_image() {
    let fx = TempDir::new("pl-steps-fx");
    let Some(d) = disk(fx.path(), Compression::Gzip, 1 << 20) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let out = TempDir::new("pl-steps");
    let api = server.api_url();
    resources(Some("download"), out.path(), &api, &[], &[]).ok();
    // Decompress straight from the parts: no network.
    let before = server.request_count();
    resources(Some("decompress"), out.path(), &api, &[], &[]).ok();
    assert_eq!(server.request_count(), before);
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
    // And convert as its own step.
    resources(Some("convert"), out.path(), &api, &[], &[]).ok();
    let raw = fx.path().join("qemu.raw");
    qemu_raw(&d.qcow2, &raw);
    assert!(fs::read(&raw).unwrap() == fs::read(out.path().join("disk-image.img")).unwrap());
}

/// A good set is installed; then a bad release must leave it as it was.
fn install_good(out: &Path) -> (Server, DiskFixture, TempDir) {
    let fx = TempDir::new("pl-good-fx");
    let d = disk(fx.path(), Compression::Gzip, 256 << 10).unwrap();
    let server = Server::start(REPO, vec![release("v1", &d)]);
    resources(None, out, &server.api_url(), &["--version", "v1"], &[]).ok();
    (server, d, fx)
}

fn installed_set(out: &Path) -> Vec<(String, Vec<u8>)> {
    [
        "kernel",
        "client",
        "disk-image.qcow2",
        "disk-image.img",
        "manifest.json",
    ]
    .iter()
    .map(|n| (n.to_string(), fs::read(out.join(n)).unwrap()))
    .collect()
}

fn assert_bad_release_keeps_good_set(
    make_bad: impl FnOnce(&DiskFixture, &Path) -> ReleaseSpec,
    needle: &str,
) {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let out = TempDir::new("pl-bad");
    let (server, d, fx) = install_good(out.path());
    let good = installed_set(out.path());
    // Another image: the installed one would be kept, its bytes unread.
    let other = disk_of(&fx.path().join("other"), Compression::Gzip, 256 << 10, 5).unwrap();
    let bad = make_bad(&other, fx.path());
    server.set_releases(vec![bad, release("v1", &d)]);
    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", "v2"],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains(needle),
        "expected `{needle}` in:\n{}",
        run.stderr
    );
    assert!(
        installed_set(out.path()) == good,
        "the installed set changed"
    );
    // Nothing half-written under a final name anywhere in the output dir.
    let stray: Vec<String> = entries(out.path())
        .into_iter()
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

fn with_disk(d: &DiskFixture, f: impl FnOnce(&mut Vec<AssetSpec>)) -> ReleaseSpec {
    let mut assets = upstream_assets("focal", "amd64", d);
    f(&mut assets);
    ReleaseSpec::new("v2", assets)
}

fn bytes_of(a: &AssetSpec) -> Vec<u8> {
    match &a.body {
        testkit::Body::Bytes(b) => b.to_vec(),
        testkit::Body::File(p) => fs::read(p).unwrap(),
    }
}

#[test]
fn sums_mismatch_keeps_the_old_set() {
    assert_bad_release_keeps_good_set(
        |d, _| {
            with_disk(d, |assets| {
                let sums = assets
                    .iter_mut()
                    .find(|a| a.name.ends_with(".sums"))
                    .unwrap();
                *sums = AssetSpec::bytes(
                    &sums.name.clone(),
                    format!("{}  temp/disk-image.qcow2\n", "ab".repeat(32)).into_bytes(),
                );
            })
        },
        "published checksum",
    );
}

#[test]
fn missing_part_is_named() {
    assert_bad_release_keeps_good_set(
        |d, _| {
            with_disk(d, |assets| {
                assets.retain(|a| !a.name.ends_with(".tar.gz.ab"))
            })
        },
        "disk-image-focal-amd64.qcow2.tar.gz.ab is missing",
    );
}

#[test]
fn truncated_archive_is_an_error() {
    assert_bad_release_keeps_good_set(
        |d, _| {
            with_disk(d, |assets| {
                // Drop the last part: the sequence has no gap, the archive ends early.
                let last = assets
                    .iter()
                    .rposition(|a| a.name.contains(".tar.gz."))
                    .unwrap();
                assets.remove(last);
            })
        },
        "disk-image-focal-amd64.qcow2.tar.gz",
    );
}

#[test]
fn corrupt_gzip_names_the_archive() {
    assert_bad_release_keeps_good_set(
        |d, _| {
            with_disk(d, |assets| {
                let part = assets
                    .iter_mut()
                    .find(|a| a.name.ends_with(".tar.gz.aa"))
                    .unwrap();
                let mut data = bytes_of(part);
                let mid = data.len() / 2;
                for b in &mut data[mid..mid + 64] {
                    *b ^= 0x5a;
                }
                *part = AssetSpec::bytes(&part.name.clone(), data);
            })
        },
        "disk-image-focal-amd64.qcow2.tar.gz",
    );
}

fn tar_gz(members: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, kind, data, link) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Raw name bytes: the builder would refuse `..` and absolute paths.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

#[test]
fn hostile_tar_members_write_nothing_outside() {
    let fake = b"QFI\xfb not really a qcow2".to_vec();
    for (what, members, needle) in [
        (
            "dotdot",
            vec![("../evil.qcow2", tar::EntryType::Regular, &fake[..], None)],
            "../evil.qcow2",
        ),
        (
            "symlink",
            vec![(
                "temp/disk-image.qcow2",
                tar::EntryType::Symlink,
                &b""[..],
                Some("/etc/passwd"),
            )],
            "temp/disk-image.qcow2",
        ),
        (
            "absolute",
            vec![(
                "/tmp/abs-evil.qcow2",
                tar::EntryType::Regular,
                &fake[..],
                None,
            )],
            "/tmp/abs-evil.qcow2",
        ),
        (
            "hardlink",
            vec![(
                "temp/disk-image.qcow2",
                tar::EntryType::Link,
                &b""[..],
                Some("/etc/passwd"),
            )],
            "temp/disk-image.qcow2",
        ),
        (
            "none",
            vec![(
                "temp/readme.txt",
                tar::EntryType::Regular,
                &b"hello"[..],
                None,
            )],
            "temp/readme.txt",
        ),
    ] {
        let data = tar_gz(&members);
        let mut assets = vec![
            AssetSpec::bytes("vmlinux-focal-amd64", fake_elf("amd64")),
            AssetSpec::bytes("test-client-amd64", fake_elf("amd64")),
            AssetSpec::bytes("disk-image-focal-amd64.qcow2.tar.gz", data),
        ];
        assets.push(AssetSpec::bytes(
            "disk-image-focal-amd64.qcow2.sums",
            format!("{}  temp/disk-image.qcow2\n", "00".repeat(32)).into_bytes(),
        ));
        let server = Server::start(REPO, vec![ReleaseSpec::new("v1", assets)]);
        let root = TempDir::new("pl-hostile");
        let out = root.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let run = resources(None, &out, &server.api_url(), &[], &[]);
        run.failed();
        assert!(run.stderr.contains(needle), "{what}: {}", run.stderr);
        // The output directory and its download cache, nothing else.
        assert_eq!(
            entries(root.path()),
            ["out", "out.cache"],
            "{what}: wrote outside the output dir"
        );
        assert!(!out.join("disk-image.qcow2").exists(), "{what}");
        assert!(!out.join("evil.qcow2").exists(), "{what}");
    }
}

#[test]
fn switching_tags_replaces_the_whole_set() {
    let fx = TempDir::new("pl-switch-fx");
    let Some(d1) = disk(fx.path(), Compression::Gzip, 1 << 20) else {
        return;
    };
    let fx2 = TempDir::new("pl-switch-fx2");
    let img2 = fx2.path().join("two.qcow2");
    make_qcow2(&img2, 32, 3).unwrap();
    let d2 = pack_disk(
        &img2,
        "focal",
        "amd64",
        1 << 20,
        Compression::Gzip,
        fx2.path(),
    )
    .unwrap();
    let server = Server::start(REPO, vec![release("v2", &d2), release("v1", &d1)]);
    let out = TempDir::new("pl-switch");
    resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", "v1"],
        &[],
    )
    .ok();
    resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", "v2"],
        &[],
    )
    .ok();
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d2.sha256_hex
    );
    let m = fs::read_to_string(out.path().join("manifest.json")).unwrap();
    assert!(m.contains("\"tag\": \"v2\""));
    assert_eq!(
        fs::metadata(out.path().join("disk-image.img"))
            .unwrap()
            .len(),
        32 << 20
    );
    resources(Some("verify"), out.path(), &server.api_url(), &[], &[]).ok();
}

#[test]
fn verify_names_what_is_wrong() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let out = TempDir::new("pl-verify");
    let (server, _d, _fx) = install_good(out.path());
    let api = server.api_url();
    let verify = |extra: &[&str]| resources(Some("verify"), out.path(), &api, extra, &[]);
    verify(&[]).ok();

    // One flipped byte in the raw image: only --deep reads the content.
    let raw = out.path().join("disk-image.img");
    let pristine = fs::read(&raw).unwrap();
    let f = fs::OpenOptions::new().write(true).open(&raw).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&[pristine[4096] ^ 1], 4096).unwrap();
    drop(f);
    let run = verify(&["--deep"]);
    run.failed();
    assert!(
        run.stdout
            .contains("differs from the qcow2's guest content at byte 4096"),
        "{}",
        run.stdout
    );
    fs::write(&raw, &pristine).unwrap();

    // A kernel of the wrong architecture.
    let kernel = out.path().join("kernel");
    let good_kernel = fs::read(&kernel).unwrap();
    fs::write(&kernel, fake_elf("arm64")).unwrap();
    let run = verify(&[]);
    run.failed();
    assert!(run.stdout.contains("wrong architecture"), "{}", run.stdout);
    fs::write(&kernel, &good_kernel).unwrap();

    // A truncated qcow2.
    let q = out.path().join("disk-image.qcow2");
    let good_q = fs::read(&q).unwrap();
    fs::File::create(&q)
        .unwrap()
        .write_all(&good_q[..good_q.len() / 2])
        .unwrap();
    let run = verify(&["--quick"]);
    run.failed();
    assert!(
        run.stdout.contains("disk-image.qcow2") && run.stdout.contains("truncated"),
        "{}",
        run.stdout
    );
    fs::write(&q, &good_q).unwrap();

    // A missing file.
    fs::remove_file(out.path().join("client")).unwrap();
    let run = verify(&[]);
    run.failed();
    assert!(
        run.stdout.contains("client") && run.stdout.contains("missing"),
        "{}",
        run.stdout
    );
}

#[test]
fn single_steps_leave_another_installed_set_whole() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let out = TempDir::new("pl-steps");
    let (server, d1, _fx) = install_good(out.path());
    let good = installed_set(out.path());
    let fx2 = TempDir::new("pl-steps-fx2");
    let img2 = fx2.path().join("two.qcow2");
    make_qcow2(&img2, 32, 3).unwrap();
    let d2 = pack_disk(
        &img2,
        "focal",
        "amd64",
        1 << 20,
        Compression::Gzip,
        fx2.path(),
    )
    .unwrap();
    let mut v2 = release("v2", &d2);
    // A kernel that differs from v1's, so a mix would show.
    v2.assets[0] = AssetSpec::bytes("vmlinux-focal-amd64", {
        let mut k = fake_elf("amd64");
        k[100] ^= 1;
        k
    });
    server.set_releases(vec![v2, release("v1", &d1)]);
    let api = server.api_url();

    let run = resources(
        Some("download"),
        out.path(),
        &api,
        &["--version", "v2"],
        &[],
    );
    run.ok();
    assert!(
        run.stdout.contains("stays installed whole"),
        "{}",
        run.stdout
    );
    resources(
        Some("decompress"),
        out.path(),
        &api,
        &["--version", "v2"],
        &[],
    )
    .ok();
    assert!(
        installed_set(out.path()) == good,
        "a single step mixed v2 into the v1 set"
    );
    resources(Some("verify"), out.path(), &api, &[], &[]).ok();

    // The full run switches, reusing the image the step unpacked.
    let run = resources(None, out.path(), &api, &["--version", "v2"], &[]);
    run.ok();
    assert!(
        run.stderr.contains("already unpacked and checked"),
        "{}",
        run.stderr
    );
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d2.sha256_hex
    );
}
