//! The release and the assets asked for are the ones installed: `latest`
//! and its pre-release fallback, tags, exact asset names, every page of a
//! list, what a release lacks, and mirrors made with `mirror`.

use crate::common::*;
use crate::fixtures::{assert_downloaded, disk_in, upstream_server};
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use testkit::{fake_elf, sha256_file_hex, AssetSpec, ReleaseSpec, Server, TempDir};

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
fn download_latest_installs_kernel_and_client_and_keeps_parts() {
    let new = bytes_release("v0.3.0", "focal", "amd64", &[300_000, 300_000, 1234]);
    let old = bytes_release("v0.2.0", "focal", "amd64", &[10]);
    let server = Server::start(REPO, vec![new.clone(), old]);
    let dir = TempDir::new("dl-latest");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert_eq!(
        fs::read(dir.path().join("kernel")).unwrap(),
        fake_elf("amd64")
    );
    assert_eq!(
        fs::read(dir.path().join("client")).unwrap(),
        fake_elf("amd64")
    );
    assert_downloaded(dir.path(), &server.api_url(), &new);
    // Only the final names and the manifest recording them, nothing
    // partial, in the output directory.
    assert_eq!(files_in(dir.path()), ["client", "kernel", "manifest.json"]);
    assert!(server
        .requests()
        .iter()
        .any(|r| r.path.ends_with("/releases/latest")));
}

#[test]
fn explicit_tag_and_exact_names() {
    let mut old = bytes_release("v0.2.0", "focal", "amd64", &[1000]);
    // A longer name containing the kernel's must not be taken for it.
    old.assets.insert(
        0,
        AssetSpec::bytes("vmlinux-focal-amd64-debug", b"not me".to_vec()),
    );
    let new = bytes_release("v0.3.0", "focal", "amd64", &[1000]);
    let server = Server::start(REPO, vec![new, old.clone()]);
    let dir = TempDir::new("dl-tag");
    resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--version", "v0.2.0"],
        &[],
    )
    .ok();
    assert_downloaded(dir.path(), &server.api_url(), &old);
    assert_eq!(
        fs::read(dir.path().join("kernel")).unwrap(),
        fake_elf("amd64")
    );
    assert!(!cache_entry(dir.path(), &server.api_url(), "v0.3.0").exists());
}

#[test]
fn latest_falls_back_to_newest_prerelease() {
    let mut a = bytes_release("v0.3.1", "jammy", "arm64", &[500]);
    a.prerelease = true;
    let mut b = bytes_release("v0.3.0", "jammy", "arm64", &[500]);
    b.prerelease = true;
    let server = Server::start(REPO, vec![a.clone(), b]);
    let dir = TempDir::new("dl-pre");
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--arch", "arm64", "--os-version", "jammy"],
        &[],
    );
    run.ok();
    assert!(run.stderr.contains("pre-release"), "{}", run.stderr);
    assert!(run.stderr.contains("v0.3.1"), "{}", run.stderr);
    // jammy has no gem5 support: the user is told before the download.
    assert!(
        run.stderr.contains("without gem5 support"),
        "{}",
        run.stderr
    );
    assert_downloaded(dir.path(), &server.api_url(), &a);
    assert_eq!(
        fs::read(dir.path().join("kernel")).unwrap(),
        fake_elf("arm64")
    );
}

#[test]
fn unknown_tag_lists_newest_tags_from_all_pages() {
    let releases: Vec<ReleaseSpec> = (0..250)
        .rev()
        .map(|i| ReleaseSpec::new(&format!("v0.0.{i}"), vec![]))
        .collect();
    let server = Server::start(REPO, releases);
    let dir = TempDir::new("dl-notag");
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--version", "v9.9.9"],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("release v9.9.9 does not exist"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("v0.0.249, v0.0.248"), "{}", run.stderr);
    let paths: Vec<String> = server.requests().into_iter().map(|r| r.path).collect();
    assert!(paths.iter().any(|p| p.contains("page=3")), "{paths:?}");
    assert!(files_in(dir.path()).is_empty());
}

#[test]
fn list_walks_every_page() {
    let mut releases: Vec<ReleaseSpec> = (0..230)
        .rev()
        .map(|i| ReleaseSpec::new(&format!("v0.0.{i}"), vec![]))
        .collect();
    releases.insert(0, bytes_release("v1.0.0", "focal", "amd64", &[100]));
    let server = Server::start(REPO, releases);
    let dir = TempDir::new("dl-list");
    let run = resources(Some("list"), dir.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(
        run.stdout.contains("v0.0.0"),
        "the last page's release is listed"
    );
    assert!(
        run.stdout.contains("focal amd64  complete"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Ubuntu 22.04: experimental"),
        "{}",
        run.stdout
    );
}

#[test]
fn missing_asset_lists_what_the_release_has() {
    let spec = ReleaseSpec::new(
        "v0.1.0",
        vec![
            AssetSpec::bytes("vmlinux-amd64", fake_elf("amd64")),
            AssetSpec::bytes("test-client-amd64", fake_elf("amd64")),
            AssetSpec::bytes("test-disk-image-amd64.tar.gz.aa", vec![1; 10]),
        ],
    );
    let server = Server::start(REPO, vec![spec]);
    let dir = TempDir::new("dl-missing");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("no vmlinux-focal-amd64"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "it contains: vmlinux-amd64, test-client-amd64, test-disk-image-amd64.tar.gz.aa"
        ),
        "{}",
        run.stderr
    );
}

#[test]
fn mirror_then_full_runs_without_github() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rr-mirror-fx");
    let d = disk_in(fx.path());
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
