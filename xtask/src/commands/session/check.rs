//! Whether a set of files is what its manifest says, for `verify` and
//! for the full run before (staged) and after (installed) it installs: the
//! size and time the manifest records, the sha256 where it records one, and
//! what each file must be (the kernel and client an ELF of the set's arch, a
//! qcow2 that opens, a raw image of its virtual size, and at depth its
//! content against the qcow2's). One line per file.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::Session;
use install::layout::{CLIENT, KERNEL, NAMES, QCOW2, RAW};
use install::manifest::{self, FileEntry, Manifest};
use util::fmt::{hex, human_bytes};
use util::fs as fsutil;
use util::text::Shown;

/// Files that are not what the manifest (or the release) says (exit code 4).
#[derive(Debug)]
pub(crate) struct VerifyFailed(String);

impl std::fmt::Display for VerifyFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for VerifyFailed {}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Depth {
    /// Sizes and modification times against the manifest, file types.
    Quick,
    /// Also every recorded sha256.
    Normal,
    /// Also the raw image's content against the qcow2's guest content.
    Deep,
}

/// Checks every file of the set `m` records in `out`; prints one line
/// each; Err when any is wrong or the set is incomplete.
impl Session {
    pub(crate) fn check_installed(&self, m: &Manifest, depth: Depth) -> Result<()> {
        let out = self.out();
        let files: Vec<(&FileEntry, PathBuf)> =
            m.files.iter().map(|f| (f, out.join(&f.name))).collect();
        let results = check_files(&files, &m.arch, &out.join(QCOW2), depth, true);
        report(out, m, &results);
        let mut bad = Vec::new();
        for (name, r) in &results {
            match r {
                Ok(note) => out!("  ok       {name:<18} {note}"),
                Err(why) => {
                    out!("  FAILED   {name:<18} {why}");
                    bad.push(name.clone());
                }
            }
        }
        for name in m.unlisted() {
            out!("  FAILED   {name:<18} not in the manifest (the set is incomplete)");
            bad.push(name.to_string());
        }
        if m.no_raw && m.entry(RAW).is_none() {
            out!("  skipped  {RAW:<18} not made: installed with --no-raw (run without it to make it)");
        }
        for extra in extra_files(out) {
            out!(
                "  note     {:<18} is not part of the installed set (not in the manifest)",
                util::text::clean(&extra, 60)
            );
        }
        if !bad.is_empty() {
            return Err(anyhow::Error::new(VerifyFailed(format!(
            "{} of {} files failed verification ({}); run `cargo xtask resources --force` to reinstall",
            bad.len(),
            m.names().count(),
            bad.join(", ")
        ))));
        }
        Ok(())
    }

    /// Checks the staged files of a set before they are installed: everything
    /// `verify` checks but the recorded times (the files are not in place yet);
    /// a raw image against `qcow2`, the one it was made from. Says nothing when
    /// all is well; the error lists what is wrong.
    pub(crate) fn check_staged(
        &self,
        m: &Manifest,
        staged: &[(&str, PathBuf)],
        qcow2: &Path,
    ) -> Result<()> {
        let mut files = Vec::new();
        for (name, path) in staged {
            let entry = m
                .entry(name)
                .ok_or_else(|| anyhow::anyhow!("internal: the new manifest lacks {name}"))?;
            files.push((entry, path.clone()));
        }
        let bad: Vec<String> = check_files(&files, &m.arch, qcow2, Depth::Quick, false)
            .into_iter()
            .filter_map(|(name, r)| r.err().map(|why| format!("{name}: {why}")))
            .collect();
        if !bad.is_empty() {
            return Err(anyhow::Error::new(VerifyFailed(bad.join("; "))));
        }
        Ok(())
    }
}

