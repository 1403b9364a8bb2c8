//! The per-user download cache (issue 16, part 2): a second output
//! directory and a switch back install from it with no asset bytes (a
//! pinned version with no request at all), installed files are copies,
//! `--offline`, two runs on one entry, a killed run, damaged and planted
//! entries, caches that cannot be used, `--no-cache`, the `cache` step, and
//! the user's files in the output directory.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use common::*;
use github::cache::site_of;
use testkit::{
    make_qcow2, pack_disk, sha256_file_hex, upstream_assets, Compression, DigestMode, DiskFixture,
    Fault, ReleaseSpec, Server, TempDir,
};

const KERNEL_ASSET: &str = "vmlinux-focal-amd64";
const CLIENT_ASSET: &str = "test-client-amd64";
const SUMS_ASSET: &str = "disk-image-focal-amd64.qcow2.sums";
const INSTALLED: [&str; 4] = ["kernel", "client", "disk-image.qcow2", "disk-image.img"];

/// A disk with `data_mib` MiB of guest data (another content per value),
/// packed like upstream in 500 kB parts; None (with a note) without qemu.
fn disk(work: &Path, data_mib: u64) -> Option<DiskFixture> {
    if !have("qemu-img") || !have("qemu-io") {
        eprintln!("skipped: qemu-img or qemu-io is not installed");
        return None;
    }
    fs::create_dir_all(work).unwrap();
    let img = work.join("src.qcow2");
    make_qcow2(&img, 64, data_mib).expect("make qcow2");
    Some(pack_disk(&img, "focal", "amd64", 500_000, Compression::Gzip, work).expect("pack"))
}

fn release(tag: &str, d: &DiskFixture) -> ReleaseSpec {
    ReleaseSpec::new(tag, upstream_assets("focal", "amd64", d))
}

/// As upstream's older releases: no asset carries a digest.
fn undigested(tag: &str, d: &DiskFixture) -> ReleaseSpec {
    let mut r = release(tag, d);
    for a in &mut r.assets {
        a.digest = DigestMode::Missing;
    }
    r
}

/// The full run into `out` with the download cache at `cache`.
fn run(out: &Path, api: &str, extra: &[&str], cache: &Path) -> Run {
    resources(None, out, api, extra, &[("VSWARM_CACHE_DIR", s(cache))])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The entry of release `tag` in the cache at `root`.
fn entry(root: &Path, api: &str, tag: &str) -> PathBuf {
    root.join(site_of(api)).join(REPO).join(tag)
}

/// GETs the storage host answered since request number `from`.
fn asset_gets(server: &Server, from: usize) -> Vec<String> {
    server.requests()[from..]
        .iter()
        .filter(|r| r.host == "assets" && r.method == "GET")
        .map(|r| r.path.clone())
        .collect()
}

/// API requests since request number `from`.
fn api_calls(server: &Server, from: usize) -> Vec<String> {
    server.requests()[from..]
        .iter()
        .filter(|r| r.host == "api")
        .map(|r| r.path.clone())
        .collect()
}

/// The sha256 of each installed file.
fn installed(out: &Path) -> Vec<String> {
    INSTALLED
        .iter()
        .map(|n| sha256_file_hex(&out.join(n)).unwrap_or_else(|e| panic!("{n}: {e:#}")))
        .collect()
}

/// The bytes release `tag` serves as asset `name`.
fn served(server: &Server, tag: &str, name: &str) -> Vec<u8> {
    server
        .assets_of(tag)
        .into_iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("no asset {name} in {tag}"))
        .2
}

/// Flips one byte in the middle of `path`, keeping its size.
fn flip(path: &Path) {
    let mut b = fs::read(path).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x5a;
    fs::write(path, b).unwrap();
}

