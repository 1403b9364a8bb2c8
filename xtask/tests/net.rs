//! The network as a user meets it (issue 17): HTTPS through the system's
//! trust store and `SSL_CERT_FILE` / `SSL_CERT_DIR`, against a fake GitHub
//! whose CA the test makes; retries that say one short line; names that do
//! not resolve; environment values blamed by name; what a failed first run
//! leaves and what a resumed one still has to fetch.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use testkit::{
    fake_elf, make_qcow2, pack_disk, upstream_assets, Compression, Fault, ReleaseSpec, Server,
    TempDir,
};

const TOKEN: &str = "ghp_net_test_token_0123456789";

/// A small release with one disk part of about `kib` KiB of plain bytes.
fn small_release(kib: usize) -> ReleaseSpec {
    bytes_release("v1", "focal", "amd64", &[kib << 10])
}

fn part_name() -> String {
    "disk-image-focal-amd64.qcow2.tar.gz.aa".into()
}

/// The server's CA written to `dir/ca.pem`.
fn ca_file(server: &Server, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ca.pem");
    fs::write(&path, server.ca_pem().expect("an HTTPS server")).unwrap();
    path
}

fn assert_no_token(run: &Run) {
    assert!(
        !run.all().contains(TOKEN),
        "the token was printed:\n{}",
        run.all()
    );
}

