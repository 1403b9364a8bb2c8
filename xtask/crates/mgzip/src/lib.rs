//! Gzip on every core: [`ParallelGzDecoder`] (members that carry their
//! sizes are inflated on worker threads, everything else serially, as
//! flate2's `MultiGzDecoder` does). The parts: `member` (the format),
//! `input` (push-back and look-ahead), `scan` (members into jobs), `pool`
//! (the workers), `serial` (flate2's gzip decoder, member by member). The
//! format of the members `pack` writes is public too: [`member_header`] and
//! its constants.
//!
//! How the gzip decoder works. The calling thread *scans*: it looks at the
//! next member's header without consuming it; if the header claims a size
//! (Mgzip `IG`, Python mgzip `MZ` or BGZF `BC`) within
//! the caps and budgets, it reads the whole member and hands it (batched
//! with its neighbours when members are small) to a worker, which inflates
//! it into a buffer of exactly ISIZE bytes and checks that the deflate data
//! ends exactly where the claim says, the CRC32 and the length. A member
//! whose ISIZE is over a [`PIECE`] is a job of its own, inflated in pieces
//! that are handed on as they fill. Results are returned in stream order.
//!
//! Memory is bounded by what is in flight, whatever the headers say: the
//! compressed bytes of the jobs (`RAW_BUDGET`, or one member of at most
//! [`MAX_PARALLEL_MEMBER`]); their output buffers of a [`PIECE`] each (one
//! a job, two for a member in pieces: `OUT_BUFFERS` in all); the one being
//! handed out; and `SPARE` buffers of each kind kept for reuse. After a
//! fallback (below) the jobs' input is re-read from the push-back, so for a
//! moment up to twice `RAW_BUDGET` may be held.
//!
//! Headers lie, so a claim is only a hint: any member a worker cannot
//! decode cleanly — a size that is too big, too small, past the end,
//! corrupt data, a bad CRC — is put back, with every byte read after it,
//! in front of the input and decoded again *serially*, on the calling
//! thread, streaming. The serial decoder is flate2's own (one member at a
//! time), so the stream is accepted and rejected as `MultiGzDecoder` does,
//! and it produces every error message, naming the member and the byte
//! offset in the input where the fault showed. So a wrong claim
//! costs time, never correctness, and a claim never drives an allocation
//! above [`MAX_PARALLEL_MEMBER`] (members with more compressed bytes are
//! streamed serially) or a [`PIECE`] of output. When a member in pieces
//! fails after some were handed on, the serial decoder skips that many
//! bytes of it: they are the same bytes, as inflating is deterministic.
#![warn(missing_docs)]

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};

mod input;
mod member;
mod pool;
mod scan;
mod serial;

use input::{Input, Segment};
pub use member::{member_header, DEFAULT_BLOCK, DEFAULT_LEVEL, HEADER_LEN, MAX_BLOCK, TRAILER_LEN};
use pool::{Job, Pieces, Pool, Work};
use scan::{Members, Scan};
use serial::{SerialMember, SerialState};

/// Sizes the tests build their members around.
mod limits {
    /// Members claiming more compressed bytes than this are streamed serially.
    pub const MAX_PARALLEL_MEMBER: u64 = 64 << 20;
    /// The output one buffer holds: a job's, or one piece of a member whose
    /// ISIZE is larger (such a member is inflated and handed on in pieces).
    pub const PIECE: usize = 2 << 20;
}
#[cfg(feature = "seams")]
pub use limits::{MAX_PARALLEL_MEMBER, PIECE};
#[cfg(not(feature = "seams"))]
use limits::{MAX_PARALLEL_MEMBER, PIECE};
/// Small members (BGZF's are ≤ 64 KiB) are batched into jobs of up to this
/// many compressed bytes, so scheduling costs little next to inflating, and
/// up to a `PIECE` of output.
const BATCH: usize = 1 << 20;
/// Compressed bytes held by jobs in flight, all together.
const RAW_BUDGET: u64 = 64 << 20;
/// Output buffers held by jobs in flight, all together.
const OUT_BUFFERS: u64 = 8;
/// Spare buffers of each kind kept for reuse …
const SPARE: usize = 2;
/// … input buffers only up to this size.
const SPARE_RAW_MAX: usize = 2 * BATCH;
/// Input buffer size; headers up to `MAX_PEEK` are looked at in place.
pub(crate) const BUF: usize = 256 << 10;
pub(crate) const MAX_PEEK: usize = 128 << 10;

/// What a [`ParallelGzDecoder`] did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Members inflated on worker threads.
    pub parallel_members: u64,
    /// Members inflated on the calling thread (no size, too big, or redone).
    pub serial_members: u64,
    /// Times a worker could not decode a member and the stream was taken up
    /// serially from there.
    pub fallbacks: u64,
}

