//! Re-runs: interrupted runs (the process killed mid-download and
//! mid-decompress) finish on the next run, two runs at once do not
//! interleave, and mirrors (a directory, or the same over plain HTTP) serve a
//! full run with GitHub gone.

mod common;

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use testkit::{
    make_qcow2, pack_disk, sha256_file_hex, upstream_assets, Compression, DiskFixture, Fault,
    ReleaseSpec, Server, TempDir,
};

fn have_qemu() -> bool {
    Command::new("qemu-img").arg("--version").output().is_ok()
}

fn disk(work: &Path) -> DiskFixture {
    let img = work.join("src.qcow2");
    make_qcow2(&img, 64, 6).unwrap();
    pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, work).unwrap()
}

/// A loopback GitHub with one upstream-style release of `d`.
fn upstream_server(tag: &str, d: &DiskFixture) -> Server {
    Server::start(
        REPO,
        vec![ReleaseSpec::new(tag, upstream_assets("focal", "amd64", d))],
    )
}

/// Polls (bounded) until `cond` holds; panics with `what` otherwise.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A disk part is partly downloaded (well past its first bytes).
fn partial_with_data(dir: &Path) -> bool {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.contains(".tar.gz.")
                    && n.ends_with(".partial")
                    && e.metadata().map(|m| m.len() > 200_000).unwrap_or(false)
            })
        })
        .unwrap_or(false)
}

#[test]
fn killed_mid_download_then_rerun_completes() {
    let spec = bytes_release("v1", "focal", "amd64", &[3_000_000, 3_000_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::RateCap {
        bytes_per_sec: 1_000_000,
    });
    let dir = TempDir::new("rr-kill-dl");
    let out = dir.path().to_str().unwrap().to_string();
    let api = server.api_url();
    let mut child = spawn(&[
        "resources",
        "download",
        "--output",
        &out,
        "--github-api",
        &api,
    ]);
    let work = cache_entry(dir.path(), &api, "v1");
    wait_until("a partial download", || partial_with_data(&work));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.path().join("kernel").exists()
            || fs::read(dir.path().join("kernel")).unwrap().len() == 4096
    );
    server.clear_faults();
    let before = server.requests().len();
    resources(Some("download"), dir.path(), &api, &[], &[]).ok();
    // Something was resumed rather than fetched again from byte 0.
    let resumed = server.requests()[before..]
        .iter()
        .filter(|r| r.host == "assets")
        .filter_map(|r| r.header("range").map(str::to_string))
        .any(|r| !r.starts_with("bytes=0-"));
    assert!(resumed, "no request resumed a partial file");
    for part in ["aa", "ab"] {
        let name = format!("disk-image-focal-amd64.qcow2.tar.gz.{part}");
        assert_eq!(fs::metadata(work.join(&name)).unwrap().len(), 3_000_000);
    }
}

