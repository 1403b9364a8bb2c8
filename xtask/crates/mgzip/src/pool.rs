//! The worker threads: jobs of whole members (batched when small), each
//! inflated into a buffer of exactly its stated size and checked (the
//! deflate data ends where the claim says, CRC32, length); a member that
//! inflates to more than a [`PIECE`] is inflated alone and handed on in
//! pieces as they fill, so its output never lives whole. Workers allocate
//! nothing large: the reader hands them their buffers (so all live in one
//! allocator arena, and memory freed is memory the reader reuses).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};

use flate2::{Crc, Decompress, FlushDecompress, Status};

use super::{PIECE, TRAILER_LEN};

/// A member inside a job's bytes.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) start: usize,
    pub(super) header: usize,
    pub(super) end: usize,
    pub(super) isize: u32,
}

/// A job in flight, as the reader sees it.
pub(super) struct Job {
    pub(super) raw: Arc<Vec<u8>>,
    pub(super) members: Arc<Vec<Span>>,
    pub(super) first_member: u64,
    /// Output buffers it holds: one, or two for a member in pieces.
    pub(super) bufs: u64,
    /// For a member in pieces (see [`stream_member`]): where the reader
    /// returns the buffers of the pieces it has handed on.
    pub(super) recycle: Option<mpsc::Sender<Vec<u8>>>,
    /// Results taken, and the output bytes in them.
    pub(super) taken: u64,
    pub(super) handed: u64,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) reply: mpsc::Receiver<JobResult>,
}

/// A job, as a worker sees it.
pub(super) struct Work {
    pub(super) raw: Arc<Vec<u8>>,
    pub(super) spans: Arc<Vec<Span>>,
    /// The output buffer (capacity `PIECE + 1`).
    pub(super) out: Vec<u8>,
    pub(super) pieces: Option<Pieces>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) reply: mpsc::SyncSender<JobResult>,
}

/// What a worker needs for a member in pieces besides `Work::out`.
pub(super) struct Pieces {
    pub(super) second: Vec<u8>,
    pub(super) recycle: mpsc::Receiver<Vec<u8>>,
}

pub(super) struct JobResult {
    /// Output of the members before `failed_at`, in `out[..len]` (for a
    /// job in pieces: the next piece of its member).
    pub(super) out: Vec<u8>,
    pub(super) len: usize,
    pub(super) ok_members: usize,
    pub(super) failed_at: Option<usize>,
    /// A piece; more results of this job follow.
    pub(super) more: bool,
}

pub(super) struct Pool {
    pub(super) tx: Option<mpsc::Sender<Work>>,
    pub(super) handles: Vec<JoinHandle<()>>,
}

