//! What the output directory already holds of a release. Each installed
//! name is compared with what the release would install there: through the
//! manifest's record when the file is unchanged and the record is of this
//! release; else by its content, hashed in this run, against the asset's
//! digest (or its downloaded bytes), the image's sums, or, for the raw
//! image, the qcow2's guest content. A match is kept, or adopted when the
//! manifest did not list it (a directory made by artifacts.py or by hand, a
//! lost manifest); anything else is made. A file of the user's that
//! differs is refused, one line each, unless `--force`.

use std::path::Path;

use anyhow::Result;

use super::guard::{inspect, refuse_users, State};
use super::plan::{source_of, Pick, Plan};
use super::Session;
use install::layout::{CLIENT, KERNEL, NAMES, QCOW2, RAW};
use install::manifest::{self, FileEntry, Manifest, SourceAsset};
use util::fmt::hex;
use util::fs as fsutil;

/// How a file the run keeps is known to be the release's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kept {
    /// The manifest recorded it, and it is unchanged.
    Recorded,
    /// The manifest did not list it; its content is the release's.
    Adopted,
}

/// What the run does with one installed name.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// It is already the release's: this entry goes into the new manifest.
    Keep(Kept, FileEntry),
    /// It is made (downloaded, unpacked or converted) and installed.
    Make,
    /// The user's file, different from the release's: refused unless `--force`.
    Users(String),
    /// `--no-raw`: left as it is and not recorded.
    Leave,
    /// `--no-raw`: the tool's raw image of the image being replaced; removed.
    Drop,
}

/// The sha256 each file of the release has (the raw image has none: it is
/// compared with the qcow2's guest content).
pub(crate) struct Reference {
    kernel: [u8; 32],
    client: [u8; 32],
    qcow2: [u8; 32],
}

impl Reference {
    fn of(&self, name: &str) -> Option<[u8; 32]> {
        match name {
            KERNEL => Some(self.kernel),
            CLIENT => Some(self.client),
            QCOW2 => Some(self.qcow2),
            _ => None,
        }
    }
}

impl Session {
    /// The user may have changed a file while this ran: a file to be
    /// replaced must still be absent or the tool's, a kept one still as
    /// recorded in `new`.
    pub(crate) fn recheck(&self, new: &Manifest, verdicts: &[(&str, Verdict)]) -> Result<()> {
        if self.opts.force {
            return Ok(());
        }
        let out = &self.opts.output;
        let mut now = Vec::new();
        for (name, v) in verdicts {
            let s = match v {
                Verdict::Keep(..) => inspect(out, Some(new), name),
                Verdict::Make | Verdict::Drop => self.inspect(name),
                Verdict::Leave | Verdict::Users(_) => continue,
            };
            now.push((name.to_string(), s));
        }
        refuse_users(out, &now)
    }

    /// Fetches what a comparison needs (the sums; the kernel and client where
    /// the release gives no digest: their bytes are the reference) and reads
    /// the release's sha256 of each file from it.
    pub(crate) fn reference(&mut self) -> Result<Reference> {
        let sel = &self.plan().sel;
        let pick = Pick {
            kernel: sel.kernel.sha256()?.is_none(),
            client: sel.client.sha256()?.is_none(),
            sums: true,
            parts: false,
        };
        self.fetch_assets(pick)?;
        let plan = self.plan();
        let (k, c) = (&plan.sel.kernel, &plan.sel.client);
        let of = |a: &github::release::Asset| -> Result<[u8; 32]> {
            match a.sha256()? {
                Some(d) => Ok(d),
                None => fsutil::sha256_file(&plan.asset_path(&a.name)),
            }
        };
        Ok(Reference {
            kernel: of(k)?,
            client: of(c)?,
            qcow2: plan.expected_sha()?,
        })
    }

    /// Whether every name is known to be the release's from the manifest
    /// alone, so no reference (digests, sums) is needed to decide.
    pub(crate) fn all_recorded(&self, states: &[(String, State)]) -> bool {
        let no_raw = self.opts.no_raw;
        self.same_whole_set()
            && states.iter().all(|(name, s)| {
                recorded_intact(s) || (name == RAW && (no_raw || *s == State::Missing))
            })
    }

