//! The per-user download cache: downloaded release JSON and assets, exactly
//! as published, in the layout `mirror` writes (`SITE/OWNER/NAME/` is a
//! mirror directory: `<tag>/release.json`, `<tag>/<asset>`), so one reader
//! serves both. An entry (one tag) is filled under an exclusive lock and
//! read under a shared one; pruning removes the least recently used entries
//! that no run holds. The cache only ever holds copies: installed files are
//! never linked to it.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use super::release::check_tag;
use super::source::{MAX_JSON, RELEASE_JSON};
use util::fs as fsutil;
use util::lock::{self, How, Kind, Lock};

/// Each entry's time of last use is this file's modification time.
const USED: &str = ".used";
/// What the default policy keeps after a run: the most recently used
/// entries, at most this many and this many bytes in all (the entry just
/// used always stays).
pub const KEEP_ENTRIES: usize = 3;
/// … and at most this many bytes in all (see [`KEEP_ENTRIES`]).
pub const KEEP_BYTES: u64 = 20 << 30;

/// The download cache (`$VSWARM_CACHE_DIR`): one entry a release, locked while used.
pub struct Cache {
    root: PathBuf,
}

/// One release's directory in the cache.
pub struct Entry {
    /// The entry's directory.
    pub dir: PathBuf,
    /// `OWNER/NAME TAG (SITE)`, for messages.
    pub label: String,
    /// The cache's root: the directories below it are the tool's own.
    root: PathBuf,
}

/// What `cache list` shows of an entry.
pub struct EntryInfo {
    /// The entry's directory.
    pub dir: PathBuf,
    /// The site the release came from.
    pub site: String,
    /// The repository, `owner/name`.
    pub repo: String,
    /// The release tag.
    pub tag: String,
    /// Bytes the entry holds.
    pub bytes: u64,
    /// When a run last used it (pruning drops the oldest first).
    pub last_used: SystemTime,
}

impl Cache {
    /// The cache at `root`, made if missing; an error says why it cannot be
    /// used (not a directory, not writable, a read-only file system).
    pub fn open(root: &Path) -> Result<Cache> {
        fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
        let probe = root.join(format!(".probe-{}", std::process::id()));
        fsutil::create_fresh(&probe)
            .and_then(|_| fs::remove_file(&probe))
            .with_context(|| format!("cannot write in {}", root.display()))?;
        Ok(Cache {
            root: root.to_path_buf(),
        })
    }

    /// The cache at `root` as it is, to read (`cache list`).
    pub fn at(root: &Path) -> Cache {
        Cache {
            root: root.to_path_buf(),
        }
    }

    /// The cache's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The mirror directory of `repo` as served by `site` (see [`site_of`]).
    fn repo_dir(&self, site: &str, repo: &str) -> PathBuf {
        let mut p = self.root.join(site);
        for part in repo.split('/') {
            p.push(part);
        }
        p
    }

    /// The entry of `tag` (already checked by `check_tag`).
    pub fn entry(&self, site: &str, repo: &str, tag: &str) -> Result<Entry> {
        check_tag(tag)?;
        Ok(Entry {
            dir: self.repo_dir(site, repo).join(tag),
            label: format!("{repo} {tag} ({site})"),
            root: self.root.clone(),
        })
    }

    /// The newest release of `repo` from `site` in the cache (`latest` with
    /// `--offline`); none when a link stands on the way.
    pub fn newest_tag(&self, site: &str, repo: &str) -> Option<String> {
        let dir = self.repo_dir(site, repo);
        real_dirs(&self.root, &dir).then(|| newest_tag(&dir))?
    }

    /// Every entry, most recently used first. Links are never followed.
    pub fn list(&self) -> Vec<EntryInfo> {
        let mut out = Vec::new();
        for site in subdirs(&self.root) {
            for owner in subdirs(&site) {
                for name in subdirs(&owner) {
                    for tag in subdirs(&name) {
                        out.push(info(&self.root, &tag));
                    }
                }
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.last_used));
        out
    }

    /// Removes least recently used entries beyond `keep` entries or
    /// `max_bytes` in all, never `except` and never one a run holds. The
    /// entries removed.
    pub fn prune(
        &self,
        keep: usize,
        max_bytes: u64,
        except: Option<&Path>,
    ) -> Result<Vec<EntryInfo>> {
        let entries = self.list();
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut removed = Vec::new();
        // Least recently used first: those beyond `keep`, then any while
        // the whole is over `max_bytes`.
        for (i, e) in entries.into_iter().enumerate().rev() {
            if i < keep && total <= max_bytes || except.is_some_and(|x| x == e.dir) {
                continue;
            }
            // A run reading or filling it holds a lock: leave it be.
            let how = How {
                kind: Kind::Exclusive,
                what: "",
                wait: false,
                own: false,
            };
            let Ok(held) = lock::lock(&e.dir, &how) else {
                continue;
            };
            fs::remove_dir_all(&e.dir)
                .with_context(|| format!("cannot remove {}", e.dir.display()))?;
            drop(held);
            total = total.saturating_sub(e.bytes);
            removed.push(e);
        }
        Ok(removed)
    }
}

