//! One test per finding of the hostile-input review (issue 9), named for it:
//! a hostile server or mirror, a careless user, links planted where the tool
//! writes. Each checks the exit code, that the message names the cause, and
//! that nothing good or the user's own was lost.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

use common::*;
use testkit::{
    fake_elf, make_qcow2, pack_disk, upstream_assets, AssetSpec, Compression, DigestMode,
    DiskFixture, Fault, ReleaseSpec, Server, TempDir,
};

/// A small real release: a qemu-img qcow2 packed like upstream.
fn disk(fx: &Path, name: &str, data_mib: u64) -> DiskFixture {
    let dir = fx.join(name);
    fs::create_dir_all(&dir).unwrap();
    let img = dir.join("src.qcow2");
    make_qcow2(&img, 32, data_mib).unwrap();
    pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, &dir).unwrap()
}

fn release(tag: &str, d: &DiskFixture) -> ReleaseSpec {
    ReleaseSpec::new(tag, upstream_assets("focal", "amd64", d))
}

/// The release JSON the server serves for `tag`, as a value to edit.
fn json_of(server: &Server, tag: &str) -> serde_json::Value {
    serde_json::from_str(&server.release_json(tag).unwrap()).unwrap()
}

fn set_json(server: &Server, tag: &str, v: &serde_json::Value) {
    server.set_release_json(tag, &v.to_string());
}

fn asset_requests(server: &Server) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.host == "assets")
        .count()
}

// ---------------------------------------------------------------------------
// 1. A file:// URL never reads a local file.

