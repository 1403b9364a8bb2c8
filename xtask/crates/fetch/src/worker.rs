//! The connections: each worker takes the first pending segment in file
//! order, fetches it with retries (over HTTP, or from a mirror directory)
//! and writes it into the asset's partial file, publishing progress.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use util::fs as fsutil;
use util::text::Shown;

use super::http::{backoff, retry_line, Failure};
use super::segments::write_record;
use super::state::{Inner, Mode, Seg, SegState, Shared};
use super::{Origin, Wanted};

pub(super) const TRIES: u32 = 6;
pub(super) const BUF: usize = 256 << 10;

pub(super) struct Task {
    asset: usize,
    seg: usize,
}

pub(super) fn worker(shared: &Shared) {
    loop {
        let task = {
            let mut g = shared.lock();
            loop {
                if g.abort.is_some() {
                    return;
                }
                match pick(&mut g) {
                    Pick::Task(t) => break t,
                    Pick::Wait => {
                        g = shared.changed.wait(g).unwrap_or_else(|e| e.into_inner());
                    }
                    Pick::Finished => return,
                }
            }
        };
        let asset = task.asset;
        match Fetch::new(shared, task).run() {
            Ok(()) => {}
            // Another asset failed first; its message is the one to report.
            Err(Stop::Aborted) => return,
            Err(Stop::Failed(msg)) => {
                shared.fail(asset, super::Error::Network(msg));
                return;
            }
        }
    }
}

pub(super) enum Pick {
    Task(Task),
    Wait,
    Finished,
}

/// The first pending segment in file order; segments after a range probe
/// wait until the probe has answered.
pub(super) fn pick(g: &mut Inner) -> Pick {
    let mut waiting = false;
    for (ai, a) in g.assets.iter_mut().enumerate() {
        if a.mode == Mode::Cached || a.error.is_some() {
            continue;
        }
        if a.mode == Mode::Probe && a.segs.iter().any(|s| s.state == SegState::InFlight) {
            waiting = true;
            continue;
        }
        if let Some(si) = a.segs.iter().position(|s| s.state == SegState::Pending) {
            a.segs[si].state = SegState::InFlight;
            return Pick::Task(Task { asset: ai, seg: si });
        }
        if !a.complete() {
            waiting = true;
        }
    }
    if waiting {
        Pick::Wait
    } else {
        Pick::Finished
    }
}

/// Why a fetch ended early.
pub(super) enum Stop {
    /// The run is stopping because of an error elsewhere.
    Aborted,
    /// This asset failed: the message for the user.
    Failed(String),
}

/// One segment being fetched: the asset's state copied out of the lock,
/// and where the transfer is.
struct Fetch<'s> {
    shared: &'s Shared,
    task: Task,
    wanted: Wanted,
    file: Arc<File>,
    mode: Mode,
    segs_path: PathBuf,
    /// The segment's first byte (a whole-file fallback resets it to 0).
    start: u64,
    /// The next byte to fetch, and the end of the range.
    pos: u64,
    end: u64,
}

