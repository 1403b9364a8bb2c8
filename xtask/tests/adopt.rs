//! Taking what users already have: a `resources/` made by artifacts.py (and
//! a raw image made with `qemu-img convert`), a lost or damaged manifest, a
//! deleted raw image, a set installed without the raw image (`--no-raw`).
//! Files that are the release's are adopted with no disk part fetched; a
//! file the user changed is refused as before.

mod common;

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use common::*;
use testkit::{
    make_qcow2, pack_disk, upstream_assets, AssetSpec, Body, Compression, DigestMode, DiskFixture,
    ReleaseSpec, Server, TempDir,
};

const TAG: &str = "v0.3.0";
const KERNEL_ASSET: &str = "vmlinux-focal-amd64";
const CLIENT_ASSET: &str = "test-client-amd64";

fn disk(fx: &Path, data_mib: u64) -> Option<DiskFixture> {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return None;
    }
    fs::create_dir_all(fx).unwrap();
    let img = fx.join("src.qcow2");
    make_qcow2(&img, 48, data_mib).unwrap();
    Some(pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, fx).unwrap())
}

fn release(d: &DiskFixture, digests: DigestMode) -> ReleaseSpec {
    let mut assets = upstream_assets("focal", "amd64", d);
    for a in &mut assets {
        a.digest = digests;
    }
    ReleaseSpec::new(TAG, assets)
}

fn bytes_of(spec: &ReleaseSpec, name: &str) -> Vec<u8> {
    let a = spec.assets.iter().find(|a| a.name == name).unwrap();
    match &a.body {
        Body::Bytes(b) => b.to_vec(),
        Body::File(p) => fs::read(p).unwrap(),
    }
}

/// What artifacts.py leaves, replayed: kernel and client as downloaded, the
/// parts concatenated and unpacked with `gzip -dc | tar x` (the image moved
/// from `temp/`), the raw image from `qemu-img convert` (with `raw`), and
/// the files upstream keeps in `resources/`.
fn artifacts_py_dir(out: &Path, spec: &ReleaseSpec, raw: bool) {
    fs::create_dir_all(out).unwrap();
    fs::write(out.join("kernel"), bytes_of(spec, KERNEL_ASSET)).unwrap();
    fs::write(out.join("client"), bytes_of(spec, CLIENT_ASSET)).unwrap();
    let work = out.join("unpack-tmp");
    fs::create_dir_all(&work).unwrap();
    let mut archive = Vec::new();
    for a in spec.assets.iter().filter(|a| a.name.contains(".tar.gz.")) {
        archive.extend(bytes_of(spec, &a.name));
    }
    fs::write(work.join("disk.tmp"), archive).unwrap();
    let st = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc disk.tmp | tar xf -")
        .current_dir(&work)
        .status()
        .unwrap();
    assert!(st.success());
    fs::rename(
        work.join("temp/disk-image.qcow2"),
        out.join("disk-image.qcow2"),
    )
    .unwrap();
    fs::remove_dir_all(&work).unwrap();
    if raw {
        let st = Command::new("qemu-img")
            .args(["convert", "-O", "raw"])
            .arg(out.join("disk-image.qcow2"))
            .arg(out.join("disk-image.img"))
            .status()
            .unwrap();
        assert!(st.success());
    }
    // Upstream's resources/ holds these too; no run may touch them.
    fs::write(out.join("artifacts.py"), b"# upstream's downloader\n").unwrap();
    fs::write(out.join("Makefile"), b"download-resources:\n").unwrap();
    fs::write(out.join("release.json"), b"{\"kernel\": \"vmlinux\"}\n").unwrap();
    fs::create_dir_all(out.join("gem5/build")).unwrap();
    fs::write(out.join("gem5/build/gem5.opt"), b"not really gem5").unwrap();
}

/// The assets a run fetched (names, in order), from request `from` on.
fn fetched(server: &Server, from: usize) -> Vec<String> {
    server.requests()[from..]
        .iter()
        .filter(|r| r.host == "assets" && r.method == "GET")
        .map(|r| r.path.rsplit('/').next().unwrap_or("").to_string())
        .collect()
}