#[test]
fn finding_01_file_url_in_release_or_redirect_is_refused() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let mut v = json_of(&server, "v1");
    v["assets"][0]["browser_download_url"] = "file:///etc/passwd".into();
    set_json(&server, "v1", &v);
    let dir = TempDir::new("h01");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("vmlinux-focal-amd64") && run.stderr.contains("`file`"),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("kernel").exists());

    // The same through a redirect.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    server.add_fault(Fault::Redirect {
        asset: "vmlinux-focal-amd64".into(),
        location: "file:///etc/passwd".into(),
    });
    let dir = TempDir::new("h01b");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("vmlinux-focal-amd64") && run.stderr.contains("`file`"),
        "{}",
        run.stderr
    );
    let passwd = fs::read("/etc/passwd").unwrap_or_default();
    for f in walk(dir.path()) {
        assert_ne!(
            fs::read(&f).unwrap(),
            passwd,
            "{} holds /etc/passwd",
            f.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

// ---------------------------------------------------------------------------
// 2. Links planted at working names are never followed.

#[test]
fn finding_02_links_at_working_names_are_never_followed() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("h02-fx");
    let d = disk(fx.path(), "d", 2);
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let out = TempDir::new("h02");
    let victim_dir = TempDir::new("h02-victim");
    let victim = victim_dir.path().join("precious");
    fs::write(&victim, b"do not touch").unwrap();
    let work = out.path().join(".downloads/v1");
    fs::create_dir_all(&work).unwrap();
    let planted = [
        out.path().join(".manifest.json.partial"),
        work.join(".vmlinux-focal-amd64.partial"),
        work.join(".disk-image-focal-amd64.qcow2.tar.gz.aa.partial"),
        work.join(".disk-image.qcow2.partial"),
        work.join(".disk-image.img.partial"),
        out.path().join(".downloads/.last-tag.partial"),
        out.path().join(".downloads/last-tag"),
    ];
    for p in &planted {
        symlink(&victim, p).unwrap();
    }
    // A dangling lock link must not create its target.
    let ghost = victim_dir.path().join("ghost");
    symlink(&ghost, out.path().join(".downloads/.lock")).unwrap();
    resources(
        None,
        out.path(),
        &server.api_url(),
        &["--keep-downloads"],
        &[],
    )
    .ok();
    assert_eq!(fs::read(&victim).unwrap(), b"do not touch");
    assert!(!ghost.exists(), "the lock link's target was created");
    resources(Some("verify"), out.path(), &server.api_url(), &[], &[]).ok();

    // `.downloads` itself as a link to elsewhere: replaced, not written through.
    let out2 = TempDir::new("h02b");
    let elsewhere = TempDir::new("h02-elsewhere");
    symlink(elsewhere.path(), out2.path().join(".downloads")).unwrap();
    resources(None, out2.path(), &server.api_url(), &[], &[]).ok();
    assert!(fs::read_dir(elsewhere.path()).unwrap().next().is_none());
}

// ---------------------------------------------------------------------------
// 3. The user's changes are never replaced silently.

#[test]
fn finding_03_changed_installed_files_are_kept_touched_ones_rehashed() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("h03-fx");
    let d1 = disk(fx.path(), "d1", 2);
    let d2 = disk(fx.path(), "d2", 3);
    let server = Server::start(REPO, vec![release("v2", &d2), release("v1", &d1)]);
    let api = server.api_url();
    let out = TempDir::new("h03");
    resources(None, out.path(), &api, &["--version", "v1"], &[]).ok();

    // Only the modification time changes: re-hashed, nothing downloaded.
    let q = out.path().join("disk-image.qcow2");
    let now = std::time::SystemTime::now() + std::time::Duration::from_secs(5);
    fs::File::options()
        .write(true)
        .open(&q)
        .unwrap()
        .set_modified(now)
        .unwrap();
    let before = asset_requests(&server);
    let run = resources(None, out.path(), &api, &["--version", "v1"], &[]);
    run.ok();
    assert!(run.stdout.contains("Up to date"), "{}", run.stdout);
    assert_eq!(asset_requests(&server), before, "something was downloaded");
    // The manifest now records the new time: verify --quick holds.
    resources(Some("verify"), out.path(), &api, &["--quick"], &[]).ok();

    // The user boots the image and changes it: kept, whatever is asked.
    let raw = out.path().join("disk-image.img");
    use std::os::unix::fs::FileExt;
    fs::File::options()
        .write(true)
        .open(&q)
        .unwrap()
        .write_all_at(b"user data", 1 << 20)
        .unwrap();
    let mine = fs::read(&q).unwrap();
    for extra in [
        vec!["--version", "v1"],
        vec!["--version", "latest"],
        vec!["--version", "v2"],
    ] {
        let run = resources(None, out.path(), &api, &extra, &[]);
        run.failed();
        assert!(
            run.stderr
                .contains("disk-image.qcow2 changed since it was installed")
                && run.stderr.contains("--force")
                && run.stderr.contains("move"),
            "{extra:?}: {}",
            run.stderr
        );
        assert_eq!(fs::read(&q).unwrap(), mine, "{extra:?}");
    }
    // The single steps keep it too.
    let run = resources(
        Some("decompress"),
        out.path(),
        &api,
        &["--version", "v1"],
        &[],
    );
    run.failed();
    assert_eq!(fs::read(&q).unwrap(), mine);

    // A raw image changed by a simulator is the user's as well.
    fs::File::options()
        .write(true)
        .open(&raw)
        .unwrap()
        .write_all_at(b"gem5", 4096)
        .unwrap();
    let run = resources(Some("convert"), out.path(), &api, &[], &[]);
    run.failed();
    assert!(run.stderr.contains("disk-image.img"), "{}", run.stderr);

    // --force replaces them.
    resources(None, out.path(), &api, &["--version", "v2", "--force"], &[]).ok();
    assert_eq!(testkit::sha256_file_hex(&q).unwrap(), d2.sha256_hex);
    resources(Some("verify"), out.path(), &api, &["--deep"], &[]).ok();

    // Files the tool never installed (no manifest) are the user's too, when
    // they are not the release's.
    let fresh = TempDir::new("h03b");
    fs::write(fresh.path().join("kernel"), b"my own kernel").unwrap();
    let run = resources(None, fresh.path(), &api, &[], &[]);
    run.failed();
    assert!(run.stderr.contains("not the release's"), "{}", run.stderr);
    assert_eq!(
        fs::read(fresh.path().join("kernel")).unwrap(),
        b"my own kernel"
    );
}