impl<'s> Fetch<'s> {
    fn new(shared: &'s Shared, task: Task) -> Fetch<'s> {
        let g = shared.lock();
        let a = &g.assets[task.asset];
        let s = &a.segs[task.seg];
        Fetch {
            shared,
            wanted: a.wanted.clone(),
            file: Arc::clone(a.file.as_ref().expect("non-cached asset has a file")),
            mode: a.mode,
            segs_path: a.segs_path.clone(),
            start: s.start,
            pos: s.start + s.written,
            end: s.end,
            task,
        }
    }

    fn aborted(&self) -> bool {
        self.shared.lock().abort.is_some()
    }

    /// Fetches the segment with retries, then records it done.
    fn run(mut self) -> std::result::Result<(), Stop> {
        let mut tries = 0;
        loop {
            if self.aborted() {
                return Err(Stop::Aborted);
            }
            let before = self.pos;
            match self.stream() {
                Ok(()) => break,
                Err(Failure::Fatal(_)) if self.aborted() => return Err(Stop::Aborted),
                Err(Failure::Fatal(m)) => {
                    return Err(Stop::Failed(format!(
                        "asset {}: {m}",
                        Shown(&self.wanted.name)
                    )))
                }
                Err(Failure::Transient(m)) => {
                    // Whole-file fallback may have reset the segment.
                    self.start =
                        self.shared.lock().assets[self.task.asset].segs[self.task.seg].start;
                    if self.pos > before {
                        tries = 0;
                    }
                    tries += 1;
                    self.wait_to_retry(tries, &m)?;
                }
            }
        }
        self.record()?;
        let mut g = self.shared.lock();
        let s = &mut g.assets[self.task.asset].segs[self.task.seg];
        s.state = SegState::Done;
        s.written = s.end - s.start;
        drop(g);
        self.shared.changed.notify_all();
        Ok(())
    }

    /// Says the retry and waits before it; gives up after [`TRIES`].
    fn wait_to_retry(&self, tries: u32, why: &str) -> std::result::Result<(), Stop> {
        let name = &self.wanted.name;
        if tries >= TRIES {
            return Err(Stop::Failed(format!(
                "asset {}: giving up after {TRIES} tries: {why}{}; re-run to resume from \
                 what was downloaded",
                Shown(name),
                self.shared.http.hint()
            )));
        }
        let wait = backoff(tries);
        self.shared
            .progress
            .say(&retry_line(name, wait, tries + 1, TRIES, why));
        thread::sleep(wait);
        Ok(())
    }

    /// For a download in segments, the `.segs` record with this segment in
    /// it; a durable record may only claim what is on disk.
    fn record(&self) -> std::result::Result<(), Stop> {
        let ranged = self.shared.lock().assets[self.task.asset].mode == Mode::Ranged;
        if !ranged {
            return Ok(());
        }
        let wanted = &self.wanted;
        let synced = if wanted.transient {
            Ok(())
        } else {
            self.file.sync_data()
        };
        let recorded = synced.and_then(|()| {
            let _one_writer = self.shared.record.lock().unwrap_or_else(|e| e.into_inner());
            let mut done: Vec<usize> = {
                let g = self.shared.lock();
                let a = &g.assets[self.task.asset];
                (0..a.segs.len())
                    .filter(|&i| a.segs[i].state == SegState::Done)
                    .collect()
            };
            done.push(self.task.seg);
            write_record(&self.segs_path, wanted.size, &done, !wanted.transient)
        });
        recorded.map_err(|e| {
            Stop::Failed(format!(
                "cannot record progress in {}: {e}",
                self.segs_path.display()
            ))
        })
    }

    /// One request: from `pos` to `end`, writing into the file and
    /// publishing progress. Returns when the range is complete.
    fn stream(&mut self) -> std::result::Result<(), Failure> {
        let mut body = match &self.wanted.from {
            Origin::Local(path) => open_local(path, &self.wanted, self.pos)?,
            Origin::Url(url) => {
                let url = url.clone();
                self.open_http(&url)?
            }
        };
        let mut buf = vec![0u8; BUF];
        while self.pos < self.end {
            if self.aborted() {
                // The caller sees the abort and stops without blaming this asset.
                return Err(Failure::Fatal(String::new()));
            }
            let want = ((self.end - self.pos) as usize).min(BUF);
            let n = match body.read(&mut buf[..want]) {
                Ok(0) => return Err(self.broken("connection closed")),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.broken(&util::text::clean(&e.to_string(), 200))),
            };
            self.write(&buf[..n])?;
        }
        Ok(())
    }

    /// A transfer that broke off at `pos`, to be retried.
    fn broken(&self, why: &str) -> Failure {
        Failure::Transient(format!(
            "{}: {why} at byte {} of {}",
            self.wanted.from.place(),
            self.pos,
            self.wanted.size
        ))
    }

    /// Writes `data` at `pos` and publishes it.
    fn write(&mut self, data: &[u8]) -> std::result::Result<(), Failure> {
        let wanted = &self.wanted;
        let n = data.len() as u64;
        self.file.write_all_at(data, self.pos).map_err(|e| {
            Failure::Fatal(format!(
                "cannot write {}: {e}",
                fsutil::partial_path(&wanted.dest).display()
            ))
        })?;
        self.pos += n;
        if matches!(wanted.from, Origin::Url(_)) {
            super::count_asset(&wanted.name, n);
        }
        {
            let mut g = self.shared.lock();
            let s = &mut g.assets[self.task.asset].segs[self.task.seg];
            s.written = self.pos - s.start;
        }
        self.shared.changed.notify_all();
        self.shared.progress.advance(&wanted.name, wanted.size, n);
        Ok(())
    }
}

