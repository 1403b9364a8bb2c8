//! The download engine: fetches a list of assets over several connections,
//! large ones as parallel Range segments scheduled in file order, into hidden
//! `.name.partial` files that survive interruption. Each asset is read back
//! through an [`AssetReader`] as soon as a contiguous prefix has arrived; the
//! reader hashes what it hands out and, at the end, checks size and digest and
//! only then renames the file to its final name.
#![warn(missing_docs)]

#[macro_use]
extern crate util;

mod http;
mod reader;
mod segments;
mod send;
mod state;
mod trust;
mod url;
mod worker;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;

use anyhow::{anyhow, Result};

use util::fmt::parse_sha256_hex;
use util::fs as fsutil;
use util::progress::{Progress, Style};
use util::text::Shown;

pub use http::{backoff, header, quota_spent, ApiResponse, Config, Failure, Http, Token};
pub use reader::AssetReader;
use state::{prepare, Inner, Shared};
pub use url::{check_strict, check_url, Checked};

/// Connections per host: more than 16 is impolite to a shared server.
pub const MAX_CONNECTIONS: usize = 16;
/// Measured (`cargo xtask bench --size large`, every connection capped at
/// 20 MB/s): 4 connections 11.0 s, 8 7.9 s, 16 6.8 s; uncapped on loopback
/// the three are alike. So the most a polite client uses.
pub const DEFAULT_CONNECTIONS: usize = 16;

/// Where an asset's bytes come from. Only a mirror directory the user named
/// gives `Local`; a URL string from a release or a redirect is never read
/// as a local path, whatever its scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A URL from a release (or a redirect).
    Url(String),
    /// A file in a mirror directory the user named.
    Local(PathBuf),
}

impl Origin {
    /// The host or directory, for messages.
    fn place(&self) -> String {
        match self {
            Origin::Url(u) => crate::url::authority(u),
            Origin::Local(p) => p.display().to_string(),
        }
    }
}

/// One asset to fetch.
#[derive(Clone, Debug)]
pub struct Wanted {
    /// The asset's name, said in messages.
    pub name: String,
    /// Where its bytes come from.
    pub from: Origin,
    /// Its size, as the release says.
    pub size: u64,
    /// From the release's `digest` field, when it has one.
    pub sha256: Option<[u8; 32]>,
    /// Final name; the download lives at `fsutil::partial_path(dest)` until checked.
    pub dest: PathBuf,
    /// Deleted as soon as the run has used it (disk parts in the full run):
    /// not forced to disk, since after a power loss the digest check on
    /// re-reading catches a part that did not survive.
    pub transient: bool,
}

/// Why a download failed. The app's exit code and its one retry read the
/// kind, never the text; [`Error::find`] finds it in an error chain.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The network or a server failed, after the retries (exit code 3).
    #[error("{0}")]
    Network(String),
    /// Something on this side: a file that cannot be written, a worker that
    /// stopped, a run stopped after another failure.
    #[error("{0}")]
    Local(String),
    /// `asset` did not match the release's digest, and its file is deleted:
    /// fetching it once more may help (the full run does, once).
    #[error("{msg}")]
    DigestMismatch {
        /// The asset's name.
        asset: String,
        /// Both digests, and what to do.
        msg: String,
    },
}

impl Error {
    /// The first [`Error`] in `e`'s chain, inside `io::Error`s too (an
    /// [`AssetReader`] can only fail with one).
    pub fn find(e: &anyhow::Error) -> Option<&Error> {
        util::find_in_chain(e)
    }

    /// The asset of a [`Error::DigestMismatch`].
    pub fn mismatched_asset(&self) -> Option<&str> {
        match self {
            Error::DigestMismatch { asset, .. } => Some(asset),
            _ => None,
        }
    }
}

/// Bytes received from the network by this process (asset bodies and API
/// answers), for `--json`.
static RECEIVED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
/// Assets of which this process received bytes.
static FETCHED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

pub(crate) fn count_received(n: u64) {
    RECEIVED.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
}

fn count_asset(name: &str, n: u64) {
    count_received(n);
    let mut f = FETCHED.lock().unwrap_or_else(|e| e.into_inner());
    if !f.iter().any(|x| x == name) {
        f.push(name.to_string());
    }
}

/// Bytes this process received from the network.
pub fn received() -> u64 {
    RECEIVED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether this process fetched bytes of asset `name` (else it came whole
/// from the cache or the working directory).
pub fn fetched(name: &str) -> bool {
    FETCHED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .any(|x| x == name)
}

/// A failure of the network or of a server's answer (exit code 3).
pub fn network(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Error::Network(msg.into()))
}

/// Where the sha256 of an asset the release gives no digest for is kept
/// once it is downloaded (`.NAME.sha256` beside it): a later run that finds
/// the file checks it against this, so changed bytes are never used. A
/// file without its seal is fetched again.
pub(crate) fn seal_path(dest: &Path) -> PathBuf {
    let name = dest.file_name().unwrap_or_default().to_string_lossy();
    dest.with_file_name(format!(".{name}.sha256"))
}

/// The sha256 a finished download without a release digest was sealed
/// with, if it has a valid seal.
fn sealed(dest: &Path) -> Option<[u8; 32]> {
    let text = fsutil::read_small(&seal_path(dest), 100).ok()?;
    parse_sha256_hex(text.trim())
}

/// Whether `dest` holds the finished download of an asset of `size` bytes
/// that can be checked with no network: a regular file of that size, with
/// the release's `sha256` or its seal to check it against. With `hash`, its
/// bytes are hashed now and must match.
pub fn is_fetched(dest: &Path, size: u64, sha256: Option<[u8; 32]>, hash: bool) -> bool {
    let fits = std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_file() && m.len() == size);
    let Some(want) = sha256.or_else(|| sealed(dest)) else {
        return false;
    };
    fits && (!hash || fsutil::sha256_file(dest).is_ok_and(|got| got == want))
}