// ---------------------------------------------------------------------------
// 4. A set that fails verification never replaces a good set.

#[test]
fn finding_04_a_failing_new_set_leaves_the_old_one() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("h04-fx");
    let d1 = disk(fx.path(), "d1", 2);
    let d2 = disk(fx.path(), "d2", 3);
    let mut v2 = release("v2", &d2);
    // A kernel for the wrong architecture.
    v2.assets[0] = AssetSpec::bytes("vmlinux-focal-amd64", fake_elf("arm64"));
    let server = Server::start(REPO, vec![v2, release("v1", &d1)]);
    let api = server.api_url();
    let out = TempDir::new("h04");
    resources(None, out.path(), &api, &["--version", "v1"], &[]).ok();
    let good = snapshot(out.path());
    for _ in 0..2 {
        let run = resources(None, out.path(), &api, &["--version", "v2"], &[]);
        run.failed();
        assert!(
            run.stderr.contains("wrong architecture") && run.stderr.contains("left as they were"),
            "{}",
            run.stderr
        );
        assert!(!run.stdout.contains("Up to date"));
        assert!(snapshot(out.path()) == good, "the good set changed");
    }
    let run = resources(Some("verify"), out.path(), &api, &[], &[]);
    run.ok();
    assert!(run.stdout.contains("v1"), "{}", run.stdout);
}

// ---------------------------------------------------------------------------
// 5. "Up to date" only for a complete, present, unchanged set.

#[test]
fn finding_05_incomplete_manifests_are_not_up_to_date_and_cannot_point_outside() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("h05-fx");
    let d = disk(fx.path(), "d", 2);
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let out = TempDir::new("h05");
    resources(None, out.path(), &api, &[], &[]).ok();
    let mpath = out.path().join("manifest.json");
    let good: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&mpath).unwrap()).unwrap();

    // An empty file list: nothing is known to be installed, so verify
    // fails, and the full run is not up to date: it compares the files with
    // the release and adopts them, fetching no part of the disk.
    let mut m = good.clone();
    m["files"] = serde_json::json!([]);
    fs::write(&mpath, m.to_string()).unwrap();
    let run = resources(Some("verify"), out.path(), &api, &[], &[]);
    run.failed();
    assert!(
        run.stdout.contains("the set is incomplete"),
        "{}",
        run.stdout
    );
    let before = server.requests().len();
    let run = resources(None, out.path(), &api, &["--version", "v1"], &[]);
    run.ok();
    assert!(!run.stdout.contains("Up to date"), "{}", run.stdout);
    assert!(run.stderr.contains("adopted"), "{}", run.stderr);
    assert!(
        !server.requests()[before..]
            .iter()
            .any(|r| r.path.contains(".tar.gz")),
        "a disk part was fetched"
    );
    resources(Some("verify"), out.path(), &api, &[], &[]).ok();

    // The kernel removed (its entry kept): reinstalled, not up to date.
    fs::write(&mpath, good.to_string()).unwrap();
    fs::remove_file(out.path().join("kernel")).unwrap();
    let run = resources(None, out.path(), &api, &["--version", "v1"], &[]);
    run.ok();
    assert!(!run.stdout.contains("Up to date"), "{}", run.stdout);
    assert!(out.path().join("kernel").is_file());

    // Entries naming files outside the set are ignored by every step.
    let outside = TempDir::new("h05-outside");
    let secret = outside.path().join("secret");
    fs::write(&secret, b"not yours").unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&mpath).unwrap()).unwrap();
    let mut evil = m["files"][0].clone();
    evil["name"] = secret.to_str().unwrap().into();
    evil["sha256"] = "00".repeat(32).into();
    m["files"].as_array_mut().unwrap().push(evil);
    fs::write(&mpath, m.to_string()).unwrap();
    let run = resources(Some("verify"), out.path(), &api, &[], &[]);
    run.ok();
    assert!(!run.all().contains("secret"), "{}", run.all());
    assert_eq!(fs::read(&secret).unwrap(), b"not yours");
}

