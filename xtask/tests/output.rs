//! What CI jobs read: the `--json` document (schema 1, on stdout, valid on
//! failure too), `--quiet`, exit codes by cause (each class tested, all
//! distinct), and a closed stdout ending the program quietly.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;
use testkit::{
    make_qcow2, pack_disk, upstream_assets, AssetSpec, Compression, DiskFixture, Fault,
    ReleaseSpec, Server, TempDir,
};

fn disk(fx: &Path) -> Option<DiskFixture> {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return None;
    }
    let img = fx.join("src.qcow2");
    make_qcow2(&img, 32, 2).unwrap();
    Some(pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, fx).unwrap())
}

fn doc(run: &Run) -> Value {
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON document ({e}):\n{}\nstderr:\n{}",
            run.stdout, run.stderr
        )
    })
}

fn file_of<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {doc}"))
}

#[test]
fn json_document_holds_each_file_with_its_own_sha256_and_origin() {
    let fx = TempDir::new("o-json-fx");
    let Some(d) = disk(fx.path()) else { return };
    let server = Server::start(
        REPO,
        vec![ReleaseSpec::new(
            "v1",
            upstream_assets("focal", "amd64", &d),
        )],
    );
    let out = TempDir::new("o-json");
    let api = server.api_url();
    let run = resources(None, out.path(), &api, &["--version", "v1", "--json"], &[]);
    run.ok();
    let doc = doc(&run);
    assert_eq!(doc["schema"], 1);
    assert_eq!(doc["ok"], true);
    assert_eq!(doc["step"], "resources");
    assert_eq!(doc["release"]["tag"], "v1");
    assert!(doc["error"].is_null());
    assert!(doc["network_bytes"].as_u64().unwrap() > 0);
    assert!(doc["elapsed_s"].as_f64().is_some());
    for name in ["kernel", "client", "disk-image.qcow2"] {
        let f = file_of(&doc, name);
        let own = testkit::sha256_file_hex(&out.path().join(name)).unwrap();
        assert_eq!(f["sha256"], own.as_str(), "{name}");
        assert_eq!(f["source"], "downloaded", "{name}");
        assert_eq!(
            f["size"],
            fs::metadata(out.path().join(name)).unwrap().len()
        );
    }
    assert_eq!(file_of(&doc, "disk-image.img")["source"], "downloaded");
    // Nothing else on stdout; progress and messages stayed on stderr.
    assert!(run.stdout.trim_end().ends_with('}'));
    assert!(
        run.stderr.contains("unpacked and checked"),
        "{}",
        run.stderr
    );

    // Again: up to date, every file kept, no byte from the network.
    let again = resources(None, out.path(), &api, &["--version", "v1", "--json"], &[]);
    let doc = self::doc(again.ok());
    assert_eq!(doc["up_to_date"], true);
    assert_eq!(doc["network_bytes"], 0);
    assert_eq!(file_of(&doc, "kernel")["source"], "kept");

    // Into another directory: from the cache.
    let other = TempDir::new("o-json-b");
    let cache = testkit::cache_dir_for(out.path());
    let envs = [("VSWARM_CACHE_DIR", cache.to_str().unwrap())];
    let third = resources(
        None,
        other.path(),
        &api,
        &["--version", "v1", "--json"],
        &envs,
    );
    let doc = self::doc(third.ok());
    assert_eq!(file_of(&doc, "disk-image.qcow2")["source"], "cached");
    assert_eq!(doc["network_bytes"], 0);
}

#[test]
fn a_failing_json_run_still_prints_a_valid_document_with_the_class() {
    let fx = TempDir::new("o-fail-fx");
    let Some(d) = disk(fx.path()) else { return };
    let mut assets = upstream_assets("focal", "amd64", &d);
    let sums = assets
        .iter_mut()
        .find(|a| a.name.ends_with(".sums"))
        .unwrap();
    *sums = AssetSpec::bytes(
        &sums.name.clone(),
        format!("{}  temp/disk-image.qcow2\n", "ab".repeat(32)).into_bytes(),
    );
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", assets)]);
    let out = TempDir::new("o-fail");
    let run = resources(None, out.path(), &server.api_url(), &["--json"], &[]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    let doc = doc(&run);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["class"], "integrity");
    assert_eq!(doc["error"]["exit_code"], 4);
    assert!(doc["error"]["message"]
        .as_str()
        .unwrap()
        .contains("published checksum"));
}

