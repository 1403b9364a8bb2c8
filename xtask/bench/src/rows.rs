//! The rows of each round, declared once: labels, what their MB/s is
//! over, which row their ratio is taken against, and why a row is skipped;
//! and the derived ratios printed under a round.

use super::measure::Tools;
use super::report::{Basis, Derived, Round};

/// The uncapped round.
pub fn plain(tools: &Tools, reps: usize) -> Round {
    let mut plain = Round::new(&format!(
        "loopback, no cap — {} runs each, medians, warm page cache",
        reps
    ));
    rows_full(&mut plain);
    plain.row(
        "old_total",
        "old: total (sum of 4 stages)",
        Basis::Archive,
        Some("ours"),
    );
    rows_old_stages(&mut plain, tools);
    plain.row(
        "limit_curl",
        "limit: curl parts > /dev/null (1 process)",
        Basis::Archive,
        Some("ours"),
    );
    plain.row(
        "limit_gunzip",
        &format!("limit: cat parts | {} -dc > /dev/null", tools.gunzip_name),
        Basis::Archive,
        Some("ours"),
    );
    plain.row(
        "limit_sha256",
        "limit: sha256sum disk-image.qcow2",
        Basis::Qcow2,
        Some("ours"),
    );
    plain.row(
        "convert_qemu",
        "limit: qemu-img convert -O raw",
        Basis::Data,
        Some("convert_ours"),
    );
    plain.row(
        "convert_qemu_sync",
        "limit: qemu-img convert -O raw, then sync",
        Basis::Data,
        Some("convert_ours"),
    );
    plain.row(
        "convert_ours",
        "ours: resources convert IN OUT",
        Basis::Data,
        None,
    );
    plain.row("rerun", "ours: re-run, nothing to do", Basis::None, None);
    plain.row(
        "limit_decode",
        "limit: our gzip decoder alone on the parts",
        Basis::Archive,
        Some("ours"),
    );
    plain.row(
        "limit_durable",
        "limit: dd conv=fsync of qcow2 + raw data bytes",
        Basis::None,
        Some("ours"),
    );
    plain.row(
        "ours_tmpfs",
        "ours: full run, output on tmpfs (/dev/shm)",
        Basis::Archive,
        None,
    );
    plain.row(
        "ours_ext4",
        "ours: full run on an ext4 loop mount",
        Basis::Archive,
        None,
    );
    plain.row(
        "ours_xfs",
        "ours: full run on an XFS loop mount (reflinks)",
        Basis::Archive,
        Some("ours_ext4"),
    );
    plain.note("ours_xfs", "ratio: the ext4 loop run ÷ this");
    plain
}

/// The round with every connection capped.
pub fn capped(tools: &Tools, reps: usize, cap: u64) -> Round {
    let mut capped = Round::new(&format!(
        "capped at {} MB/s per connection — {} run(s) each",
        cap / 1_000_000,
        reps
    ));
    rows_full(&mut capped);
    capped.row(
        "old_total",
        "old: total (sum of 4 stages)",
        Basis::Archive,
        Some("ours"),
    );
    rows_old_stages(&mut capped, tools);
    capped.row(
        "ours_j4",
        "ours: full run, --jobs 4",
        Basis::Archive,
        Some("ours"),
    );
    capped.row(
        "ours_j8",
        "ours: full run, --jobs 8",
        Basis::Archive,
        Some("ours"),
    );
    capped.row(
        "aria2_chain",
        "aria2c -x16 -s16, pigz -dc | tar x, qemu-img, sync",
        Basis::Archive,
        Some("ours"),
    );
    skip_missing(&mut capped, tools);
    if testkit::find_tool("aria2c").is_none() {
        capped.note("aria2_chain", "skipped: aria2c not found in PATH");
    }
    capped
}

/// The pack round.
pub fn pack(tools: &Tools, reps: usize) -> Round {
    let mut pack = Round::new(&format!(
        "pack: the qcow2 into release assets, and decoding them — {} runs each, MB/s over the qcow2",
        reps
    ));
    pack.row(
        "pack_ours",
        "ours: resources pack (gzip, every core)",
        Basis::Qcow2,
        None,
    );
    pack.row(
        "pack_old",
        &format!("old: tar c | {} -c > file", tools.gunzip_name),
        Basis::Qcow2,
        Some("pack_ours"),
    );
    pack.row(
        "decode_pack_par",
        "ours: decode the pack archive, every core",
        Basis::Qcow2,
        None,
    );
    pack.row(
        "decode_pack_serial",
        "ours: decode the pack archive, one thread",
        Basis::Qcow2,
        Some("decode_pack_par"),
    );
    pack.note("pack_old", "ratio: pack ÷ this");
    pack.note("decode_pack_serial", "ratio: every core ÷ one thread");
    pack
}