    /// The verdict on every installed name.
    pub(crate) fn take_stock(
        &self,
        states: &[(String, State)],
        reference: Option<&Reference>,
    ) -> Result<Vec<(&'static str, Verdict)>> {
        let state = |n: &str| &states.iter().find(|(s, _)| s == n).expect("every name").1;
        let mut verdicts = Vec::with_capacity(NAMES.len());
        for name in [KERNEL, CLIENT, QCOW2] {
            let want = reference.and_then(|r| r.of(name));
            verdicts.push((name, self.verdict(state(name), name, want)?));
        }
        let qcow2_kept = match &verdicts[2].1 {
            Verdict::Keep(k, _) => Some(*k),
            _ => None,
        };
        verdicts.push((RAW, self.raw_verdict(state(RAW), qcow2_kept)?));
        Ok(verdicts)
    }

    /// The verdict on the kernel, client or qcow2 at `name`, whose release
    /// content has the sha256 `want` (when known).
    pub(crate) fn verdict(
        &self,
        state: &State,
        name: &str,
        want: Option<[u8; 32]>,
    ) -> Result<Verdict> {
        let same = self.same_whole_set();
        // A file that matched the interrupted install is that install's.
        let recorded = self.installed.as_ref().and_then(|m| match state {
            State::Touched { installed: false } => pending_entry(m, name),
            _ => m.entry(name),
        });
        let sources = sources(self.plan(), name);
        let path = self.opts.output.join(name);
        Ok(match state {
            // --force: everything is fetched and checked again.
            _ if self.opts.force => Verdict::Make,
            State::Missing => Verdict::Make,
            State::Changed(why) => Verdict::Users(why.clone()),
            s if recorded_intact(s) && same => match recorded {
                Some(e) => Verdict::Keep(Kept::Recorded, e.clone()),
                None => Verdict::Make,
            },
            // The tool's file, of another set or of an interrupted install: kept
            // when its recorded content is the release's, else replaced.
            State::Unchanged | State::Touched { .. } => match (recorded, want) {
                (Some(e), Some(want)) if e.sha256.as_deref() == Some(hex(&want).as_str()) => {
                    let mut e = e.clone();
                    e.sources = sources;
                    Verdict::Keep(Kept::Recorded, e)
                }
                _ => Verdict::Make,
            },
            State::Foreign(_) => match want {
                Some(want) => adopt_by_hash(&path, name, want, &sources)?,
                None => Verdict::Users(format!(
                    "{}: not listed in manifest.json, and the release could not be compared",
                    path.display()
                )),
            },
        })
    }

