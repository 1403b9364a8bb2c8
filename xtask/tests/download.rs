//! The download step against a loopback GitHub: release lookup, asset
//! selection, resume, retries, digests, the token rule, and the CLI contract.

mod common;

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use testkit::{fake_elf, AssetSpec, Body, DigestMode, Fault, ReleaseSpec, Server, TempDir};

const PART: &str = "disk-image-focal-amd64.qcow2.tar.gz.aa";

fn served(spec: &ReleaseSpec, name: &str) -> Vec<u8> {
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
fn assert_downloaded(dir: &std::path::Path, api: &str, spec: &ReleaseSpec) {
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
fn rate_limit_names_reset_time_and_token() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[10])]);
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1800;
    server.add_fault(Fault::ApiRateLimited { reset_epoch: reset });
    let dir = TempDir::new("dl-rate");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("rate limit is exhausted"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("resets at 20"), "{}", run.stderr);
    assert!(run.stderr.contains("GITHUB_TOKEN"), "{}", run.stderr);
}

#[test]
fn token_goes_to_the_api_host_only_and_is_never_shown() {
    let token = "ghp_s3cr3tTOKENvalue0123456789";
    let spec = bytes_release("v1", "focal", "amd64", &[100_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::RequireToken {
        token: token.into(),
    });
    let dir = TempDir::new("dl-token");
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &[],
        &[("GITHUB_TOKEN", token)],
    );
    run.ok();
    assert!(!run.all().contains(token));
    let reqs = server.requests();
    let api: Vec<_> = reqs
        .iter()
        .filter(|r| r.host == "api" && r.path.starts_with("/repos/"))
        .collect();
    assert!(!api.is_empty());
    for r in &api {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "{}",
            r.path
        );
    }
    let assets: Vec<_> = reqs.iter().filter(|r| r.host == "assets").collect();
    assert!(!assets.is_empty());
    for r in assets {
        assert!(
            r.header("authorization").is_none(),
            "token sent to the asset host: {}",
            r.path
        );
    }
    // Nor written anywhere under the output directory.
    for entry in walk(dir.path()) {
        let data = fs::read(&entry).unwrap();
        assert!(
            !data.windows(token.len()).any(|w| w == token.as_bytes()),
            "{}",
            entry.display()
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn wrong_token_is_named() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[10])]);
    server.add_fault(Fault::RequireToken {
        token: "right".into(),
    });
    let dir = TempDir::new("dl-badtoken");
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &[],
        &[("GH_TOKEN", "wrong")],
    );
    run.failed();
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(
        run.stderr.contains("the token in GH_TOKEN was refused"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("wrong\n"));
}

#[test]
fn unreachable_api_names_the_host() {
    let dir = TempDir::new("dl-unreach");
    // Nothing listens on port 1.
    let run = resources(Some("download"), dir.path(), "http://127.0.0.1:1", &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("cannot reach 127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("HTTPS_PROXY"), "{}", run.stderr);
}

#[test]
fn cut_connection_resumes_with_range() {
    let spec = bytes_release("v1", "focal", "amd64", &[3_000_000]);
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::CutAfter {
        asset: PART.into(),
        bytes: 1_000_000,
        times: 1,
    });
    let dir = TempDir::new("dl-cut");
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).ok();
    assert_downloaded(dir.path(), &server.api_url(), &spec);
    let ranges = asset_ranges(&server, PART, 0);
    assert!(
        ranges.iter().any(|r| r == "bytes=1000000-2999999"),
        "{ranges:?}"
    );
}