// ---------------------------------------------------------------------------
// 6. `convert A A` never destroys its input.

#[test]
fn finding_06_convert_onto_itself_is_refused() {
    let dir = TempDir::new("h06");
    let q = dir.path().join("a.qcow2");
    fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qcow2/plain.qcow2"),
        &q,
    )
    .unwrap();
    let before = fs::read(&q).unwrap();
    let qs = q.to_str().unwrap();
    let link = dir.path().join("b.qcow2");
    fs::hard_link(&q, &link).unwrap();
    let dotted = format!("{}/./a.qcow2", dir.path().display());
    for other in [qs, link.to_str().unwrap(), dotted.as_str()] {
        let run = xtask(&["resources", "convert", qs, other], &[]);
        run.failed();
        assert!(run.stderr.contains("same file"), "{other}: {}", run.stderr);
        assert_eq!(fs::read(&q).unwrap(), before, "{other}");
    }
}

// ---------------------------------------------------------------------------
// 7. Bad numbers never crash.

#[test]
fn finding_07_bad_timeouts_and_absurd_sizes_are_named() {
    for bad in ["inf", "1e300", "-1", "NaN", "abc", "0"] {
        let run = xtask(
            &["resources", "list", "--github-api", "http://127.0.0.1:1"],
            &[("VSWARM_HTTP_TIMEOUT", bad)],
        );
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("VSWARM_HTTP_TIMEOUT"), "{}", run.stderr);
    }
    for size in [u64::MAX, 1_000_000_000_000_000, 10_000_000_000_000] {
        let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
        let mut v = json_of(&server, "v1");
        v["assets"][2]["size"] = size.into();
        set_json(&server, "v1", &v);
        let dir = TempDir::new("h07");
        let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
        assert_eq!(run.code, 1, "{size}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("disk-image-focal-amd64.qcow2.tar.gz.aa"),
            "{size}: {}",
            run.stderr
        );
        // No huge sparse file was made.
        for f in walk(dir.path()) {
            assert!(fs::metadata(&f).unwrap().len() < 1 << 30, "{}", f.display());
        }
    }
    // Together more than the disk holds: refused before the first byte.
    let server = Server::start(
        REPO,
        vec![bytes_release("v1", "focal", "amd64", &[100, 100])],
    );
    let mut v = json_of(&server, "v1");
    for i in 2..4 {
        v["assets"][i]["size"] = (200u64 << 30).into();
    }
    set_json(&server, "v1", &v);
    let dir = TempDir::new("h07b");
    let free = fs2_free(dir.path());
    if free < 400 << 30 {
        let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
        run.failed();
        assert!(
            run.stderr.contains("not enough free space"),
            "{}",
            run.stderr
        );
        assert_eq!(asset_requests(&server), 0);
    }
}

fn fs2_free(dir: &Path) -> u64 {
    util::fs::available_space(dir).unwrap()
}

// ---------------------------------------------------------------------------
// 8. A corrupt part without a digest is fetched again, once, in the same run.