fn untouched_upstream_files(out: &Path) {
    assert_eq!(
        fs::read(out.join("artifacts.py")).unwrap(),
        b"# upstream's downloader\n"
    );
    assert_eq!(
        fs::read(out.join("release.json")).unwrap(),
        b"{\"kernel\": \"vmlinux\"}\n"
    );
    assert_eq!(
        fs::read(out.join("gem5/build/gem5.opt")).unwrap(),
        b"not really gem5"
    );
}

fn manifest(out: &Path) -> serde_json::Value {
    serde_json::from_str(&fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap()
}

#[test]
fn an_artifacts_py_directory_is_adopted_fetching_only_the_sums() {
    let fx = TempDir::new("ad-py-fx");
    let Some(d) = disk(fx.path(), 4) else { return };
    let spec = release(&d, DigestMode::Correct);
    let server = Server::start(REPO, vec![spec.clone()]);
    let out = TempDir::new("ad-py");
    artifacts_py_dir(out.path(), &spec, true);
    let before: Vec<_> = ["kernel", "client", "disk-image.qcow2", "disk-image.img"]
        .iter()
        .map(|n| fs::read(out.path().join(n)).unwrap())
        .collect();

    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", TAG],
        &[],
    );
    run.ok();
    assert_eq!(
        fetched(&server, 0),
        ["disk-image-focal-amd64.qcow2.sums"],
        "only the sums: the kernel and client have digests"
    );
    assert_eq!(run.stderr.matches("adopted").count(), 4, "{}", run.stderr);
    let after: Vec<_> = ["kernel", "client", "disk-image.qcow2", "disk-image.img"]
        .iter()
        .map(|n| fs::read(out.path().join(n)).unwrap())
        .collect();
    assert!(before == after, "an adopted file was rewritten");
    untouched_upstream_files(out.path());
    let m = manifest(out.path());
    assert_eq!(m["tag"], TAG);
    assert_eq!(m["files"].as_array().unwrap().len(), 4);
    assert_eq!(m["files"][2]["sha256"], d.sha256_hex.as_str());

    // Adopted means installed: the next run is up to date, verify holds.
    let again = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", TAG],
        &[],
    );
    again.ok();
    assert!(again.stdout.contains("Up to date"), "{}", again.stdout);
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
fn without_digests_the_small_assets_are_the_reference_and_no_part_is_fetched() {
    let fx = TempDir::new("ad-nod-fx");
    let Some(d) = disk(fx.path(), 2) else { return };
    let spec = release(&d, DigestMode::Missing);
    let server = Server::start(REPO, vec![spec.clone()]);
    let out = TempDir::new("ad-nod");
    artifacts_py_dir(out.path(), &spec, false);
    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", TAG],
        &[],
    );
    run.ok();
    let mut got = fetched(&server, 0);
    got.sort();
    assert_eq!(
        got,
        [
            "disk-image-focal-amd64.qcow2.sums",
            "test-client-amd64",
            "vmlinux-focal-amd64"
        ]
    );
    // The raw image was missing: made from the adopted qcow2, not downloaded.
    assert!(
        run.stderr.contains("disk-image.img: converted"),
        "{}",
        run.stderr
    );
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
fn a_qcow2_the_user_changed_is_refused_and_no_part_is_fetched() {
    let fx = TempDir::new("ad-chg-fx");
    let Some(d) = disk(fx.path(), 2) else { return };
    let spec = release(&d, DigestMode::Correct);
    let server = Server::start(REPO, vec![spec.clone()]);
    let out = TempDir::new("ad-chg");
    artifacts_py_dir(out.path(), &spec, true);
    let q = out.path().join("disk-image.qcow2");
    // As if the user booted it and installed something.
    let f = fs::File::options().write(true).open(&q).unwrap();
    f.write_all_at(b"installed software", 300_000).unwrap();
    drop(f);
    let mine = fs::read(&q).unwrap();

    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", TAG],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("disk-image.qcow2") && run.stderr.contains("sha256"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    assert!(run.stderr.contains("move"), "{}", run.stderr);
    assert!(
        !fetched(&server, 0).iter().any(|n| n.contains(".tar.gz")),
        "a disk part was fetched for a refused run"
    );
    assert_eq!(fs::read(&q).unwrap(), mine);
    assert!(!out.path().join("manifest.json").exists());
    untouched_upstream_files(out.path());
}

