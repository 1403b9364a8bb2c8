//! Where a plan's assets live and which release a request means when the
//! cache can answer it: the per-user cache entry of the release (locked
//! while a run uses it: shared to read what is complete, exclusive to fill
//! it), or, with `--no-cache` or a cache that cannot be used, the output's
//! working directory. A cached release JSON answers a pinned `--version`
//! with no network; `--offline` takes nothing else.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Result};

use super::Session;
use fetch::Http;
use github::assets::Selection;
use github::cache::{self, Cache, Entry, KEEP_BYTES, KEEP_ENTRIES};
use github::release::{parse_release, Asset, Resolved};
use github::source::RELEASE_JSON;
use util::fmt::human_bytes;
use util::fs as fsutil;
use util::lock::{Kind, Lock};
use util::text::clean;

impl Session {
    /// The cache a run may use: None with `--no-cache`, or (with one line
    /// saying why) when it cannot be used; `--offline` then fails instead.
    pub(super) fn open_cache(&self) -> Result<Option<Cache>> {
        let opts = &self.opts;
        if opts.source().is_dir() {
            // A mirror directory is local already; copying it helps no one.
            return Ok(None);
        }
        let Some(root) = &opts.cache else {
            if opts.offline {
                bail!("--offline needs the cache, and no cache location is set (VSWARM_CACHE_DIR, XDG_CACHE_HOME or HOME)");
            }
            return Ok(None);
        };
        match Cache::open(root) {
            Ok(c) => Ok(Some(c)),
            Err(e) if opts.offline => {
                Err(e.context("--offline needs the cache, which cannot be used"))
            }
            Err(e) => {
                note!(
                    "not using the download cache: {}",
                    clean(&format!("{e:#}"), 300)
                );
                Ok(None)
            }
        }
    }

    /// The cache's name for where releases come from.
    fn site(&self) -> String {
        let opts = &self.opts;
        match &opts.source {
            Some(url) if !opts.source().is_dir() => cache::site_of(url),
            _ => cache::site_of(&opts.api),
        }
    }

    /// The release `--version` means: from the cache when it holds it (a pinned
    /// tag; with `--offline` also `latest`, the newest cached), else from the
    /// source, stored in the cache for next time.
    pub(super) fn resolve(&self, http: &Http, cache: Option<&Cache>) -> Result<Resolved> {
        let opts = &self.opts;
        let source = opts.source();
        let Some(cache) = cache else {
            return source.resolve(http, &opts.repo, &opts.version);
        };
        let site = self.site();
        let (tag, note) = match opts.version.as_str() {
            "latest" if opts.offline => {
                let tag = cache.newest_tag(&site, &opts.repo).ok_or_else(|| {
                    anyhow!(
                    "--offline: the cache {} holds no release of {}; run once without --offline",
                    cache.root().display(),
                    opts.repo
                )
                })?;
                let note = format!("--offline: `latest` is {tag}, the newest release in the cache");
                (Some(tag), Some(note))
            }
            "latest" => (None, None),
            v => (Some(v.to_string()), None),
        };
        if let Some(tag) = tag.as_ref().filter(|_| !opts.force) {
            let entry = cache.entry(&site, &opts.repo, tag)?;
            if let Some(json) = entry.release_json() {
                let origin = entry.dir.join(RELEASE_JSON).display().to_string();
                // The cache's own copy is trusted, unless it is no longer a
                // release of that tag: then it is fetched again.
                match parse_release(json, &origin, note, Some(tag)) {
                    Ok(r) => return Ok(r),
                    Err(e) if opts.offline => {
                        return Err(e.context(format!(
                            "--offline: the cache's copy of release {tag} is damaged; run once \
                         without --offline to fetch it again"
                        )))
                    }
                    Err(e) => note!("{}; fetching it again", clean(&format!("{e:#}"), 300)),
                }
            } else if opts.offline {
                bail!(
                "--offline: release {tag} of {} is not in the cache {}; run once without --offline",
                opts.repo,
                cache.root().display()
            );
            }
        }
        source.resolve(http, &opts.repo, &opts.version)
    }

    /// The entry locked, or None (said in one line) when the cache cannot hold
    /// it (its file system full, say): the run goes on without the cache.
    /// Another run holding it with `--no-wait`, and anything with `--offline`,
    /// is an error.
    fn lock_or_skip(&self, entry: &Entry, kind: Kind) -> Result<Option<Lock>> {
        match entry.lock(kind, self.opts.wait) {
            Ok(lock) => Ok(Some(lock)),
            Err(e)
                if self.opts.offline
                    || matches!(util::Error::find(&e), Some(util::Error::Busy(_))) =>
            {
                Err(e)
            }
            Err(e) => {
                note!(
                    "not using the download cache: {}",
                    clean(&format!("{e:#}"), 300)
                );
                Ok(None)
            }
        }
    }