#[test]
fn finding_08_a_garbage_part_is_fetched_again_once() {
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

// ---------------------------------------------------------------------------
// 9. A bare compressed image cannot fill the disk.

#[test]
fn finding_09_a_bare_image_is_bounded_by_its_header() {
    // A qcow2 header claiming 1 MiB, then 200 MiB of zeros: gzip makes it tiny.
    let mut head = vec![0u8; 512];
    head[..4].copy_from_slice(b"QFI\xfb");
    head[4..8].copy_from_slice(&3u32.to_be_bytes());
    head[20..24].copy_from_slice(&16u32.to_be_bytes());
    head[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    use std::io::Write;
    enc.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        enc.write_all(&zeros).unwrap();
    }
    let gz = enc.finish().unwrap();
    let mut spec = bytes_release("v1", "focal", "amd64", &[]);
    spec.assets.retain(|a| !a.name.contains(".tar.gz"));
    spec.assets
        .push(AssetSpec::bytes("disk-image-focal-amd64.qcow2.gz", gz));
    let server = Server::start(REPO, vec![spec]);
    let out = TempDir::new("h09");
    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--keep-downloads"],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("more than its own qcow2 header"),
        "{}",
        run.stderr
    );
    for f in walk(out.path()) {
        assert!(
            fs::metadata(&f).unwrap().len() < 100 << 20,
            "{}",
            f.display()
        );
    }
}

#[test]
fn finding_09_a_bare_image_stops_before_the_disk_is_full() {
    // A header claiming 16 GiB: only free space can stop it. Needs a small
    // file system of our own: a tmpfs, mounted here as root.
    let mnt = TempDir::new("h09-mnt");
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here (not root, or mounting refused)");
        return;
    }
    struct Umount<'a>(&'a Path);
    impl Drop for Umount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _guard = Umount(mnt.path());
    let mut head = vec![0u8; 512];
    head[..4].copy_from_slice(b"QFI\xfb");
    head[4..8].copy_from_slice(&3u32.to_be_bytes());
    head[20..24].copy_from_slice(&16u32.to_be_bytes());
    head[24..32].copy_from_slice(&(16u64 << 30).to_be_bytes());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    use std::io::Write;
    enc.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        enc.write_all(&zeros).unwrap();
    }
    let gz = enc.finish().unwrap();
    let mut spec = bytes_release("v1", "focal", "amd64", &[]);
    spec.assets.retain(|a| !a.name.contains(".tar.gz"));
    spec.assets
        .push(AssetSpec::bytes("disk-image-focal-amd64.qcow2.gz", gz));
    let server = Server::start(REPO, vec![spec]);
    let out = mnt.path().join("out");
    let run = resources(None, &out, &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("to keep the disk from filling"),
        "{}",
        run.stderr
    );
    let free = util::fs::available_space(mnt.path()).unwrap();
    assert!(free > 2 << 20, "the disk was filled: {free} bytes free");
}

// ---------------------------------------------------------------------------
// 10. The first real failure is the one named.

#[test]
fn finding_10_the_first_real_failure_is_named() {
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
// 11. Server text reaches the terminal escaped and cut; the token never.

#[test]
fn finding_11_server_text_is_escaped_cut_and_never_shows_the_token() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let mut v = json_of(&server, "v1");
    v["tag_name"] = format!("v1\x1b]0;pwned\x07{}", "x".repeat(10_000)).into();
    v["published_at"] = "\x1b[2J2024".into();
    set_json(&server, "v1", &v);
    let dir = TempDir::new("h11");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(!run.all().contains('\x1b'), "{:?}", run.all());
    assert!(
        run.all().len() < 4000,
        "{} bytes of output",
        run.all().len()
    );
    let run = resources(Some("list"), dir.path(), &server.api_url(), &[], &[]);
    assert!(!run.all().contains('\x1b'), "{:?}", run.all());
    assert!(
        run.all().len() < 4000,
        "{} bytes of output",
        run.all().len()
    );

    // A 5xx that echoes the request headers, token included.
    let token = "ghp_0123456789abcdefSECRET";
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    server.add_fault(Fault::ApiEcho {
        status: 502,
        times: 100,
    });
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &[],
        &[("GH_TOKEN", token)],
    );
    run.failed();
    assert!(!run.all().contains(token), "{}", run.all());
    assert!(run.all().contains("502"), "{}", run.all());

    // A mirror whose `latest` is 100 MB.
    let mirror = TempDir::new("h11-mirror");
    let f = fs::File::create(mirror.path().join("latest")).unwrap();
    f.set_len(100 << 20).unwrap();
    let run = resources(
        None,
        dir.path(),
        "http://127.0.0.1:1",
        &["--source", mirror.path().to_str().unwrap()],
        &[],
    );
    run.failed();
    assert!(
        run.all().len() < 4000,
        "{} bytes of output",
        run.all().len()
    );

    // A sums line with escapes.
    let mut spec = bytes_release("v2", "focal", "amd64", &[100]);
    let sums = spec.assets.len() - 1;
    spec.assets[sums] = AssetSpec::bytes(
        "disk-image-focal-amd64.qcow2.sums",
        b"\x1b[31mnot a sum\x1b[0m  temp/disk-image.qcow2\n".to_vec(),
    );
    let server = Server::start(REPO, vec![spec]);
    let dir = TempDir::new("h11b");
    let run = resources(None, dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(!run.all().contains('\x1b'), "{:?}", run.all());
}