/// Reads an asset from a local mirror directory: ranges are free. Only a
/// regular file will do (a FIFO would hang the run).
pub(super) fn open_local(
    path: &Path,
    wanted: &Wanted,
    pos: u64,
) -> std::result::Result<Box<dyn Read>, Failure> {
    let mut f = fsutil::open_input(path)
        .map_err(|e| Failure::Fatal(format!("cannot open {}: {e}", path.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len != wanted.size {
        return Err(Failure::Fatal(format!(
            "{} is {len} bytes but the release says {}; the mirror is incomplete, \
             run `cargo xtask resources mirror` again",
            path.display(),
            wanted.size
        )));
    }
    io::Seek::seek(&mut f, io::SeekFrom::Start(pos))
        .map_err(|e| Failure::Fatal(format!("cannot read {}: {e}", path.display())))?;
    Ok(Box::new(f))
}

impl Fetch<'_> {
    /// Sends the request for `pos..end` and checks the answer; a server
    /// that ignores ranges switches the asset to one whole-file stream.
    fn open_http(&mut self, url: &str) -> std::result::Result<Box<dyn Read>, Failure> {
        let size = self.wanted.size;
        let whole_from_zero = self.pos == 0 && self.start == 0 && self.end == size;
        let range = if whole_from_zero && self.mode == Mode::Single {
            None
        } else {
            Some((self.pos, self.end - 1))
        };
        let what = format!("asset {}", Shown(&self.wanted.name));
        let resp = self.shared.http.asset_get(url, range, &what)?;
        if resp.status().as_u16() == 206 {
            let cr = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            self.check_range(url, cr)?;
        } else {
            // 200: the whole file from byte 0, whatever we asked for.
            let len = resp
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(len) = len.filter(|&len| len != size) {
                return Err(Failure::Fatal(format!(
                    "{} is {len} bytes but the release says {size}; the release is inconsistent, \
                     try again later or choose another --version",
                    Shown(url),
                )));
            }
            if !whole_from_zero {
                self.go_whole(url).map_err(Failure::Fatal)?;
                self.pos = 0;
                self.end = size;
            }
        }
        Ok(Box::new(resp.into_body().into_reader()))
    }

    /// A 206 answer's `Content-Range` must start where we asked and give
    /// the release's size; the first one settles that the server honours
    /// ranges.
    fn check_range(&self, url: &str, cr: &str) -> std::result::Result<(), Failure> {
        match parse_content_range(cr) {
            Some((a, _, total)) if a == self.pos && total.is_none_or(|t| t == self.wanted.size) => {
            }
            _ => {
                return Err(Failure::Fatal(format!(
                    "{} answered a range request for bytes {}- with `Content-Range: {}`; \
                     the file on the server does not match the release (size {})",
                    Shown(url),
                    self.pos,
                    util::text::clean(cr, 80),
                    self.wanted.size
                )))
            }
        }
        if self.mode == Mode::Probe {
            let mut g = self.shared.lock();
            if g.assets[self.task.asset].mode == Mode::Probe {
                g.assets[self.task.asset].mode = Mode::Ranged;
            }
            drop(g);
            self.shared.changed.notify_all();
        }
        Ok(())
    }

    /// The server ignored our range: fetch this asset as one stream instead.
    fn go_whole(&mut self, url: &str) -> std::result::Result<(), String> {
        let mut g = self.shared.lock();
        let a = &mut g.assets[self.task.asset];
        // Only the first request of an asset may find out; later segments of a
        // ranged download are already being written elsewhere in the file.
        if a.mode == Mode::Ranged {
            return Err(format!(
                "{} stopped honouring range requests in the middle of the download; re-run",
                Shown(url)
            ));
        }
        let _ = fs::remove_file(&a.segs_path);
        self.file
            .set_len(0)
            .map_err(|e| format!("cannot truncate {}: {e}", a.partial.display()))?;
        a.mode = Mode::Single;
        a.segs = vec![Seg {
            start: 0,
            end: self.wanted.size,
            written: 0,
            state: SegState::InFlight,
        }];
        // The asset is one segment now, whichever segment this task was for.
        self.task.seg = 0;
        Ok(())
    }
}

/// `bytes A-B/TOTAL` (TOTAL may be `*`).
pub(super) fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = v.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (a, b) = range.split_once('-')?;
    let total = if total == "*" {
        None
    } else {
        Some(total.parse().ok()?)
    };
    Some((a.parse().ok()?, b.parse().ok()?, total))
}
