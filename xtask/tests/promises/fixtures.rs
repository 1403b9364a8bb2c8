//! Fixtures more than one promise's tests build: disks packed the way
//! upstream packs them, releases of them, release JSON edits and request
//! counts on the loopback GitHub.

use crate::common::*;
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use testkit::{
    make_qcow2, pack_disk, upstream_assets, Body, Compression, DiskFixture, ReleaseSpec, Server,
    TempDir, SCRUB_ENV,
};

/// A small real release: a qemu-img qcow2 packed like upstream.
pub fn disk(fx: &Path, name: &str, data_mib: u64) -> DiskFixture {
    let dir = fx.join(name);
    fs::create_dir_all(&dir).unwrap();
    let img = dir.join("src.qcow2");
    make_qcow2(&img, 32, data_mib).unwrap();
    pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, &dir).unwrap()
}

pub fn release(tag: &str, d: &DiskFixture) -> ReleaseSpec {
    ReleaseSpec::new(tag, upstream_assets("focal", "amd64", d))
}

pub fn disk_with_parts(fx: &Path, name: &str, data_mib: u64, part: u64) -> DiskFixture {
    let dir = fx.join(name);
    fs::create_dir_all(&dir).unwrap();
    let img = dir.join("src.qcow2");
    make_qcow2(&img, 32, data_mib).unwrap();
    pack_disk(&img, "focal", "amd64", part, Compression::Gzip, &dir).unwrap()
}

/// Runs xtask with a wall-clock limit: (exit code, or None when it had to be
/// killed; all output).
pub fn run_limited(args: &[&str], limit: Duration) -> (Option<i32>, String) {
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

pub fn asset_requests(server: &Server) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.host == "assets")
        .count()
}

/// A qcow2 packed like upstream, or None (with a note) where qemu-img is absent.
pub fn disk_if_qemu(work: &Path, compression: Compression, part: u64) -> Option<DiskFixture> {
    disk_of(work, compression, part, 6)
}

/// As [`disk`], with `data_mib` of guest data (another content).
pub fn disk_of(
    work: &Path,
    compression: Compression,
    part: u64,
    data_mib: u64,
) -> Option<DiskFixture> {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return None;
    }
    fs::create_dir_all(work).unwrap();
    let img = work.join("src.qcow2");
    make_qcow2(&img, 64, data_mib).expect("make qcow2");
    Some(pack_disk(&img, "focal", "amd64", part, compression, work).expect("pack disk"))
}

/// A good set is installed; then a bad release must leave it as it was.
pub fn install_good(out: &Path) -> (Server, DiskFixture, TempDir) {
    let fx = TempDir::new("pl-good-fx");
    let d = disk_if_qemu(fx.path(), Compression::Gzip, 256 << 10).unwrap();
    let server = Server::start(REPO, vec![release("v1", &d)]);
    resources(None, out, &server.api_url(), &["--version", "v1"], &[]).ok();
    (server, d, fx)
}

pub fn installed_set(out: &Path) -> Vec<(String, Vec<u8>)> {
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

/// Installs a good v1 set into `out`; returns the server for more releases.
pub fn good_set(out: &Path, fx: &Path) -> (Server, DiskFixture) {
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
pub fn publish_v2(
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

pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

pub const PART_AA: &str = "disk-image-focal-amd64.qcow2.tar.gz.aa";

pub fn served(spec: &ReleaseSpec, name: &str) -> Vec<u8> {
    let a = spec
        .assets
        .iter()
        .find(|a| a.name == name)
        .expect("asset in spec");
    match &a.body {
        Body::Bytes(b) => b.to_vec(),
        Body::File(p) => fs::read(p).unwrap(),
    }
}

/// Every asset of `spec` is in the cache entry of a run into `DIR` with the
/// served bytes, and nothing half-written is left.
pub fn assert_downloaded(dir: &std::path::Path, api: &str, spec: &ReleaseSpec) {
    let work = cache_entry(dir, api, &spec.tag);
    for a in &spec.assets {
        if a.name.starts_with("vmlinux") || a.name.starts_with("test-client") {
            continue;
        }
        let got = fs::read(work.join(&a.name)).unwrap_or_else(|_| panic!("{} missing", a.name));
        assert!(got == served(spec, &a.name), "{} differs", a.name);
    }
    let leftovers: Vec<String> = files_in(&work)
        .into_iter()
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

/// The Range headers of the asset host's requests for `asset`, from the
/// `from`-th logged request on.
pub fn asset_ranges(server: &Server, asset: &str, from: usize) -> Vec<String> {
    server.requests()[from..]
        .iter()
        .filter(|r| r.host == "assets" && r.path.ends_with(asset))
        .filter_map(|r| r.header("range").map(str::to_string))
        .collect()
}

/// A small release with one disk part of about `kib` KiB of plain bytes.
pub fn small_release(kib: usize) -> ReleaseSpec {
    bytes_release("v1", "focal", "amd64", &[kib << 10])
}

pub fn disk_in(work: &Path) -> DiskFixture {
    let img = work.join("src.qcow2");
    make_qcow2(&img, 64, 6).unwrap();
    pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, work).unwrap()
}

/// A loopback GitHub with one upstream-style release of `d`.
pub fn upstream_server(tag: &str, d: &DiskFixture) -> Server {
    Server::start(
        REPO,
        vec![ReleaseSpec::new(tag, upstream_assets("focal", "amd64", d))],
    )
}