#[test]
fn a_raw_image_the_user_changed_is_refused_naming_where_it_differs() {
    let fx = TempDir::new("ad-raw-fx");
    let Some(d) = disk(fx.path(), 2) else { return };
    let spec = release(&d, DigestMode::Correct);
    let server = Server::start(REPO, vec![spec.clone()]);
    let out = TempDir::new("ad-raw");
    artifacts_py_dir(out.path(), &spec, true);
    let raw = out.path().join("disk-image.img");
    let f = fs::File::options().write(true).open(&raw).unwrap();
    f.write_all_at(b"gem5 wrote here", 8192).unwrap();
    drop(f);
    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", TAG],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("disk-image.img") && run.stderr.contains("at byte 8192"),
        "{}",
        run.stderr
    );
    // With --force it is replaced by the release's, and the rest is adopted.
    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", TAG, "--force"],
        &[],
    );
    run.ok();
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
fn a_damaged_manifest_is_set_aside_and_the_files_adopted() {
    let fx = TempDir::new("ad-dmg-fx");
    let Some(d) = disk(fx.path(), 2) else { return };
    let spec = release(&d, DigestMode::Correct);
    let server = Server::start(REPO, vec![spec]);
    let out = TempDir::new("ad-dmg");
    let api = server.api_url();
    resources(None, out.path(), &api, &["--version", TAG], &[]).ok();
    fs::write(out.path().join("manifest.json"), b"{ not json").unwrap();
    let from = server.requests().len();
    let run = resources(None, out.path(), &api, &["--version", TAG], &[]);
    run.ok();
    assert!(run.stderr.contains("damaged"), "{}", run.stderr);
    assert_eq!(run.stderr.matches("adopted").count(), 4, "{}", run.stderr);
    assert!(
        fetched(&server, from).is_empty(),
        "the cache holds the sums: nothing is fetched"
    );
    resources(Some("verify"), out.path(), &api, &[], &[]).ok();
}

#[test]
fn a_deleted_raw_image_is_made_again_from_the_qcow2_with_no_download() {
    let fx = TempDir::new("ad-del-fx");
    let Some(d) = disk(fx.path(), 2) else { return };
    let server = Server::start(REPO, vec![release(&d, DigestMode::Correct)]);
    let out = TempDir::new("ad-del");
    let api = server.api_url();
    resources(None, out.path(), &api, &["--version", TAG], &[]).ok();
    let raw = fs::read(out.path().join("disk-image.img")).unwrap();
    fs::remove_file(out.path().join("disk-image.img")).unwrap();
    let from = server.requests().len();
    let run = resources(None, out.path(), &api, &["--version", TAG], &[]);
    run.ok();
    assert_eq!(server.requests().len(), from, "no request at all");
    assert!(fs::read(out.path().join("disk-image.img")).unwrap() == raw);
    assert!(run.stdout.contains("kept"), "{}", run.stdout);
}

#[test]
fn no_raw_installs_three_files_and_verify_and_reruns_know_it() {
    let fx = TempDir::new("ad-noraw-fx");
    let Some(d) = disk(fx.path(), 2) else { return };
    let server = Server::start(REPO, vec![release(&d, DigestMode::Correct)]);
    let out = TempDir::new("ad-noraw");
    let api = server.api_url();
    let args = ["--version", TAG, "--no-raw"];
    let run = resources(None, out.path(), &api, &args, &[]);
    run.ok();
    assert!(!out.path().join("disk-image.img").exists());
    let m = manifest(out.path());
    assert_eq!(m["no_raw"], true);
    assert_eq!(m["files"].as_array().unwrap().len(), 3);
    let v = resources(Some("verify"), out.path(), &api, &[], &[]);
    v.ok();
    assert!(v.stdout.contains("--no-raw"), "{}", v.stdout);
    let again = resources(None, out.path(), &api, &args, &[]);
    again.ok();
    assert!(again.stdout.contains("Up to date"), "{}", again.stdout);

    // Without --no-raw the raw image is made from the qcow2 in place.
    let from = server.requests().len();
    let full = resources(None, out.path(), &api, &["--version", TAG], &[]);
    full.ok();
    assert_eq!(server.requests().len(), from, "no request at all");
    assert!(out.path().join("disk-image.img").is_file());
    assert_eq!(manifest(out.path())["files"].as_array().unwrap().len(), 4);
    resources(Some("verify"), out.path(), &api, &["--deep"], &[]).ok();
    // A good raw image stays with --no-raw: the set is still whole.
    let keep = resources(None, out.path(), &api, &args, &[]);
    keep.ok();
    assert!(keep.stdout.contains("Up to date"), "{}", keep.stdout);
}

