//! The user's files come first: before a step replaces an installed file it
//! asks here whether that file is still what the tool put there. A file
//! whose modification time changed is hashed again (a `touch` or a copy
//! that kept the content is not a change); one whose content changed, or
//! that the manifest does not know, is the user's, and only `--force`
//! replaces it.

use std::fs;
use std::path::Path;

use anyhow::{bail, Result};

use super::plan::Plan;
use super::Opts;
use install::layout::{QCOW2, RAW};
use install::manifest::{self, FileEntry, Manifest, SourceAsset};
use qcow2;
use util::fmt::hex;
use util::fs::{self as fsutil, users_files};

/// What stands at one installed name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Nothing there.
    Missing,
    /// Exactly as recorded (size and modification time).
    Unchanged,
    /// Same content as recorded, but a new modification time; `installed`:
    /// the installed entry's content (else the pending install's).
    Touched { installed: bool },
    /// The content differs from what was recorded: the user's now.
    Changed(String),
    /// There, but the tool never recorded it: the user's.
    Foreign(String),
}

impl State {
    /// The user's file: only `--force` may replace it.
    pub fn is_users(&self) -> bool {
        matches!(self, State::Changed(_) | State::Foreign(_))
    }
    /// Present with the recorded content.
    pub fn is_intact(&self) -> bool {
        matches!(self, State::Unchanged | State::Touched { .. })
    }
}

/// Looks at `out/name` against the manifest `m` (its installed entry, and
/// the pending one of an install that was interrupted). Hashes only when
/// the modification time changed; the raw image, which has no recorded
/// hash, is compared with the guest content of the qcow2 beside it.
pub fn inspect(out: &Path, m: Option<&Manifest>, name: &str) -> State {
    let path = out.join(name);
    let meta = match fs::symlink_metadata(&path) {
        Err(_) => return State::Missing,
        Ok(meta) => meta,
    };
    if !meta.file_type().is_file() {
        return State::Foreign(format!("{} is not a regular file", path.display()));
    }
    let installed = m.and_then(|m| m.entry(name));
    let pending = m
        .and_then(|m| m.pending.as_ref())
        .and_then(|p| p.entry(name));
    if installed.is_none() && pending.is_none() {
        return State::Foreign(format!(
            "{} was not installed by this tool (manifest.json does not list it)",
            path.display()
        ));
    }
    let Ok((size, ns)) = manifest::modified_ns(&path) else {
        return State::Foreign(format!("{} cannot be read", path.display()));
    };
    if installed.is_some_and(|e| e.size == size && e.modified_ns == ns && ns != 0) {
        return State::Unchanged;
    }
    // The content decides: does it match the installed entry, the pending one?
    let fits = |e: &FileEntry| e.size == size || e.modified_ns == 0;
    let (inst, pend) = (installed.filter(|e| fits(e)), pending.filter(|e| fits(e)));
    if inst.is_none() && pend.is_none() {
        let recorded = installed.or(pending).map_or(0, |e| e.size);
        return State::Changed(format!(
            "{} changed since it was installed (it is {size} bytes, the manifest says {recorded})",
            path.display()
        ));
    }
    let matched = if name == RAW {
        // Checked against the qcow2 it was made from, which must be intact:
        // installed with the installed qcow2, pending with the pending one.
        let q_inst = match inspect(out, m, QCOW2) {
            State::Unchanged => true,
            State::Touched { installed } => installed,
            _ => {
                return State::Changed(format!(
                    "{} cannot be checked: the qcow2 beside it changed or is gone",
                    path.display()
                ))
            }
        };
        match qcow2::compare_with_raw(&out.join(QCOW2), &path) {
            Ok(None) => Some(q_inst && inst.is_some()),
            Ok(Some(at)) => {
                return State::Changed(format!(
                    "{} changed since it was installed (its content differs from the qcow2's at byte {at})",
                    path.display()
                ))
            }
            Err(e) => return State::Changed(format!("{}: {e:#}", path.display())),
        }
    } else {
        match fsutil::sha256_file(&path) {
            Ok(got) => {
                let got = hex(&got);
                let same = |e: Option<&FileEntry>| {
                    e.is_some_and(|e| e.sha256.as_deref() == Some(got.as_str()))
                };
                if same(inst) {
                    Some(true)
                } else if same(pend) {
                    Some(false)
                } else {
                    None
                }
            }
            Err(e) => return State::Changed(format!("{e:#}")),
        }
    };
    match matched {
        Some(installed) => State::Touched { installed },
        None => State::Changed(format!(
            "{} changed since it was installed (its sha256 differs from the manifest's)",
            path.display()
        )),
    }
}

/// The states of `names` in `out`.
pub fn inspect_all(out: &Path, m: Option<&Manifest>, names: &[&str]) -> Vec<(String, State)> {
    names
        .iter()
        .map(|n| (n.to_string(), inspect(out, m, n)))
        .collect()
}