fn rows_full(r: &mut Round) {
    r.row(
        "ours",
        "ours: resources (download+unpack+convert+verify)",
        Basis::Archive,
        None,
    );
    r.row(
        "ours_fused",
        "ours:   one pass: fetch, unpack, hash, convert",
        Basis::Archive,
        None,
    );
    r.row(
        "ours_convert",
        "ours:   convert after the pass (when not fused)",
        Basis::Data,
        None,
    );
}

fn rows_old_stages(r: &mut Round, tools: &Tools) {
    r.row(
        "old_download",
        "old:   curl -L each asset, sequentially",
        Basis::Archive,
        None,
    );
    r.row(
        "old_decompress",
        &format!("old:   cat parts | {} -dc | tar x", tools.gunzip_name),
        Basis::Archive,
        None,
    );
    r.row(
        "old_convert",
        "old:   qemu-img convert -O raw",
        Basis::Data,
        None,
    );
    r.row(
        "old_sync",
        "old:   sync the two images (ours fsyncs)",
        Basis::None,
        None,
    );
}

pub fn skip_missing(r: &mut Round, tools: &Tools) {
    let keys: Vec<&'static str> = r.rows.iter().map(|row| row.key).collect();
    let has = |k: &str| keys.contains(&k);
    let curl_rows: Vec<&str> = ["old_download", "limit_curl"]
        .into_iter()
        .filter(|k| has(k))
        .collect();
    if tools.curl.is_none() {
        for k in curl_rows {
            r.note(k, "skipped: curl not found in PATH");
        }
    }
    let gunzip_rows: Vec<&str> = ["old_decompress", "limit_gunzip", "old_total"]
        .into_iter()
        .filter(|k| has(k))
        .collect();
    if tools.gunzip.is_none() || tools.bash.is_none() || tools.tar.is_none() {
        for k in gunzip_rows {
            r.note(k, "skipped: needs bash, tar and pigz or gzip in PATH");
        }
    }
}

/// Ours vs old end to end, and ours vs the tools' limits: summed (no overlap)
/// and the slowest alone (perfect overlap).
pub fn derived(r: &Round) -> Vec<Derived> {
    let mut d = Vec::new();
    let Some(ours) = r.median("ours") else {
        return d;
    };
    let mut ratio = |label: &str, a: &str, b: &str| {
        if let (Some(x), Some(y)) = (r.median(a), r.median(b)) {
            d.push(Derived {
                label: label.to_string(),
                value: x / y,
            });
        }
    };
    ratio(
        "tmpfs run ÷ our decoder alone (goal ≤ 1.5 large)",
        "ours_tmpfs",
        "limit_decode",
    );
    ratio(
        "run on disk ÷ dd conv=fsync (goal ≤ 1.1 large)",
        "ours",
        "limit_durable",
    );
    ratio(
        "XFS reflink run ÷ ext4 loop run (goal ≈ 0.6)",
        "ours_xfs",
        "ours_ext4",
    );
    ratio("ours ÷ old pipeline", "ours", "old_total");
    ratio("ours ÷ aria2c chain", "ours", "aria2_chain");
    ratio("ours --jobs 4 ÷ old pipeline", "ours_j4", "old_total");
    ratio("ours --jobs 8 ÷ old pipeline", "ours_j8", "old_total");
    let limits: Vec<f64> = ["limit_curl", "limit_gunzip", "limit_sha256", "convert_qemu"]
        .iter()
        .filter_map(|k| r.median(k))
        .collect();
    if !limits.is_empty() {
        let sum: f64 = limits.iter().sum();
        let max = limits.iter().cloned().fold(0.0, f64::max);
        d.push(Derived {
            label: format!("ours ÷ sum of limits ({sum:.2}s, stages back to back)"),
            value: ours / sum,
        });
        d.push(Derived {
            label: format!("ours ÷ slowest limit ({max:.2}s, perfect overlap)"),
            value: ours / max,
        });
    }
    d
}
