//! The second hostile review (after issue 9's fixes), one test per finding:
//! single steps must not bless the user's changes, `convert` must not write
//! over installed files, a resumed download against a server that ignores
//! ranges must finish, a fault found only at the end puts every unchecked part
//! in doubt, an interrupted install is never taken for a whole set, a FIFO
//! never hangs a step, and more.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, FileExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::{
    make_qcow2, pack_disk, sha256_file_hex, upstream_assets, AssetSpec, Compression, DigestMode,
    DiskFixture, Fault, ReleaseSpec, Server, TempDir, SCRUB_ENV,
};

fn have_qemu() -> bool {
    Command::new("qemu-img").arg("--version").output().is_ok()
}

fn disk(fx: &Path, name: &str, data_mib: u64, part: u64) -> DiskFixture {
    let dir = fx.join(name);
    fs::create_dir_all(&dir).unwrap();
    let img = dir.join("src.qcow2");
    make_qcow2(&img, 32, data_mib).unwrap();
    pack_disk(&img, "focal", "amd64", part, Compression::Gzip, &dir).unwrap()
}

fn release(tag: &str, d: &DiskFixture) -> ReleaseSpec {
    ReleaseSpec::new(tag, upstream_assets("focal", "amd64", d))
}

/// Runs xtask with a wall-clock limit: (exit code, or None when it had to be
/// killed; all output).
fn run_limited(args: &[&str], limit: Duration) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    for k in SCRUB_ENV {
        cmd.env_remove(k);
    }
    cmd.env("CI", "1").env("VSWARM_HTTP_TIMEOUT", "2");
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let start = Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        // Polling a child we may have to kill; not a wait for an event.
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (code, out)
}

fn write_at(path: &Path, at: u64, data: &[u8]) {
    fs::File::options()
        .write(true)
        .open(path)
        .unwrap()
        .write_all_at(data, at)
        .unwrap();
}

#[test]
fn review_01_a_single_step_never_blesses_the_users_changes() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv01-fx");
    let d1 = disk(fx.path(), "a", 2, 1 << 20);
    let d2 = disk(fx.path(), "b", 3, 1 << 20);
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
fn review_02_convert_never_writes_over_installed_files() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv02-fx");
    let d = disk(fx.path(), "a", 2, 1 << 20);
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
fn review_03_a_resumed_download_against_a_server_without_ranges_finishes() {
    let part = "disk-image-focal-amd64.qcow2.tar.gz.aa";
    let spec = bytes_release("v1", "focal", "amd64", &[40 << 20]);
    let server = Server::start(REPO, vec![spec.clone()]);
    let out = TempDir::new("rv03");
    // What a killed ranged download leaves: the partial file at full size
    // and a record that segment 0 (of 5 MiB segments) is done.
    let work = out.path().join(".downloads/v1");
    fs::create_dir_all(&work).unwrap();
    let body = match &spec.assets[2].body {
        testkit::Body::Bytes(b) => b.as_ref().clone(),
        _ => unreachable!(),
    };
    let partial = work.join(format!(".{part}.partial"));
    let mut data = body[..5 << 20].to_vec();
    data.resize(body.len(), 0);
    fs::write(&partial, &data).unwrap();
    fs::write(
        work.join(format!(".{part}.partial.segs")),
        format!("segments {} {}\n0\n", 5u64 << 20, 40u64 << 20),
    )
    .unwrap();
    server.add_fault(Fault::NoRange { asset: part.into() });
    let o = out.path().to_str().unwrap().to_string();
    let api = server.api_url();
    let (code, all) = run_limited(
        &[
            "resources",
            "download",
            "--output",
            &o,
            "--github-api",
            &api,
        ],
        Duration::from_secs(90),
    );
    assert_eq!(code, Some(0), "{all}");
    assert_eq!(fs::read(work.join(part)).unwrap(), body);
}