#[test]
fn https_fake_github_without_its_ca_fails_naming_the_host_and_ssl_cert_file() {
    let server = Server::start_https(REPO, vec![small_release(64)]);
    let api = server.api_url();
    assert!(api.starts_with("https://127.0.0.1:"), "{api}");
    let out = TempDir::new("net-noca");
    let run = resources(
        Some("download"),
        out.path(),
        &api,
        &[],
        &[("GH_TOKEN", TOKEN)],
    );
    run.failed();
    let host = api.trim_start_matches("https://");
    assert!(
        run.stderr.contains(host) && run.stderr.contains("certificate is not trusted"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("SSL_CERT_FILE"), "{}", run.stderr);
    // Refused at once: a certificate does not become trusted by waiting.
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    assert_no_token(&run);
    assert!(
        server.requests().is_empty(),
        "a request got through: {:?}",
        server.requests()
    );
}

#[test]
fn https_fake_github_works_through_ssl_cert_file_and_the_token_goes_only_to_the_api() {
    let server = Server::start_https(REPO, vec![small_release(300)]);
    let api = server.api_url();
    let out = TempDir::new("net-cafile");
    let ca = ca_file(&server, out.path());
    let run = resources(
        Some("download"),
        out.path(),
        &api,
        &[],
        &[("GH_TOKEN", TOKEN), ("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    run.ok();
    assert_no_token(&run);
    assert_eq!(
        fs::read(out.path().join("kernel")).unwrap(),
        fake_elf("amd64")
    );
    let reqs = server.requests();
    assert!(reqs.iter().any(|r| r.host == "assets"), "{reqs:?}");
    for r in &reqs {
        let auth = r.header("authorization");
        match r.host {
            "api" => {}
            _ => assert!(auth.is_none(), "token sent to {}: {r:?}", r.host),
        }
    }
    assert!(
        reqs.iter()
            .any(|r| r.host == "api"
                && r.header("authorization") == Some(&format!("Bearer {TOKEN}"))),
        "{reqs:?}"
    );
}

/// The subject hash OpenSSL names a CA file by in a hashed directory.
fn openssl_hash(pem: &Path) -> Option<String> {
    let out = Command::new(testkit::find_tool("openssl")?)
        .args(["x509", "-hash", "-noout", "-in"])
        .arg(pem)
        .output()
        .ok()?;
    let h = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && h.len() == 8).then_some(h)
}

#[test]
fn https_fake_github_works_through_ssl_cert_dir_in_openssl_hashed_layout() {
    let server = Server::start_https(REPO, vec![small_release(64)]);
    let out = TempDir::new("net-cadir");
    let certs = TempDir::new("net-cadir-certs");
    let pem = ca_file(&server, out.path());
    let Some(hash) = openssl_hash(&pem) else {
        eprintln!("skipped: openssl is not installed to name the CA file by its hash");
        return;
    };
    fs::copy(&pem, certs.path().join(format!("{hash}.0"))).unwrap();
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &[],
        &[("SSL_CERT_DIR", certs.path().to_str().unwrap())],
    );
    run.ok();
}

#[test]
fn an_ssl_cert_file_without_certificates_falls_back_to_the_bundled_roots_and_says_so() {
    let server = Server::start_https(REPO, vec![small_release(64)]);
    let out = TempDir::new("net-emptyca");
    let empty = out.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &[],
        &[("SSL_CERT_FILE", empty.to_str().unwrap())],
    );
    run.failed();
    assert!(
        run.stderr.contains("certificate is not trusted")
            && run.stderr.contains("SSL_CERT_FILE=")
            && run.stderr.contains("bundled Mozilla roots"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_retry_is_one_short_line_and_the_proxy_hint_is_given_once() {
    let out = TempDir::new("net-retry");
    // Nothing listens on port 1; a short deadline keeps the test quick.
    let run = resources(
        Some("download"),
        out.path(),
        "http://127.0.0.1:1",
        &[],
        &[("VSWARM_HTTP_TIMEOUT", "0.5"), ("GH_TOKEN", TOKEN)],
    );
    run.failed();
    let retries: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("retrying"))
        .collect();
    assert!(retries.len() >= 2, "{}", run.stderr);
    for l in &retries {
        assert!(l.len() <= 100, "a long retry line ({}): {l}", l.len());
        assert!(l.contains("127.0.0.1:1") && l.contains("try "), "{l}");
    }
    assert_eq!(
        run.stderr.matches("HTTPS_PROXY").count(),
        1,
        "the proxy hint is given once:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("error: cannot reach 127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert_no_token(&run);
}

#[test]
fn a_name_that_does_not_resolve_is_tried_at_most_twice_then_named() {
    let out = TempDir::new("net-dns");
    // RFC 2606: `.invalid` never resolves; no packet leaves for a real host.
    let run = xtask_within(
        &[
            "resources",
            "download",
            "--output",
            out.path().to_str().unwrap(),
            "--github-api",
            "http://api.nosuchhost.invalid",
        ],
        &[],
        Duration::from_secs(60),
    );
    run.failed();
    assert!(
        run.stderr
            .contains("cannot resolve api.nosuchhost.invalid: offline, or a proxy needed?"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.matches("retrying").count() <= 1,
        "{}",
        run.stderr
    );

    // The same for an asset host, fetched by the download engine.
    let server = Server::start(REPO, vec![small_release(64)]);
    let mut v: serde_json::Value =
        serde_json::from_str(&server.release_json("v1").unwrap()).unwrap();
    for a in v["assets"].as_array_mut().unwrap() {
        let name = a["name"].as_str().unwrap().to_string();
        a["browser_download_url"] = format!("http://files.nosuchhost.invalid/{name}").into();
    }
    server.set_release_json("v1", &v.to_string());
    let run = resources(Some("download"), out.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr
            .contains("cannot resolve files.nosuchhost.invalid"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .filter(|l| l.contains("retrying"))
            .count()
            <= 3,
        "one retry per asset at most:\n{}",
        run.stderr
    );
}

#[test]
fn environment_values_are_blamed_on_their_variable() {
    let out = TempDir::new("net-env");
    let o = out.path().to_str().unwrap();
    let file = out.path().join("a-file");
    fs::write(&file, "mine").unwrap();
    let f = file.to_str().unwrap();
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "GITHUB_API_URL",
            "127.0.0.1:1",
            &["resources", "download", "-o", o],
        ),
        ("RESOURCES", f, &["resources", "download"]),
        (
            "VSWARM_RESOURCES_SOURCE",
            "/nonexistent/mirror",
            &["resources", "download", "-o", o],
        ),
        (
            "VSWARM_HTTP_TIMEOUT",
            "soon",
            &["resources", "download", "-o", o],
        ),
    ];
    for (var, value, args) in cases {
        let run = xtask(args, &[(var, value)]);
        run.failed();
        assert!(
            run.stderr.contains(&format!("error: {var}")),
            "{var}={value}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("--github-api:"), "{}", run.stderr);
    }
    assert_eq!(fs::read(&file).unwrap(), b"mine");
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

/// A real one-part release: the full run unpacks it.
fn disk_release(fx: &Path) -> ReleaseSpec {
    let img = fx.join("src.qcow2");
    make_qcow2(&img, 32, 3).unwrap();
    let d = pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, fx).unwrap();
    ReleaseSpec::new("v1", upstream_assets("focal", "amd64", &d))
}

#[test]
fn a_failed_first_run_says_what_it_left_and_that_a_rerun_resumes() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("net-first-fx");
    let server = Server::start(REPO, vec![disk_release(fx.path())]);
    let part = part_name();
    for no_cache in [false, true] {
        // The part is cut after 200 000 bytes, then gone: the run fails
        // with the kernel, client, sums and a partial part on disk.
        server.clear_faults();
        server.add_fault(Fault::CutAfter {
            asset: part.clone(),
            bytes: 200_000,
            times: 1,
        });
        server.add_fault(Fault::Status {
            asset: part.clone(),
            status: 404,
            times: 100,
        });
        let out = TempDir::new("net-first");
        let extra: &[&str] = if no_cache { &["--no-cache"] } else { &[] };
        let run = resources(None, out.path(), &server.api_url(), extra, &[]);
        run.failed();
        let err = run
            .stderr
            .lines()
            .find(|l| l.starts_with("error:"))
            .unwrap();
        assert!(!err.contains("left as they were"), "{err}");
        assert!(err.contains("nothing was installed"), "{err}");
        assert!(err.contains("KiB downloaded so far stays in"), "{err}");
        assert!(err.contains("a re-run resumes from it"), "{err}");
        let place = if no_cache {
            ".downloads"
        } else {
            "download cache"
        };
        assert!(err.contains(place), "{err}");
    }
}

#[test]
fn a_resumed_download_counts_only_what_is_left() {
    let server = Server::start(REPO, vec![small_release(600)]);
    let part = part_name();
    let out = TempDir::new("net-resume");
    server.add_fault(Fault::CutAfter {
        asset: part.clone(),
        bytes: 400 << 10,
        times: 1,
    });
    server.add_fault(Fault::Status {
        asset: part.clone(),
        status: 404,
        times: 1,
    });
    let run = resources(Some("download"), out.path(), &server.api_url(), &[], &[]);
    run.failed();
    let first = run
        .stderr
        .lines()
        .find(|l| l.starts_with("Downloading"))
        .unwrap();
    assert!(first.contains("to download"), "{first}");
    server.clear_faults();
    let run = resources(Some("download"), out.path(), &server.api_url(), &[], &[]);
    run.ok();
    let header = run
        .stderr
        .lines()
        .find(|l| l.starts_with("Downloading"))
        .unwrap();
    // 600 KiB of part plus the small assets, of which 400 KiB and the small
    // ones are here: about 200 KiB is left.
    assert!(
        header.contains("200.0 KiB to download") && header.contains("already here"),
        "{header}"
    );
}

#[test]
fn a_resumed_download_rates_only_this_runs_bytes_and_labels_what_it_counts() {
    let server = Server::start(REPO, vec![small_release(2048)]);
    let part = part_name();
    let out = TempDir::new("net-rate");
    server.add_fault(Fault::CutAfter {
        asset: part.clone(),
        bytes: 1536 << 10,
        times: 1,
    });
    server.add_fault(Fault::Status {
        asset: part.clone(),
        status: 404,
        times: 1,
    });
    resources(Some("download"), out.path(), &server.api_url(), &[], &[]).failed();
    server.clear_faults();
    // 512 KiB left at 80 KiB/s: a progress line comes after 5 s.
    server.add_fault(Fault::RateCap {
        bytes_per_sec: 80 << 10,
    });
    let run = resources(Some("download"), out.path(), &server.api_url(), &[], &[]);
    run.ok();
    let lines: Vec<&str> = run.stderr.lines().filter(|l| l.contains("/s")).collect();
    assert!(!lines.is_empty(), "no progress line:\n{}", run.stderr);
    for l in lines {
        // "  1.9 MiB of 2.0 MiB (95%), 80.0 KiB/s, 1.9 MiB verified"
        let rate = l
            .split(", ")
            .find(|f| f.ends_with("/s"))
            .unwrap_or_else(|| panic!("no rate in {l}"));
        let (num, unit) = rate.trim_end_matches("/s").split_once(' ').unwrap();
        let kib = num.parse::<f64>().unwrap()
            * match unit {
                "B" => 1.0 / 1024.0,
                "KiB" => 1.0,
                "MiB" => 1024.0,
                _ => 1024.0 * 1024.0,
            };
        assert!(
            kib < 120.0,
            "the rate counts bytes that were already here: {l}"
        );
        // What the second count counts: bytes hashed against the digests.
        assert!(l.ends_with(" verified"), "{l}");
    }
}
