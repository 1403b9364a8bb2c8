//! Nothing good or the user's own is replaced or deleted without `--force`:
//! edited or touched installed files, sets another run or step installed,
//! links, FIFOs and regular files planted at the names the tool writes, a
//! failing or converting run, a disk that fills up, an output that is a file.

use crate::common::*;
use crate::fixtures::{
    asset_requests, disk, disk_with_parts, good_set, install_good, installed_set, publish_v2,
    release, run_limited,
};
use std::fs;
use std::os::unix::fs::{symlink, FileExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testkit::{
    fake_elf, make_qcow2, pack_disk, sha256_file_hex, AssetSpec, Compression, Server, TempDir,
};

// ---------------------------------------------------------------------------
// The user's files at working names.

/// Runs `step` and expects a refusal that names `what` and says to move it
/// away, with `what` still as it was.
fn refuses_and_keeps(step: Option<&str>, out: &Path, api: &str, what: &Path, extra: &[&str]) {
    let before = fs::symlink_metadata(what).unwrap();
    let content = before.is_file().then(|| fs::read(what).unwrap());
    let run = resources(step, out, api, extra, &[]);
    assert_eq!(run.code, 1, "{step:?}: {}", run.all());
    assert!(
        run.stderr.contains(&what.display().to_string()) && run.stderr.contains("move it away"),
        "{step:?}: {}",
        run.stderr
    );
    let after = fs::symlink_metadata(what).unwrap();
    assert_eq!(before.file_type(), after.file_type(), "{}", what.display());
    if let Some(c) = content {
        assert_eq!(fs::read(what).unwrap(), c);
    }
}

fn write_at(path: &Path, at: u64, data: &[u8]) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, at)
        .unwrap();
}

// ---------------------------------------------------------------------------
// Links planted at working names are never followed.

#[test]
fn links_at_working_names_are_never_followed() {
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

#[test]
fn links_at_working_names_are_still_removed_as_junk() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[1000])]);
    let api = server.api_url();
    let victim = TempDir::new("r3-victim");
    let out = TempDir::new("r3-links");
    symlink(victim.path(), out.path().join(".downloads")).unwrap();
    resources(Some("download"), out.path(), &api, &[], &[]).ok();
    assert!(fs::symlink_metadata(out.path().join(".downloads"))
        .unwrap()
        .is_dir());
    // Links at the tag's directory and at last-tag, offline and online.
    let work = out.path().join(".downloads/v1");
    fs::remove_dir_all(&work).unwrap();
    symlink(victim.path(), &work).unwrap();
    let run = resources(
        Some("decompress"),
        out.path(),
        &api,
        &["--version", "v1"],
        &[],
    );
    assert!(
        fs::symlink_metadata(&work).is_err() || !fs::symlink_metadata(&work).unwrap().is_symlink(),
        "{}",
        run.all()
    );
    let last = out.path().join(".downloads/last-tag");
    let _ = fs::remove_file(&last);
    symlink(victim.path().join("x"), &last).unwrap();
    resources(Some("download"), out.path(), &api, &[], &[]).ok();
    assert_eq!(fs::read_to_string(&last).unwrap(), "v1");
    assert!(fs::read_dir(victim.path()).unwrap().next().is_none());
}

#[test]
fn a_regular_file_at_a_working_name_is_refused_by_name_and_kept() {
    let server = Server::start(
        REPO,
        vec![bytes_release("v1", "focal", "amd64", &[1000, 1000])],
    );
    let api = server.api_url();

    // `.downloads` itself, for every step that opens the working directory.
    let out = TempDir::new("r3-dl-file");
    let dl = out.path().join(".downloads");
    fs::write(&dl, b"my notes").unwrap();
    for step in [None, Some("download"), Some("decompress")] {
        refuses_and_keeps(step, out.path(), &api, &dl, &[]);
    }

    // The per-tag working directory, online and offline.
    let out = TempDir::new("r3-tag-file");
    fs::create_dir(out.path().join(".downloads")).unwrap();
    let work = out.path().join(".downloads/v1");
    fs::write(&work, b"mine").unwrap();
    for step in [Some("download"), Some("decompress")] {
        refuses_and_keeps(step, out.path(), &api, &work, &["--version", "v1"]);
    }

    // `last-tag` as a directory: neither written over nor taken for "nothing
    // downloaded".
    let out = TempDir::new("r3-last-tag");
    let last = out.path().join(".downloads/last-tag");
    fs::create_dir_all(last.join("inside")).unwrap();
    refuses_and_keeps(Some("download"), out.path(), &api, &last, &[]);
    refuses_and_keeps(Some("decompress"), out.path(), &api, &last, &[]);
    assert!(last.join("inside").is_dir());

    // A directory at a downloaded asset's name, or at the release JSON's.
    let out = TempDir::new("r3-json-dir");
    let json = out.path().join(".downloads/v1/release.json");
    fs::create_dir_all(&json).unwrap();
    refuses_and_keeps(Some("download"), out.path(), &api, &json, &[]);
}

#[test]
fn a_fifo_at_an_installed_name_never_hangs_a_step() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv06-fx");
    let d = disk_with_parts(fx.path(), "a", 2, 1 << 20);
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let out = TempDir::new("rv06");
    resources(None, out.path(), &api, &[], &[]).ok();
    let q = out.path().join("disk-image.qcow2");
    fs::remove_file(&q).unwrap();
    assert!(Command::new("mkfifo").arg(&q).status().unwrap().success());
    let o = out.path().to_str().unwrap().to_string();
    for args in [
        vec!["resources", "verify", "--output", &o],
        vec!["resources", "verify", "--quick", "--output", &o],
        vec!["resources", "convert", "--output", &o, "--force"],
    ] {
        let (code, all) = run_limited(&args, Duration::from_secs(30));
        assert!(code.is_some_and(|c| c != 0), "{args:?}: {code:?}\n{all}");
    }
}