/// Fails, naming each file, when any of `states` is the user's.
pub fn refuse_users(out: &Path, states: &[(String, State)]) -> Result<()> {
    let users: Vec<String> = states
        .iter()
        .filter_map(|(_, s)| match s {
            State::Changed(why) | State::Foreign(why) => Some(why.clone()),
            _ => None,
        })
        .collect();
    if users.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = states
        .iter()
        .filter(|(_, s)| s.is_users())
        .map(|(n, _)| n.as_str())
        .collect();
    Err(users_files(format!(
        "{}; nothing was changed. To keep {}, move {} out of {} first; to replace {} \
         with the release's, run again with --force",
        users.join("; "),
        if names.len() == 1 { "it" } else { "them" },
        names.join(", "),
        out.display(),
        if names.len() == 1 { "it" } else { "them" },
    )))
}

/// Brings the manifest's recorded times up to date for files that were only
/// touched, so the next run need not hash them again.
pub fn record_touched(out: &Path, m: &mut Manifest, states: &[(String, State)]) -> Result<bool> {
    let mut changed = false;
    for (name, s) in states {
        // A file that is the pending install's is not the installed entry's.
        if *s != (State::Touched { installed: true }) {
            continue;
        }
        let (size, ns) = manifest::modified_ns(&out.join(name))?;
        if let Some(e) = m.files.iter_mut().find(|f| &f.name == name) {
            e.size = size;
            e.modified_ns = ns;
            changed = true;
        }
    }
    Ok(changed)
}

/// The manifest to extend with files of `plan`'s set: the installed one if
/// it is that set, else a new one.
pub(super) fn same_set_manifest(opts: &Opts, plan: &Plan, m: Option<&Manifest>) -> Manifest {
    match m {
        Some(m) if is_plan_set(opts, plan, m) => {
            let mut n = m.clone();
            n.pending = None;
            n
        }
        _ => Manifest::for_set(
            &opts.repo,
            &plan.release.tag_name,
            opts.os.as_str(),
            opts.arch.as_str(),
        ),
    }
}

pub(super) fn is_plan_set(opts: &Opts, plan: &Plan, m: &Manifest) -> bool {
    m.same_set(&opts.repo, opts.os.as_str(), opts.arch.as_str()) && m.tag == plan.release.tag_name
}

/// The manifest of an installed set other than `plan`'s: the single steps
/// leave such a set whole rather than mix two releases in one directory.
pub(super) fn other_set<'a>(
    opts: &Opts,
    plan: &Plan,
    m: Option<&'a Manifest>,
) -> Option<&'a Manifest> {
    m.filter(|m| !m.files.is_empty() && !is_plan_set(opts, plan, m))
}

/// The manifest, for a step that is about to replace files: a damaged one
/// means nothing can be told about the files, so only `--force` goes on.
pub(super) fn load_manifest(opts: &Opts) -> Result<Option<Manifest>> {
    match manifest::load(&opts.output) {
        Ok(m) => Ok(m),
        Err(_) if opts.force => Ok(None),
        Err(e) => Err(e.context(
            "cannot tell which installed files are the tool's; move them away, or run with --force",
        )),
    }
}

/// The manifest, for the full run: a damaged one is set aside with a note,
/// and the files are then compared with the release, as in a directory the
/// tool did not make.
pub(super) fn load_manifest_or_compare(opts: &Opts) -> Option<Manifest> {
    match manifest::load(&opts.output) {
        Ok(m) => m,
        Err(e) => {
            note!(
                "{}; the installed files are compared with the release instead",
                util::text::clean(&format!("{e:#}"), 300)
            );
            None
        }
    }
}

/// A single step installs nothing while an interrupted install is pending:
/// only the full run knows how to finish it.
pub(super) fn refuse_pending(opts: &Opts, m: Option<&Manifest>) -> Result<()> {
    if m.is_some_and(|m| m.pending.is_some()) {
        bail!(
            "an install into {} was interrupted; run `cargo xtask resources` to finish it first",
            opts.output.display()
        );
    }
    Ok(())
}

/// Refuses (unless `--force`) to replace any of `names` that is the user's.
pub(super) fn guard_names(opts: &Opts, m: Option<&Manifest>, names: &[&str]) -> Result<()> {
    if opts.force {
        return Ok(());
    }
    let states = inspect_all(&opts.output, m, names);
    refuse_users(&opts.output, &states)
}

/// A manifest entry for the staged file at `path`, to be installed as `name`
/// (its time is recorded once it is in place).
pub(super) fn entry(
    name: &str,
    path: &Path,
    sha: Option<String>,
    sources: Vec<SourceAsset>,
) -> Result<FileEntry> {
    let (size, _) = manifest::modified_ns(path)?;
    Ok(FileEntry {
        name: name.into(),
        size,
        sha256: sha,
        modified_ns: 0,
        sources,
    })
}
