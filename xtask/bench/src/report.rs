//! The benchmark's results: rows of timed samples grouped in rounds, printed
//! as a table (median, MB/s, peak RSS, ratio to ours) and saved as JSON so
//! runs can be compared across commits.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use super::measure::{summarize, Sample};

/// What a row's MB/s is computed over.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Basis {
    /// The compressed archive (sum of the parts): downloads, decompression.
    Archive,
    /// Guest data in the image: conversion.
    Data,
    /// The qcow2 file: hashing.
    Qcow2,
    None,
}

pub struct Row {
    pub key: &'static str,
    pub label: String,
    pub basis: Basis,
    pub samples: Vec<Sample>,
    /// The row whose median divided by this one's is shown as the ratio.
    pub ratio_of: Option<&'static str>,
    /// Why the row has no samples, or what it measured exactly.
    pub note: Option<String>,
}

pub struct Round {
    pub name: String,
    pub rows: Vec<Row>,
}

impl Round {
    pub fn new(name: &str) -> Round {
        Round {
            name: name.to_string(),
            rows: Vec::new(),
        }
    }

    pub fn row(
        &mut self,
        key: &'static str,
        label: &str,
        basis: Basis,
        ratio_of: Option<&'static str>,
    ) {
        self.rows.push(Row {
            key,
            label: label.to_string(),
            basis,
            samples: Vec::new(),
            ratio_of,
            note: None,
        });
    }

    fn get_mut(&mut self, key: &str) -> &mut Row {
        self.rows
            .iter_mut()
            .find(|r| r.key == key)
            // Keys are compile-time constants of bench/mod.rs.
            .unwrap_or_else(|| panic!("bench: no row {key}"))
    }

    pub fn add(&mut self, key: &str, s: Sample) {
        self.get_mut(key).samples.push(s);
    }

    pub fn note(&mut self, key: &str, note: &str) {
        self.get_mut(key).note = Some(note.to_string());
    }

    pub fn median(&self, key: &str) -> Option<f64> {
        let r = self.rows.iter().find(|r| r.key == key)?;
        (!r.samples.is_empty()).then(|| summarize(&r.samples).0)
    }
}

/// Sizes the MB/s figures are computed over.
pub struct Bytes {
    pub archive: u64,
    pub data: u64,
    pub qcow2: u64,
}

impl Bytes {
    fn of(&self, b: Basis) -> Option<u64> {
        match b {
            Basis::Archive => Some(self.archive),
            Basis::Data => Some(self.data),
            Basis::Qcow2 => Some(self.qcow2),
            Basis::None => None,
        }
    }
}

/// One extra derived line under a round (e.g. ours vs the sum of limits).
pub struct Derived {
    pub label: String,
    pub value: f64,
}

pub fn render(round: &Round, bytes: &Bytes, derived: &[Derived]) -> String {
    let mut out = String::new();
    out.push_str(&format!("\n== {} ==\n", round.name));
    out.push_str(&format!(
        "{:<50} {:>5} {:>9} {:>8} {:>10} {:>7}\n",
        "stage", "runs", "median", "MB/s", "peak RSS", "ratio"
    ));
    for r in &round.rows {
        if r.samples.is_empty() {
            out.push_str(&format!(
                "{:<50} {:>5} {}\n",
                r.label,
                0,
                r.note.as_deref().unwrap_or("skipped")
            ));
            continue;
        }
        let (median, rss) = summarize(&r.samples);
        let mbs = bytes.of(r.basis).map_or("-".to_string(), |b| {
            format!("{:.0}", b as f64 / median / 1e6)
        });
        let ratio = r
            .ratio_of
            .and_then(|k| round.median(k))
            .map_or("-".to_string(), |m| format!("{:.2}", m / median));
        out.push_str(&format!(
            "{:<50} {:>5} {:>8.2}s {:>8} {:>10} {:>7}",
            r.label,
            r.samples.len(),
            median,
            mbs,
            // 0 = not measured (phases the pipeline timed itself).
            if rss == 0 {
                "-".to_string()
            } else {
                format!("{} MiB", rss / 1024)
            },
            ratio
        ));
        if let Some(n) = &r.note {
            out.push_str(&format!("  ({n})"));
        }
        out.push('\n');
    }
    for d in derived {
        out.push_str(&format!("{:<50} {:>5.2}\n", d.label, d.value));
    }
    out
}

pub fn round_json(round: &Round, bytes: &Bytes, derived: &[Derived]) -> Value {
    let rows: Vec<Value> = round
        .rows
        .iter()
        .map(|r| {
            let (median, rss) = summarize(&r.samples);
            let have = !r.samples.is_empty();
            let b = bytes.of(r.basis);
            json!({
                "key": r.key,
                "label": r.label,
                "runs_s": r.samples.iter().map(|s| s.secs).collect::<Vec<_>>(),
                "median_s": have.then_some(median),
                "bytes": b,
                "mb_per_s": b.filter(|_| have && median > 0.0).map(|b| b as f64 / median / 1e6),
                "peak_rss_kib": (have && rss > 0).then_some(rss),
                "ratio_of": r.ratio_of,
                "ratio": r.ratio_of.and_then(|k| round.median(k)).filter(|_| have).map(|m| m / median),
                "note": r.note,
            })
        })
        .collect();
    let derived: Vec<Value> = derived
        .iter()
        .map(|d| json!({"label": d.label, "value": d.value}))
        .collect();
    json!({"name": round.name, "rows": rows, "derived": derived})
}

/// Writes `<dir>/<size>-<unix>.json` and `<dir>/<size>-latest.json`; returns
/// the first path.
pub fn save(dir: &Path, size: &str, unix: u64, doc: &Value) -> Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let text = serde_json::to_string_pretty(doc)? + "\n";
    let path = dir.join(format!("{size}-{unix}.json"));
    fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
    let latest = dir.join(format!("{size}-latest.json"));
    fs::write(&latest, &text).with_context(|| format!("write {}", latest.display()))?;
    Ok(path)
}
