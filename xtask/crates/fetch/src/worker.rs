//! The connections: each worker takes the first pending segment in file
//! order, fetches it with retries (over HTTP, or from a mirror directory)
//! and writes it into the asset's partial file, publishing progress.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
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
        let mut task = {
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
        match fetch(shared, &mut task) {
            Ok(()) => {}
            // Another asset failed first; its message is the one to report.
            Err(Stop::Aborted) => return,
            Err(Stop::Failed(msg)) => {
                shared.fail(task.asset, super::Error::Network(msg));
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

/// Fetches one segment with retries.
pub(super) fn fetch(shared: &Shared, task: &mut Task) -> std::result::Result<(), Stop> {
    let (wanted, file, mode, start, end, segs_path) = {
        let g = shared.lock();
        let a = &g.assets[task.asset];
        let s = &a.segs[task.seg];
        (
            a.wanted.clone(),
            Arc::clone(a.file.as_ref().expect("non-cached asset has a file")),
            a.mode,
            s.start,
            s.end,
            a.segs_path.clone(),
        )
    };
    let mut tries = 0;
    let mut pos = {
        let g = shared.lock();
        let s = &g.assets[task.asset].segs[task.seg];
        s.start + s.written
    };
    let mut end = end;
    let mut start = start;
    loop {
        if shared.lock().abort.is_some() {
            return Err(Stop::Aborted);
        }
        let before = pos;
        match stream(
            shared, task, &wanted, &file, mode, start, &mut pos, &mut end,
        ) {
            Ok(()) => break,
            Err(Failure::Fatal(m)) if shared.lock().abort.is_some() => {
                let _ = m;
                return Err(Stop::Aborted);
            }
            Err(Failure::Fatal(m)) => {
                return Err(Stop::Failed(format!("asset {}: {m}", Shown(&wanted.name))))
            }
            Err(Failure::Transient(m)) => {
                // Whole-file fallback may have reset the segment.
                {
                    let g = shared.lock();
                    start = g.assets[task.asset].segs[task.seg].start;
                }
                if pos > before {
                    tries = 0;
                }
                tries += 1;
                if tries >= TRIES {
                    return Err(Stop::Failed(format!(
                        "asset {}: giving up after {TRIES} tries: {m}{}; re-run to resume from \
                         what was downloaded",
                        Shown(&wanted.name),
                        shared.http.hint()
                    )));
                }
                let wait = backoff(tries);
                shared
                    .progress
                    .say(&retry_line(&wanted.name, wait, tries + 1, TRIES, &m));
                thread::sleep(wait);
            }
        }
    }
    let mut g = shared.lock();
    let ranged = g.assets[task.asset].mode == Mode::Ranged;
    drop(g);
    if ranged {
        // A durable record may only claim what is on disk.
        let synced = if wanted.transient {
            Ok(())
        } else {
            file.sync_data()
        };
        let recorded = synced.and_then(|()| {
            let _one_writer = shared.record.lock().unwrap_or_else(|e| e.into_inner());
            let mut done: Vec<usize> = {
                let g = shared.lock();
                let a = &g.assets[task.asset];
                (0..a.segs.len())
                    .filter(|&i| a.segs[i].state == SegState::Done)
                    .collect()
            };
            done.push(task.seg);
            write_record(&segs_path, wanted.size, &done, !wanted.transient)
        });
        recorded.map_err(|e| {
            Stop::Failed(format!(
                "cannot record progress in {}: {e}",
                segs_path.display()
            ))
        })?;
    }
    g = shared.lock();
    let s = &mut g.assets[task.asset].segs[task.seg];
    s.state = SegState::Done;
    s.written = s.end - s.start;
    drop(g);
    shared.changed.notify_all();
    Ok(())
}

/// One request: from `*pos` to `*end`, writing into `file` and publishing
/// progress. Returns when the range is complete.
#[allow(clippy::too_many_arguments)]
pub(super) fn stream(
    shared: &Shared,
    task: &mut Task,
    wanted: &Wanted,
    file: &File,
    mode: Mode,
    start: u64,
    pos: &mut u64,
    end: &mut u64,
) -> std::result::Result<(), Failure> {
    let mut body = match &wanted.from {
        Origin::Local(path) => open_local(path, wanted, *pos)?,
        Origin::Url(url) => open_http(shared, task, wanted, url, file, mode, start, pos, end)?,
    };
    let mut buf = vec![0u8; BUF];
    while *pos < *end {
        if shared.lock().abort.is_some() {
            // The caller sees the abort and stops without blaming this asset.
            return Err(Failure::Fatal(String::new()));
        }
        let want = ((*end - *pos) as usize).min(BUF);
        let n = match body.read(&mut buf[..want]) {
            Ok(0) => {
                return Err(Failure::Transient(format!(
                    "{}: connection closed at byte {} of {}",
                    wanted.from.place(),
                    *pos,
                    wanted.size
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Failure::Transient(format!(
                    "{}: {} at byte {} of {}",
                    wanted.from.place(),
                    util::text::clean(&e.to_string(), 200),
                    *pos,
                    wanted.size
                )))
            }
        };
        file.write_all_at(&buf[..n], *pos).map_err(|e| {
            Failure::Fatal(format!(
                "cannot write {}: {e}",
                fsutil::partial_path(&wanted.dest).display()
            ))
        })?;
        *pos += n as u64;
        if matches!(wanted.from, super::Origin::Url(_)) {
            super::count_asset(&wanted.name, n as u64);
        }
        {
            let mut g = shared.lock();
            let s = &mut g.assets[task.asset].segs[task.seg];
            s.written = *pos - s.start;
        }
        shared.changed.notify_all();
        shared.progress.advance(&wanted.name, wanted.size, n as u64);
    }
    Ok(())
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

/// Sends the request for `*pos..*end` and checks the answer; a server that
/// ignores ranges switches the asset to one whole-file stream.
#[allow(clippy::too_many_arguments)]
pub(super) fn open_http(
    shared: &Shared,
    task: &mut Task,
    wanted: &Wanted,
    url: &str,
    file: &File,
    mode: Mode,
    start: u64,
    pos: &mut u64,
    end: &mut u64,
) -> std::result::Result<Box<dyn Read>, Failure> {
    let whole_from_zero = *pos == 0 && start == 0 && *end == wanted.size;
    let range = if whole_from_zero && mode == Mode::Single {
        None
    } else {
        Some((*pos, *end - 1))
    };
    let what = format!("asset {}", Shown(&wanted.name));
    let resp = shared.http.asset_get(url, range, &what)?;
    let status = resp.status().as_u16();
    if status == 206 {
        let cr = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match parse_content_range(cr) {
            Some((a, _, total)) if a == *pos && total.is_none_or(|t| t == wanted.size) => {}
            _ => {
                return Err(Failure::Fatal(format!(
                    "{} answered a range request for bytes {}- with `Content-Range: {}`; \
                     the file on the server does not match the release (size {})",
                    Shown(url),
                    *pos,
                    util::text::clean(cr, 80),
                    wanted.size
                )))
            }
        }
        if mode == Mode::Probe {
            let mut g = shared.lock();
            if g.assets[task.asset].mode == Mode::Probe {
                g.assets[task.asset].mode = Mode::Ranged;
            }
            drop(g);
            shared.changed.notify_all();
        }
    } else {
        // 200: the whole file from byte 0, whatever we asked for.
        if let Some(len) = resp
            .headers()
            .get("content-length")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
        {
            if len != wanted.size {
                return Err(Failure::Fatal(format!(
                    "{} is {len} bytes but the release says {}; the release is inconsistent, \
                     try again later or choose another --version",
                    Shown(url),
                    wanted.size
                )));
            }
        }
        if !whole_from_zero {
            go_whole(shared, task, wanted, url, file).map_err(Failure::Fatal)?;
            *pos = 0;
            *end = wanted.size;
        }
    }
    Ok(Box::new(resp.into_body().into_reader()))
}

/// The server ignored our range: fetch this asset as one stream instead.
pub(super) fn go_whole(
    shared: &Shared,
    task: &mut Task,
    wanted: &Wanted,
    url: &str,
    file: &File,
) -> std::result::Result<(), String> {
    let mut g = shared.lock();
    let a = &mut g.assets[task.asset];
    // Only the first request of an asset may find out; later segments of a
    // ranged download are already being written elsewhere in the file.
    if a.mode == Mode::Ranged {
        return Err(format!(
            "{} stopped honouring range requests in the middle of the download; re-run",
            Shown(url)
        ));
    }
    let _ = fs::remove_file(&a.segs_path);
    file.set_len(0)
        .map_err(|e| format!("cannot truncate {}: {e}", a.partial.display()))?;
    a.mode = Mode::Single;
    a.segs = vec![Seg {
        start: 0,
        end: wanted.size,
        written: 0,
        state: SegState::InFlight,
    }];
    // The asset is one segment now, whichever segment this task was for.
    task.seg = 0;
    Ok(())
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