impl Pool {
    pub(super) fn start(threads: usize) -> io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        let mut pool = Pool {
            tx: Some(tx),
            handles: Vec::new(),
        };
        for _ in 0..threads.max(1) {
            let rx = rx.clone();
            let h = thread::Builder::new()
                .name("gz-inflate".into())
                .spawn(move || worker(&rx))?;
            pool.handles.push(h);
        }
        Ok(pool)
    }

    pub(super) fn send(&self, work: Work) -> Result<(), ()> {
        match &self.tx {
            Some(tx) => tx.send(work).map_err(|_| ()),
            None => Err(()),
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Workers finish the member at hand, find the queue closed, exit.
        self.tx.take();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

pub(super) fn worker(rx: &Mutex<mpsc::Receiver<Work>>) {
    let mut d = Decompress::new(false);
    loop {
        let work = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok(work) = work else {
            return;
        };
        if work.cancel.load(Ordering::Relaxed) {
            continue;
        }
        let run = AssertUnwindSafe(|| {
            let Work {
                raw,
                spans,
                out,
                pieces,
                cancel,
                reply,
            } = work;
            if let Some(p) = pieces {
                return stream_member(&mut d, &raw, &spans[0], out, p, &cancel, &reply);
            }
            let res = inflate_job(&mut d, &raw, &spans, out);
            // Released first, so the reader can reuse the buffer.
            drop(raw);
            let _ = reply.send(res);
        });
        // On a panic, dropping `reply` tells the reader; start clean.
        if catch_unwind(run).is_err() {
            d = Decompress::new(false);
        }
    }
}

/// Inflates the job's members into `out`, each into exactly ISIZE bytes
/// (plus one spare byte to catch overlong data), stopping at the first
/// member that does not decode cleanly.
pub(super) fn inflate_job(
    d: &mut Decompress,
    raw: &[u8],
    spans: &[Span],
    mut out: Vec<u8>,
) -> JobResult {
    let mut len = 0;
    for (i, m) in spans.iter().enumerate() {
        let payload = &raw[m.start + m.header..m.end - TRAILER_LEN];
        let isize = m.isize as usize;
        if out.len() < len + isize + 1 {
            out.resize(len + isize + 1, 0);
        }
        d.reset(false);
        let dst = &mut out[len..len + isize + 1];
        let clean = matches!(
            d.decompress(payload, dst, FlushDecompress::Finish),
            Ok(Status::StreamEnd)
        ) && d.total_in() == payload.len() as u64
            && d.total_out() == isize as u64;
        let crc_ok = clean && {
            let mut crc = Crc::new();
            crc.update(&dst[..isize]);
            let t = m.end - TRAILER_LEN;
            crc.sum().to_le_bytes() == raw[t..t + 4]
        };
        if !crc_ok {
            return JobResult {
                out,
                len,
                ok_members: i,
                failed_at: Some(i),
                more: false,
            };
        }
        len += isize;
    }
    JobResult {
        out,
        len,
        ok_members: spans.len(),
        failed_at: None,
        more: false,
    }
}

/// Inflates member `m` in pieces of [`PIECE`] bytes, each sent as soon as
/// it is full (the reader hands it on while the next one fills); the
/// buffers are `out`, `p.second`, then those the reader returns. The checks
/// are those of [`inflate_job`]; a member that fails them ends with a
/// failed result, and what was sent before is what the serial decoder makes
/// of the member's start (inflating is deterministic).
pub(super) fn stream_member(
    d: &mut Decompress,
    raw: &[u8],
    m: &Span,
    mut out: Vec<u8>,
    p: Pieces,
    cancel: &AtomicBool,
    reply: &mpsc::SyncSender<JobResult>,
) {
    let payload = &raw[m.start + m.header..m.end - TRAILER_LEN];
    let trailer = &raw[m.end - TRAILER_LEN..m.end];
    // One byte past ISIZE catches overlong data.
    let limit = u64::from(m.isize) + 1;
    let mut second = Some(p.second);
    let mut crc = Crc::new();
    d.reset(false);
    loop {
        if cancel.load(Ordering::Relaxed) {
            return;
        }
        out.resize(PIECE, 0);
        let room = (limit - d.total_out()).min(PIECE as u64) as usize;
        let (filled, end) = fill(d, payload, &mut out[..room]);
        crc.update(&out[..filled]);
        if matches!(end, Fill::Full) && d.total_out() < limit {
            let piece = JobResult {
                out,
                len: filled,
                ok_members: 0,
                failed_at: None,
                more: true,
            };
            if reply.send(piece).is_err() {
                return;
            }
            out = match second.take().map_or_else(|| p.recycle.recv(), Ok) {
                Ok(b) => b,
                Err(_) => return,
            };
            continue;
        }
        let ok = matches!(end, Fill::End)
            && d.total_in() == payload.len() as u64
            && d.total_out() == u64::from(m.isize)
            && crc.sum().to_le_bytes() == trailer[..4];
        let _ = reply.send(JobResult {
            out,
            len: if ok { filled } else { 0 },
            ok_members: usize::from(ok),
            failed_at: (!ok).then_some(0),
            more: false,
        });
        return;
    }
}

enum Fill {
    Full,
    /// The deflate stream ended.
    End,
    /// Corrupt data, or the payload ended first.
    Bad,
}

/// Inflates from `payload` (continuing where `d` stopped) until `out` is
/// full or the deflate stream ends; returns the bytes made.
fn fill(d: &mut Decompress, payload: &[u8], out: &mut [u8]) -> (usize, Fill) {
    let mut filled = 0;
    loop {
        let (i0, o0) = (d.total_in(), d.total_out());
        let r = d.decompress(
            &payload[i0 as usize..],
            &mut out[filled..],
            FlushDecompress::None,
        );
        filled += (d.total_out() - o0) as usize;
        match r {
            Ok(Status::StreamEnd) => return (filled, Fill::End),
            Ok(_) if filled == out.len() => return (filled, Fill::Full),
            Ok(_) if d.total_in() > i0 || d.total_out() > o0 => {}
            _ => return (filled, Fill::Bad),
        }
    }
}