#[test]
fn killed_mid_pipeline_then_rerun_completes() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rr-kill-fx");
    let d = disk(fx.path());
    let server = upstream_server("v1", &d);
    // Slow enough that the unpacker is mid-stream while parts still arrive.
    server.add_fault(Fault::RateCap {
        bytes_per_sec: 300_000,
    });
    let dir = TempDir::new("rr-kill-pl");
    let out = dir.path().to_str().unwrap().to_string();
    let api = server.api_url();
    let mut child = spawn(&["resources", "--output", &out, "--github-api", &api]);
    let work = dir.path().join(".downloads/v1");
    wait_until("the unpacker writing", || {
        work.join(".disk-image.qcow2.partial").exists()
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !dir.path().join("disk-image.qcow2").exists(),
        "no final name from a killed run"
    );
    server.clear_faults();
    resources(None, dir.path(), &api, &[], &[]).ok();
    assert_eq!(
        sha256_file_hex(&dir.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
    resources(Some("verify"), dir.path(), &api, &[], &[]).ok();
}

#[test]
fn a_second_run_at_once_waits_or_with_no_wait_is_refused() {
    let spec = bytes_release("v1", "focal", "amd64", &[2_000_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::RateCap {
        bytes_per_sec: 500_000,
    });
    let dir = TempDir::new("rr-lock");
    let out = dir.path().to_str().unwrap().to_string();
    let api = server.api_url();
    let mut first = spawn(&[
        "resources",
        "download",
        "--output",
        &out,
        "--github-api",
        &api,
    ]);
    wait_until("the first run downloading", || {
        partial_with_data(&cache_entry(dir.path(), &api, "v1"))
    });
    let refused = resources(Some("download"), dir.path(), &api, &["--no-wait"], &[]);
    refused.failed();
    let pid = format!("pid {}", first.id());
    assert!(
        refused.stderr.contains("another run is working on") && refused.stderr.contains(&pid),
        "{}",
        refused.stderr
    );
    // Without --no-wait the second run waits for the first, saying so once,
    // then finds the work done.
    let before = server.requests().len();
    let second = resources(Some("download"), dir.path(), &api, &[], &[]);
    second.ok();
    assert_eq!(
        second.stderr.matches("waiting for another run on").count(),
        1,
        "{}",
        second.stderr
    );
    assert!(second.stderr.contains(&pid), "{}", second.stderr);
    assert!(
        !server.requests()[before..]
            .iter()
            .any(|r| r.host == "assets"),
        "the second run fetched an asset again"
    );
    first.wait().unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Static(Child);
impl Drop for Static {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `python3 -m http.server` over `dir`: a plain static server without Range.
fn static_server(dir: &Path) -> Option<(Static, String)> {
    let port = free_port();
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
            "--directory",
        ])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let guard = Static(child);
    wait_until("the static server", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    Some((guard, format!("http://127.0.0.1:{port}")))
}

#[test]
fn mirror_then_full_runs_without_github() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rr-mirror-fx");
    let d = disk(fx.path());
    let server = upstream_server("v3", &d);
    let mirror = TempDir::new("rr-mirror");
    let run = resources(Some("mirror"), mirror.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert_eq!(
        fs::read_to_string(mirror.path().join("latest"))
            .unwrap()
            .trim(),
        "v3"
    );
    assert!(mirror.path().join("v3/release.json").is_file());
    assert!(mirror
        .path()
        .join("v3/disk-image-focal-amd64.qcow2.tar.gz.aa")
        .is_file());
    server.stop();

    // From the directory, GitHub unreachable.
    let dead = "http://127.0.0.1:1";
    let out = TempDir::new("rr-from-dir");
    let m = mirror.path().to_str().unwrap();
    resources(None, out.path(), dead, &["--source", m], &[]).ok();
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );

    // From the same layout over plain HTTP, set from the environment.
    let Some((_srv, url)) = static_server(mirror.path()) else {
        eprintln!("skipped HTTP mirror: python3 is not installed");
        return;
    };
    let out2 = TempDir::new("rr-from-http");
    resources(
        None,
        out2.path(),
        dead,
        &[],
        &[("VSWARM_RESOURCES_SOURCE", &url)],
    )
    .ok();
    assert_eq!(
        sha256_file_hex(&out2.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
    let img: PathBuf = out2.path().join("disk-image.img");
    assert_eq!(fs::metadata(img).unwrap().len(), 64 << 20);
}

#[test]
fn mirror_all_sets_and_a_missing_tag() {
    let mut spec = bytes_release("v1", "focal", "amd64", &[1000]);
    spec.assets
        .extend(bytes_release("v1", "jammy", "arm64", &[2000]).assets);
    let server = Server::start(REPO, vec![spec]);
    let mirror = TempDir::new("rr-mirror-all");
    let run = resources(
        Some("mirror"),
        mirror.path(),
        &server.api_url(),
        &["--arch", "all", "--os-version", "all"],
        &[],
    );
    run.ok();
    assert!(
        run.stderr.contains("skipping focal/arm64"),
        "{}",
        run.stderr
    );
    let files = files_in(&mirror.path().join("v1"));
    assert!(
        files.contains(&"vmlinux-jammy-arm64".to_string()),
        "{files:?}"
    );
    assert!(
        files.contains(&"disk-image-focal-amd64.qcow2.tar.gz.aa".to_string()),
        "{files:?}"
    );
    let out = TempDir::new("rr-mirror-miss");
    let run = resources(
        Some("download"),
        out.path(),
        "http://127.0.0.1:1",
        &[
            "--source",
            mirror.path().to_str().unwrap(),
            "--version",
            "v9",
        ],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("has no release v9; it has: v1"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_run_that_stopped_after_unpacking_reuses_the_image() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rr-staged-fx");
    let d = disk(fx.path());
    let server = upstream_server("v1", &d);
    let dir = TempDir::new("rr-staged");
    // The 64 MiB raw image cannot be written under a 16 MiB file-size limit,
    // while the parts and the qcow2 can: the run stops after unpacking.
    let o = xtask_with_file_limit(
        &[
            "resources",
            "--output",
            dir.path().to_str().unwrap(),
            "--github-api",
            &server.api_url(),
        ],
        16 << 20,
    );
    assert_ne!(o.code, 0, "{}", o.stderr);
    assert!(dir.path().join(".downloads/v1/disk-image.qcow2").is_file());
    let before = server.requests().len();
    let run = resources(None, dir.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(
        run.stderr.contains("already unpacked and checked"),
        "{}",
        run.stderr
    );
    let parts = server.requests()[before..]
        .iter()
        .filter(|r| r.host == "assets" && r.path.contains(".tar.gz."))
        .count();
    assert_eq!(parts, 0, "the parts were fetched again");
    assert_eq!(
        sha256_file_hex(&dir.path().join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}
