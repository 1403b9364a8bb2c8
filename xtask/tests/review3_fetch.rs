//! The third hostile review's fetch findings, one test per promise: a part
//! whose digest matched is never fetched again (an archive the tool cannot
//! read is said plainly), a file of the user's at a working name is refused
//! and kept, one API call ends within five times the timeout, and a release
//! list whose pages loop is read once.

mod common;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use testkit::{
    make_qcow2, sha256_file_hex, upstream_assets, AssetSpec, DiskFixture, Fault, ReleaseSpec,
    Server, TempDir,
};

const PART: &str = "disk-image-focal-amd64.qcow2.tar.gz";

fn have_qemu() -> bool {
    Command::new("qemu-img").arg("--version").output().is_ok()
}

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

// ---------------------------------------------------------------------------
// The API's bound.

#[test]
fn one_api_call_against_a_silent_server_ends_within_five_times_the_timeout() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    server.add_fault(Fault::ApiSilent);
    let out = TempDir::new("r3-silent");
    for step in ["list", "download"] {
        let t = Instant::now();
        let run = resources(
            Some(step),
            out.path(),
            &server.api_url(),
            &[],
            &[("VSWARM_HTTP_TIMEOUT", "0.5")],
        );
        let took = t.elapsed();
        // The API failed: exit code 3.
        assert_eq!(run.code, 3, "{step}: {}", run.all());
        assert!(run.stderr.contains("timed out"), "{step}: {}", run.stderr);
        // The bound the README states (5 × 0.5 s), plus a margin for
        // starting the process.
        assert!(
            took < Duration::from_millis(2500 + 1500),
            "{step} took {took:?}: {}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// A looping release list.

fn many_releases() -> Vec<ReleaseSpec> {
    (1..=3)
        .rev()
        .map(|i| bytes_release(&format!("v{i}"), "focal", "amd64", &[100]))
        .collect()
}

#[test]
fn a_release_list_whose_pages_loop_shows_each_release_once_and_stops() {
    for fresh_urls in [false, true] {
        let server = Server::start(REPO, many_releases());
        server.add_fault(Fault::ListLoop { fresh_urls });
        let out = TempDir::new("r3-loop");
        let run = resources(Some("list"), out.path(), &server.api_url(), &[], &[]);
        run.ok();
        for tag in ["v1", "v2", "v3"] {
            let shown = run
                .stdout
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(tag))
                .count();
            assert_eq!(shown, 1, "{tag} shown {shown} times:\n{}", run.stdout);
        }
        assert!(run.stderr.contains("note:"), "{}", run.stderr);
        assert!(run.stderr.contains("stopped"), "{}", run.stderr);
        let pages = server
            .requests()
            .iter()
            .filter(|r| r.host == "api" && r.path.contains("/releases?"))
            .count();
        // The same URL is not asked for again; a new one that repeats stops the walk.
        assert_eq!(pages, if fresh_urls { 2 } else { 1 }, "{}", run.stderr);
    }
    // A tag that does not exist: the list of tags is read once as well.
    let server = Server::start(REPO, many_releases());
    server.add_fault(Fault::ListLoop { fresh_urls: false });
    let out = TempDir::new("r3-loop-tag");
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &["--version", "v9"],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("v3, v2, v1"), "{}", run.stderr);
}