// ---------------------------------------------------------------------------
// 12. Network conventions.

#[test]
fn finding_12_api_calls_are_retried_and_bounded() {
    let spec = bytes_release("v1", "focal", "amd64", &[100]);
    // Two 500s, then a 429 asking for a second: the run still succeeds.
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::ApiStatus {
        status: 500,
        times: 2,
    });
    server.add_fault(Fault::ApiRetryAfter { secs: 1, times: 1 });
    let dir = TempDir::new("h12");
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).ok();

    // A Retry-After beyond what we wait fails at once, saying so.
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::ApiRetryAfter {
        secs: 3600,
        times: 100,
    });
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--force"],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("3600"), "{}", run.stderr);

    // A server dribbling its answer cannot hold the run: the call's deadline
    // (five times the silence timeout) ends it.
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::ApiTrickle { interval_ms: 100 });
    let t = std::time::Instant::now();
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--force"],
        &[("VSWARM_HTTP_TIMEOUT", "0.5")],
    );
    run.failed();
    assert!(t.elapsed().as_secs() < 30, "took {:?}", t.elapsed());
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
}

#[test]
fn finding_12_unreachable_hosts_proxies_and_tokens_are_named() {
    let dir = TempDir::new("h12b");
    // DNS failure: the same help as a refused connection.
    let run = resources(
        Some("list"),
        dir.path(),
        "http://nonexistent.invalid",
        &[],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("cannot resolve nonexistent.invalid")
            && run.stderr.contains("HTTPS_PROXY"),
        "{}",
        run.stderr
    );
    // A dead proxy is named as the proxy.
    let run = resources(
        Some("list"),
        dir.path(),
        "http://example.invalid",
        &[],
        &[("HTTPS_PROXY", "http://127.0.0.1:9")],
    );
    run.failed();
    assert!(
        run.stderr.contains("cannot reach the proxy 127.0.0.1:9"),
        "{}",
        run.stderr
    );
    // A token that cannot be a header value.
    let run = resources(
        Some("list"),
        dir.path(),
        "http://127.0.0.1:1",
        &[],
        &[("GH_TOKEN", "abc def\n")],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("GH_TOKEN"), "{}", run.stderr);
    assert!(!run.stderr.contains("abc def"), "{}", run.stderr);

    // GH_TOKEN before GITHUB_TOKEN, as gh does.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    server.add_fault(Fault::RequireToken {
        token: "gh-token-value".into(),
    });
    resources(
        Some("list"),
        dir.path(),
        &server.api_url(),
        &[],
        &[
            ("GH_TOKEN", "gh-token-value"),
            ("GITHUB_TOKEN", "other-value"),
        ],
    )
    .ok();
}

