//! The user's files come first: before a command replaces an installed file
//! it asks here whether that file is still what the tool put there. A file
//! whose modification time changed is hashed again (a `touch` or a copy
//! that kept the content is not a change); one whose content changed, or
//! that the manifest does not know, is the user's, and only `--force`
//! replaces it.

use std::fs;
use std::path::Path;

use anyhow::{bail, Result};

use super::Session;
use install::layout::{QCOW2, RAW};
use install::manifest::{self, FileEntry, Manifest, SourceAsset};
use util::fmt::hex;
use util::fs::{self as fsutil, users_files};

/// What stands at one installed name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum State {
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

/// What stands at each installed name.
pub(crate) type States = Vec<(String, State)>;

impl State {
    /// The user's file: only `--force` may replace it.
    pub(crate) fn is_users(&self) -> bool {
        matches!(self, State::Changed(_) | State::Foreign(_))
    }
    /// Present with the recorded content.
    pub(crate) fn is_intact(&self) -> bool {
        matches!(self, State::Unchanged | State::Touched { .. })
    }
}

/// Looks at `out/name` against the manifest `m` (its installed entry, and
/// the pending one of an install that was interrupted). Hashes only when
/// the modification time changed; the raw image, which has no recorded
/// hash, is compared with the guest content of the qcow2 beside it.
pub(super) fn inspect(out: &Path, m: Option<&Manifest>, name: &str) -> State {
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
        raw_matches(out, m, &path, inst.is_some())
    } else {
        hash_matches(&path, inst, pend)
    };
    match matched {
        Ok(Some(installed)) => State::Touched { installed },
        Ok(None) => State::Changed(format!(
            "{} changed since it was installed (its sha256 differs from the manifest's)",
            path.display()
        )),
        Err(s) => s,
    }
}

/// Whether the raw image at `path` still holds the guest content of the
/// qcow2 beside it, which must be intact: Some(true) with the installed
/// qcow2 (and an installed entry, `inst`), Some(false) with the pending one.
fn raw_matches(
    out: &Path,
    m: Option<&Manifest>,
    path: &Path,
    inst: bool,
) -> Result<Option<bool>, State> {
    let q_inst = match inspect(out, m, QCOW2) {
        State::Unchanged => true,
        State::Touched { installed } => installed,
        _ => {
            return Err(State::Changed(format!(
                "{} cannot be checked: the qcow2 beside it changed or is gone",
                path.display()
            )))
        }
    };
    match qcow2::compare_with_raw(&out.join(QCOW2), path) {
        Ok(None) => Ok(Some(q_inst && inst)),
        Ok(Some(at)) => Err(State::Changed(format!(
            "{} changed since it was installed (its content differs from the qcow2's at byte {at})",
            path.display()
        ))),
        Err(e) => Err(State::Changed(format!("{}: {e:#}", path.display()))),
    }
}

/// Whether the file at `path` hashes to the installed entry's sha256
/// (Some(true)), the pending one's (Some(false)), or neither (None).
fn hash_matches(
    path: &Path,
    inst: Option<&FileEntry>,
    pend: Option<&FileEntry>,
) -> Result<Option<bool>, State> {
    let got = match fsutil::sha256_file(path) {
        Ok(got) => hex(&got),
        Err(e) => return Err(State::Changed(format!("{e:#}"))),
    };
    let same = |e: Option<&FileEntry>| e.is_some_and(|e| e.sha256.as_deref() == Some(got.as_str()));
    Ok(if same(inst) {
        Some(true)
    } else if same(pend) {
        Some(false)
    } else {
        None
    })
}

