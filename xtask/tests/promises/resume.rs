//! An interrupted run is finished by the next one, reusing what is whole:
//! killed runs and reruns, partial files and ranges, two runs at once,
//! incomplete installs and manifests, switching tags. `model` checks the
//! install logic as a state machine.

mod model;

use crate::common::*;
use crate::fixtures::{
    assert_downloaded, asset_ranges, disk, disk_if_qemu, disk_in, disk_with_parts, release,
    run_limited, small_release, upstream_server, PART_AA,
};
use std::fs;
use std::path::Path;
use std::time::Duration;
use testkit::{
    make_qcow2, pack_disk, sha256_file_hex, upstream_assets, Compression, Fault, ReleaseSpec,
    Server, TempDir,
};

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

fn part_name() -> String {
    "disk-image-focal-amd64.qcow2.tar.gz.aa".into()
}

/// A real one-part release: the full run unpacks it.
fn disk_release(fx: &Path) -> ReleaseSpec {
    let img = fx.join("src.qcow2");
    make_qcow2(&img, 32, 3).unwrap();
    let d = pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, fx).unwrap();
    ReleaseSpec::new("v1", upstream_assets("focal", "amd64", &d))
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
    let d = disk_in(fx.path());
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
fn a_run_that_stopped_after_unpacking_reuses_the_image() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rr-staged-fx");
    let d = disk_in(fx.path());
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

#[test]
fn cut_connection_resumes_with_range() {
    let spec = bytes_release("v1", "focal", "amd64", &[3_000_000]);
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::CutAfter {
        asset: PART_AA.into(),
        bytes: 1_000_000,
        times: 1,
    });
    let dir = TempDir::new("dl-cut");
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).ok();
    assert_downloaded(dir.path(), &server.api_url(), &spec);
    let ranges = asset_ranges(&server, PART_AA, 0);
    assert!(
        ranges.iter().any(|r| r == "bytes=1000000-2999999"),
        "{ranges:?}"
    );
}

#[test]
fn interrupted_download_resumes_on_the_next_run() {
    let spec = bytes_release("v1", "focal", "amd64", &[2_000_000]);
    let server = Server::start(REPO, vec![spec.clone()]);
    // First run: the connection is cut, then the asset is gone (404, not retried).
    server.add_fault(Fault::CutAfter {
        asset: PART_AA.into(),
        bytes: 700_000,
        times: 1,
    });
    server.add_fault(Fault::Status {
        asset: PART_AA.into(),
        status: 404,
        times: 1,
    });
    let dir = TempDir::new("dl-resume");
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).failed();
    assert!(!cache_entry(dir.path(), &server.api_url(), "v1")
        .join(PART_AA)
        .exists());
    server.clear_faults();
    let before = server.requests().len();
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).ok();
    assert_downloaded(dir.path(), &server.api_url(), &spec);
    let ranges = asset_ranges(&server, PART_AA, before);
    assert_eq!(ranges, ["bytes=700000-1999999"]);
}

#[test]
fn server_without_ranges_restarts_cleanly() {
    let big = 40 * 1024 * 1024 + 5;
    let spec = bytes_release("v1", "focal", "amd64", &[big]);
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::NoRange {
        asset: PART_AA.into(),
    });
    let dir = TempDir::new("dl-norange");
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).ok();
    assert_downloaded(dir.path(), &server.api_url(), &spec);
}