/// The checks for `--json`: the set, and per file its name, path, whether
/// it holds and why not.
fn report(out: &Path, m: &Manifest, results: &[(String, Result<String, String>)]) {
    use serde_json::json;
    let mut files: Vec<_> = results
        .iter()
        .map(|(name, r)| {
            let e = m.entry(name);
            json!({
                "name": name,
                "path": out.join(name),
                "size": e.map(|e| e.size),
                "sha256": e.and_then(|e| e.sha256.clone()),
                "ok": r.is_ok(),
                "note": match r { Ok(n) | Err(n) => n },
            })
        })
        .collect();
    for name in m.unlisted() {
        files.push(json!({ "name": name, "path": out.join(name), "ok": false,
            "note": "not in the manifest (the set is incomplete)" }));
    }
    let say = util::say::report;
    say(
        "release",
        json!({ "repo": m.repo, "tag": m.tag, "os": m.os, "arch": m.arch }),
    );
    say("files", json!(files));
    say("no_raw", json!(m.no_raw));
}

/// Checks files in parallel (the qcow2 dominates, the rest rides along).
fn check_files(
    files: &[(&FileEntry, PathBuf)],
    arch: &str,
    qcow2: &Path,
    depth: Depth,
    times: bool,
) -> Vec<(String, Result<String, String>)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = files
            .iter()
            .map(|(f, path)| {
                s.spawn(move || {
                    (
                        f.name.clone(),
                        check_file(path, f, arch, qcow2, depth, times),
                    )
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| ("?".into(), Err("check panicked".into())))
            })
            .collect()
    })
}

/// Names in the output directory that are not the set's own.
fn extra_files(out: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(out) else {
        return Vec::new();
    };
    let mut extra: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && n != manifest::FILE && n != "gem5")
        .filter(|n| !NAMES.contains(&n.as_str()))
        .take(50)
        .collect();
    extra.sort();
    extra
}

fn check_file(
    path: &Path,
    f: &FileEntry,
    arch: &str,
    qcow2_path: &Path,
    depth: Depth,
    times: bool,
) -> Result<String, String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(_) => return Err(format!("missing ({})", path.display())),
    };
    if !meta.file_type().is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let (size, ns) = match manifest::modified_ns(path) {
        Ok(x) => x,
        Err(_) => return Err(format!("missing ({})", path.display())),
    };
    if size != f.size {
        return Err(format!(
            "size is {size}, the manifest says {} (truncated or replaced)",
            f.size
        ));
    }
    let mut notes = vec![human_bytes(size)];
    match f.name.as_str() {
        KERNEL | CLIENT => notes.push(install::elf::check(path, arch)?),
        QCOW2 => {
            qcow2::Image::open(path).map_err(|e| format!("not a readable qcow2: {e:#}"))?;
        }
        RAW => {
            let virt = qcow2::Image::open(qcow2_path)
                .map(|i| i.virtual_size())
                .map_err(|e| format!("cannot read the qcow2 beside it: {e:#}"))?;
            if size != virt {
                return Err(format!(
                    "size {size} differs from the qcow2's virtual size {virt}"
                ));
            }
            // The raw image has no recorded hash: its content is compared with
            // the qcow2's when asked, or when its time says it was written to.
            if depth == Depth::Deep || (depth == Depth::Normal && times && ns != f.modified_ns) {
                match qcow2::compare_with_raw(qcow2_path, path) {
                    Ok(None) => notes.push("content equals the qcow2's".into()),
                    Ok(Some(at)) => {
                        return Err(format!(
                            "content differs from the qcow2's guest content at byte {at}"
                        ))
                    }
                    Err(e) => return Err(format!("cannot compare with the qcow2: {e:#}")),
                }
            }
        }
        _ => return Err("not a file of the set".into()),
    }
    if depth == Depth::Quick {
        if times && ns != f.modified_ns {
            return Err("modified since it was installed (modification time changed)".into());
        }
        return Ok(notes.join(", "));
    }
    if let Some(want) = &f.sha256 {
        let got = fsutil::sha256_file(path).map_err(|e| format!("{e:#}"))?;
        if &hex(&got) != want {
            return Err(format!(
                "sha256 is {}, the manifest says {}",
                hex(&got),
                Shown(want)
            ));
        }
        notes.push("sha256 ok".into());
    }
    Ok(notes.join(", "))
}
