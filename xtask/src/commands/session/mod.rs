//! One command's session: the options, the lock of the directory it writes,
//! the installed set (`manifest.json`) once read, and the release plan once
//! resolved. Commands hold a `&mut Session` and ask it what they need; they
//! import nothing of each other. Its private parts answer: where the plan
//! and its assets are (`plan`, `store`), whether an installed file is still
//! the tool's (`guard`), what the output already holds of a release
//! (`adopt`), the disk image made in one pass (`image`), and whether a set
//! of files is what its manifest says (`check`).

mod adopt;
mod check;
mod guard;
mod image;
mod opts;
mod plan;
mod store;

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use fetch::Http;
use install::layout;
use install::manifest::Manifest;
use install::swap::{self, Move};
use util::lock::{self, Lock};

pub(crate) use adopt::{Kept, Verdict};
pub(crate) use check::{Depth, VerifyFailed};
pub(crate) use guard::{staged_entry, State, States};
pub(crate) use image::report_image;
pub(crate) use opts::{Opts, DEFAULT_API, DEFAULT_REPO};
pub(crate) use plan::{sha_from_sums, source_of, BadSums, Pick, Plan};

pub(crate) struct Session {
    opts: Opts,
    /// The plan, once resolved. Declared before the lock: its cache entry
    /// is released (and the cache trimmed) first.
    plan: Option<Plan>,
    /// The installed manifest, once read; None when there is none, or when
    /// a damaged one was set aside.
    installed: Option<Manifest>,
    lock: Option<Lock>,
}

impl Session {
    pub(crate) fn new(opts: Opts) -> Session {
        Session {
            opts,
            plan: None,
            installed: None,
            lock: None,
        }
    }

    pub(crate) fn opts(&self) -> &Opts {
        &self.opts
    }

    /// The output directory (`--output`).
    pub(crate) fn out(&self) -> &Path {
        &self.opts.output
    }

    /// An HTTP client with `connections` connections.
    pub(crate) fn http(&self, connections: usize) -> Http {
        Http::new(&self.opts.http(connections))
    }

    /// Makes the output directory and the working directory root (a link at
    /// `.downloads` is junk and is replaced, a file of the user's there is
    /// refused), and takes the lock: another run on the same output directory
    /// is waited for (`--no-wait`: an error).
    pub(crate) fn open(&mut self) -> Result<()> {
        let out = &self.opts.output;
        if out.exists() && !out.is_dir() {
            anyhow::bail!(
                "--output {} is a file, not a directory; name a directory",
                out.display()
            );
        }
        fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
        let root = layout::downloads_root(out);
        self.take_lock(&root, true)
    }

    /// Locks the output directory itself, which the command fills (a
    /// mirror, the assets `pack` writes): another run there is waited for
    /// (`--no-wait`: an error). The command made the directory.
    pub(crate) fn lock_output(&mut self) -> Result<()> {
        let out = self.opts.output.clone();
        self.take_lock(&out, false)
    }

    fn take_lock(&mut self, dir: &Path, own: bool) -> Result<()> {
        let what = self.opts.output.display().to_string();
        let how = lock::How {
            kind: lock::Kind::Exclusive,
            what: &what,
            wait: self.opts.wait,
            own,
        };
        self.lock = Some(lock::lock(dir, &how)?);
        Ok(())
    }

    /// Done with the directory: the lock and its file go.
    pub(crate) fn unlock(&mut self) {
        if let Some(l) = self.lock.take() {
            l.remove();
        }
    }

    /// Lets the lock go and leaves its file (another run may be waiting).
    pub(crate) fn release(&mut self) {
        self.lock = None;
    }

    /// The installed manifest, as read by `load_manifest` or
    /// `load_manifest_or_compare`.
    pub(crate) fn installed(&self) -> Option<&Manifest> {
        self.installed.as_ref()
    }

    /// The plan `plan_online` or `plan_offline` resolved.
    pub(crate) fn plan(&self) -> &Plan {
        self.plan
            .as_ref()
            .expect("the command resolved its plan first")
    }

    fn plan_mut(&mut self) -> &mut Plan {
        self.plan
            .as_mut()
            .expect("the command resolved its plan first")
    }

    /// The plan is done with: its cache entry is marked used and the cache
    /// trimmed now (dropping the session does the same).
    pub(crate) fn finish_plan(&mut self) {
        if let Some(p) = self.plan.take() {
            p.store.finish();
        }
    }

    /// Installs `new` over the installed set with `moves` (the manifest is
    /// written last); the session then knows the new one.
    pub(crate) fn install(&mut self, new: Manifest, moves: Vec<(&str, Move)>) -> Result<Manifest> {
        let m = swap::install(&self.opts.output, self.installed.as_ref(), new, moves)?;
        self.installed = Some(m.clone());
        Ok(m)
    }
}