#[test]
fn a_usage_error_with_json_is_a_document_too_and_exits_2() {
    let run = xtask(&["resources", "--json", "--arch", "sparc"], &[]);
    assert_eq!(run.code, 2);
    let doc = doc(&run);
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["error"]["class"], "usage");
}

#[test]
fn exit_codes_say_the_cause_each_distinct() {
    let fx = TempDir::new("o-codes-fx");
    let Some(d) = disk(fx.path()) else { return };
    let server = Server::start(
        REPO,
        vec![ReleaseSpec::new(
            "v1",
            upstream_assets("focal", "amd64", &d),
        )],
    );
    let api = server.api_url();

    // 2: usage.
    let usage = xtask(&["resources", "--jobs", "0"], &[]).code;
    // 3: the API cannot be reached.
    let out = TempDir::new("o-codes-net");
    let envs = [("VSWARM_HTTP_TIMEOUT", "0.5")];
    let network = resources(None, out.path(), "http://127.0.0.1:1", &[], &envs).code;
    // 5: a file the user changed.
    let users = TempDir::new("o-codes-user");
    resources(None, users.path(), &api, &["--version", "v1"], &[]).ok();
    let q = users.path().join("disk-image.qcow2");
    fs::File::options()
        .write(true)
        .open(&q)
        .unwrap()
        .write_all_at(b"mine", 70_000)
        .unwrap();
    let changed = resources(None, users.path(), &api, &["--version", "v1"], &[]).code;
    // 6: busy, with --no-wait, while another holds the output directory.
    let busy_dir = TempDir::new("o-codes-busy");
    let downloads = busy_dir.path().join(".downloads");
    fs::create_dir_all(&downloads).unwrap();
    let held = fs::File::open(&downloads).unwrap();
    // SAFETY: flock on a descriptor this test owns.
    assert_eq!(
        unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&held), libc::LOCK_EX) },
        0
    );
    let busy = resources(
        None,
        busy_dir.path(),
        &api,
        &["--version", "v1", "--no-wait"],
        &[],
    );
    drop(held);
    assert!(
        busy.stderr.contains("another run is working on"),
        "{}",
        busy.stderr
    );
    // 4: integrity, from the JSON test above's kind of release.
    let mut assets = upstream_assets("focal", "amd64", &d);
    let part = assets.iter_mut().find(|a| a.name.ends_with(".aa")).unwrap();
    part.digest = testkit::DigestMode::Wrong;
    server.set_releases(vec![ReleaseSpec::new("v2", assets)]);
    let bad = TempDir::new("o-codes-bad");
    let integrity = resources(None, bad.path(), &api, &["--version", "v2"], &[]).code;

    let codes = [usage, network, integrity, changed, busy.code];
    assert_eq!(
        codes,
        [2, 3, 4, 5, 6],
        "usage, network, integrity, user's file, busy"
    );
}

#[test]
fn a_full_disk_exits_7() {
    let root = TempDir::new("o-full");
    let mnt = root.path().join("mnt");
    let Some(_mounted) = tmpfs(&mnt, "size=256k") else {
        return;
    };
    let spec = bytes_release("v1", "focal", "amd64", &[2_000_000]);
    let server = Server::start(REPO, vec![spec]);
    let run = resources(
        Some("download"),
        &mnt.join("out"),
        &server.api_url(),
        &["--no-cache", "--json"],
        &[],
    );
    assert_eq!(run.code, 7, "{}", run.stderr);
    assert_eq!(doc(&run)["error"]["class"], "no_space");
}