#[test]
fn no_raw_on_a_new_image_removes_the_tools_raw_image_and_leaves_the_users() {
    let fx = TempDir::new("ad-swap-fx");
    let Some(d1) = disk(&fx.path().join("a"), 2) else {
        return;
    };
    let d2 = disk(&fx.path().join("b"), 3).unwrap();
    let mut v2 = release(&d2, DigestMode::Correct);
    v2.tag = "v0.4.0".into();
    let server = Server::start(REPO, vec![release(&d1, DigestMode::Correct), v2]);
    let api = server.api_url();

    // The tool's raw image of the old qcow2 goes with it.
    let out = TempDir::new("ad-swap");
    resources(None, out.path(), &api, &["--version", TAG], &[]).ok();
    resources(
        None,
        out.path(),
        &api,
        &["--version", "v0.4.0", "--no-raw"],
        &[],
    )
    .ok();
    assert!(!out.path().join("disk-image.img").exists());
    resources(Some("verify"), out.path(), &api, &[], &[]).ok();

    // One the user changed stays, unrecorded.
    let out = TempDir::new("ad-swap-user");
    resources(None, out.path(), &api, &["--version", TAG], &[]).ok();
    let raw = out.path().join("disk-image.img");
    let f = fs::File::options().write(true).open(&raw).unwrap();
    f.write_all_at(b"simulation state", 4096).unwrap();
    drop(f);
    let mine = fs::read(&raw).unwrap();
    resources(
        None,
        out.path(),
        &api,
        &["--version", "v0.4.0", "--no-raw"],
        &[],
    )
    .ok();
    assert!(fs::read(&raw).unwrap() == mine);
    let m = manifest(out.path());
    assert!(!m["files"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "disk-image.img"));
}

#[test]
fn switching_tags_fetches_only_what_differs() {
    let fx = TempDir::new("ad-same-fx");
    let Some(d) = disk(fx.path(), 2) else { return };
    // v0.4.0 has a new kernel; the client and the disk are the same bytes.
    let mut v2 = release(&d, DigestMode::Correct);
    v2.tag = "v0.4.0".into();
    let mut kernel = testkit::fake_elf("amd64");
    kernel.extend_from_slice(b"a newer kernel");
    v2.assets.retain(|a| a.name != KERNEL_ASSET);
    v2.assets
        .push(AssetSpec::bytes(KERNEL_ASSET, kernel.clone()));
    let server = Server::start(REPO, vec![release(&d, DigestMode::Correct), v2]);
    let api = server.api_url();
    let out = TempDir::new("ad-same");
    resources(None, out.path(), &api, &["--version", TAG], &[]).ok();
    let from = server.requests().len();
    let run = resources(None, out.path(), &api, &["--version", "v0.4.0"], &[]);
    run.ok();
    // The new kernel, and the sums that tell the image is the same.
    let mut got = fetched(&server, from);
    got.sort();
    assert_eq!(got, ["disk-image-focal-amd64.qcow2.sums", KERNEL_ASSET]);
    assert_eq!(fs::read(out.path().join("kernel")).unwrap(), kernel);
    assert_eq!(manifest(out.path())["tag"], "v0.4.0");
    resources(Some("verify"), out.path(), &api, &["--deep"], &[]).ok();
}
