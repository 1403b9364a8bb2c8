//! What is installed is what the release holds: the full pipeline against
//! qemu-img's image, digests and image sums checked, damaged, truncated and
//! corrupt archives and parts named, server faults retried or not, and
//! exactly what a fault puts in doubt is fetched again (once).

use crate::common::*;
use crate::fixtures::{
    assert_downloaded, asset_ranges, disk, disk_if_qemu, disk_of, disk_with_parts, entries,
    good_set, install_good, installed_set, publish_v2, release, PART_AA,
};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use testkit::{
    fake_elf, make_qcow2, pack_disk, sha256_file_hex, upstream_assets, AssetSpec, Compression,
    DigestMode, DiskFixture, Fault, ReleaseSpec, Server, TempDir,
};

fn qemu_raw(qcow2: &Path, out: &Path) {
    let st = std::process::Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(qcow2)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
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

const PART: &str = "disk-image-focal-amd64.qcow2.tar.gz";

/// A small real qcow2 in `dir`: (path, sha256 hex).
fn qcow2(dir: &Path) -> (std::path::PathBuf, String) {
    let img = dir.join("src.qcow2");
    make_qcow2(&img, 8, 2).unwrap();
    let sha = sha256_file_hex(&img).unwrap();
    (img, sha)
}

/// `sh -c script` in `dir`; its stdout.
fn sh(dir: &Path, script: &str) -> Vec<u8> {
    let out = Command::new("sh")
        .args(["-c", script])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A release whose disk archive is `archive`, split into parts of 256 KiB
/// (each fetched with one request), with the sums of an image of sha256
/// `sha`; every asset carries its correct digest.
fn release_of(tag: &str, archive: &[u8], sha: &str) -> ReleaseSpec {
    let mut assets: Vec<AssetSpec> = archive
        .chunks(256 << 10)
        .enumerate()
        .map(|(i, c)| {
            let suffix = format!("a{}", (b'a' + i as u8) as char);
            AssetSpec::bytes(&format!("{PART}.{suffix}"), c.to_vec())
        })
        .collect();
    assert!(assets.len() >= 2, "the archive should span parts");
    assets.push(AssetSpec::bytes(
        "disk-image-focal-amd64.qcow2.sums",
        format!("{sha}  temp/disk-image.qcow2\n").into_bytes(),
    ));
    let disk = DiskFixture {
        qcow2: Default::default(),
        sha256_hex: sha.to_string(),
        assets,
    };
    ReleaseSpec::new(tag, upstream_assets("focal", "amd64", &disk))
}

/// GETs of each disk part the storage host answered, by part name.
fn part_fetches(server: &Server, spec: &ReleaseSpec) -> Vec<(String, usize)> {
    let log = server.requests();
    spec.assets
        .iter()
        .filter(|a| a.name.starts_with(PART))
        .map(|a| {
            let n = log
                .iter()
                .filter(|r| r.host == "assets" && r.method == "GET")
                .filter(|r| r.path.ends_with(&format!("/{}", a.name)))
                .count();
            (a.name.clone(), n)
        })
        .collect()
}

/// The full run over `archive` fails once, with `says` in its message,
/// fetching every part exactly once.
fn fails_plainly_fetching_each_part_once(archive: &[u8], sha: &str, says: &[&str]) {
    let spec = release_of("v1", archive, sha);
    let server = Server::start(REPO, vec![spec.clone()]);
    let out = TempDir::new("r3-once");
    let run = resources(None, out.path(), &server.api_url(), &[], &[]);
    // An archive the tool refuses is an integrity failure (exit code 4).
    assert_eq!(run.code, 4, "{}", run.all());
    for s in says {
        assert!(run.stderr.contains(s), "missing {s:?}: {}", run.stderr);
    }
    for not in ["twice", "fetching again"] {
        assert!(!run.stderr.contains(not), "{not:?}: {}", run.stderr);
    }
    for (name, n) in part_fetches(&server, &spec) {
        assert_eq!(n, 1, "{name} was fetched {n} times: {}", run.stderr);
    }
    assert!(!out.path().join("disk-image.qcow2").exists());
}

/// One PAX record: `<length> key=value\n`, the length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let body = format!(" {key}={value}\n");
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    format!("{len}{body}").into_bytes()
}

/// A gzip'd tar whose image member is preceded by a PAX header giving
/// `size` for it.
fn tar_with_pax_size(img: &Path, size: &str) -> Vec<u8> {
    let data = fs::read(img).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let pax = pax_record("size", size);
    let mut h = tar::Header::new_ustar();
    h.set_path("PaxHeaders/disk-image.qcow2").unwrap();
    h.set_size(pax.len() as u64);
    h.set_entry_type(tar::EntryType::XHeader);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &pax[..]).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_path("temp/disk-image.qcow2").unwrap();
    h.set_size(data.len() as u64);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_cksum();
    b.append(&h, &data[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    gz.finish().unwrap()
}

#[test]
fn full_pipeline_installs_exactly_the_set() {
    let fx = TempDir::new("pl-full-fx");
    let Some(d) = disk_if_qemu(fx.path(), Compression::Gzip, 300_000) else {
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
    let Some(d) = disk_if_qemu(fx.path(), Compression::Xz, 700_000) else {
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
    let Some(d) = disk_if_qemu(fx.path(), Compression::Gzip, 1 << 20) else {
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
fn a_sums_file_may_start_with_a_bom() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("h13-bom-fx");
    let d = disk(fx.path(), "d", 2);
    let mut spec = release("v1", &d);
    let last = spec.assets.len() - 1;
    let mut sums = b"\xef\xbb\xbf".to_vec();
    sums.extend(format!("{}  temp/disk-image.qcow2\n", d.sha256_hex).bytes());
    spec.assets[last] = AssetSpec::bytes(&spec.assets[last].name.clone(), sums);
    let server = Server::start(REPO, vec![spec]);
    let out = TempDir::new("h13-bom");
    resources(None, out.path(), &server.api_url(), &[], &[]).ok();
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

#[test]
fn digest_mismatch_leaves_no_file_and_shows_both_values() {
    let mut spec = bytes_release("v1", "focal", "amd64", &[70_000]);
    spec.assets
        .iter_mut()
        .find(|a| a.name == PART_AA)
        .unwrap()
        .digest = DigestMode::Wrong;
    let server = Server::start(REPO, vec![spec]);
    let dir = TempDir::new("dl-digest");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr
            .contains(&format!("asset {PART_AA}: sha256 mismatch")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("the release says"), "{}", run.stderr);
    let work = cache_entry(dir.path(), &server.api_url(), "v1");
    assert!(
        !files_in(&work).iter().any(|n| n.contains(PART_AA)),
        "{:?}",
        files_in(&work)
    );
}

#[test]
fn truncated_asset_is_an_error() {
    let spec = bytes_release("v1", "focal", "amd64", &[70_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::Truncated {
        asset: PART_AA.into(),
    });
    let dir = TempDir::new("dl-trunc");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(run.stderr.contains(PART_AA), "{}", run.stderr);
    assert!(!cache_entry(dir.path(), &server.api_url(), "v1")
        .join(PART_AA)
        .exists());
}

#[test]
fn server_errors_are_retried() {
    let spec = bytes_release("v1", "focal", "amd64", &[50_000]);
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::Status {
        asset: PART_AA.into(),
        status: 500,
        times: 2,
    });
    server.add_fault(Fault::Status {
        asset: "vmlinux-focal-amd64".into(),
        status: 503,
        times: 1,
    });
    let dir = TempDir::new("dl-500");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(
        run.stderr.contains("HTTP 500"),
        "the retry is reported: {}",
        run.stderr
    );
    assert_downloaded(dir.path(), &server.api_url(), &spec);
    let gets = server
        .requests()
        .into_iter()
        .filter(|r| r.host == "assets" && r.path.ends_with(PART_AA))
        .count();
    assert_eq!(gets, 3);
}

#[test]
fn a_404_asset_is_not_retried() {
    let spec = bytes_release("v1", "focal", "amd64", &[50_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::Status {
        asset: PART_AA.into(),
        status: 404,
        times: 10,
    });
    let dir = TempDir::new("dl-404");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains(PART_AA) && run.stderr.contains("404"),
        "{}",
        run.stderr
    );
    let gets = server
        .requests()
        .into_iter()
        .filter(|r| r.host == "assets" && r.path.ends_with(PART_AA))
        .count();
    assert_eq!(gets, 1);
    assert!(
        !dir.path().join("kernel").exists(),
        "nothing installed from a failed download"
    );
}

#[test]
fn stalled_connection_times_out_and_retries() {
    let spec = bytes_release("v1", "focal", "amd64", &[200_000]);
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::Stall {
        asset: PART_AA.into(),
        after_bytes: 1000,
        times: 1,
    });
    let dir = TempDir::new("dl-stall");
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &[],
        &[("VSWARM_HTTP_TIMEOUT", "1")],
    );
    run.ok();
    assert!(run.stderr.contains("retrying"), "{}", run.stderr);
    assert_downloaded(dir.path(), &server.api_url(), &spec);
}

#[test]
fn large_asset_is_fetched_as_parallel_ranges() {
    let big = 40 * 1024 * 1024 + 17;
    let spec = bytes_release("v1", "focal", "amd64", &[big, 1000]);
    let server = Server::start(REPO, vec![spec.clone()]);
    let dir = TempDir::new("dl-seg");
    resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--jobs", "3"],
        &[],
    )
    .ok();
    assert_downloaded(dir.path(), &server.api_url(), &spec);
    let ranges = asset_ranges(&server, PART_AA, 0);
    // Several segments (an eighth of the asset, rounded to MiB), which
    // together tile the file exactly once.
    assert!(ranges.len() >= 6, "{ranges:?}");
    let mut spans: Vec<(u64, u64)> = ranges
        .iter()
        .map(|r| {
            let (a, b) = r.strip_prefix("bytes=").unwrap().split_once('-').unwrap();
            (a.parse().unwrap(), b.parse().unwrap())
        })
        .collect();
    spans.sort();
    let mut next = 0;
    for (a, b) in spans {
        assert_eq!(a, next, "{ranges:?}");
        next = b + 1;
    }
    assert_eq!(next, big as u64);
}

// ---------------------------------------------------------------------------
// The first real failure is the one named.

#[test]
fn the_first_real_failure_is_named() {
    let spec = bytes_release("v1", "focal", "amd64", &[3_000_000, 3_000_000, 3_000_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::Status {
        asset: "disk-image-focal-amd64.qcow2.tar.gz.ab".into(),
        status: 404,
        times: 100,
    });
    for _ in 0..3 {
        let dir = TempDir::new("h10");
        let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
        run.failed();
        let last = run.stderr.lines().last().unwrap_or("");
        assert!(
            last.contains("tar.gz.ab") && last.contains("404") && !last.contains("aborted"),
            "{}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// A corrupt part without a digest is fetched again, once, in the same run.

#[test]
fn a_garbage_part_is_fetched_again_once() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("h08-fx");
    let d = disk(fx.path(), "d", 4);
    let mut spec = release("v1", &d);
    for a in spec.assets.iter_mut() {
        a.digest = DigestMode::Missing;
    }
    let part = spec.assets[2].name.clone();
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::Garbage {
        asset: part.clone(),
        times: 1,
    });
    let out = TempDir::new("h08");
    let run = resources(None, out.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(run.stderr.contains("fetching again"), "{}", run.stderr);
    assert_eq!(
        testkit::sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );

    // Garbage every time: the run fails with the cause, and leaves no bad
    // part behind to poison the next run.
    server.add_fault(Fault::Garbage {
        asset: part.clone(),
        times: 100,
    });
    let out2 = TempDir::new("h08b");
    let run = resources(
        None,
        out2.path(),
        &server.api_url(),
        &["--keep-downloads"],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("twice"), "{}", run.stderr);
    assert!(!out2.path().join(".downloads/v1").join(&part).exists());
    server.clear_faults();
    resources(None, out2.path(), &server.api_url(), &[], &[]).ok();
}

#[test]
fn a_part_that_fails_its_digest_inside_the_stream_is_fetched_again_once() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("r3-garbage");
    let (img, sha) = qcow2(fx.path());
    fs::create_dir(fx.path().join("temp")).unwrap();
    fs::copy(&img, fx.path().join("temp/disk-image.qcow2")).unwrap();
    let archive = sh(fx.path(), "tar c temp/disk-image.qcow2 | gzip -c");
    let spec = release_of("v1", &archive, &sha);
    let server = Server::start(REPO, vec![spec.clone()]);
    // The first part arrives as garbage once: the unpacker fails on it
    // before its digest is known, which then decides.
    let first = format!("{PART}.aa");
    server.add_fault(Fault::Garbage {
        asset: first.clone(),
        times: 1,
    });
    let out = TempDir::new("r3-garbage-out");
    let run = resources(None, out.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(run.stderr.contains("sha256 mismatch"), "{}", run.stderr);
    assert!(run.stderr.contains("fetching again"), "{}", run.stderr);
    for (name, n) in part_fetches(&server, &spec) {
        let want = if name == first { 2 } else { 1 };
        assert_eq!(n, want, "{name} was fetched {n} times: {}", run.stderr);
    }
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        sha
    );
}

#[test]
fn a_fault_seen_only_at_the_end_puts_every_unchecked_part_in_doubt() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv04-fx");
    let d = disk_with_parts(fx.path(), "a", 4, 256 << 10);
    let mut good = release("v1", &d);
    for a in good.assets.iter_mut() {
        a.digest = DigestMode::Missing;
    }
    let parts: Vec<usize> = (0..good.assets.len())
        .filter(|&i| good.assets[i].name.contains(".tar.gz."))
        .collect();
    assert!(parts.len() >= 4, "{} parts", parts.len());
    // Flip bytes in the middle of an early part; gzip notices only at its CRC.
    let victim = parts[1];
    let mut bad = good.clone();
    let mut bytes = match &bad.assets[victim].body {
        testkit::Body::File(p) => fs::read(p).unwrap(),
        testkit::Body::Bytes(b) => b.as_ref().clone(),
    };
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    bad.assets[victim] = AssetSpec {
        body: testkit::Body::Bytes(std::sync::Arc::new(bytes)),
        ..bad.assets[victim].clone()
    };
    let server = Server::start(REPO, vec![bad]);
    let out = TempDir::new("rv04");
    resources(None, out.path(), &server.api_url(), &[], &[]).failed();
    // The server is fixed: the next run must not trip over a kept bad part.
    server.set_releases(vec![good]);
    resources(None, out.path(), &server.api_url(), &[], &[]).ok();
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}

#[test]
fn a_bzip2_archive_whose_parts_match_their_digests_is_fetched_once_and_named_as_bzip2() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("r3-bz2");
    let (img, sha) = qcow2(fx.path());
    fs::create_dir(fx.path().join("temp")).unwrap();
    fs::copy(&img, fx.path().join("temp/disk-image.qcow2")).unwrap();
    let archive = sh(fx.path(), "tar c temp/disk-image.qcow2 | bzip2 -c");
    fails_plainly_fetching_each_part_once(
        &archive,
        &sha,
        &["bzip2-compressed, which this tool does not read"],
    );
}

#[test]
fn an_archive_with_two_qcow2_members_is_fetched_once_and_said_to_hold_two_images() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("r3-two");
    let (img, sha) = qcow2(fx.path());
    fs::create_dir(fx.path().join("temp")).unwrap();
    fs::copy(&img, fx.path().join("temp/disk-image.qcow2")).unwrap();
    fs::copy(&img, fx.path().join("temp/other.qcow2")).unwrap();
    let archive = sh(
        fx.path(),
        "tar c temp/disk-image.qcow2 temp/other.qcow2 | gzip -c",
    );
    fails_plainly_fetching_each_part_once(&archive, &sha, &["more than one qcow2 image"]);
}

#[test]
fn a_pax_size_too_large_in_parts_that_match_their_digests_is_fetched_once_and_named() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("r3-pax");
    let (img, sha) = qcow2(fx.path());
    // More than any size a file can have.
    let huge = tar_with_pax_size(&img, "99999999999999999999999");
    fails_plainly_fetching_each_part_once(&huge, &sha, &["PAX", "99999999999999999999999"]);
    // More than the archive holds: the archive is cut short as published.
    let len = fs::metadata(&img).unwrap().len();
    let long = tar_with_pax_size(&img, &(len + (1 << 20)).to_string());
    fails_plainly_fetching_each_part_once(&long, &sha, &["truncated", "digest"]);
}