/// The parts fit (they go to the cache, elsewhere); the image does not fit
/// the output directory. That is this machine's disk, not the download:
/// exit 7, and no part is blamed or fetched again.
#[test]
fn a_full_disk_while_unpacking_exits_7_and_fetches_nothing_again() {
    let root = TempDir::new("o-full-unpack");
    let fx = root.path().join("fx");
    fs::create_dir_all(&fx).unwrap();
    let Some(d) = disk(&fx) else { return };
    let mnt = root.path().join("out");
    let Some(_mounted) = tmpfs(&mnt, "size=1m") else {
        return;
    };
    let server = Server::start(
        REPO,
        vec![ReleaseSpec::new(
            "v1",
            upstream_assets("focal", "amd64", &d),
        )],
    );
    let run = resources(None, &mnt, &server.api_url(), &["--json"], &[]);
    assert_eq!(run.code, 7, "{}", run.stderr);
    assert_eq!(doc(&run)["error"]["class"], "no_space");
    let published: u64 = d
        .assets
        .iter()
        .map(|a| match &a.body {
            testkit::Body::Bytes(b) => b.len() as u64,
            testkit::Body::File(f) => fs::metadata(f).unwrap().len(),
        })
        .sum();
    let served: u64 = d.assets.iter().map(|a| server.served_bytes(&a.name)).sum();
    assert!(
        served <= published,
        "{served} bytes served for {published} published: a part was fetched again after a full disk:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("damaged"), "{}", run.stderr);
}

#[test]
fn quiet_says_nothing_but_errors_and_keeps_the_json_document() {
    let spec = bytes_release("v1", "focal", "amd64", &[300_000]);
    let server = Server::start(REPO, vec![spec]);
    let out = TempDir::new("o-quiet");
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &["-q"],
        &[],
    );
    run.ok();
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "");
    let out2 = TempDir::new("o-quiet-json");
    let run = resources(
        Some("download"),
        out2.path(),
        &server.api_url(),
        &["--quiet", "--json"],
        &[],
    );
    run.ok();
    assert_eq!(run.stderr, "");
    assert_eq!(doc(&run)["ok"], true);
    // An error is still said.
    let bad = resources(
        Some("verify"),
        out.path().join("nope").as_path(),
        "http://127.0.0.1:1",
        &["-q"],
        &[],
    );
    assert_ne!(bad.code, 0);
    assert!(bad.stderr.starts_with("error:"), "{}", bad.stderr);
}

#[test]
fn warnings_go_into_the_json_document() {
    let spec = bytes_release("v1", "jammy", "arm64", &[1000]);
    let server = Server::start(REPO, vec![spec]);
    let out = TempDir::new("o-warn");
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &["--os-version", "jammy", "--arch", "arm64", "--json"],
        &[],
    );
    let doc = doc(run.ok());
    let warnings = doc["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("gem5")),
        "{warnings:?}"
    );
}

#[test]
fn a_token_never_appears_in_the_json_document() {
    let spec = bytes_release("v1", "focal", "amd64", &[1000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::ApiEcho {
        status: 500,
        times: 100,
    });
    let out = TempDir::new("o-token");
    let token = "ghp_secretsecretsecret123";
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &["--json"],
        &[("GH_TOKEN", token), ("VSWARM_HTTP_TIMEOUT", "0.5")],
    );
    run.failed();
    assert!(!run.stdout.contains(token) && !run.stderr.contains(token));
    assert_eq!(doc(&run)["error"]["class"], "network");
}

/// Runs `xtask ARGS` with its stdout closed before it writes anything, as
/// `… | head -1` does once it has its line.
fn with_closed_stdout(args: &[&str]) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for k in testkit::SCRUB_ENV {
        cmd.env_remove(k);
    }
    cmd.env("CI", "1");
    let mut child = cmd.spawn().unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_list_and_verify_quietly() {
    let spec = bytes_release("v1", "focal", "amd64", &[1000]);
    let server = Server::start(REPO, vec![spec]);
    let api = server.api_url();
    let (code, err) = with_closed_stdout(&["resources", "list", "--github-api", &api]);
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let out = TempDir::new("o-pipe");
    resources(Some("download"), out.path(), &api, &[], &[]).ok();
    let mut f = fs::File::create(out.path().join("stray")).unwrap();
    f.write_all(b"x").unwrap();
    let dir = out.path().to_str().unwrap();
    let (code, err) = with_closed_stdout(&["resources", "verify", "--output", dir]);
    // verify fails (the set is incomplete) but says so without a panic.
    assert!(!err.contains("panicked"), "{err}");
    assert!(code == 0 || code == 4, "{code}: {err}");
}