    /// The cache entry of `tag`, locked: shared when every asset of `sel`
    /// is ready there, else exclusive to fill it (a damaged kernel, client
    /// or sums file is deleted first). When the cache's file system lacks
    /// room for what is missing, the working directory. The release JSON is
    /// stored with the entry (the plan is valid).
    pub(super) fn cached_store(
        &self,
        cache: Cache,
        release_json: &str,
        tag: &str,
        sel: &Selection,
        work: &Path,
    ) -> Result<Store> {
        let opts = &self.opts;
        let entry = cache.entry(&self.site(), &opts.repo, tag)?;
        let Some(mut lock) = self.lock_or_skip(&entry, Kind::Shared)? else {
            return Ok(Store::work(work));
        };
        if !unready(&entry.dir, sel).is_empty() {
            drop(lock);
            let Some(l) = self.lock_or_skip(&entry, Kind::Exclusive)? else {
                return Ok(Store::work(work));
            };
            lock = l;
            let unready = unready(&entry.dir, sel);
            for a in [&sel.kernel, &sel.client, &sel.sums] {
                if unready.iter().any(|u| u.name == a.name) {
                    fetch::forget(&entry.dir.join(&a.name));
                }
            }
            let missing: u64 = unready.iter().map(|a| a.size).sum();
            let free = fsutil::available_space(&entry.dir).unwrap_or(0);
            if free < missing && !opts.offline {
                note!(
                    "not using the download cache: {} needs {} but only {} is free there",
                    entry.dir.display(),
                    human_bytes(missing),
                    human_bytes(free)
                );
                lock.remove();
                return Ok(Store::work(work));
            }
        }
        if entry.release_json().as_deref() != Some(release_json) {
            if let Err(e) = entry.store_release_json(release_json) {
                note!("not using the download cache: {e:#}");
                lock.remove();
                return Ok(Store::work(work));
            }
        }
        Ok(Store {
            dir: entry.dir.clone(),
            entry: Some((cache, entry)),
            lock: Some(lock),
        })
    }
}

/// The assets of `sel` not ready in the entry `dir` (see
/// `fetch::is_fetched`). The kernel, client and sums are small, and hashed
/// now, so that a damaged one is replaced before any step reads it; the
/// disk parts are checked as the unpacker reads them, and fetched again.
fn unready<'a>(dir: &Path, sel: &'a Selection) -> Vec<&'a Asset> {
    let small = [&sel.kernel.name, &sel.client.name, &sel.sums.name];
    sel.all()
        .filter(|a| {
            let sha = a.sha256().ok().flatten();
            !fetch::is_fetched(&dir.join(&a.name), a.size, sha, small.contains(&&a.name))
        })
        .collect()
}

/// Where a plan's assets are read from and downloaded to.
pub(crate) struct Store {
    pub(crate) dir: PathBuf,
    /// The cache entry, when the assets live in the cache.
    entry: Option<(Cache, Entry)>,
    lock: Option<Lock>,
}

impl Store {
    /// The working directory: assets live with the output (`--no-cache`).
    pub(super) fn work(work: &Path) -> Store {
        Store {
            dir: work.to_path_buf(),
            entry: None,
            lock: None,
        }
    }

    /// After a failure with a release JSON from the cache: it is dropped,
    /// so the next run asks the source again (the release may have changed).
    pub(crate) fn forget_release(&self) {
        if let Some((_, entry)) = &self.entry {
            entry.forget_release_json();
        }
    }

    pub(crate) fn is_cache(&self) -> bool {
        self.entry.is_some()
    }

    /// Takes the entry for writing (to fetch again what turned out bad).
    pub(super) fn exclusive(&mut self, wait: bool) -> Result<()> {
        if let Some((_, entry)) = &self.entry {
            self.lock = None;
            self.lock = Some(entry.lock(Kind::Exclusive, wait)?);
        }
        Ok(())
    }

    /// After a run: the entry was used now, and the cache is trimmed to the
    /// default policy (never this entry). Problems are notes. Dropping the
    /// store does the same, so that every step that used the cache keeps it
    /// bounded.
    pub(super) fn finish(mut self) {
        self.wrap_up();
    }

    fn wrap_up(&mut self) {
        let Some((cache, entry)) = self.entry.take() else {
            return;
        };
        if let Err(e) = entry.mark_used() {
            note!("cannot record the use of {}: {e:#}", entry.dir.display());
        }
        self.lock = None;
        match cache.prune(KEEP_ENTRIES, KEEP_BYTES, Some(&entry.dir)) {
            Ok(removed) => {
                for e in removed {
                    note!(
                        "removed {} {} ({}) from the cache, unused the longest",
                        e.repo,
                        e.tag,
                        human_bytes(e.bytes)
                    );
                }
            }
            Err(e) => note!("cannot trim the cache: {e:#}"),
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.wrap_up();
    }
}
