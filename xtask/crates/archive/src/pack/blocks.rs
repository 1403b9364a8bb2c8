//! Packing on every core: the block pipeline shared by the gzip
//! ([`super::gzip::compress`]) and zstd compressors, and xz through
//! liblzma's own multithreaded encoder.
//!
//! Every format is written so that it can also be *decoded* in parallel:
//! gzip as independent members that carry their sizes, zstd as independent
//! frames that carry their content size, xz as blocks whose headers carry
//! their sizes (what `xz -T0` writes).

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Mutex};
use std::thread;

/// What a compressor did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackStats {
    /// Bytes read.
    pub input_bytes: u64,
    /// Bytes written.
    pub output_bytes: u64,
    /// Gzip members, zstd frames; for xz, 0 (liblzma does not say).
    pub blocks: u64,
}

/// Cuts `input` into `block_size` blocks, encodes each on one of `threads`
/// workers with a closure made by `make` (one per worker, so codecs keep
/// their state), and writes the results to `output` in input order.
///
/// The calling thread reads and writes; at most two blocks per worker are in
/// flight, so memory stays near `threads × 2 × (block + encoded block)`.
/// Empty input still yields one (empty) block: a zero-byte gzip or zstd
/// file is not a valid one.
pub(crate) fn par_blocks<F>(
    input: impl Read,
    output: impl Write,
    block_size: usize,
    threads: usize,
    make: &(dyn Fn() -> io::Result<F> + Sync),
) -> io::Result<PackStats>
where
    F: FnMut(&[u8], &mut Vec<u8>) -> io::Result<()>,
{
    let threads = util::threads(threads);
    let (job_tx, job_rx) = mpsc::channel::<Job>();
    let job_rx = Mutex::new(job_rx);
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    thread::scope(|s| {
        // Owned by the closure, so an early return closes the queue and
        // the workers exit before the scope joins them.
        let job_tx = job_tx;
        for _ in 0..threads {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            s.spawn(move || work(job_rx, &done_tx, make));
        }
        drop(done_tx);
        let mut order = Order {
            input,
            output,
            block_size,
            max_in_flight: 2 * threads as u64,
            stats: PackStats::default(),
            next_read: 0,
            next_write: 0,
            eof: false,
            ready: BTreeMap::new(),
            spare_in: Vec::new(),
            spare_out: Vec::new(),
        };
        order.run(&job_tx, &done_rx)
    })
}

/// A block to encode: (sequence number, input, output buffer to fill).
type Job = (u64, Vec<u8>, Vec<u8>);
/// An encoded block: (sequence number, result, input, output).
type Done = (u64, io::Result<()>, Vec<u8>, Vec<u8>);

/// A worker: encodes jobs until the queue closes, with a codec of its own.
fn work<F>(
    job_rx: &Mutex<mpsc::Receiver<Job>>,
    done_tx: &mpsc::Sender<Done>,
    make: &(dyn Fn() -> io::Result<F> + Sync),
) where
    F: FnMut(&[u8], &mut Vec<u8>) -> io::Result<()>,
{
    let mut codec = None;
    loop {
        // The lock is held only while waiting for one job.
        let job = match job_rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        let Ok((seq, block, mut out)) = job else {
            return;
        };
        // A codec that panics must not leave the caller waiting for this
        // block forever.
        let r = catch_unwind(AssertUnwindSafe(|| {
            if codec.is_none() {
                codec = Some(make()?);
            }
            match codec.as_mut() {
                Some(f) => f(&block, &mut out),
                None => Err(io::Error::other("no codec")),
            }
        }))
        .unwrap_or_else(|_| Err(io::Error::other("a compression thread panicked")));
        if done_tx.send((seq, r, block, out)).is_err() {
            return;
        }
    }
}

/// The calling thread's side: reads blocks into jobs, and writes the
/// encoded blocks in input order, buffers reused.
struct Order<R, W> {
    input: R,
    output: W,
    block_size: usize,
    max_in_flight: u64,
    stats: PackStats,
    next_read: u64,
    next_write: u64,
    eof: bool,
    ready: BTreeMap<u64, Vec<u8>>,
    spare_in: Vec<Vec<u8>>,
    spare_out: Vec<Vec<u8>>,
}

impl<R: Read, W: Write> Order<R, W> {
    fn run(
        &mut self,
        job_tx: &mpsc::Sender<Job>,
        done_rx: &mpsc::Receiver<Done>,
    ) -> io::Result<PackStats> {
        loop {
            self.fill(job_tx)?;
            if self.next_write == self.next_read {
                break;
            }
            let (seq, r, block, out) = done_rx.recv().map_err(|_| stopped())?;
            r?;
            self.spare_in.push(block);
            self.ready.insert(seq, out);
            self.write_ready()?;
        }
        self.output.flush()?;
        Ok(self.stats)
    }