/// Bytes of an asset of `size` already on disk for `dest`, without
/// touching anything: the finished file, or what its partial file holds (by
/// its segment record, for a download in segments). What a failed run
/// leaves, and what a re-run need not fetch again.
pub fn downloaded(dest: &Path, size: u64) -> u64 {
    let len = |p: &Path| {
        std::fs::symlink_metadata(p)
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len())
    };
    if len(dest) == Some(size) {
        return size;
    }
    let partial = fsutil::partial_path(dest);
    let Some(have) = len(&partial) else { return 0 };
    let seg = segments::segment_size(size);
    if size <= seg {
        // One stream: the file is the prefix fetched so far.
        return if have <= size { have } else { 0 };
    }
    if have != size {
        return 0;
    }
    let done: std::collections::BTreeSet<usize> =
        segments::read_segs(&state::segs_path(&partial), size)
            .into_iter()
            .collect();
    done.into_iter()
        .filter_map(|i| {
            let start = (i as u64).checked_mul(seg)?;
            (start < size).then(|| (start + seg).min(size) - start)
        })
        .sum::<u64>()
        .min(size)
}

/// Deletes a downloaded asset and everything kept about it (its partial
/// file, segment record and seal), so the next run fetches it anew.
pub fn forget(dest: &Path) {
    let partial = fsutil::partial_path(dest);
    let segs = state::segs_path(&partial);
    for p in [dest, &partial, &segs, &seal_path(dest)] {
        let _ = std::fs::remove_file(p);
    }
}

/// Downloads in flight. Dropping it aborts what is left.
pub struct Downloads {
    shared: Arc<Shared>,
    workers: Vec<thread::JoinHandle<()>>,
}

/// Starts `connections` workers on `wanted`. Assets whose final file already
/// exists with the right size are not fetched again (their reader re-checks
/// the digest); `--force` is the caller's: it deletes them first.
pub fn start(
    http: Http,
    wanted: Vec<Wanted>,
    connections: usize,
    what: &str,
    style: Style,
) -> Result<Downloads> {
    let mut assets = Vec::with_capacity(wanted.len());
    let mut have = 0u64;
    let mut total = 0u64;
    for wanted in &wanted {
        total = total.checked_add(wanted.size).ok_or_else(|| {
            anyhow!(
                "asset {}: the sizes of the assets add up past 2^64 bytes; the release is bogus",
                Shown(&wanted.name)
            )
        })?;
    }
    for wanted in wanted {
        let a = prepare(wanted)?;
        have += a.written_bytes();
        assets.push(a);
    }
    // All of it must fit before the first byte is fetched.
    if let Some(first) = assets.first() {
        let dir = first.partial.parent().unwrap_or(Path::new("."));
        fsutil::ensure_space(dir, total - have.min(total), "the download")?;
    }
    let progress = Progress::new(what, total, have, style);
    for a in assets.iter().filter(|a| a.mode != state::Mode::Cached) {
        if a.written_bytes() > 0 {
            progress.resume_item(&a.wanted.name, a.wanted.size, a.written_bytes());
        }
    }
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            assets,
            abort: None,
        }),
        changed: Condvar::new(),
        http,
        progress,
        record: Mutex::new(()),
    });
    let workers = (0..connections.max(1))
        .map(|i| {
            let s = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("download-{i}"))
                .spawn(move || {
                    let run = std::panic::AssertUnwindSafe(|| worker::worker(&s));
                    if std::panic::catch_unwind(run).is_err() {
                        // A reader must not wait forever on a worker that died.
                        s.abort_all(Error::Local(
                            "internal error: a download worker stopped; run again".into(),
                        ));
                    }
                })
                .expect("spawn download worker")
        })
        .collect();
    Ok(Downloads { shared, workers })
}

impl Downloads {
    /// A reader of asset `index` (in the order given to [`start`]).
    pub fn reader(&self, index: usize) -> AssetReader {
        AssetReader::new(Arc::clone(&self.shared), index)
    }

    /// Reads every asset to its end (checking and committing it) on the
    /// calling thread and its helpers, then waits for the workers.
    pub fn finish_all(self) -> Result<()> {
        let count = self.shared.lock().assets.len();
        let results: Vec<Result<()>> = thread::scope(|s| {
            let handles: Vec<_> = (0..count)
                .map(|i| {
                    let mut r = self.reader(i);
                    s.spawn(move || -> Result<()> {
                        io::copy(&mut r, &mut io::sink()).map_err(anyhow::Error::from)?;
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("a check thread panicked")))
                })
                .collect()
        });
        // A reader's own error (a digest mismatch, say) says more than the
        // abort it caused.
        let first_err = results.into_iter().find_map(Result::err);
        let waited = self.wait();
        match first_err {
            Some(e) => Err(e),
            None => waited,
        }
    }

    /// Waits for the workers; the first failure, if any.
    pub fn wait(mut self) -> Result<()> {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.shared.progress.finish();
        let g = self.shared.lock();
        match &g.abort {
            Some(e) => Err(anyhow::Error::new(e.clone())),
            None => Ok(()),
        }
    }

    /// Stops the workers (used when a consumer failed).
    pub fn abort(&self, why: &str) {
        let mut g = self.shared.lock();
        if g.abort.is_none() {
            g.abort = Some(Error::Local(why.into()));
        }
        drop(g);
        self.shared.changed.notify_all();
    }
}

impl Drop for Downloads {
    fn drop(&mut self) {
        if !self.workers.is_empty() {
            self.abort("stopped");
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}