#[test]
fn review_04_a_fault_seen_only_at_the_end_puts_every_unchecked_part_in_doubt() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv04-fx");
    let d = disk(fx.path(), "a", 4, 256 << 10);
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
fn review_05_an_interrupted_install_is_never_taken_for_a_whole_set() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv05-fx");
    let d1 = disk(fx.path(), "a", 2, 1 << 20);
    let d2 = disk(fx.path(), "b", 3, 1 << 20);
    let server = Server::start(REPO, vec![release("v2", &d2), release("v1", &d1)]);
    let api = server.api_url();
    let out = TempDir::new("rv05");
    let other = TempDir::new("rv05-b");
    resources(None, out.path(), &api, &["--version", "v1"], &[]).ok();
    resources(None, other.path(), &api, &["--version", "v2"], &[]).ok();
    // The state a full run of v2 leaves when killed after three renames.
    let mpath = out.path().join("manifest.json");
    let mut m1: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&mpath).unwrap()).unwrap();
    let mut m2: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(other.path().join("manifest.json")).unwrap())
            .unwrap();
    for f in m2["files"].as_array_mut().unwrap() {
        f["modified_ns"] = 0.into();
    }
    m1["pending"] = m2;
    fs::write(&mpath, m1.to_string()).unwrap();
    for n in ["kernel", "client", "disk-image.qcow2"] {
        fs::copy(other.path().join(n), out.path().join(n)).unwrap();
    }
    // A run that fails (no network), then single steps: none may make the
    // mix look installed.
    resources(
        None,
        out.path(),
        "http://127.0.0.1:9",
        &["--version", "v1"],
        &[],
    )
    .failed();
    let step = resources(
        Some("download"),
        out.path(),
        &api,
        &["--version", "v1"],
        &[],
    );
    step.failed();
    assert!(step.stderr.contains("was interrupted"), "{}", step.stderr);
    resources(Some("verify"), out.path(), &api, &[], &[]).failed();
    let run = resources(None, out.path(), &api, &["--version", "v1"], &[]);
    run.ok();
    assert!(!run.stdout.contains("Up to date"), "{}", run.stdout);
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d1.sha256_hex
    );
    resources(Some("verify"), out.path(), &api, &["--deep"], &[]).ok();
}

#[test]
fn review_06_a_fifo_at_an_installed_name_never_hangs_a_step() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv06-fx");
    let d = disk(fx.path(), "a", 2, 1 << 20);
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
fn review_07_a_failed_convert_changes_nothing() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv07-fx");
    let d = disk(fx.path(), "a", 2, 1 << 20);
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
fn review_10_member_names_are_cut_and_cannot_forge_lines() {
    let forged = format!("temp/{}\nerror: all good\n.qcow2", "x".repeat(300_000));
    let mut b = tar::Builder::new(Vec::new());
    for name in [forged.as_str(), "temp/second.qcow2"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &b"QFI\xfb"[..]).unwrap();
    }
    let data = b.into_inner().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let gz = enc.finish().unwrap();
    let mut spec = bytes_release("v1", "focal", "amd64", &[]);
    spec.assets.retain(|a| !a.name.contains(".tar.gz"));
    spec.assets
        .push(AssetSpec::bytes("disk-image-focal-amd64.qcow2.tar.gz", gz));
    let server = Server::start(REPO, vec![spec]);
    let out = TempDir::new("rv10");
    let run = resources(None, out.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.len() < 10_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
    assert!(!run.stderr.contains("\nerror: all good"), "{}", run.stderr);
}

#[test]
fn review_11_offline_steps_never_follow_a_linked_working_directory() {
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

#[test]
fn review_12_manifest_text_is_escaped() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let out = TempDir::new("rv12");
    let m = serde_json::json!({
        "format": 1, "repo": REPO, "tag": "v0\u{1b}]0;PWNED\u{7}\u{1b}[2J", "arch": "amd64",
        "os": "focal", "installed_at": "2024-01-01T00:00:00Z",
        "files": [{"name": "kernel", "size": 1, "sha256": null, "modified_ns": 1, "sources": []}],
    });
    fs::write(out.path().join("manifest.json"), m.to_string()).unwrap();
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &["--version", "v1"],
        &[],
    );
    assert!(!run.all().contains('\u{1b}'), "{:?}", run.all());
}