    /// Refuses, one line each, the user's files that differ (unless
    /// `--force`, which makes them instead).
    pub(crate) fn settle_users(&self, verdicts: &mut [(&'static str, Verdict)]) -> Result<()> {
        let opts = &self.opts;
        let mut lines = Vec::new();
        let mut names = Vec::new();
        for (name, v) in verdicts.iter_mut() {
            if let Verdict::Users(why) = v {
                if opts.force {
                    *v = Verdict::Make;
                } else {
                    lines.push(format!("  {why}"));
                    names.push(*name);
                }
            }
        }
        if lines.is_empty() {
            return Ok(());
        }
        Err(fsutil::users_files(format!(
            "{} in {} {} not the release's, and nothing was changed:\n{}\nTo keep {}, move {} out \
         of {} first; to replace {} with the release's, run again with --force",
            names.join(", "),
            opts.output.display(),
            if names.len() == 1 { "is" } else { "are" },
            lines.join("\n"),
            if names.len() == 1 { "it" } else { "them" },
            names.join(", "),
            opts.output.display(),
            if names.len() == 1 { "it" } else { "them" },
        )))
    }

    /// The verdict on the raw image, given the one on the qcow2 beside it.
    fn raw_verdict(&self, state: &State, qcow2: Option<Kept>) -> Result<Verdict> {
        let (opts, plan) = (&self.opts, self.plan());
        let same = self.same_whole_set();
        let out = &opts.output;
        let path = out.join(RAW);
        let recorded = self.installed.as_ref().and_then(|m| m.entry(RAW));
        Ok(match state {
            _ if opts.force && !opts.no_raw => Verdict::Make,
            State::Missing if opts.no_raw => Verdict::Leave,
            State::Missing => Verdict::Make,
            State::Changed(_) | State::Foreign(_) if opts.no_raw => Verdict::Leave,
            State::Changed(why) => Verdict::Users(why.clone()),
            s if recorded_intact(s)
                && same
                && qcow2 == Some(Kept::Recorded)
                && recorded.is_some() =>
            {
                Verdict::Keep(Kept::Recorded, recorded.expect("checked").clone())
            }
            State::Foreign(_) if qcow2.is_none() => Verdict::Users(format!(
                "{}: not listed in manifest.json, and it cannot be compared: the qcow2 beside it \
             is not release {}'s",
                path.display(),
                plan.release.tag_name
            )),
            // The qcow2 stays: compare the raw image with its guest content.
            s if qcow2.is_some() => match qcow2::compare_with_raw(&out.join(QCOW2), &path)? {
                None => {
                    let (size, ns) = manifest::modified_ns(&path)?;
                    let kept = if recorded_intact(s) {
                        Kept::Recorded
                    } else {
                        Kept::Adopted
                    };
                    let entry = FileEntry {
                        name: RAW.into(),
                        size,
                        sha256: None,
                        modified_ns: ns,
                        sources: sources(plan, QCOW2),
                    };
                    Verdict::Keep(kept, entry)
                }
                Some(_) if opts.no_raw => Verdict::Drop,
                Some(_) if recorded_intact(s) => Verdict::Make,
                Some(at) => Verdict::Users(format!(
                    "{}: its content differs from the qcow2's guest content at byte {at}",
                    path.display()
                )),
            },
            // The tool's raw image of a qcow2 that is being replaced.
            _ if opts.no_raw => Verdict::Drop,
            _ => Verdict::Make,
        })
    }

    /// Whether the installed manifest records the plan's set, whole (no
    /// install of it pending).
    fn same_whole_set(&self) -> bool {
        self.installed
            .as_ref()
            .is_some_and(|m| self.is_plan_set(m) && m.pending.is_none())
    }
}

/// Hashes the file at `path` in this run; adopted when it is `want`.
fn adopt_by_hash(
    path: &Path,
    name: &str,
    want: [u8; 32],
    sources: &[SourceAsset],
) -> Result<Verdict> {
    if !fsutil::is_regular(path) {
        return Ok(Verdict::Users(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let before = manifest::modified_ns(path)?;
    let got = fsutil::sha256_file(path)?;
    if manifest::modified_ns(path)? != before {
        return Ok(Verdict::Users(format!(
            "{} changed while it was being checked",
            path.display()
        )));
    }
    if got != want {
        return Ok(Verdict::Users(format!(
            "{}: its sha256 is {}, the release's {} is {}",
            path.display(),
            hex(&got),
            name,
            hex(&want)
        )));
    }
    Ok(Verdict::Keep(
        Kept::Adopted,
        FileEntry {
            name: name.into(),
            size: before.0,
            sha256: Some(hex(&got)),
            modified_ns: before.1,
            sources: sources.to_vec(),
        },
    ))
}

fn recorded_intact(s: &State) -> bool {
    matches!(s, State::Unchanged | State::Touched { installed: true })
}

fn pending_entry<'a>(m: &'a Manifest, name: &str) -> Option<&'a FileEntry> {
    m.pending.as_ref().and_then(|p| p.entry(name))
}

/// The assets a file of the set comes from, for its manifest entry.
fn sources(plan: &Plan, name: &str) -> Vec<SourceAsset> {
    match name {
        KERNEL => vec![source_of(&plan.sel.kernel)],
        CLIENT => vec![source_of(&plan.sel.client)],
        _ => plan.disk_sources(),
    }
}