#[test]
fn a_resumed_download_against_a_server_without_ranges_finishes() {
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

#[test]
fn an_interrupted_install_is_never_taken_for_a_whole_set() {
    if !have_qemu() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("rv05-fx");
    let d1 = disk_with_parts(fx.path(), "a", 2, 1 << 20);
    let d2 = disk_with_parts(fx.path(), "b", 3, 1 << 20);
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

// ---------------------------------------------------------------------------
// "Up to date" only for a complete, present, unchanged set.

#[test]
fn an_incomplete_manifest_is_never_up_to_date_and_cannot_point_outside() {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let fx = TempDir::new("h05-fx");
    let d = disk(fx.path(), "d", 2);
    let server = Server::start(REPO, vec![release("v1", &d)]);
    let api = server.api_url();
    let out = TempDir::new("h05");
    resources(None, out.path(), &api, &[], &[]).ok();
    let mpath = out.path().join("manifest.json");
    let good: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&mpath).unwrap()).unwrap();

    // An empty file list: nothing is known to be installed, so verify
    // fails, and the full run is not up to date: it compares the files with
    // the release and adopts them, fetching no part of the disk.
    let mut m = good.clone();
    m["files"] = serde_json::json!([]);
    fs::write(&mpath, m.to_string()).unwrap();
    let run = resources(Some("verify"), out.path(), &api, &[], &[]);
    run.failed();
    assert!(
        run.stdout.contains("the set is incomplete"),
        "{}",
        run.stdout
    );
    let before = server.requests().len();
    let run = resources(None, out.path(), &api, &["--version", "v1"], &[]);
    run.ok();
    assert!(!run.stdout.contains("Up to date"), "{}", run.stdout);
    assert!(run.stderr.contains("adopted"), "{}", run.stderr);
    assert!(
        !server.requests()[before..]
            .iter()
            .any(|r| r.path.contains(".tar.gz")),
        "a disk part was fetched"
    );
    resources(Some("verify"), out.path(), &api, &[], &[]).ok();

    // The kernel removed (its entry kept): reinstalled, not up to date.
    fs::write(&mpath, good.to_string()).unwrap();
    fs::remove_file(out.path().join("kernel")).unwrap();
    let run = resources(None, out.path(), &api, &["--version", "v1"], &[]);
    run.ok();
    assert!(!run.stdout.contains("Up to date"), "{}", run.stdout);
    assert!(out.path().join("kernel").is_file());

    // Entries naming files outside the set are ignored by every step.
    let outside = TempDir::new("h05-outside");
    let secret = outside.path().join("secret");
    fs::write(&secret, b"not yours").unwrap();
    let mut m: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&mpath).unwrap()).unwrap();
    let mut evil = m["files"][0].clone();
    evil["name"] = secret.to_str().unwrap().into();
    evil["sha256"] = "00".repeat(32).into();
    m["files"].as_array_mut().unwrap().push(evil);
    fs::write(&mpath, m.to_string()).unwrap();
    let run = resources(Some("verify"), out.path(), &api, &[], &[]);
    run.ok();
    assert!(!run.all().contains("secret"), "{}", run.all());
    assert_eq!(fs::read(&secret).unwrap(), b"not yours");
}

#[test]
fn switching_tags_replaces_the_whole_set() {
    let fx = TempDir::new("pl-switch-fx");
    let Some(d1) = disk_if_qemu(fx.path(), Compression::Gzip, 1 << 20) else {
        return;
    };
    let fx2 = TempDir::new("pl-switch-fx2");
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
    let server = Server::start(REPO, vec![release("v2", &d2), release("v1", &d1)]);
    let out = TempDir::new("pl-switch");
    resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", "v1"],
        &[],
    )
    .ok();
    resources(
        None,
        out.path(),
        &server.api_url(),
        &["--version", "v2"],
        &[],
    )
    .ok();
    assert_eq!(
        sha256_file_hex(&out.path().join("disk-image.qcow2")).unwrap(),
        d2.sha256_hex
    );
    let m = fs::read_to_string(out.path().join("manifest.json")).unwrap();
    assert!(m.contains("\"tag\": \"v2\""));
    assert_eq!(
        fs::metadata(out.path().join("disk-image.img"))
            .unwrap()
            .len(),
        32 << 20
    );
    resources(Some("verify"), out.path(), &server.api_url(), &[], &[]).ok();
}