#[test]
fn server_errors_are_retried() {
    let spec = bytes_release("v1", "focal", "amd64", &[50_000]);
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::Status {
        asset: PART.into(),
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
        .filter(|r| r.host == "assets" && r.path.ends_with(PART))
        .count();
    assert_eq!(gets, 3);
}

#[test]
fn a_404_asset_is_not_retried() {
    let spec = bytes_release("v1", "focal", "amd64", &[50_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::Status {
        asset: PART.into(),
        status: 404,
        times: 10,
    });
    let dir = TempDir::new("dl-404");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains(PART) && run.stderr.contains("404"),
        "{}",
        run.stderr
    );
    let gets = server
        .requests()
        .into_iter()
        .filter(|r| r.host == "assets" && r.path.ends_with(PART))
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
        asset: PART.into(),
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
fn digest_mismatch_leaves_no_file_and_shows_both_values() {
    let mut spec = bytes_release("v1", "focal", "amd64", &[70_000]);
    spec.assets
        .iter_mut()
        .find(|a| a.name == PART)
        .unwrap()
        .digest = DigestMode::Wrong;
    let server = Server::start(REPO, vec![spec]);
    let dir = TempDir::new("dl-digest");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr
            .contains(&format!("asset {PART}: sha256 mismatch")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("the release says"), "{}", run.stderr);
    let work = cache_entry(dir.path(), &server.api_url(), "v1");
    assert!(
        !files_in(&work).iter().any(|n| n.contains(PART)),
        "{:?}",
        files_in(&work)
    );
}

#[test]
fn truncated_asset_is_an_error() {
    let spec = bytes_release("v1", "focal", "amd64", &[70_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::Truncated { asset: PART.into() });
    let dir = TempDir::new("dl-trunc");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(run.stderr.contains(PART), "{}", run.stderr);
    assert!(!cache_entry(dir.path(), &server.api_url(), "v1")
        .join(PART)
        .exists());
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
    let ranges = asset_ranges(&server, PART, 0);
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

#[test]
fn server_without_ranges_restarts_cleanly() {
    let big = 40 * 1024 * 1024 + 5;
    let spec = bytes_release("v1", "focal", "amd64", &[big]);
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::NoRange { asset: PART.into() });
    let dir = TempDir::new("dl-norange");
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).ok();
    assert_downloaded(dir.path(), &server.api_url(), &spec);
}

#[test]
fn interrupted_download_resumes_on_the_next_run() {
    let spec = bytes_release("v1", "focal", "amd64", &[2_000_000]);
    let server = Server::start(REPO, vec![spec.clone()]);
    // First run: the connection is cut, then the asset is gone (404, not retried).
    server.add_fault(Fault::CutAfter {
        asset: PART.into(),
        bytes: 700_000,
        times: 1,
    });
    server.add_fault(Fault::Status {
        asset: PART.into(),
        status: 404,
        times: 1,
    });
    let dir = TempDir::new("dl-resume");
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).failed();
    assert!(!cache_entry(dir.path(), &server.api_url(), "v1")
        .join(PART)
        .exists());
    server.clear_faults();
    let before = server.requests().len();
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).ok();
    assert_downloaded(dir.path(), &server.api_url(), &spec);
    let ranges = asset_ranges(&server, PART, before);
    assert_eq!(ranges, ["bytes=700000-1999999"]);
}

#[test]
fn help_for_every_step() {
    for args in [
        vec!["--help"],
        vec!["resources", "--help"],
        vec!["resources", "-h"],
        vec!["resources", "download", "--help"],
        vec!["resources", "decompress", "--help"],
        vec!["resources", "convert", "--help"],
        vec!["resources", "verify", "--help"],
        vec!["resources", "list", "--help"],
        vec!["resources", "mirror", "--help"],
        vec!["bench", "--help"],
    ] {
        let run = xtask(&args, &[]);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("cargo xtask"),
            "{args:?}: {}",
            run.stdout
        );
    }
}

#[test]
fn flags_may_come_before_the_step() {
    let run = xtask(
        &[
            "resources",
            "--arch",
            "arm64",
            "--output",
            "/nonexistent",
            "download",
            "--help",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("cargo xtask resources download"),
        "{}",
        run.stdout
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (args, needle) in [
        (vec!["resources", "--bogus"], "unknown flag `--bogus`"),
        (
            vec!["resources", "download", "--arch", "riscv"],
            "invalid --arch `riscv`",
        ),
        (
            vec!["resources", "--os-version", "bionic"],
            "invalid --os-version `bionic`",
        ),
        (
            vec!["resources", "--version", "../../x"],
            "invalid --version",
        ),
        (vec!["resources", "--jobs", "0"], "invalid --jobs"),
        (vec!["resources", "frobnicate"], "unknown step `frobnicate`"),
        (vec!["nope"], "unknown task `nope`"),
    ] {
        let run = xtask(&args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let first = run.stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: ") && first.contains(needle),
            "{args:?}: {}",
            run.stderr
        );
    }
}

/// The Range headers of the asset host's requests for `asset`, from the
/// `from`-th logged request on.
fn asset_ranges(server: &Server, asset: &str, from: usize) -> Vec<String> {
    server.requests()[from..]
        .iter()
        .filter(|r| r.host == "assets" && r.path.ends_with(asset))
        .filter_map(|r| r.header("range").map(str::to_string))
        .collect()
}