#[test]
fn finding_12_loops_other_tags_and_other_digests() {
    // A redirect loop fails at once.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let url = json_of(&server, "v1")["assets"][0]["browser_download_url"]
        .as_str()
        .unwrap()
        .to_string();
    server.add_fault(Fault::Redirect {
        asset: "vmlinux-focal-amd64".into(),
        location: url,
    });
    let dir = TempDir::new("h12c");
    let t = std::time::Instant::now();
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(run.stderr.contains("loop"), "{}", run.stderr);
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());

    // A release answering with another tag than the one asked for.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let mut v = json_of(&server, "v1");
    v["tag_name"] = "v9.9.9".into();
    set_json(&server, "v1", &v);
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--version", "v1"],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("v9.9.9") && run.stderr.contains("asked for v1"),
        "{}",
        run.stderr
    );

    // A digest of another algorithm: noted as not checked, not an error.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let mut v = json_of(&server, "v1");
    v["assets"][0]["digest"] = format!("sha512:{}", "ab".repeat(64)).into();
    set_json(&server, "v1", &v);
    let dir = TempDir::new("h12d");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(
        run.stderr.contains("vmlinux-focal-amd64") && run.stderr.contains("does not check"),
        "{}",
        run.stderr
    );
}

// ---------------------------------------------------------------------------
// 13. The command line.

#[test]
fn finding_13_command_line_forms() {
    for (args, needle) in [
        (vec!["resources", "--output", ""], "--output is empty"),
        (vec!["resources", "--source", ""], "--source is empty"),
        (
            vec!["resources", "-a", "amd64", "--arch", "arm64"],
            "given twice",
        ),
        (vec!["resources", "--jobs", "99"], "invalid --jobs"),
    ] {
        let run = xtask(&args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
    // `--flag=value` and upstream's short forms reach the same place.
    let server = Server::start(REPO, vec![bytes_release("v1", "jammy", "arm64", &[100])]);
    let dir = TempDir::new("h13");
    let out = format!("--output={}", dir.path().display());
    let api = format!("--github-api={}", server.api_url());
    xtask(
        &[
            "resources",
            "download",
            &out,
            &api,
            "-v",
            "v1",
            "-a",
            "arm64",
            "-l",
            "jammy",
        ],
        &[],
    )
    .ok();
    assert_eq!(
        fs::read(dir.path().join("kernel")).unwrap(),
        fake_elf("arm64")
    );
}

#[test]
fn finding_13_fifo_mirror_list_and_bom() {
    // A mirror whose asset is a FIFO: an error, not a hang.
    let mirror = TempDir::new("h13-mirror");
    let spec = bytes_release("v1", "focal", "amd64", &[100]);
    let server = Server::start(REPO, vec![spec]);
    resources(Some("mirror"), mirror.path(), &server.api_url(), &[], &[]).ok();
    let kernel = mirror.path().join("v1/vmlinux-focal-amd64");
    fs::remove_file(&kernel).unwrap();
    let st = Command::new("mkfifo").arg(&kernel).status().unwrap();
    assert!(st.success());
    let dir = TempDir::new("h13-out");
    let t = std::time::Instant::now();
    let run = resources(
        Some("download"),
        dir.path(),
        "http://127.0.0.1:1",
        &["--source", mirror.path().to_str().unwrap()],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
    assert!(t.elapsed().as_secs() < 20);
    // The same for `latest`.
    fs::remove_file(mirror.path().join("latest")).unwrap();
    Command::new("mkfifo")
        .arg(mirror.path().join("latest"))
        .status()
        .unwrap();
    let run = resources(
        None,
        dir.path(),
        "http://127.0.0.1:1",
        &["--source", mirror.path().to_str().unwrap()],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);

    // `list`: a set that lacks assets is one short line.
    let mut spec = bytes_release("v2", "focal", "amd64", &[100]);
    spec.assets.truncate(1);
    let server = Server::start(REPO, vec![spec]);
    let run = resources(Some("list"), dir.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(
        run.stdout
            .contains("focal amd64  missing: client, sums, disk"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("jammy arm64  missing: kernel, client, sums, disk"),
        "{}",
        run.stdout
    );
}

#[test]
fn finding_13_a_sums_file_may_start_with_a_bom() {
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