/// Every file under `dir` (links not followed): path, size, mtime, kind.
fn tree(dir: &Path) -> Vec<(String, u64, SystemTime, bool)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let m = fs::symlink_metadata(e.path()).unwrap();
        out.push((
            e.path().display().to_string(),
            m.len(),
            m.modified().unwrap(),
            m.is_dir(),
        ));
        if m.is_dir() {
            out.extend(tree(&e.path()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Every regular file under `dir` with its bytes.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    tree(dir)
        .into_iter()
        .filter(|(_, _, _, is_dir)| !is_dir)
        .map(|(p, ..)| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Lines of `text` that speak of the cache.
fn cache_lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| l.contains("cache")).collect()
}

// ---------------------------------------------------------------------------
// Installing from the cache

#[test]
fn a_second_output_directory_fetches_no_asset_bytes_and_a_pinned_version_no_request() {
    let tmp = TempDir::new("c-second");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let (a, b, c) = (
        tmp.path().join("a"),
        tmp.path().join("b"),
        tmp.path().join("c"),
    );
    run(&a, &api, &["--version", "v1"], &cache).ok();
    assert!(server.served_total() > 0, "the first run downloads");

    let before = server.request_count();
    let bytes = server.served_total();
    run(&b, &api, &["--version", "v1"], &cache).ok();
    assert_eq!(
        server.requests()[before..],
        [],
        "a pinned, cached version makes no request at all"
    );
    assert_eq!(server.served_total(), bytes);
    assert_eq!(installed(&a), installed(&b), "byte-identical files");

    // `latest` asks the API which release that is, and fetches no asset.
    let before = server.request_count();
    run(&c, &api, &[], &cache).ok();
    assert_eq!(asset_gets(&server, before), Vec::<String>::new());
    assert_eq!(server.served_total(), bytes);
    assert_eq!(installed(&a), installed(&c));
}

#[test]
fn switching_back_to_an_earlier_tag_fetches_no_asset_bytes() {
    let tmp = TempDir::new("c-switch");
    let Some(d1) = disk(&tmp.path().join("fx1"), 6) else {
        return;
    };
    let d2 = disk(&tmp.path().join("fx2"), 5).unwrap();
    let server = Server::start(REPO, vec![release("v2", &d2), release("v1", &d1)]);
    let api = server.api_url();
    let out = tmp.path().join("out");
    let cache = tmp.path().join("cache");
    run(&out, &api, &["--version", "v1"], &cache).ok();
    run(&out, &api, &["--version", "v2"], &cache).ok();
    assert_eq!(
        sha256_file_hex(&out.join("disk-image.qcow2")).unwrap(),
        d2.sha256_hex
    );
    let before = server.request_count();
    let bytes = server.served_total();
    let back = run(&out, &api, &["--version", "v1"], &cache);
    back.ok();
    assert_eq!(asset_gets(&server, before), Vec::<String>::new());
    assert_eq!(
        server.served_total(),
        bytes,
        "the switch back fetched bytes"
    );
    assert_eq!(
        sha256_file_hex(&out.join("disk-image.qcow2")).unwrap(),
        d1.sha256_hex
    );
    assert_eq!(
        fs::read(out.join("kernel")).unwrap(),
        served(&server, "v1", KERNEL_ASSET)
    );
}

#[test]
fn installed_files_are_copies_and_writing_to_them_leaves_the_cache_unchanged() {
    let tmp = TempDir::new("c-copies");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(&a, &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    let cached: Vec<u64> = tree(&e).iter().map(|f| inode(Path::new(&f.0))).collect();
    for n in INSTALLED {
        let m = fs::metadata(a.join(n)).unwrap();
        assert_eq!(m.nlink(), 1, "{n} is hard-linked");
        assert!(
            !cached.contains(&m.ino()),
            "{n} shares its inode with the cache"
        );
    }
    // gem5 and users write to installed files.
    for n in ["kernel", "disk-image.qcow2"] {
        let mut f = fs::OpenOptions::new().write(true).open(a.join(n)).unwrap();
        std::io::Write::write_all(&mut f, b"written by the user").unwrap();
    }
    for (name, _, bytes) in server.assets_of("v1") {
        assert_eq!(
            fs::read(e.join(&name)).unwrap(),
            bytes,
            "{name} in the cache"
        );
    }
    run(&b, &api, &["--version", "v1"], &cache).ok();
    assert_eq!(
        fs::read(b.join("kernel")).unwrap(),
        served(&server, "v1", KERNEL_ASSET)
    );
    assert_eq!(
        sha256_file_hex(&b.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}

fn inode(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

// ---------------------------------------------------------------------------
// Offline

#[test]
fn offline_with_a_pinned_cached_version_installs_with_the_server_stopped() {
    let tmp = TempDir::new("c-off-pin");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(&a, &api, &["--version", "v1"], &cache).ok();
    server.stop();
    run(&b, &api, &["--offline", "--version", "v1"], &cache).ok();
    assert_eq!(installed(&a), installed(&b));
}

#[test]
fn a_pinned_cached_version_needs_no_network_without_offline() {
    let tmp = TempDir::new("c-pin-stopped");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(&a, &api, &["--version", "v1"], &cache).ok();
    server.stop();
    run(&b, &api, &["--version", "v1"], &cache).ok();
    assert_eq!(installed(&a), installed(&b));
}

#[test]
fn offline_latest_is_the_newest_cached_release_and_the_run_says_so() {
    let tmp = TempDir::new("c-off-latest");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    // v10 is the newer by publication; v2 sorts after it as text.
    let mut newer = release("v10", &d);
    newer.published_at = "2024-05-01T12:00:00Z".into();
    let mut older = release("v2", &d);
    older.published_at = "2024-01-01T12:00:00Z".into();
    let server = Server::start(REPO, vec![newer, older]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v10"], &cache).ok();
    run(&tmp.path().join("b"), &api, &["--version", "v2"], &cache).ok();
    server.stop();
    let c = tmp.path().join("c");
    let r = run(&c, &api, &["--offline"], &cache);
    r.ok();
    assert!(r.stderr.contains("`latest` is v10"), "{}", r.stderr);
    assert!(r.stdout.contains("Installed v10"), "{}", r.stdout);
}

#[test]
fn offline_for_an_uncached_tag_fails_naming_the_tag_and_the_cache() {
    let tmp = TempDir::new("c-off-miss");
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[1000])]);
    let api = server.api_url();
    server.stop();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let r = run(&out, &api, &["--offline", "--version", "v7"], &cache);
    r.failed();
    for want in ["v7", s(&cache), "without --offline"] {
        assert!(r.stderr.contains(want), "no `{want}` in: {}", r.stderr);
    }
    let r = run(&out, &api, &["--offline"], &cache);
    r.failed();
    for want in [s(&cache), "without --offline"] {
        assert!(r.stderr.contains(want), "no `{want}` in: {}", r.stderr);
    }
}

#[test]
fn offline_with_force_is_refused_and_the_cache_kept() {
    let tmp = TempDir::new("c-off-force");
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[1000])]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let env = [("VSWARM_CACHE_DIR", s(&cache))];
    resources(Some("download"), &tmp.path().join("a"), &api, &[], &env).ok();
    let was = tree(&cache);
    let before = server.request_count();
    let r = resources(
        Some("download"),
        &tmp.path().join("b"),
        &api,
        &["--offline", "--force", "--version", "v1"],
        &env,
    );
    r.failed();
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(
        server.requests()[before..],
        [],
        "--offline used the network"
    );
    assert_eq!(tree(&cache), was, "the cache changed");
}

#[test]
fn offline_makes_no_request_when_a_cached_asset_is_missing() {
    let tmp = TempDir::new("c-off-part");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let part = d.assets[0].name.clone();
    let server = Server::start(REPO, vec![undigested("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    fs::remove_file(e.join(&part)).unwrap();
    // A digest-less file without its seal cannot be checked: not there either.
    let seal = e.join(format!(".{KERNEL_ASSET}.sha256"));
    for (missing, unsealed) in [(part.as_str(), false), (KERNEL_ASSET, true)] {
        if unsealed {
            fs::remove_file(&seal).unwrap();
        }
        let before = server.request_count();
        let r = run(
            &tmp.path().join("b"),
            &api,
            &["--offline", "--version", "v1"],
            &cache,
        );
        r.failed();
        assert_eq!(
            server.requests()[before..],
            [],
            "--offline used the network"
        );
        for want in [missing, "not in the cache", "without --offline"] {
            assert!(r.stderr.contains(want), "no `{want}` in: {}", r.stderr);
        }
    }
}

// ---------------------------------------------------------------------------
// Concurrency and interruption

#[test]
fn two_runs_filling_one_cache_entry_both_succeed_and_each_byte_is_served_once() {
    let tmp = TempDir::new("c-two");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    server.add_fault(Fault::RateCap {
        bytes_per_sec: 600_000,
    });
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let env = [("VSWARM_CACHE_DIR", s(&cache))];
    let mut first = spawn_with(
        &[
            "resources",
            "--output",
            s(&a),
            "--github-api",
            &api,
            "--version",
            "v1",
        ],
        &env,
    );
    // Bytes flow only once the first run holds the entry.
    wait_until("the first run downloading", || server.served_total() > 0);
    let second = run(&b, &api, &["--version", "v1"], &cache);
    let status = first.wait().unwrap();
    second.ok();
    assert!(status.success(), "the first run failed");
    assert!(
        second
            .stderr
            .contains("waiting for another run on the cache entry"),
        "the runs did not overlap: {}",
        second.stderr
    );
    for (name, _, bytes) in server.assets_of("v1") {
        assert_eq!(
            server.served_bytes(&name),
            bytes.len() as u64,
            "{name} served other than once"
        );
    }
    assert_eq!(installed(&a), installed(&b));
}

#[test]
fn a_killed_run_leaves_no_incomplete_file_under_an_asset_name_and_the_next_completes() {
    let tmp = TempDir::new("c-kill");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![undigested("v1", &d)]);
    server.add_fault(Fault::RateCap {
        bytes_per_sec: 500_000,
    });
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let mut child = spawn_with(
        &[
            "resources",
            "--output",
            s(&out),
            "--github-api",
            &api,
            "--version",
            "v1",
        ],
        &[("VSWARM_CACHE_DIR", s(&cache))],
    );
    wait_until("a megabyte downloaded", || {
        server.served_total() > 1_000_000
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let e = entry(&cache, &api, "v1");
    let mut missing = 0;
    for (name, _, bytes) in server.assets_of("v1") {
        match fs::symlink_metadata(e.join(&name)) {
            Ok(_) => assert!(
                fs::read(e.join(&name)).unwrap() == bytes,
                "{name} stands incomplete or wrong"
            ),
            Err(_) => missing += 1,
        }
    }
    assert!(missing > 0, "the run was not killed mid-download");
    server.clear_faults();
    run(&out, &api, &["--version", "v1"], &cache).ok();
    assert_eq!(
        sha256_file_hex(&out.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
    for (name, _, bytes) in server.assets_of("v1") {
        assert_eq!(fs::read(e.join(&name)).unwrap(), bytes, "{name}");
    }
}

// ---------------------------------------------------------------------------
// Damaged entries

#[test]
fn a_cached_asset_with_a_digest_whose_bytes_changed_is_fetched_again() {
    let tmp = TempDir::new("c-flip");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let part = d.assets[1].name.clone();
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    for name in [part.as_str(), KERNEL_ASSET, SUMS_ASSET] {
        flip(&e.join(name));
    }
    let before = server.request_count();
    let b = tmp.path().join("b");
    run(&b, &api, &["--version", "v1"], &cache).ok();
    let gets = asset_gets(&server, before);
    for name in [part.as_str(), KERNEL_ASSET, SUMS_ASSET] {
        assert!(
            gets.iter().any(|g| g.ends_with(name)),
            "{name} not fetched again: {gets:?}"
        );
        assert_eq!(fs::read(e.join(name)).unwrap(), served(&server, "v1", name));
    }
    assert_eq!(
        sha256_file_hex(&b.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
    assert_eq!(
        fs::read(b.join("kernel")).unwrap(),
        served(&server, "v1", KERNEL_ASSET)
    );
}

#[test]
fn the_download_step_fetches_again_a_cached_part_whose_bytes_changed() {
    let tmp = TempDir::new("c-dlflip");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let part = d.assets[1].name.clone();
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    flip(&e.join(&part));
    let before = server.request_count();
    let out = tmp.path().join("b");
    let args = ["download", "--version", "v1"];
    let r = run(&out, &api, &args, &cache);
    r.ok();
    assert!(r.stderr.contains("fetching it again"), "{}", r.stderr);
    assert!(asset_gets(&server, before)
        .iter()
        .any(|g| g.ends_with(&part)));
    assert_eq!(
        fs::read(e.join(&part)).unwrap(),
        served(&server, "v1", &part)
    );
}

#[test]
fn digest_less_cached_assets_whose_bytes_changed_are_caught_by_their_seal() {
    let tmp = TempDir::new("c-seal");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let part = d.assets[1].name.clone();
    let server = Server::start(REPO, vec![undigested("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    for name in [part.as_str(), KERNEL_ASSET, CLIENT_ASSET] {
        assert!(
            e.join(format!(".{name}.sha256")).is_file(),
            "{name} unsealed"
        );
        flip(&e.join(name));
    }
    let b = tmp.path().join("b");
    run(&b, &api, &["--version", "v1"], &cache).ok();
    for name in [part.as_str(), KERNEL_ASSET, CLIENT_ASSET] {
        assert_eq!(fs::read(e.join(name)).unwrap(), served(&server, "v1", name));
    }
    assert_eq!(
        fs::read(b.join("kernel")).unwrap(),
        served(&server, "v1", KERNEL_ASSET)
    );
    assert_eq!(
        fs::read(b.join("client")).unwrap(),
        served(&server, "v1", CLIENT_ASSET)
    );
    assert_eq!(
        sha256_file_hex(&b.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}

/// Changed bytes whose seal was changed along: only the image's sums can
/// tell, and then the digest-less parts are fetched again.
#[test]
fn a_digest_less_part_changed_with_its_seal_is_caught_by_the_image_sums() {
    let tmp = TempDir::new("c-resealed");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let part = d.assets[1].name.clone();
    let server = Server::start(REPO, vec![undigested("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    flip(&e.join(&part));
    let sha = sha256_file_hex(&e.join(&part)).unwrap();
    fs::write(e.join(format!(".{part}.sha256")), format!("{sha}\n")).unwrap();
    let b = tmp.path().join("b");
    run(&b, &api, &["--version", "v1"], &cache).ok();
    assert_eq!(
        fs::read(e.join(&part)).unwrap(),
        served(&server, "v1", &part)
    );
    assert_eq!(
        sha256_file_hex(&b.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}

#[test]
fn a_digest_less_cached_file_whose_seal_was_deleted_is_fetched_again() {
    let tmp = TempDir::new("c-noseal");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let part = d.assets[0].name.clone();
    let server = Server::start(REPO, vec![undigested("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    for name in [part.as_str(), KERNEL_ASSET] {
        fs::remove_file(e.join(format!(".{name}.sha256"))).unwrap();
        flip(&e.join(name));
    }
    let before = server.request_count();
    let b = tmp.path().join("b");
    run(&b, &api, &["--version", "v1"], &cache).ok();
    let gets = asset_gets(&server, before);
    for name in [part.as_str(), KERNEL_ASSET] {
        assert!(gets.iter().any(|g| g.ends_with(name)), "{name}: {gets:?}");
        assert_eq!(fs::read(e.join(name)).unwrap(), served(&server, "v1", name));
        assert!(e.join(format!(".{name}.sha256")).is_file(), "{name} sealed");
    }
    assert_eq!(
        fs::read(b.join("kernel")).unwrap(),
        served(&server, "v1", KERNEL_ASSET)
    );
    assert_eq!(
        sha256_file_hex(&b.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}

#[test]
fn a_run_never_changes_a_cache_entry_another_run_is_reading() {
    let tmp = TempDir::new("c-reader");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![undigested("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    // The kernel can no longer be checked: it must be fetched again, which
    // takes the entry for writing.
    fs::remove_file(e.join(format!(".{KERNEL_ASSET}.sha256"))).unwrap();
    let kernel_inode = inode(&e.join(KERNEL_ASSET));
    // Another run reads the entry.
    let reader = fs::File::open(&e).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(reader.as_raw_fd(), libc::LOCK_SH) }, 0);
    let b = tmp.path().join("b");
    let r = run(&b, &api, &["--version", "v1", "--no-wait"], &cache);
    r.failed();
    assert!(
        r.stderr
            .contains("another run is working on the cache entry"),
        "{}",
        r.stderr
    );
    assert_eq!(
        inode(&e.join(KERNEL_ASSET)),
        kernel_inode,
        "changed under a reader"
    );
    drop(reader);
    run(&b, &api, &["--version", "v1", "--no-wait"], &cache).ok();
    assert!(e.join(format!(".{KERNEL_ASSET}.sha256")).is_file());
}

/// The cache's own release JSON is trusted; one that no longer parses or
/// names another tag is not the release asked for, and is fetched again
/// (with `--offline`: an error saying so).
#[test]
fn a_damaged_cached_release_json_is_fetched_again() {
    let tmp = TempDir::new("c-json");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let json = entry(&cache, &api, "v1").join("release.json");
    let good = server.release_json("v1").unwrap();
    let other_tag = good.replace("\"tag_name\":\"v1\"", "\"tag_name\":\"v9\"");
    assert_ne!(other_tag, good);
    for (i, bad) in ["{\"tag_na", other_tag.as_str()].into_iter().enumerate() {
        fs::write(&json, bad).unwrap();
        let off = run(
            &tmp.path().join(format!("off{i}")),
            &api,
            &["--offline", "--version", "v1"],
            &cache,
        );
        off.failed();
        assert!(
            off.stderr.contains(s(&json)) && off.stderr.contains("without --offline"),
            "{}",
            off.stderr
        );
        let before = server.request_count();
        let out = tmp.path().join(format!("b{i}"));
        run(&out, &api, &["--version", "v1"], &cache).ok();
        assert!(
            api_calls(&server, before)
                .iter()
                .any(|p| p.ends_with("/tags/v1")),
            "the release was not asked for again"
        );
        assert_eq!(asset_gets(&server, before), Vec::<String>::new());
        assert_eq!(fs::read_to_string(&json).unwrap(), good);
    }
}

// ---------------------------------------------------------------------------
// Links and special files planted in the cache

#[test]
fn a_link_at_a_cached_asset_name_is_never_followed() {
    let tmp = TempDir::new("c-link-asset");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    // The release's own bytes outside: were the link followed, they would
    // be taken as the cached asset and not fetched.
    let outside = tmp.path().join("outside-kernel");
    fs::write(&outside, served(&server, "v1", KERNEL_ASSET)).unwrap();
    let part = d.assets[0].name.clone();
    let outside_part = tmp.path().join("outside-part");
    fs::write(&outside_part, b"not a part").unwrap();
    for (name, target) in [(KERNEL_ASSET, &outside), (part.as_str(), &outside_part)] {
        fs::remove_file(e.join(name)).unwrap();
        std::os::unix::fs::symlink(target, e.join(name)).unwrap();
    }
    let before = server.request_count();
    let b = tmp.path().join("b");
    run(&b, &api, &["--version", "v1"], &cache).ok();
    let gets = asset_gets(&server, before);
    for name in [KERNEL_ASSET, part.as_str()] {
        assert!(gets.iter().any(|g| g.ends_with(name)), "{name}: {gets:?}");
        assert!(fs::symlink_metadata(e.join(name)).unwrap().is_file());
    }
    assert_eq!(
        fs::read(&outside).unwrap(),
        served(&server, "v1", KERNEL_ASSET)
    );
    assert_eq!(fs::read(&outside_part).unwrap(), b"not a part");
    assert_eq!(
        sha256_file_hex(&b.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}

#[test]
fn a_fifo_at_a_cached_asset_name_or_release_json_does_not_hang_the_run() {
    let tmp = TempDir::new("c-fifo");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let e = entry(&cache, &api, "v1");
    let part = d.assets[0].name.clone();
    for name in [KERNEL_ASSET, SUMS_ASSET, part.as_str(), "release.json"] {
        let p = e.join(name);
        fs::remove_file(&p).unwrap();
        let c = std::ffi::CString::new(s(&p)).unwrap();
        // SAFETY: mkfifo with a valid C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    }
    let b = tmp.path().join("b");
    let out = s(&b).to_string();
    let r = xtask_within(
        &[
            "resources",
            "--output",
            &out,
            "--github-api",
            &api,
            "--version",
            "v1",
        ],
        &[("VSWARM_CACHE_DIR", s(&cache))],
        Duration::from_secs(120),
    );
    r.ok();
    assert_eq!(installed(&tmp.path().join("a")), installed(&b));
    for name in [KERNEL_ASSET, SUMS_ASSET, part.as_str(), "release.json"] {
        assert!(
            fs::symlink_metadata(e.join(name)).unwrap().is_file(),
            "{name}"
        );
    }
}

#[test]
fn a_link_at_the_cached_release_json_is_never_read() {
    let tmp = TempDir::new("c-link-json");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let json = entry(&cache, &api, "v1").join("release.json");
    let outside = tmp.path().join("outside.json");
    fs::write(&outside, server.release_json("v1").unwrap()).unwrap();
    fs::remove_file(&json).unwrap();
    std::os::unix::fs::symlink(&outside, &json).unwrap();
    let before = server.request_count();
    run(&tmp.path().join("b"), &api, &["--version", "v1"], &cache).ok();
    assert!(
        api_calls(&server, before)
            .iter()
            .any(|p| p.ends_with("/tags/v1")),
        "the linked release JSON was taken as the cache's"
    );
    assert!(fs::symlink_metadata(&json).unwrap().is_file());
    assert_eq!(
        fs::read_to_string(&outside).unwrap(),
        server.release_json("v1").unwrap()
    );
}

#[test]
fn a_link_at_the_entry_directory_is_never_followed() {
    let tmp = TempDir::new("c-link-entry");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    // The whole entry moved outside, and a link left in its place.
    let e = entry(&cache, &api, "v1");
    let outside = tmp.path().join("outside-entry");
    fs::rename(&e, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &e).unwrap();
    let was = contents(&outside);
    let before = server.request_count();
    let b = tmp.path().join("b");
    run(&b, &api, &["--version", "v1"], &cache).ok();
    assert!(
        api_calls(&server, before)
            .iter()
            .any(|p| p.ends_with("/tags/v1")),
        "the release JSON was read through the link"
    );
    assert_eq!(contents(&outside), was, "the link's target changed");
    assert!(fs::symlink_metadata(&e).unwrap().is_dir());
    assert_eq!(
        sha256_file_hex(&b.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}

#[test]
fn a_link_at_the_owner_directory_is_never_followed() {
    let tmp = TempDir::new("c-link-owner");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    // The owner's directory, with the release in it, moved outside and
    // linked back.
    let owner = cache
        .join(site_of(&api))
        .join(REPO.split('/').next().unwrap());
    let outside = tmp.path().join("outside-owner");
    fs::rename(&owner, &outside).unwrap();
    std::os::unix::fs::symlink(&outside, &owner).unwrap();
    let was = contents(&outside);
    for args in [&["--offline"][..], &["--offline", "--version", "v1"]] {
        let r = run(&tmp.path().join("off"), &api, args, &cache);
        r.failed();
        assert!(r.stderr.contains("without --offline"), "{}", r.stderr);
    }
    let before = server.request_count();
    let b = tmp.path().join("b");
    run(&b, &api, &["--version", "v1"], &cache).ok();
    assert!(
        api_calls(&server, before)
            .iter()
            .any(|p| p.ends_with("/tags/v1")),
        "the release JSON was read through the link"
    );
    assert_eq!(contents(&outside), was, "the run wrote through the link");
    assert!(fs::symlink_metadata(&owner).unwrap().is_dir());
    assert_eq!(
        sha256_file_hex(&b.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}

// ---------------------------------------------------------------------------
// Caches that cannot be used

#[test]
fn a_cache_location_that_is_a_file_is_skipped_with_one_line_and_offline_says_why() {
    let tmp = TempDir::new("c-file");
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[1000])]);
    let api = server.api_url();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, b"the user's").unwrap();
    let out = tmp.path().join("out");
    let env = [("VSWARM_CACHE_DIR", s(&file))];
    let r = resources(Some("download"), &out, &api, &[], &env);
    r.ok();
    assert_eq!(cache_lines(&r.stderr).len(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not using the download cache"),
        "{}",
        r.stderr
    );
    assert_eq!(fs::read(&file).unwrap(), b"the user's");
    assert_eq!(
        fs::read(out.join("kernel")).unwrap(),
        served(&server, "v1", KERNEL_ASSET)
    );
    let off = resources(
        Some("download"),
        &tmp.path().join("off"),
        &api,
        &["--offline", "--version", "v1"],
        &env,
    );
    off.failed();
    assert!(
        off.stderr.contains("--offline needs the cache") && off.stderr.contains(s(&file)),
        "{}",
        off.stderr
    );
}

#[test]
fn a_read_only_cache_is_skipped_with_one_line() {
    let tmp = TempDir::new("c-ro");
    let dir = tmp.path().join("ro");
    let Some(_mounted) = tmpfs(&dir, "ro,size=1m") else {
        return;
    };
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[1000])]);
    let api = server.api_url();
    let out = tmp.path().join("out");
    let env = [("VSWARM_CACHE_DIR", s(&dir))];
    let r = resources(Some("download"), &out, &api, &[], &env);
    r.ok();
    assert_eq!(cache_lines(&r.stderr).len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("Read-only"), "{}", r.stderr);
    let off = resources(Some("download"), &out, &api, &["--offline"], &env);
    off.failed();
    assert!(off.stderr.contains("Read-only"), "{}", off.stderr);
}

#[test]
fn a_full_cache_is_skipped_with_one_line_and_left_as_it_was() {
    let tmp = TempDir::new("c-full");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let dir = tmp.path().join("small");
    let Some(_mounted) = tmpfs(&dir, "size=64k") else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let out = tmp.path().join("out");
    let r = run(&out, &api, &["--version", "v1"], &dir);
    r.ok();
    assert_eq!(cache_lines(&r.stderr).len(), 1, "{}", r.stderr);
    assert!(r.stderr.contains("free"), "{}", r.stderr);
    assert_eq!(
        sha256_file_hex(&out.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
    let list = xtask(
        &["resources", "cache", "list"],
        &[("VSWARM_CACHE_DIR", s(&dir))],
    );
    list.ok();
    assert!(list.stdout.contains("is empty"), "{}", list.stdout);
}

/// A file system without room for the entry's directories (its inodes
/// spent, as a full disk's blocks are) after the cache itself was usable.
#[test]
fn a_cache_without_room_for_the_entry_is_skipped_with_one_line() {
    let tmp = TempDir::new("c-inodes");
    let dir = tmp.path().join("small");
    let Some(_mounted) = tmpfs(&dir, "size=1m,nr_inodes=2") else {
        return;
    };
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[1000])]);
    let api = server.api_url();
    let out = tmp.path().join("out");
    let env = [("VSWARM_CACHE_DIR", s(&dir))];
    let r = resources(Some("download"), &out, &api, &[], &env);
    r.ok();
    assert_eq!(cache_lines(&r.stderr).len(), 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("not using the download cache"),
        "{}",
        r.stderr
    );
    assert_eq!(
        fs::read(out.join("kernel")).unwrap(),
        served(&server, "v1", KERNEL_ASSET)
    );
    let off = resources(Some("download"), &out, &api, &["--offline"], &env);
    off.failed();
}

#[test]
fn no_cache_neither_reads_nor_fills_the_cache() {
    let tmp = TempDir::new("c-nocache");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    run(&tmp.path().join("a"), &api, &["--version", "v1"], &cache).ok();
    let was = tree(&cache);
    let bytes = server.served_total();
    let b = tmp.path().join("b");
    run(&b, &api, &["--no-cache", "--version", "v1"], &cache).ok();
    assert_eq!(tree(&cache), was, "the cache changed");
    assert_eq!(
        server.served_total(),
        2 * bytes,
        "--no-cache took assets from the cache"
    );
    assert_eq!(installed(&tmp.path().join("a")), installed(&b));
    let absent = tmp.path().join("absent");
    run(&tmp.path().join("c"), &api, &["--no-cache"], &absent).ok();
    assert!(!absent.exists(), "--no-cache made a cache");
}

// ---------------------------------------------------------------------------
// The cache step

#[test]
fn cache_path_is_vswarm_cache_dir_then_an_absolute_xdg_cache_home_then_home() {
    let tmp = TempDir::new("c-path");
    let p = |name: &str| tmp.path().join(name);
    let path = |env: &[(&str, &str)]| {
        let r = xtask(&["resources", "cache", "path"], env);
        r.ok();
        r.stdout.trim().to_string()
    };
    let (v, x, h) = (p("v"), p("x"), p("h"));
    let all = [
        ("VSWARM_CACHE_DIR", s(&v)),
        ("XDG_CACHE_HOME", s(&x)),
        ("HOME", s(&h)),
    ];
    assert_eq!(path(&all), s(&v));
    assert_eq!(path(&all[1..]), s(&x.join("vswarm-u")));
    assert_eq!(path(&all[2..]), s(&h.join(".cache/vswarm-u")));
    let relative = [("XDG_CACHE_HOME", "rel/cache"), ("HOME", s(&h))];
    assert_eq!(path(&relative), s(&h.join(".cache/vswarm-u")));
    assert!(
        !v.exists() && !x.exists() && !h.exists(),
        "`cache path` made a directory"
    );
    xtask(&["resources", "cache", "path"], &[]).failed();
}

/// Three releases downloaded into one cache (small byte-only assets), with
/// their last use set `ages` hours ago.
fn three_entries(tmp: &Path, ages: [u64; 3]) -> (Server, PathBuf) {
    let tags = ["v1", "v2", "v3"];
    let server = Server::start(
        REPO,
        tags.iter()
            .map(|t| bytes_release(t, "focal", "amd64", &[20_000]))
            .collect(),
    );
    let api = server.api_url();
    let cache = tmp.join("cache");
    for t in tags {
        resources(
            Some("download"),
            &tmp.join(t),
            &api,
            &["--version", t],
            &[("VSWARM_CACHE_DIR", s(&cache))],
        )
        .ok();
    }
    for (t, h) in tags.iter().zip(ages) {
        let used = entry(&cache, &api, t).join(".used");
        let f = fs::File::create(&used).unwrap();
        f.set_modified(SystemTime::now() - Duration::from_secs(h * 3600))
            .unwrap();
    }
    (server, cache)
}

fn cache_cmd(cache: &Path, args: &[&str]) -> Run {
    let mut all = vec!["resources", "cache"];
    all.extend_from_slice(args);
    let r = xtask(&all, &[("VSWARM_CACHE_DIR", s(cache))]);
    r.ok();
    r
}

fn tags_in(cache: &Path, api: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(cache.join(site_of(api)).join(REPO))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn entry_bytes(dir: &Path) -> u64 {
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[test]
fn cache_list_shows_each_release_with_its_size_and_last_use() {
    let tmp = TempDir::new("c-list");
    let (server, cache) = three_entries(tmp.path(), [0, 2, 50]);
    let api = server.api_url();
    let r = cache_cmd(&cache, &["list"]);
    for (t, when) in [("v1", "just now"), ("v2", "2 h ago"), ("v3", "2 days ago")] {
        let size = util::fmt::human_bytes(entry_bytes(&entry(&cache, &api, t)));
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains(REPO) && l.split_whitespace().nth(1) == Some(t))
            .unwrap_or_else(|| panic!("no line for {t}: {}", r.stdout));
        assert!(line.contains(&size) && line.contains(when), "{t}: {line}");
    }
    assert!(r.stdout.contains("3 release(s)"), "{}", r.stdout);
}

#[test]
fn cache_list_reads_a_read_only_cache() {
    let tmp = TempDir::new("c-list-ro");
    let dir = tmp.path().join("ro");
    let Some(_mounted) = tmpfs(&dir, "size=4m") else {
        return;
    };
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[1000])]);
    let env = [("VSWARM_CACHE_DIR", s(&dir))];
    let out = tmp.path().join("out");
    resources(Some("download"), &out, &server.api_url(), &[], &env).ok();
    let st = Command::new("mount")
        .args(["-o", "remount,ro"])
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    let r = xtask(&["resources", "cache", "list"], &env);
    r.ok();
    assert!(
        r.stdout.contains(REPO) && r.stdout.contains("v1"),
        "{}",
        r.stdout
    );
}

#[test]
fn cache_prune_keep_removes_the_least_recently_used_beyond_n_and_says_which() {
    let tmp = TempDir::new("c-keep");
    // v2 unused the longest, then v1; v3 the most recent.
    let (server, cache) = three_entries(tmp.path(), [2, 3, 1]);
    let api = server.api_url();
    let r = cache_cmd(&cache, &["prune", "--keep", "2"]);
    assert_eq!(tags_in(&cache, &api), ["v1", "v3"]);
    assert!(r.stdout.contains(&format!("{REPO} v2")), "{}", r.stdout);
    assert!(!r.stdout.contains(&format!("{REPO} v1")), "{}", r.stdout);
    let r = cache_cmd(&cache, &["prune", "--keep", "1"]);
    assert_eq!(tags_in(&cache, &api), ["v3"]);
    assert!(r.stdout.contains(&format!("{REPO} v1")), "{}", r.stdout);
}

#[test]
fn cache_prune_max_size_removes_the_least_recently_used_first() {
    let tmp = TempDir::new("c-maxsize");
    // v1 the most recent, then v2; v3 unused the longest.
    let (server, cache) = three_entries(tmp.path(), [1, 2, 3]);
    let api = server.api_url();
    let two = entry_bytes(&entry(&cache, &api, "v1")) + entry_bytes(&entry(&cache, &api, "v2"));
    let r = cache_cmd(&cache, &["prune", "--max-size", &two.to_string()]);
    assert_eq!(tags_in(&cache, &api), ["v1", "v2"], "{}", r.stdout);
    assert!(r.stdout.contains(&format!("{REPO} v3")), "{}", r.stdout);
}

#[test]
fn cache_prune_never_removes_a_release_another_run_holds() {
    let tmp = TempDir::new("c-held");
    let (server, cache) = three_entries(tmp.path(), [3, 2, 1]);
    let api = server.api_url();
    // A run reading v1 (the least recently used) holds its entry shared.
    let held = fs::File::open(entry(&cache, &api, "v1")).unwrap();
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_SH) }, 0);
    let r = cache_cmd(&cache, &["prune", "--keep", "0"]);
    assert_eq!(tags_in(&cache, &api), ["v1"], "{}", r.stdout);
    assert!(!r.stdout.contains(&format!("{REPO} v1")), "{}", r.stdout);
    drop(held);
    cache_cmd(&cache, &["prune", "--keep", "0"]);
    assert_eq!(tags_in(&cache, &api), Vec::<String>::new());
}

#[test]
fn the_default_policy_keeps_the_three_most_recently_used_releases() {
    let tmp = TempDir::new("c-policy");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let tags = ["v4", "v3", "v2", "v1"];
    let server = Server::start(REPO, tags.iter().map(|t| release(t, &d)).collect());
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    let mut last = None;
    for t in tags.iter().rev() {
        let r = run(&out, &api, &["--version", t], &cache);
        r.ok();
        last = Some(r);
    }
    assert_eq!(tags_in(&cache, &api), ["v2", "v3", "v4"]);
    let last = last.unwrap();
    assert!(
        last.stderr.contains(&format!("removed {REPO} v1")),
        "{}",
        last.stderr
    );
}

#[test]
fn the_default_policy_applies_to_the_download_step_too() {
    let tmp = TempDir::new("c-policy-dl");
    let tags = ["v4", "v3", "v2", "v1"];
    let server = Server::start(
        REPO,
        tags.iter()
            .map(|t| bytes_release(t, "focal", "amd64", &[20_000]))
            .collect(),
    );
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let env = [("VSWARM_CACHE_DIR", s(&cache))];
    for t in tags.iter().rev() {
        let out = tmp.path().join(t);
        resources(Some("download"), &out, &api, &["--version", t], &env).ok();
    }
    assert_eq!(tags_in(&cache, &api), ["v2", "v3", "v4"]);
}

// ---------------------------------------------------------------------------
// The user's files in the output directory

#[test]
fn unknown_files_in_the_output_directory_are_never_touched() {
    let tmp = TempDir::new("c-unknown");
    let Some(d) = disk(&tmp.path().join("fx"), 6) else {
        return;
    };
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let cache = tmp.path().join("cache");
    let out = tmp.path().join("out");
    fs::create_dir_all(out.join("gem5/configs")).unwrap();
    for (name, text) in [
        ("artifacts.py", "# upstream's downloader\n"),
        ("Makefile", "all:\n\tpython3 artifacts.py\n"),
        ("release.json", "{\"the user's\": true}\n"),
        ("gem5/configs/run.py", "print('hi')\n"),
        ("gem5/README", "gem5 configs\n"),
    ] {
        fs::write(out.join(name), text).unwrap();
    }
    let theirs = |out: &Path| -> Vec<(String, Vec<u8>)> {
        contents(out)
            .into_iter()
            .filter(|(p, _)| {
                let rel = Path::new(p).strip_prefix(out).unwrap();
                ["artifacts.py", "Makefile", "release.json", "gem5"]
                    .iter()
                    .any(|n| rel.starts_with(n))
            })
            .collect()
    };
    let was = theirs(&out);
    assert_eq!(was.len(), 5);
    run(&out, &api, &["--version", "v1"], &cache).ok();
    assert_eq!(theirs(&out), was);
    run(&out, &api, &["--version", "v1", "--force"], &cache).ok();
    assert_eq!(theirs(&out), was);
    assert_eq!(
        sha256_file_hex(&out.join("disk-image.qcow2")).unwrap(),
        d.sha256_hex
    );
}