#[test]
fn offline_steps_never_follow_a_linked_working_directory() {
    let server = Server::start(
        REPO,
        vec![bytes_release("v1", "focal", "amd64", &[100, 100])],
    );
    let out = TempDir::new("rv11");
    resources(Some("download"), out.path(), &server.api_url(), &[], &[]).ok();
    let elsewhere = TempDir::new("rv11-elsewhere");
    let work = out.path().join(".downloads/v1");
    for e in fs::read_dir(&work).unwrap().flatten() {
        fs::rename(e.path(), elsewhere.path().join(e.file_name())).unwrap();
    }
    fs::remove_dir(&work).unwrap();
    symlink(elsewhere.path(), &work).unwrap();
    let before: Vec<_> = fs::read_dir(elsewhere.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let run = resources(
        Some("decompress"),
        out.path(),
        &server.api_url(),
        &["--version", "v1"],
        &[],
    );
    run.failed();
    let after: Vec<_> = fs::read_dir(elsewhere.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(
        before.len(),
        after.len(),
        "decompress wrote through the link"
    );
}

// ---------------------------------------------------------------------------
// The user's changes are never replaced silently.

#[test]
fn changed_installed_files_are_kept_and_touched_ones_rehashed() {
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

#[test]
fn a_single_step_never_blesses_the_users_changes() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv01-fx");
    let d1 = disk_with_parts(fx.path(), "a", 2, 1 << 20);
    let d2 = disk_with_parts(fx.path(), "b", 3, 1 << 20);
    let server = Server::start(REPO, vec![release("v2", &d2), release("v1", &d1)]);
    let api = server.api_url();
    let out = TempDir::new("rv01");
    resources(None, out.path(), &api, &["--version", "v1"], &[]).ok();
    let q = out.path().join("disk-image.qcow2");
    let raw = out.path().join("disk-image.img");
    write_at(&q, 1 << 20, b"booted and changed");
    write_at(&raw, 8192, b"gem5 wrote here");
    let (mine_q, mine_raw) = (fs::read(&q).unwrap(), fs::read(&raw).unwrap());
    resources(
        Some("download"),
        out.path(),
        &api,
        &["--version", "v1"],
        &[],
    )
    .ok();
    let run = resources(None, out.path(), &api, &["--version", "v2"], &[]);
    run.failed();
    assert!(
        run.stderr.contains("disk-image.qcow2") && run.stderr.contains("disk-image.img"),
        "{}",
        run.stderr
    );
    assert_eq!(fs::read(&q).unwrap(), mine_q);
    assert_eq!(fs::read(&raw).unwrap(), mine_raw);
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

// ---------------------------------------------------------------------------
// A set that fails verification never replaces a good set.

#[test]
fn a_failing_new_set_leaves_the_old_one() {
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

// ---------------------------------------------------------------------------
// `convert A A` never destroys its input.

#[test]
fn convert_onto_its_own_input_is_refused() {
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

#[test]
fn convert_never_writes_over_installed_files() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv02-fx");
    let d = disk_with_parts(fx.path(), "a", 2, 1 << 20);
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let out = TempDir::new("rv02");
    resources(None, out.path(), &api, &[], &[]).ok();
    let before: Vec<Vec<u8>> = ["kernel", "disk-image.qcow2", "manifest.json"]
        .iter()
        .map(|n| fs::read(out.path().join(n)).unwrap())
        .collect();
    let other = fx.path().join("a/src.qcow2");
    for (i, target) in ["kernel", "disk-image.qcow2", "manifest.json"]
        .iter()
        .enumerate()
    {
        let dest = out.path().join(target);
        let run = xtask(
            &[
                "resources",
                "convert",
                other.to_str().unwrap(),
                dest.to_str().unwrap(),
                "--output",
                out.path().to_str().unwrap(),
            ],
            &[],
        );
        run.failed();
        assert!(
            run.stderr.contains("is the installed"),
            "{target}: {}",
            run.stderr
        );
        assert_eq!(fs::read(&dest).unwrap(), before[i], "{target}");
    }
}

#[test]
fn a_failed_convert_changes_nothing() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv07-fx");
    let d = disk_with_parts(fx.path(), "a", 2, 1 << 20);
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let out = TempDir::new("rv07");
    resources(None, out.path(), &api, &["--version", "v1"], &[]).ok();
    let m = fs::read(out.path().join("manifest.json")).unwrap();
    // No qemu-img on PATH: the conversion fails.
    let run = xtask(
        &[
            "resources",
            "convert",
            "--with-qemu-img",
            "--output",
            out.path().to_str().unwrap(),
        ],
        &[("PATH", "/nonexistent")],
    );
    run.failed();
    assert_eq!(fs::read(out.path().join("manifest.json")).unwrap(), m);
    resources(Some("verify"), out.path(), &api, &[], &[]).ok();
    let before = server.request_count();
    let run = resources(None, out.path(), &api, &["--version", "v1"], &[]);
    run.ok();
    assert!(run.stdout.contains("Up to date"), "{}", run.stdout);
    assert_eq!(server.request_count(), before);
}

#[test]
fn an_output_that_is_a_file_says_so() {
    let dir = TempDir::new("net-outfile");
    let file = dir.path().join("resources");
    fs::write(&file, "mine").unwrap();
    let run = resources(None, &file, "http://127.0.0.1:1", &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains(&format!(
            "--output {} is a file, not a directory",
            file.display()
        )),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("File exists"), "{}", run.stderr);
    assert_eq!(fs::read(&file).unwrap(), b"mine");
}
