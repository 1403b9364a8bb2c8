//! `cargo xtask resources cache list|path|prune`: what the download cache
//! holds, where it is, and trimming it.

use anyhow::{anyhow, Result};

use super::session::Session;
use super::Command;
use github::cache::{self, Cache, KEEP_BYTES, KEEP_ENTRIES};
use util::fmt::human_bytes;

/// `cargo xtask resources cache list|path|prune`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CacheCmd {
    List,
    Path,
    Prune {
        keep: Option<usize>,
        max_size: Option<u64>,
    },
}

impl Command for CacheCmd {
    fn run(self, s: &mut Session) -> Result<()> {
        let cmd = &self;
        let root = s.opts().cache.clone().ok_or_else(|| {
            anyhow!("no cache location: set VSWARM_CACHE_DIR, XDG_CACHE_HOME or HOME")
        })?;
        util::say::report("cache", serde_json::json!(root));
        if *cmd == CacheCmd::Path {
            out!("{}", root.display());
            return Ok(());
        }
        if !root.is_dir() {
            out!(
                "The cache {} is empty (nothing downloaded yet)",
                root.display()
            );
            return Ok(());
        }
        match cmd {
            // Listing writes nothing: a read-only cache is listed too.
            CacheCmd::List => list(&Cache::at(&root)),
            CacheCmd::Prune { keep, max_size } => {
                let cache = Cache::open(&root)?;
                let keep = keep.unwrap_or(KEEP_ENTRIES);
                let max = max_size.unwrap_or(KEEP_BYTES);
                let removed = cache.prune(keep, max, None)?;
                let gone: Vec<_> = removed.iter().map(entry_json).collect();
                util::say::report("removed", serde_json::json!(gone));
                for e in &removed {
                    out!(
                        "removed  {} {} ({}), {}",
                        e.repo,
                        e.tag,
                        e.site,
                        human_bytes(e.bytes)
                    );
                }
                let left: u64 = cache.list().iter().map(|e| e.bytes).sum();
                out!(
                    "Removed {} release(s); the cache holds {} in {}",
                    removed.len(),
                    human_bytes(left),
                    root.display()
                );
            }
            CacheCmd::Path => unreachable!("answered above"),
        }
        Ok(())
    }
}

fn list(cache: &Cache) {
    let entries = cache.list();
    let listed: Vec<_> = entries.iter().map(entry_json).collect();
    util::say::report("entries", serde_json::json!(listed));
    if entries.is_empty() {
        out!("The cache {} is empty", cache.root().display());
        return;
    }
    out!(
        "{:<32} {:<14} {:>10}  {:<14} source",
        "repository",
        "tag",
        "size",
        "last used"
    );
    for e in &entries {
        out!(
            "{:<32} {:<14} {:>10}  {:<14} {}",
            e.repo,
            e.tag,
            human_bytes(e.bytes),
            ago(cache::age(e.last_used)),
            e.site
        );
    }
    let total: u64 = entries.iter().map(|e| e.bytes).sum();
    out!(
        "{} release(s), {} in {}",
        entries.len(),
        human_bytes(total),
        cache.root().display()
    );
}

fn ago(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => "just now".into(),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86399 => format!("{} h ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}

/// An entry for `--json`.
fn entry_json(e: &cache::EntryInfo) -> serde_json::Value {
    let used = e
        .last_used
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    serde_json::json!({
        "repo": e.repo, "tag": e.tag, "site": e.site, "bytes": e.bytes,
        "last_used_unix": used, "path": e.dir,
    })
}
