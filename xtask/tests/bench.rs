//! Smoke test of `xtask bench`: the hidden `tiny` size builds, serves and
//! times a 64 MiB image once, prints the table and writes the JSON.

use std::process::Command;
use std::time::Instant;

use testkit::TempDir;

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
}

#[test]
fn bench_tiny_prints_table_and_writes_json() {
    // The bench needs these to build its image (pack_disk) and to time the old pipeline.
    for tool in ["qemu-img", "curl", "tar", "split", "sha256sum"] {
        if !on_path(tool) {
            eprintln!("skipped: `{tool}` not found in PATH");
            return;
        }
    }
    if !on_path("pigz") && !on_path("gzip") {
        eprintln!("skipped: neither pigz nor gzip found in PATH");
        return;
    }
    let dir = TempDir::new("xtask-bench");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--size", "tiny"])
        .env("VSWARM_BENCH_DIR", dir.path())
        .output()
        .expect("run xtask bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "bench failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    for want in [
        "== loopback",
        "== capped at 20 MB/s",
        "ours: resources",
        "old: total",
        "limit: qemu-img convert -O raw",
        "ours: re-run",
        "limit: our gzip decoder alone",
        "== download cache and adoption",
        "2nd output dir, from the cache",
        "adopt an artifacts.py directory",
        "== pack",
        "ours: resources pack",
        "decode the pack archive, one thread",
    ] {
        assert!(stdout.contains(want), "no {want:?} in:\n{stdout}");
    }

    let latest = dir.path().join("tiny-latest.json");
    let text = std::fs::read_to_string(&latest).expect("tiny-latest.json written");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(doc["size"], "tiny");
    let rounds = doc["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 4);
    let cache = rounds[1]["rows"].as_array().expect("cache rows");
    for key in ["cache_fill", "cache_second", "adopt", "adopt_force"] {
        let row = cache.iter().find(|r| r["key"] == key).expect(key);
        assert!(row["median_s"].as_f64().is_some_and(|t| t > 0.0), "{key}");
    }
    // From the cache, and adopting, no disk part is served.
    for key in ["cache_second", "adopt"] {
        let row = cache.iter().find(|r| r["key"] == key).expect(key);
        let note = row["note"].as_str().unwrap_or_default().to_string();
        assert!(
            note.starts_with("0 asset bytes") || key == "adopt",
            "{key}: {note}"
        );
    }
    let pack = rounds[3]["rows"].as_array().expect("pack rows");
    for key in ["pack_ours", "decode_pack_par", "decode_pack_serial"] {
        let row = pack.iter().find(|r| r["key"] == key).expect(key);
        assert!(row["median_s"].as_f64().is_some_and(|t| t > 0.0), "{key}");
    }
    let ours = rounds[0]["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .find(|r| r["key"] == "ours")
        .expect("ours row");
    assert!(ours["median_s"].as_f64().is_some_and(|t| t > 0.0));
    assert!(ours["peak_rss_kib"].as_u64().is_some_and(|k| k > 0));
    // The runs' directories go unless --keep.
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("runs-"))
        .collect();
    assert!(leftovers.is_empty(), "runs directory left behind");
    eprintln!("tiny bench took {:?}", started.elapsed());
}