/// Fails, naming each file, when any of `states` is the user's.
pub(super) fn refuse_users(out: &Path, states: &[(String, State)]) -> Result<()> {
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

/// A manifest entry for the staged file at `path`, to be installed as `name`
/// (its time is recorded once it is in place).
pub(crate) fn staged_entry(
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

impl Session {
    /// What stands at `name` in the output directory, against the
    /// installed manifest.
    pub(crate) fn inspect(&self, name: &str) -> State {
        inspect(&self.opts.output, self.installed.as_ref(), name)
    }

    /// The states of `names`.
    pub(crate) fn inspect_all(&self, names: &[&str]) -> States {
        names
            .iter()
            .map(|n| (n.to_string(), self.inspect(n)))
            .collect()
    }

    /// Unless `--force`, refuses the files among `states` whose content
    /// changed since they were installed. (A file the manifest does not
    /// list is compared with the release instead.)
    pub(crate) fn refuse_changed(&self, states: &[(String, State)]) -> Result<()> {
        if self.opts.force {
            return Ok(());
        }
        let changed: States = states
            .iter()
            .filter(|(_, s)| matches!(s, State::Changed(_)))
            .cloned()
            .collect();
        refuse_users(&self.opts.output, &changed)
    }

    /// Refuses (unless `--force`) to replace any of `names` that is the user's.
    pub(crate) fn guard_names(&self, names: &[&str]) -> Result<()> {
        if self.opts.force {
            return Ok(());
        }
        refuse_users(&self.opts.output, &self.inspect_all(names))
    }

    /// Brings the manifest's recorded times up to date for files that were
    /// only touched, so the next run need not hash them again.
    pub(crate) fn record_touched(&mut self, states: &[(String, State)]) -> Result<()> {
        let out = &self.opts.output;
        let Some(m) = self.installed.as_mut() else {
            return Ok(());
        };
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
        if changed {
            manifest::store(out, m)?;
        }
        Ok(())
    }

    /// The manifest to extend with files of the plan's set: the installed
    /// one if it is that set, else a new one.
    pub(crate) fn same_set_manifest(&self) -> Manifest {
        match self.installed.as_ref() {
            Some(m) if self.is_plan_set(m) => {
                let mut n = m.clone();
                n.pending = None;
                n
            }
            _ => self.new_manifest(),
        }
    }

    /// An empty manifest of the plan's set.
    pub(crate) fn new_manifest(&self) -> Manifest {
        let o = &self.opts;
        Manifest::for_set(
            &o.repo,
            &self.plan().release.tag_name,
            o.os.as_str(),
            o.arch.as_str(),
        )
    }

    /// Whether `m` records the plan's set (repository, os/arch and tag).
    pub(crate) fn is_plan_set(&self, m: &Manifest) -> bool {
        let o = &self.opts;
        m.same_set(&o.repo, o.os.as_str(), o.arch.as_str()) && m.tag == self.plan().release.tag_name
    }

    /// The manifest of an installed set other than the plan's: the single
    /// commands leave such a set whole rather than mix two releases in one
    /// directory.
    pub(crate) fn other_set(&self) -> Option<&Manifest> {
        self.installed
            .as_ref()
            .filter(|m| !m.files.is_empty() && !self.is_plan_set(m))
    }

    /// Reads the manifest, for a command that is about to replace files: a
    /// damaged one means nothing can be told about the files, so only
    /// `--force` goes on.
    pub(crate) fn load_manifest(&mut self) -> Result<()> {
        self.installed = match manifest::load(&self.opts.output) {
            Ok(m) => m,
            Err(_) if self.opts.force => None,
            Err(e) => {
                return Err(e.context(
                    "cannot tell which installed files are the tool's; move them away, or run with --force",
                ))
            }
        };
        Ok(())
    }

    /// Reads the manifest, for the full run: a damaged one is set aside with
    /// a note, and the files are then compared with the release, as in a
    /// directory the tool did not make.
    pub(crate) fn load_manifest_or_compare(&mut self) {
        self.installed = match manifest::load(&self.opts.output) {
            Ok(m) => m,
            Err(e) => {
                note!(
                    "{}; the installed files are compared with the release instead",
                    util::text::clean(&format!("{e:#}"), 300)
                );
                None
            }
        };
    }

    /// A single command installs nothing while an interrupted install is
    /// pending: only the full run knows how to finish it.
    pub(crate) fn refuse_pending(&self) -> Result<()> {
        if self.installed.as_ref().is_some_and(|m| m.pending.is_some()) {
            bail!(
                "an install into {} was interrupted; run `cargo xtask resources` to finish it first",
                self.opts.output.display()
            );
        }
        Ok(())
    }
}
