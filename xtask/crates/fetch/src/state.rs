//! The engine's shared state: per asset, its partial file, mode (cached,
//! one stream, probing ranges, ranged) and segments; opening or resuming an
//! asset's partial file; failures and the abort that stops every worker.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use anyhow::{Context, Result};

use util::fs as fsutil;
use util::progress::Progress;

use super::http::Http;
use super::segments::{read_segs, segment_size};
use super::{Error, Wanted};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum SegState {
    Pending,
    InFlight,
    Done,
}

#[derive(Debug)]
pub(super) struct Seg {
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) written: u64,
    pub(super) state: SegState,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// The final file exists from an earlier run; the reader re-checks it.
    Cached,
    /// One stream; resumes from the partial file's length.
    Single,
    /// Segments; the first request tells whether the server honours ranges.
    Probe,
    Ranged,
}

pub(super) struct AssetState {
    pub(super) wanted: Wanted,
    pub(super) partial: PathBuf,
    pub(super) segs_path: PathBuf,
    pub(super) file: Option<Arc<File>>,
    pub(super) mode: Mode,
    pub(super) segs: Vec<Seg>,
    pub(super) error: Option<Error>,
}

impl AssetState {
    /// Bytes from the start of the file that are written.
    pub(super) fn contiguous(&self) -> u64 {
        if self.mode == Mode::Cached {
            return self.wanted.size;
        }
        let mut n = 0;
        for s in &self.segs {
            if s.state == SegState::Done {
                n = s.end;
            } else {
                return s.start + s.written;
            }
        }
        n
    }

    /// Bytes already in the file, wherever they are.
    pub(super) fn written_bytes(&self) -> u64 {
        if self.mode == Mode::Cached {
            return self.wanted.size;
        }
        self.segs.iter().map(|s| s.written).sum()
    }

    pub(super) fn complete(&self) -> bool {
        self.mode == Mode::Cached || self.segs.iter().all(|s| s.state == SegState::Done)
    }
}

pub(super) struct Inner {
    pub(super) assets: Vec<AssetState>,
    pub(super) abort: Option<Error>,
}

pub(super) struct Shared {
    pub(super) inner: Mutex<Inner>,
    pub(super) changed: Condvar,
    pub(super) http: Http,
    pub(super) progress: Progress,
    /// One writer of `.segs` records at a time.
    pub(super) record: Mutex<()>,
}

impl Shared {
    /// Stops every worker and wakes every reader, with `msg` unless a
    /// failure came first.
    pub(super) fn abort_all(&self, why: Error) {
        let mut g = self.lock();
        if g.abort.is_none() {
            g.abort = Some(why);
        }
        drop(g);
        self.changed.notify_all();
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn fail(&self, asset: usize, why: Error) {
        let mut g = self.lock();
        if g.assets[asset].error.is_none() {
            g.assets[asset].error = Some(why.clone());
        }
        if g.abort.is_none() {
            g.abort = Some(why);
        }
        drop(g);
        self.changed.notify_all();
    }
}

/// The record of finished segments beside a partial file.
pub(super) fn segs_path(partial: &std::path::Path) -> PathBuf {
    partial.with_file_name(format!(
        "{}.segs",
        partial.file_name().unwrap_or_default().to_string_lossy()
    ))
}

/// Opens or resumes the partial file of one asset.
pub(super) fn prepare(mut wanted: Wanted) -> Result<AssetState> {
    let partial = fsutil::partial_path(&wanted.dest);
    let segs_path = segs_path(&partial);
    if let Some(dir) = wanted.dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A link at a name we own is junk, never something to read or write through.
    let seal = super::seal_path(&wanted.dest);
    for p in [&wanted.dest, &partial, &segs_path, &seal] {
        fsutil::clear_non_regular(p).with_context(|| format!("cannot clear {}", p.display()))?;
    }
    let cached = finished(&mut wanted);
    let mut state = AssetState {
        wanted,
        partial,
        segs_path,
        file: None,
        mode: Mode::Cached,
        segs: Vec::new(),
        error: None,
    };
    if cached {
        return Ok(state);
    }
    let file = fsutil::open_or_create(&state.partial)
        .with_context(|| format!("cannot open {}", state.partial.display()))?;
    let (mode, segs) = if state.wanted.size <= segment_size(state.wanted.size) {
        (Mode::Single, vec![one_stream(&file, state.wanted.size)?])
    } else {
        (
            Mode::Probe,
            segments(&file, state.wanted.size, &state.segs_path)?,
        )
    };
    state.file = Some(Arc::new(file));
    state.mode = mode;
    state.segs = segs;
    Ok(state)
}

/// Whether the final file of `wanted` is there from an earlier run, of its
/// size and with a digest to check it against (the release's, or else its
/// seal, which it takes). Without either it can not be checked: it goes.
fn finished(wanted: &mut Wanted) -> bool {
    let Ok(meta) = fs::symlink_metadata(&wanted.dest) else {
        return false;
    };
    if wanted.sha256.is_none() {
        wanted.sha256 = super::sealed(&wanted.dest);
        if wanted.sha256.is_none() {
            let _ = fs::remove_file(&wanted.dest);
        }
    }
    meta.is_file() && meta.len() == wanted.size && wanted.sha256.is_some()
}

/// One stream, resumed from where the partial file ends.
fn one_stream(file: &File, size: u64) -> Result<Seg> {
    let len = file.metadata()?.len();
    let written = if len > size {
        file.set_len(0)?;
        0
    } else {
        len
    };
    let state = if written == size {
        SegState::Done
    } else {
        SegState::Pending
    };
    Ok(Seg {
        start: 0,
        end: size,
        written,
        state,
    })
}

/// The segments of an asset of `size` bytes, those the `.segs` record at
/// `segs_path` lists done; with no record of what the file holds, it
/// starts over.
fn segments(file: &File, size: u64, segs_path: &Path) -> Result<Vec<Seg>> {
    let len = file.metadata()?.len();
    let seg = segment_size(size);
    let mut segs: Vec<Seg> = (0..size.div_ceil(seg))
        .map(|i| Seg {
            start: i * seg,
            end: ((i + 1) * seg).min(size),
            written: 0,
            state: SegState::Pending,
        })
        .collect();
    let done = read_segs(segs_path, size);
    if len == size && !done.is_empty() {
        for i in done {
            if let Some(s) = segs.get_mut(i) {
                s.state = SegState::Done;
                s.written = s.end - s.start;
            }
        }
    } else {
        file.set_len(0)?;
        file.set_len(size)?;
        let _ = fs::remove_file(segs_path);
    }
    Ok(segs)
}