/// A gzip reader (all members, like `MultiGzDecoder`) that inflates members
/// carrying their sizes on worker threads. See the module documentation.
///
/// Errors are `io::Error`s of kind `InvalidData` (corrupt: names the member
/// and byte offset) or `UnexpectedEof` (the stream ends early: says where);
/// errors of the inner reader are passed on as they are, after the output
/// that precedes them. After an error every read fails. Dropping the
/// decoder stops its threads.
pub struct ParallelGzDecoder<R: Read> {
    /// The input; lent to the serial decoder while it inflates a member.
    input: Option<Input<R>>,
    threads: usize,
    pool: Option<Pool>,
    /// Worker threads could not be started: decode serially.
    no_pool: bool,
    units: VecDeque<Unit<R>>,
    raw_in_flight: u64,
    bufs_in_flight: u64,
    /// Output being handed out: `out[out_pos..out_len]`.
    out: Vec<u8>,
    out_pos: usize,
    out_len: usize,
    /// Spare output and input buffers, so steady state allocates nothing
    /// (fresh multi-MiB buffers cost page faults and grow the heap).
    spare: Vec<Vec<u8>>,
    spare_raw: Vec<Vec<u8>>,
    /// Number (0-based) of the next member the scanner looks at.
    next_member: u64,
    /// The next member must be decoded serially (a worker failed on it),
    /// its first `skip` output bytes not handed on again.
    force_serial: bool,
    skip: u64,
    failed: Option<(io::ErrorKind, String)>,
    done: bool,
    stats: DecodeStats,
}

/// A piece of the stream, in order.
enum Unit<R> {
    Job(Job),
    /// The next member, decoded on the calling thread; nothing of it has
    /// been consumed by the scanner.
    Serial(SerialMember<R>),
}

impl<R: Read> ParallelGzDecoder<R> {
    /// A decoder using one worker per core.
    pub fn new(inner: R) -> Self {
        Self::with_threads(inner, util::threads(0))
    }

    /// A decoder using `threads` workers; 0 decodes everything on the
    /// calling thread.
    pub fn with_threads(inner: R, threads: usize) -> Self {
        ParallelGzDecoder {
            input: Some(Input::new(inner)),
            threads,
            pool: None,
            no_pool: threads == 0,
            units: VecDeque::new(),
            raw_in_flight: 0,
            bufs_in_flight: 0,
            out: Vec::new(),
            out_pos: 0,
            out_len: 0,
            spare: Vec::new(),
            spare_raw: Vec::new(),
            next_member: 0,
            force_serial: false,
            skip: 0,
            failed: None,
            done: false,
            stats: DecodeStats::default(),
        }
    }

    /// What the decoder did so far.
    pub fn stats(&self) -> DecodeStats {
        self.stats
    }

    fn read_inner(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.out_pos < self.out_len {
                let n = buf.len().min(self.out_len - self.out_pos);
                buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
                self.out_pos += n;
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            self.schedule();
            match self.units.front_mut() {
                None => {
                    // The scanner always leaves a unit unless done.
                    return Err(io::Error::other("gzip decoder: nothing scheduled"));
                }
                Some(Unit::Serial(m)) => {
                    let (n, state) = m.read(&mut self.input, buf)?;
                    match state {
                        SerialState::More => {}
                        SerialState::MemberDone => {
                            self.units.pop_front();
                            self.stats.serial_members += 1;
                        }
                        SerialState::StreamEnd => {
                            self.units.pop_front();
                            self.done = true;
                        }
                    }
                    if n > 0 {
                        return Ok(n);
                    }
                }
                Some(Unit::Job(_)) => self.next_output()?,
            }
        }
    }

    /// Takes the head job's next result: its output becomes the current
    /// output; once the job is done, if a member failed, the stream is
    /// rewound to it for serial decoding.
    fn next_output(&mut self) -> io::Result<()> {
        let old = std::mem::take(&mut self.out);
        let Some(Unit::Job(job)) = self.units.front_mut() else {
            return Ok(());
        };
        // After a job's first piece the drained buffer is one of its own:
        // it goes back to the worker, which fills the next piece in it.
        match &job.recycle {
            Some(tx) if job.taken > 0 => drop(tx.send(old)),
            _ => give_back(&mut self.spare, old),
        }
        let res = job
            .reply
            .recv()
            .map_err(|_| io::Error::other("a gzip decoding thread stopped unexpectedly"))?;
        job.taken += 1;
        job.handed += res.len as u64;
        self.out = res.out;
        self.out_pos = 0;
        self.out_len = res.len;
        if res.more {
            return Ok(());
        }
        let Some(Unit::Job(job)) = self.units.pop_front() else {
            return Ok(());
        };
        self.raw_in_flight -= job.raw.len() as u64;
        self.bufs_in_flight -= job.bufs;
        self.stats.parallel_members += res.ok_members as u64;
        match res.failed_at {
            Some(i) => self.fall_back(job, i),
            None => {
                // The worker has dropped its handle before replying.
                if let Ok(raw) = Arc::try_unwrap(job.raw) {
                    if self.spare_raw.len() < SPARE && raw.capacity() <= SPARE_RAW_MAX {
                        self.spare_raw.push(raw);
                    }
                }
            }
        }
        Ok(())
    }

