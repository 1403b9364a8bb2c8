//! The worker threads: jobs of whole members (batched when small), each
//! inflated into a buffer of exactly its stated size and checked (the
//! deflate data ends where the claim says, CRC32, length).

use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::{self, JoinHandle};

use flate2::{Crc, Decompress, FlushDecompress, Status};

use super::TRAILER_LEN;

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
    pub(super) out_need: u64,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) reply: mpsc::Receiver<JobResult>,
}

/// A job, as a worker sees it.
pub(super) struct Work {
    pub(super) raw: Arc<Vec<u8>>,
    pub(super) spans: Arc<Vec<Span>>,
    pub(super) out: Vec<u8>,
    pub(super) cancel: Arc<AtomicBool>,
    pub(super) reply: mpsc::SyncSender<JobResult>,
}

pub(super) struct JobResult {
    /// Output of the members before `failed_at`, in `out[..len]`.
    pub(super) out: Vec<u8>,
    pub(super) len: usize,
    pub(super) ok_members: usize,
    pub(super) failed_at: Option<usize>,
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
        let Work {
            raw,
            spans,
            out,
            reply,
            ..
        } = work;
        match catch_unwind(AssertUnwindSafe(|| inflate_job(&mut d, &raw, &spans, out))) {
            Ok(res) => {
                drop(raw);
                let _ = reply.send(res);
            }
            // Dropping `reply` tells the reader; start clean.
            Err(_) => d = Decompress::new(false),
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
            };
        }
        len += isize;
    }
    JobResult {
        out,
        len,
        ok_members: spans.len(),
        failed_at: None,
    }
}