    /// Reads blocks and queues them while fewer than `max_in_flight` are.
    fn fill(&mut self, job_tx: &mpsc::Sender<Job>) -> io::Result<()> {
        while !self.eof && self.next_read - self.next_write < self.max_in_flight {
            let mut block = self.spare_in.pop().unwrap_or_default();
            block.clear();
            let n = (&mut self.input)
                .take(self.block_size as u64)
                .read_to_end(&mut block)?;
            if n < self.block_size {
                self.eof = true;
            }
            if n == 0 && self.next_read > 0 {
                break;
            }
            self.stats.input_bytes += n as u64;
            let out = self.spare_out.pop().unwrap_or_default();
            job_tx
                .send((self.next_read, block, out))
                .map_err(|_| stopped())?;
            self.next_read += 1;
        }
        Ok(())
    }

    /// Writes the encoded blocks that are next in order.
    fn write_ready(&mut self) -> io::Result<()> {
        while let Some(out) = self.ready.remove(&self.next_write) {
            self.output.write_all(&out)?;
            self.stats.output_bytes += out.len() as u64;
            self.stats.blocks += 1;
            self.next_write += 1;
            self.spare_out.push(out);
        }
        Ok(())
    }
}

fn stopped() -> io::Error {
    io::Error::other("the compression threads stopped")
}

// ---------------------------------------------------------------------------
// zstd

/// Options for [`compress_zstd`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZstdOptions {
    /// 1–22; 3 is the zstd CLI's default.
    pub level: i32,
    /// Uncompressed bytes per frame. A frame cannot refer back into the
    /// previous one; on the 1.5 GiB test tar at level 3, 4 MiB frames give
    /// 645.9 MB (`zstd -T2 -3`: 645.4 MB) at 38 MB RSS, 16 MiB frames
    /// 643.3 MB at 133 MB RSS.
    pub block_size: usize,
    /// Threads; 0 means one per core.
    pub threads: usize,
}

impl Default for ZstdOptions {
    fn default() -> Self {
        ZstdOptions {
            level: 3,
            block_size: 4 << 20,
            threads: 0,
        }
    }
}

/// Compresses `input` as a sequence of independent zstd frames, one per
/// block, each with its content size and a checksum. `zstd -dc` reads the
/// concatenation as one stream.
pub fn compress_zstd(
    input: impl Read,
    output: impl Write,
    opts: &ZstdOptions,
) -> io::Result<PackStats> {
    if !(1..=22).contains(&opts.level) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("zstd level {} is out of range (1-22)", opts.level),
        ));
    }
    if opts.block_size == 0 || opts.block_size > mgzip::MAX_BLOCK {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("zstd block size {} is out of range", opts.block_size),
        ));
    }
    let level = opts.level;
    let make = move || -> io::Result<_> {
        let mut c = zstd::bulk::Compressor::new(level)?;
        c.set_parameter(zstd::zstd_safe::CParameter::ChecksumFlag(true))?;
        Ok(move |block: &[u8], out: &mut Vec<u8>| {
            out.clear();
            out.reserve(zstd::zstd_safe::compress_bound(block.len()));
            c.compress_to_buffer(block, out).map(|_| ())
        })
    };
    par_blocks(input, output, opts.block_size, opts.threads, &make)
}

// ---------------------------------------------------------------------------
// xz

/// Options for [`compress_xz`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XzOptions {
    /// Preset 0–9 (6 is xz's default).
    pub preset: u32,
    /// Uncompressed bytes per block; 0 lets liblzma choose (3 × the
    /// dictionary: 24 MiB at preset 6), as `xz -T0` does.
    pub block_size: u64,
    /// Threads; 0 means one per core.
    pub threads: usize,
}

impl Default for XzOptions {
    fn default() -> Self {
        XzOptions {
            preset: 6,
            block_size: 0,
            threads: 0,
        }
    }
}

/// Compresses `input` as one xz stream of independent blocks whose headers
/// record their compressed and uncompressed sizes (liblzma's multithreaded
/// encoder, as `xz -T0`), so a multithreaded decoder can decode them in
/// parallel. CRC64 check, as the xz CLI.
pub fn compress_xz(
    input: impl Read,
    output: impl Write,
    opts: &XzOptions,
) -> io::Result<PackStats> {
    if opts.preset > 9 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("xz preset {} is out of range (0-9)", opts.preset),
        ));
    }
    let threads = u32::try_from(util::threads(opts.threads)).unwrap_or(u32::MAX);
    let stream = liblzma::stream::MtStreamBuilder::new()
        .threads(threads)
        .preset(opts.preset)
        .block_size(opts.block_size)
        .check(liblzma::stream::Check::Crc64)
        .encoder()
        .map_err(io::Error::other)?;
    let mut counted_in = Counting::new(input);
    let mut enc = liblzma::write::XzEncoder::new_stream(Counting::new(output), stream);
    io::copy(&mut counted_in, &mut enc)?;
    let mut out = enc.finish()?;
    out.flush()?;
    Ok(PackStats {
        input_bytes: counted_in.count,
        output_bytes: out.count,
        blocks: 0,
    })
}

/// Counts bytes passing through.
struct Counting<T> {
    inner: T,
    count: u64,
}

impl<T> Counting<T> {
    fn new(inner: T) -> Self {
        Counting { inner, count: 0 }
    }
}

impl<T: Read> Read for Counting<T> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

impl<T: Write> Write for Counting<T> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
