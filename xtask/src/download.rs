//! The download engine: fetches a list of assets over several connections,
//! large ones as parallel Range segments scheduled in file order, into hidden
//! `.name.partial` files that survive interruption. Each asset is read back
//! through an [`AssetReader`] as soon as a contiguous prefix has arrived; the
//! reader hashes what it hands out and, at the end, checks size and digest and
//! only then renames the file to its final name.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Condvar, Mutex, MutexGuard};
use std::thread;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::fsutil::{self, hex};
use crate::http::{Failure, Http};
use crate::progress::{Progress, Style};
use crate::text::Shown;

/// Segment sizes: at least 4 MiB so a request's overhead (a redirect, maybe
/// a new connection) stays small against its transfer, at most 32 MiB so
/// several connections share one 500 MiB part, and about an eighth of an
/// asset in between so a 50 MiB part still spreads over the connections.
const MIN_SEGMENT: u64 = 4 << 20;
const MAX_SEGMENT: u64 = 32 << 20;

/// The segment size of an asset of `size` bytes; depends on nothing else,
/// so an interrupted download resumes with the same segments.
pub fn segment_size(size: u64) -> u64 {
    size.div_ceil(8)
        .next_multiple_of(1 << 20)
        .clamp(MIN_SEGMENT, MAX_SEGMENT)
}
const TRIES: u32 = 6;
const BUF: usize = 256 << 10;

/// Where an asset's bytes come from. Only a mirror directory the user named
/// gives `Local`; a URL string from a release or a redirect is never read
/// as a local path, whatever its scheme.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    Url(String),
    Local(PathBuf),
}

impl Origin {
    /// The host or directory, for messages.
    fn place(&self) -> String {
        match self {
            Origin::Url(u) => crate::http::authority(u),
            Origin::Local(p) => p.display().to_string(),
        }
    }
}

/// One asset to fetch.
#[derive(Clone, Debug)]
pub struct Job {
    pub name: String,
    pub from: Origin,
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

/// An asset did not match the release's digest; its file is deleted. The
/// full run fetches it once more before giving up.
#[derive(Debug)]
pub struct DigestMismatch {
    pub asset: String,
    msg: String,
}

impl std::fmt::Display for DigestMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}
impl std::error::Error for DigestMismatch {}

/// The asset of a [`DigestMismatch`] anywhere in `e`'s chain.
pub fn digest_mismatch(e: &anyhow::Error) -> Option<String> {
    e.chain().find_map(|c| {
        if let Some(d) = c.downcast_ref::<DigestMismatch>() {
            return Some(d.asset.clone());
        }
        c.downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref())
            .and_then(|inner| inner.downcast_ref::<DigestMismatch>())
            .map(|d| d.asset.clone())
    })
}

/// Parses the API's `sha256:<hex>` digest field.
pub fn parse_digest(field: Option<&str>, asset: &str) -> Result<Option<[u8; 32]>> {
    let Some(field) = field else { return Ok(None) };
    let Some(hexs) = field.strip_prefix("sha256:") else {
        // Another algorithm: nothing we can check, and not an error.
        return Ok(None);
    };
    parse_hex32(hexs).map(Some).ok_or_else(|| {
        anyhow!("asset {asset}: the release's digest `{field}` is not a sha256 hex string")
    })
}

pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes() {
        const MIB: u64 = 1 << 20;
        assert_eq!(segment_size(MIB), 4 * MIB);
        assert_eq!(segment_size(50 * MIB), 7 * MIB);
        assert_eq!(segment_size(500 * MIB), 32 * MIB);
        assert_eq!(segment_size(u64::MAX), 32 * MIB);
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum SegState {
    Pending,
    InFlight,
    Done,
}

#[derive(Debug)]
struct Seg {
    start: u64,
    end: u64,
    written: u64,
    state: SegState,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// The final file exists from an earlier run; the reader re-checks it.
    Cached,
    /// One stream; resumes from the partial file's length.
    Single,
    /// Segments; the first request tells whether the server honours ranges.
    Probe,
    Ranged,
}

struct AssetState {
    job: Job,
    partial: PathBuf,
    segs_path: PathBuf,
    file: Option<Arc<File>>,
    mode: Mode,
    segs: Vec<Seg>,
    error: Option<String>,
}

impl AssetState {
    /// Bytes from the start of the file that are written.
    fn contiguous(&self) -> u64 {
        if self.mode == Mode::Cached {
            return self.job.size;
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
    fn written_bytes(&self) -> u64 {
        if self.mode == Mode::Cached {
            return self.job.size;
        }
        self.segs.iter().map(|s| s.written).sum()
    }

    fn complete(&self) -> bool {
        self.mode == Mode::Cached || self.segs.iter().all(|s| s.state == SegState::Done)
    }
}

struct Inner {
    assets: Vec<AssetState>,
    abort: Option<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Condvar,
    http: Http,
    progress: Progress,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fail(&self, asset: usize, msg: String) {
        let mut g = self.lock();
        if g.assets[asset].error.is_none() {
            g.assets[asset].error = Some(msg.clone());
        }
        if g.abort.is_none() {
            g.abort = Some(msg);
        }
        drop(g);
        self.changed.notify_all();
    }
}

/// Downloads in flight. Dropping it aborts what is left.
pub struct Downloads {
    shared: Arc<Shared>,
    workers: Vec<thread::JoinHandle<()>>,
}

/// Starts `connections` workers on `jobs`. Assets whose final file already
/// exists with the right size are not fetched again (their reader re-checks
/// the digest); `--force` is the caller's: it deletes them first.
pub fn start(
    http: Http,
    jobs: Vec<Job>,
    connections: usize,
    what: &str,
    style: Style,
) -> Result<Downloads> {
    let mut assets = Vec::with_capacity(jobs.len());
    let mut have = 0u64;
    let mut total = 0u64;
    for job in &jobs {
        total = total.checked_add(job.size).ok_or_else(|| {
            anyhow!(
                "asset {}: the sizes of the assets add up past 2^64 bytes; the release is bogus",
                Shown(&job.name)
            )
        })?;
    }
    for job in jobs {
        let a = prepare(job)?;
        have += a.written_bytes();
        assets.push(a);
    }
    // All of it must fit before the first byte is fetched.
    if let Some(first) = assets.first() {
        let dir = first.partial.parent().unwrap_or(Path::new("."));
        fsutil::ensure_space(dir, total - have.min(total), "the download")?;
    }
    let shared = Arc::new(Shared {
        inner: Mutex::new(Inner {
            assets,
            abort: None,
        }),
        changed: Condvar::new(),
        http,
        progress: Progress::new(what, total, have, style),
    });
    let workers = (0..connections.max(1))
        .map(|i| {
            let s = Arc::clone(&shared);
            thread::Builder::new()
                .name(format!("download-{i}"))
                .spawn(move || worker(&s))
                .expect("spawn download worker")
        })
        .collect();
    Ok(Downloads { shared, workers })
}

/// Opens or resumes the partial file of one asset.
fn prepare(job: Job) -> Result<AssetState> {
    let partial = fsutil::partial_path(&job.dest);
    let segs_path = partial.with_file_name(format!(
        "{}.segs",
        partial.file_name().unwrap_or_default().to_string_lossy()
    ));
    if let Some(dir) = job.dest.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // A link at a name we own is junk, never something to read or write through.
    for p in [&job.dest, &partial, &segs_path] {
        fsutil::clear_non_regular(p).with_context(|| format!("cannot clear {}", p.display()))?;
    }
    if let Ok(meta) = fs::symlink_metadata(&job.dest) {
        if meta.is_file() && meta.len() == job.size {
            return Ok(AssetState {
                job,
                partial,
                segs_path,
                file: None,
                mode: Mode::Cached,
                segs: Vec::new(),
                error: None,
            });
        }
    }
    let file = fsutil::open_or_create(&partial)
        .with_context(|| format!("cannot open {}", partial.display()))?;
    let len = file.metadata()?.len();
    let size = job.size;
    let seg = segment_size(size);
    let (mode, segs) = if size <= seg {
        // One stream, resumed from where the file ends.
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
        let seg = Seg {
            start: 0,
            end: size,
            written,
            state,
        };
        (Mode::Single, vec![seg])
    } else {
        let mut segs: Vec<Seg> = (0..size.div_ceil(seg))
            .map(|i| Seg {
                start: i * seg,
                end: ((i + 1) * seg).min(size),
                written: 0,
                state: SegState::Pending,
            })
            .collect();
        let done = read_segs(&segs_path, size);
        if len == size && !done.is_empty() {
            for i in done {
                if let Some(s) = segs.get_mut(i) {
                    s.state = SegState::Done;
                    s.written = s.end - s.start;
                }
            }
        } else {
            // No record of what is in the file: start it over.
            file.set_len(0)?;
            file.set_len(size)?;
            let _ = fs::remove_file(&segs_path);
        }
        (Mode::Probe, segs)
    };
    Ok(AssetState {
        job,
        partial,
        segs_path,
        file: Some(Arc::new(file)),
        mode,
        segs,
        error: None,
    })
}

/// The segments an earlier run finished: a header line `segments SEG SIZE`,
/// then one index a line. Anything else means we know nothing.
fn read_segs(path: &Path, size: u64) -> Vec<usize> {
    let Ok(text) = fsutil::read_small(path, 1 << 20) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(&format!("segments {} {size}", segment_size(size))) {
        return Vec::new();
    }
    // A torn last line (power loss) is simply not counted.
    lines.filter_map(|l| l.trim().parse().ok()).collect()
}

struct Task {
    asset: usize,
    seg: usize,
}

fn worker(shared: &Shared) {
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
        match fetch(shared, &task) {
            Ok(()) => {}
            // Another asset failed first; its message is the one to report.
            Err(Stop::Aborted) => return,
            Err(Stop::Failed(msg)) => {
                shared.fail(task.asset, msg);
                return;
            }
        }
    }
}

enum Pick {
    Task(Task),
    Wait,
    Finished,
}

/// The first pending segment in file order; segments after a range probe
/// wait until the probe has answered.
fn pick(g: &mut Inner) -> Pick {
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
enum Stop {
    /// The run is stopping because of an error elsewhere.
    Aborted,
    /// This asset failed: the message for the user.
    Failed(String),
}

/// Fetches one segment with retries.
fn fetch(shared: &Shared, task: &Task) -> std::result::Result<(), Stop> {
    let (job, file, mode, start, end, segs_path) = {
        let g = shared.lock();
        let a = &g.assets[task.asset];
        let s = &a.segs[task.seg];
        (
            a.job.clone(),
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
        match stream(shared, task, &job, &file, mode, start, &mut pos, &mut end) {
            Ok(()) => break,
            Err(Failure::Fatal(m)) if shared.lock().abort.is_some() => {
                let _ = m;
                return Err(Stop::Aborted);
            }
            Err(Failure::Fatal(m)) => {
                return Err(Stop::Failed(format!("asset {}: {m}", Shown(&job.name))))
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
                        "asset {}: giving up after {TRIES} tries: {m}; re-run to resume from what was downloaded",
                        Shown(&job.name)
                    )));
                }
                let wait = crate::http::backoff(tries);
                shared.progress.say(&format!(
                    "  {}: {m}; retrying in {:.1} s",
                    job.name,
                    wait.as_secs_f64()
                ));
                thread::sleep(wait);
            }
        }
    }
    let mut g = shared.lock();
    let ranged = g.assets[task.asset].mode == Mode::Ranged;
    drop(g);
    if ranged {
        // A durable record may only claim what is on disk.
        let synced = if job.transient {
            Ok(())
        } else {
            file.sync_data()
        };
        synced
            .and_then(|()| append_seg(&segs_path, job.size, task.seg, !job.transient))
            .map_err(|e| {
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

fn append_seg(path: &Path, size: u64, seg: usize, durable: bool) -> io::Result<()> {
    let new = !path.exists();
    fsutil::clear_non_regular(path)?;
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    if new {
        writeln!(f, "segments {} {size}", segment_size(size))?;
    }
    writeln!(f, "{seg}")?;
    if durable {
        f.sync_data()?;
    }
    Ok(())
}

/// One request: from `*pos` to `*end`, writing into `file` and publishing
/// progress. Returns when the range is complete.
#[allow(clippy::too_many_arguments)]
fn stream(
    shared: &Shared,
    task: &Task,
    job: &Job,
    file: &File,
    mode: Mode,
    start: u64,
    pos: &mut u64,
    end: &mut u64,
) -> std::result::Result<(), Failure> {
    let mut body = match &job.from {
        Origin::Local(path) => open_local(path, job, *pos)?,
        Origin::Url(url) => open_http(shared, task, job, url, file, mode, start, pos, end)?,
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
                    "{}: the connection closed after byte {} of {}",
                    job.from.place(),
                    *pos,
                    job.size
                )))
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Failure::Transient(format!(
                    "{}: {} at byte {} of {}",
                    job.from.place(),
                    crate::text::clean(&e.to_string(), 200),
                    *pos,
                    job.size
                )))
            }
        };
        file.write_all_at(&buf[..n], *pos).map_err(|e| {
            Failure::Fatal(format!(
                "cannot write {}: {e}",
                fsutil::partial_path(&job.dest).display()
            ))
        })?;
        *pos += n as u64;
        {
            let mut g = shared.lock();
            let s = &mut g.assets[task.asset].segs[task.seg];
            s.written = *pos - s.start;
        }
        shared.changed.notify_all();
        shared.progress.advance(&job.name, job.size, n as u64);
    }
    Ok(())
}