    /// Puts member `i` of `job`, and everything scanned after it, back in
    /// front of the input for the serial decoder.
    fn fall_back(&mut self, job: Job, i: usize) {
        self.stats.fallbacks += 1;
        // What a job in pieces handed on is the start of its one member.
        self.skip = if job.recycle.is_some() { job.handed } else { 0 };
        let mut segs = vec![Segment {
            start: job.members[i].start,
            end: job.raw.len(),
            data: job.raw,
        }];
        while let Some(unit) = self.units.pop_front() {
            if let Unit::Job(later) = unit {
                later.cancel.store(true, Ordering::Relaxed);
                self.raw_in_flight -= later.raw.len() as u64;
                self.bufs_in_flight -= later.bufs;
                segs.push(Segment {
                    start: 0,
                    end: later.raw.len(),
                    data: later.raw,
                });
            }
        }
        self.input().push_front(segs);
        self.next_member = job.first_member + i as u64;
        self.force_serial = true;
    }

    /// Scans ahead and submits jobs while limits allow; always leaves at
    /// least one unit queued (unless done).
    fn schedule(&mut self) {
        loop {
            if matches!(self.units.back(), Some(Unit::Serial(_))) {
                return;
            }
            let jobs = self.units.len();
            // One job being handed out, one in work per worker.
            if jobs > self.threads.max(1) {
                return;
            }
            if self.no_pool || self.force_serial {
                self.force_serial = false;
                self.push_serial();
                return;
            }
            match self.scan_job(jobs > 0) {
                Scan::Later => return,
                Scan::Serial => {
                    self.push_serial();
                    return;
                }
                Scan::Job { raw, members } => {
                    if let Err(raw) = self.submit(raw, members) {
                        // No workers: put the bytes back, go serial.
                        self.input().push_front(vec![Segment {
                            start: 0,
                            end: raw.len(),
                            data: raw,
                        }]);
                        self.no_pool = true;
                        self.push_serial();
                        return;
                    }
                }
            }
        }
    }

    fn push_serial(&mut self) {
        let index = self.next_member;
        self.next_member += 1;
        let skip = std::mem::take(&mut self.skip);
        let start = self.input().offset;
        self.units
            .push_back(Unit::Serial(SerialMember::new(index, start, skip)));
    }

    /// Hands a job to the workers (started on first use). Gives the bytes
    /// back if there are no workers.
    fn submit(&mut self, raw: Arc<Vec<u8>>, members: Members) -> Result<(), Arc<Vec<u8>>> {
        if self.pool.is_none() {
            match Pool::start(self.threads) {
                Ok(p) => self.pool = Some(p),
                Err(_) => return Err(raw),
            }
        }
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        let cancel = Arc::new(AtomicBool::new(false));
        let spans = Arc::new(members.spans);
        let (recycle, pieces) = if members.pieces {
            let (tx, rx) = mpsc::channel();
            let second = self.out_buf();
            (
                Some(tx),
                Some(Pieces {
                    second,
                    recycle: rx,
                }),
            )
        } else {
            (None, None)
        };
        let bufs = 1 + u64::from(pieces.is_some());
        let work = Work {
            raw: raw.clone(),
            spans: spans.clone(),
            out: self.out_buf(),
            pieces,
            cancel: cancel.clone(),
            reply: reply_tx,
        };
        if self.pool.as_ref().is_none_or(|p| p.send(work).is_err()) {
            self.pool = None;
            return Err(raw);
        }
        self.raw_in_flight += raw.len() as u64;
        self.bufs_in_flight += bufs;
        self.units.push_back(Unit::Job(Job {
            raw,
            members: spans,
            first_member: members.first,
            bufs,
            recycle,
            taken: 0,
            handed: 0,
            cancel,
            reply: reply_rx,
        }));
        Ok(())
    }

    /// An output buffer for a job: a spare, or a new one. Allocated here,
    /// not on the workers, so all live in this thread's allocator arena.
    fn out_buf(&mut self) -> Vec<u8> {
        self.spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PIECE + 1))
    }

    /// The input, when the serial decoder is not holding it: it holds it
    /// only while its unit, the last queued, is at the front, and then
    /// nothing scans, pushes back or falls back.
    fn input(&mut self) -> &mut Input<R> {
        self.input
            .as_mut()
            .expect("the input is back once a serial member ends")
    }

    /// Stops the workers and drops queued work.
    fn shutdown(&mut self) {
        for unit in self.units.drain(..) {
            if let Unit::Job(job) = unit {
                job.cancel.store(true, Ordering::Relaxed);
            }
        }
        self.pool = None;
        self.out = Vec::new();
        self.spare.clear();
        self.spare_raw.clear();
    }
}

impl<R: Read> Read for ParallelGzDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some((kind, msg)) = &self.failed {
            return Err(io::Error::new(*kind, msg.clone()));
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let r = self.read_inner(buf);
        if let Err(e) = &r {
            self.failed = Some((e.kind(), e.to_string()));
            self.shutdown();
        }
        r
    }
}

impl<R: Read> Drop for ParallelGzDecoder<R> {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Keeps `buf` for reuse if it is a whole output buffer and few are kept.
fn give_back(spare: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if buf.capacity() > PIECE && spare.len() < SPARE {
        spare.push(buf);
    }
}