impl Entry {
    /// Locks the entry (made if missing): `Exclusive` to fill it, `Shared`
    /// to read what is complete.
    pub fn lock(&self, kind: Kind, wait: bool) -> Result<Lock> {
        // A link planted on the way down is junk, replaced by a directory.
        let mut dir = self.root.clone();
        let rel = self.dir.strip_prefix(&self.root).unwrap_or(Path::new(""));
        for part in rel.parent().into_iter().flat_map(Path::components) {
            dir.push(part);
            fsutil::ensure_own_dir(&dir)?;
        }
        let what = format!("the cache entry {}", self.label);
        let how = How {
            kind,
            what: &what,
            wait,
            own: true,
        };
        lock::lock(&self.dir, &how)
    }

    /// The release JSON stored with the entry, if any (never read through
    /// a link at the entry or above it).
    pub fn release_json(&self) -> Option<String> {
        if !real_dirs(&self.root, &self.dir) {
            return None;
        }
        fsutil::read_small(&self.dir.join(RELEASE_JSON), MAX_JSON).ok()
    }

    /// Keeps the release's JSON in the entry, so `--offline` can resolve it.
    pub fn store_release_json(&self, json: &str) -> Result<()> {
        fsutil::ensure_own_dir(&self.dir)?;
        // Runs reading the entry may store it at once: each writes a
        // temporary of its own, and the rename is atomic.
        let mine = self
            .dir
            .join(format!(".{RELEASE_JSON}.{}", std::process::id()));
        fsutil::write_small(&mine, json.as_bytes())?;
        fsutil::rename_durable(&mine, &self.dir.join(RELEASE_JSON))
    }

    /// Forgets the kept release JSON (the release may have changed).
    pub fn forget_release_json(&self) {
        let _ = fs::remove_file(self.dir.join(RELEASE_JSON));
    }

    /// Records that a run used the entry now.
    pub fn mark_used(&self) -> Result<()> {
        // Touched in place: runs reading the entry may finish at once.
        let path = self.dir.join(USED);
        fsutil::open_or_create(&path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .with_context(|| format!("cannot touch {}", path.display()))
    }
}

/// The cache's name for where releases come from: the API's (or mirror's)
/// host and port, and a mirror's path, as one directory name. Anything
/// outside `[a-z0-9.-]` is replaced, and then a hash of the whole keeps two
/// sources apart.
pub fn site_of(base_url: &str) -> String {
    let rest = base_url
        .split_once("://")
        .map_or(base_url, |(_, r)| r)
        .trim_end_matches('/')
        .to_ascii_lowercase();
    let clean: String = rest
        .chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean == rest && !clean.starts_with('.') {
        return clean;
    }
    let h = util::fmt::hex(&<sha2::Sha256 as sha2::Digest>::digest(base_url.as_bytes()));
    format!("{}-{}", clean.trim_start_matches('.'), &h[..12])
}

/// Whether `dir` and every directory between `root` and it are directories,
/// not links.
fn real_dirs(root: &Path, dir: &Path) -> bool {
    let Ok(rel) = dir.strip_prefix(root) else {
        return false;
    };
    let mut p = root.to_path_buf();
    rel.components().all(|c| {
        p.push(c);
        fs::symlink_metadata(&p).is_ok_and(|m| m.is_dir())
    })
}

/// Directories directly in `dir`, skipping links and hidden names.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect()
}

fn info(root: &Path, dir: &Path) -> EntryInfo {
    let rel: Vec<String> = dir
        .strip_prefix(root)
        .unwrap_or(dir)
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let part = |i: usize| rel.get(i).cloned().unwrap_or_default();
    let bytes = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0);
    let last_used = fs::symlink_metadata(dir.join(USED))
        .or_else(|_| fs::symlink_metadata(dir))
        .and_then(|m| m.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    EntryInfo {
        dir: dir.to_path_buf(),
        site: part(0),
        repo: format!("{}/{}", part(1), part(2)),
        tag: part(3),
        bytes,
        last_used,
    }
}

/// The newest release in a mirror directory (`latest` with `--offline`):
/// by publication time, then by tag.
fn newest_tag(repo_dir: &Path) -> Option<String> {
    let mut best: Option<(String, String)> = None;
    for dir in subdirs(repo_dir) {
        let Ok(json) = fsutil::read_small(&dir.join(RELEASE_JSON), MAX_JSON) else {
            continue;
        };
        let Ok(r) = serde_json::from_str::<super::release::Release>(&json) else {
            continue;
        };
        let tag = dir.file_name()?.to_string_lossy().into_owned();
        if r.tag_name != tag || check_tag(&tag).is_err() {
            continue;
        }
        let key = (r.published_at.unwrap_or_default(), tag);
        if best.as_ref().is_none_or(|b| key > *b) {
            best = Some(key);
        }
    }
    best.map(|(_, tag)| tag)
}

/// How long ago `t` was, for `cache list`.
pub fn age(t: SystemTime) -> Duration {
    SystemTime::now().duration_since(t).unwrap_or_default()
}