/// Reads an asset from a local mirror directory: ranges are free. Only a
/// regular file will do (a FIFO would hang the run).
fn open_local(path: &Path, job: &Job, pos: u64) -> std::result::Result<Box<dyn Read>, Failure> {
    let mut f = fsutil::open_input(path)
        .map_err(|e| Failure::Fatal(format!("cannot open {}: {e}", path.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len != job.size {
        return Err(Failure::Fatal(format!(
            "{} is {len} bytes but the release says {}; the mirror is incomplete, \
             run `cargo xtask resources mirror` again",
            path.display(),
            job.size
        )));
    }
    io::Seek::seek(&mut f, io::SeekFrom::Start(pos))
        .map_err(|e| Failure::Fatal(format!("cannot read {}: {e}", path.display())))?;
    Ok(Box::new(f))
}

/// Sends the request for `*pos..*end` and checks the answer; a server that
/// ignores ranges switches the asset to one whole-file stream.
#[allow(clippy::too_many_arguments)]
fn open_http(
    shared: &Shared,
    task: &Task,
    job: &Job,
    url: &str,
    file: &File,
    mode: Mode,
    start: u64,
    pos: &mut u64,
    end: &mut u64,
) -> std::result::Result<Box<dyn Read>, Failure> {
    let whole_from_zero = *pos == 0 && start == 0 && *end == job.size;
    let range = if whole_from_zero && mode == Mode::Single {
        None
    } else {
        Some((*pos, *end - 1))
    };
    let what = format!("asset {}", Shown(&job.name));
    let resp = shared.http.asset_get(url, range, &what)?;
    let status = resp.status().as_u16();
    if status == 206 {
        let cr = resp
            .headers()
            .get("content-range")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        match parse_content_range(cr) {
            Some((a, _, total)) if a == *pos && total.is_none_or(|t| t == job.size) => {}
            _ => {
                return Err(Failure::Fatal(format!(
                    "{} answered a range request for bytes {}- with `Content-Range: {}`; \
                     the file on the server does not match the release (size {})",
                    Shown(url),
                    *pos,
                    crate::text::clean(cr, 80),
                    job.size
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
            if len != job.size {
                return Err(Failure::Fatal(format!(
                    "{} is {len} bytes but the release says {}; the release is inconsistent, \
                     try again later or choose another --version",
                    Shown(url),
                    job.size
                )));
            }
        }
        if !whole_from_zero {
            go_whole(shared, task, job, url, file).map_err(Failure::Fatal)?;
            *pos = 0;
            *end = job.size;
        }
    }
    Ok(Box::new(resp.into_body().into_reader()))
}

/// The server ignored our range: fetch this asset as one stream instead.
fn go_whole(
    shared: &Shared,
    task: &Task,
    job: &Job,
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
        end: job.size,
        written: 0,
        state: SegState::InFlight,
    }];
    Ok(())
}

/// `bytes A-B/TOTAL` (TOTAL may be `*`).
fn parse_content_range(v: &str) -> Option<(u64, u64, Option<u64>)> {
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

impl Downloads {
    /// A reader of asset `index` (in the order given to [`start`]).
    pub fn reader(&self, index: usize) -> AssetReader {
        let g = self.shared.lock();
        let a = &g.assets[index];
        AssetReader {
            shared: Arc::clone(&self.shared),
            index,
            name: a.job.name.clone(),
            size: a.job.size,
            pos: 0,
            hasher: HashThread::new(),
            file: None,
            finished: false,
        }
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
        let first_err = results.into_iter().find_map(Result::err);
        self.wait()?;
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Waits for the workers; the first failure, if any.
    pub fn wait(mut self) -> Result<()> {
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        self.shared.progress.finish();
        let g = self.shared.lock();
        if let Some(e) = &g.abort {
            bail!("{e}");
        }
        Ok(())
    }

    /// Stops the workers (used when a consumer failed).
    pub fn abort(&self, why: &str) {
        let mut g = self.shared.lock();
        if g.abort.is_none() {
            g.abort = Some(why.to_string());
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

/// SHA-256 on a thread of its own, fed copies of what a reader hands out:
/// hashing the parts would otherwise take a sixth of the decompressing
/// thread's time (measured with perf on the full run).
struct HashThread {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    free: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
    handle: Option<thread::JoinHandle<[u8; 32]>>,
}

impl HashThread {
    const BATCH: usize = 1 << 20;

    fn new() -> HashThread {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let (free_tx, free) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for buf in rx {
                    h.update(&buf);
                    let _ = free_tx.send(buf);
                }
                h.finalize().into()
            })
            .expect("spawn hash thread");
        HashThread {
            tx: Some(tx),
            free,
            pending: Vec::with_capacity(Self::BATCH),
            handle: Some(handle),
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        if self.pending.len() >= Self::BATCH {
            let mut next = self.free.try_recv().unwrap_or_default();
            next.clear();
            let full = std::mem::replace(&mut self.pending, next);
            if let Some(tx) = &self.tx {
                let _ = tx.send(full);
            }
        }
    }

    fn finish(&mut self) -> [u8; 32] {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(std::mem::take(&mut self.pending));
        }
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or([0; 32])
    }
}

/// Streams one asset as it arrives. At the end it checks size and digest and
/// renames the file to its final name; a mismatch deletes it and is an error.
pub struct AssetReader {
    shared: Arc<Shared>,
    index: usize,
    name: String,
    size: u64,
    pos: u64,
    hasher: HashThread,
    file: Option<File>,
    finished: bool,
}

impl AssetReader {
    fn fail(&self, msg: String) -> io::Error {
        self.shared.fail(self.index, msg.clone());
        io::Error::other(msg)
    }

    /// Waits until bytes past `pos` exist; how many.
    fn available(&mut self) -> io::Result<u64> {
        let mut g = self.shared.lock();
        loop {
            let a = &g.assets[self.index];
            if let Some(e) = &a.error {
                return Err(io::Error::other(e.clone()));
            }
            let have = a.contiguous();
            if have > self.pos {
                if self.file.is_none() {
                    let path = if a.mode == Mode::Cached {
                        a.job.dest.clone()
                    } else {
                        a.partial.clone()
                    };
                    drop(g);
                    let f = File::open(&path).map_err(|e| {
                        io::Error::other(format!("cannot open {}: {e}", path.display()))
                    })?;
                    self.file = Some(f);
                    return Ok(have - self.pos);
                }
                return Ok(have - self.pos);
            }
            if let Some(e) = &g.abort {
                return Err(io::Error::other(e.clone()));
            }
            g = self
                .shared
                .changed
                .wait(g)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Size and digest check, then the rename to the final name.
    fn finish(&mut self) -> io::Result<()> {
        self.finished = true;
        let digest = self.hasher.finish();
        let (job, mode, partial, segs_path) = {
            let g = self.shared.lock();
            let a = &g.assets[self.index];
            (
                a.job.clone(),
                a.mode,
                a.partial.clone(),
                a.segs_path.clone(),
            )
        };
        if let Some(want) = job.sha256 {
            if want != digest {
                let bad = if mode == Mode::Cached {
                    job.dest.clone()
                } else {
                    partial.clone()
                };
                let _ = fs::remove_file(&bad);
                let _ = fs::remove_file(&segs_path);
                let msg = format!(
                    "asset {}: sha256 mismatch: the release says {}, the download is {}; \
                     the bad file was deleted, re-run to download it again",
                    Shown(&job.name),
                    hex(&want),
                    hex(&digest)
                );
                self.shared.fail(self.index, msg.clone());
                return Err(io::Error::other(DigestMismatch {
                    asset: job.name.clone(),
                    msg,
                }));
            }
        }
        if mode != Mode::Cached {
            let r = if job.transient {
                fs::rename(&partial, &job.dest).map_err(anyhow::Error::from)
            } else {
                File::open(&partial)
                    .and_then(|f| f.sync_all())
                    .map_err(anyhow::Error::from)
                    .and_then(|()| fsutil::rename_durable(&partial, &job.dest))
            };
            if let Err(e) = r {
                return Err(self.fail(format!("asset {}: {e:#}", job.name)));
            }
            let _ = fs::remove_file(&segs_path);
        }
        self.shared.progress.item_done(
            &job.name,
            if mode == Mode::Cached {
                "already there, checked"
            } else {
                "done, checked"
            },
        );
        Ok(())
    }
}

impl Read for AssetReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.size {
            if !self.finished {
                self.finish()?;
            }
            return Ok(0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let avail = self.available()?;
        let want = (avail as usize).min(buf.len());
        let n = self
            .file
            .as_ref()
            .expect("opened in available()")
            .read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(self.fail(format!(
                "asset {}: the downloaded file ended early at byte {}",
                self.name, self.pos
            )));
        }
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        self.shared.progress.checked(n as u64);
        if self.pos == self.size {
            self.finish()?;
        }
        Ok(n)
    }
}
