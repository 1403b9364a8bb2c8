//! The copy engine: every allocated extent of an image into a raw image
//! that reads as zeros (a file, or memory for fuzzing), sorted by host
//! offset for sequential reads on a reader thread, all-zero 4 KiB blocks
//! skipped, compressed clusters inflated on worker threads.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};

use anyhow::{bail, Context, Result};

use super::{Decoder, Extent, Image, Kind, ReadAt};

/// Zero detection granularity, as qemu-img's default `-S 4k`.
const BLOCK: u64 = 4096;
/// Largest single read; reads of adjacent host runs are merged up to this.
const READ_MAX: u64 = 8 << 20;
/// Host gaps up to this size are read through rather than split into two reads.
const GAP_MAX: u64 = 256 << 10;
/// Extents sorted per batch: bounds memory (32 B each) for any image size.
pub(crate) const BATCH: usize = 1 << 16;
/// Buffers in flight between the reader thread and the writer.
const BUFFERS: usize = 3;

/// Where the raw bytes go: a file (positioned writes), or memory for fuzzing.
pub trait WriteAt: Sync {
    /// Writes all of `buf` at `off`.
    fn write_at_all(&self, buf: &[u8], off: u64) -> std::io::Result<()>;
}

impl WriteAt for File {
    fn write_at_all(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        FileExt::write_all_at(self, buf, off)
    }
}

/// Writes every allocated extent of `img` into `out` (which must already read
/// as zeros over the virtual size). `progress` gets guest bytes done. Returns
/// the bytes written.
pub fn copy_image<R: ReadAt + Sync, W: WriteAt + ?Sized>(
    img: &Image<R>,
    out: &W,
    sparse_detect: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let mut it = img.extents();
    let mut batch: Vec<Extent> = Vec::with_capacity(BATCH);
    let mut written = 0;
    while let Some((data, comp)) = next_batch(&mut it, &mut batch, |e, b| b.push(e))? {
        written += copy_data(img, out, &data, sparse_detect, progress)?;
        written += copy_compressed(img, out, &comp, sparse_detect, progress)?;
    }
    Ok(written)
}

/// The next batch of up to `BATCH` extents that `select` keeps (or cuts), in
/// host order (which turns the copy into sequential reads), split into data
/// and compressed extents; None at the end.
pub(crate) fn next_batch<R: ReadAt>(
    it: &mut crate::Extents<'_, R>,
    batch: &mut Vec<Extent>,
    mut select: impl FnMut(Extent, &mut Vec<Extent>),
) -> Result<Option<(Vec<Extent>, Vec<Extent>)>> {
    batch.clear();
    while batch.len() < BATCH {
        match it.next_extent()? {
            Some(e) => select(e, batch),
            None => break,
        }
    }
    if batch.is_empty() {
        return Ok(None);
    }
    batch.sort_unstable_by_key(|e| e.host);
    Ok(Some(batch.iter().partition(|e| e.kind == Kind::Data)))
}

/// One read of host bytes and the guest pieces inside it.
pub(crate) struct Group {
    pub(crate) host: u64,
    pub(crate) span: u64,
    /// (offset in the read, guest offset, length)
    pub(crate) pieces: Vec<(u64, u64, u64)>,
}

pub(crate) fn groups(data: &[Extent]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    for e in data {
        let mut done = 0;
        while done < e.len {
            let host = e.host + done;
            let guest = e.guest + done;
            let fits = out.last().and_then(|g| {
                let end = g.host + g.span;
                (host >= end && host - end <= GAP_MAX && host - g.host < READ_MAX)
                    .then(|| READ_MAX - (host - g.host))
            });
            let (g, room) = match fits {
                Some(room) => (out.last_mut().unwrap(), room),
                None => {
                    out.push(Group {
                        host,
                        span: 0,
                        pieces: Vec::new(),
                    });
                    (out.last_mut().unwrap(), READ_MAX)
                }
            };
            let n = (e.len - done).min(room);
            g.pieces.push((host - g.host, guest, n));
            g.span = host - g.host + n;
            done += n;
        }
    }
    out
}

pub(crate) fn copy_data<R: ReadAt + Sync, W: WriteAt + ?Sized>(
    img: &Image<R>,
    out: &W,
    data: &[Extent],
    sparse: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    if data.is_empty() {
        return Ok(0);
    }
    let groups = groups(data);
    let write_group = |g: &Group, buf: &[u8]| -> Result<u64> {
        let mut written = 0;
        for &(at, guest, len) in &g.pieces {
            let at = at as usize;
            written += write_nonzero(out, &buf[at..at + len as usize], guest, sparse)
                .context("write failed")?;
            progress(len);
        }
        Ok(written)
    };
    if groups.len() == 1 {
        // Nothing to overlap: skip the thread.
        let mut buf = vec![0u8; groups[0].span as usize];
        img.read_padded(&mut buf, groups[0].host)?;
        return write_group(&groups[0], &buf);
    }
    let stop = AtomicBool::new(false);
    // The reader thread fills buffers while this thread scans and writes them.
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<Result<(usize, Vec<u8>)>>(BUFFERS);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..BUFFERS.min(groups.len()) {
            let _ = free_tx.send(Vec::new());
        }
        let groups = &groups;
        let stop = &stop;
        s.spawn(move || {
            for (i, g) in groups.iter().enumerate() {
                let Ok(mut buf) = free_rx.recv() else { return };
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                buf.resize(g.span as usize, 0);
                let r = img.read_padded(&mut buf, g.host).map(|()| (i, buf));
                let failed = r.is_err();
                if full_tx.send(r).is_err() || failed {
                    return;
                }
            }
        });
        let mut written = 0;
        for _ in 0..groups.len() {
            let (i, buf) = match full_rx.recv() {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => return Err(e),
                Err(_) => bail!("{}: reader thread stopped", img.name()),
            };
            match write_group(&groups[i], &buf) {
                Ok(n) => written += n,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    return Err(e);
                }
            }
            let _ = free_tx.send(buf);
        }
        Ok(written)
    })
}

/// Inflates compressed clusters on all cores; each worker takes a run of
/// clusters adjacent in the file and reads them with one read.
pub(crate) fn copy_compressed<R: ReadAt + Sync, W: WriteAt + ?Sized>(
    img: &Image<R>,
    out: &W,
    comp: &[Extent],
    sparse: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    if comp.is_empty() {
        return Ok(0);
    }
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(comp.len().div_ceil(CHUNK));
    let job = Inflate {
        img,
        out,
        comp,
        sparse,
        progress,
        next: AtomicUsize::new(0),
        written: AtomicU64::new(0),
        failed: AtomicBool::new(false),
    };
    if workers == 1 {
        job.work()?;
        return Ok(job.written.into_inner());
    }
    let first_err: Mutex<Option<anyhow::Error>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                if let Err(e) = job.work() {
                    job.failed.store(true, Ordering::Relaxed);
                    first_err
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_or_insert(e);
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(job.written.into_inner()),
    }
}

/// Compressed clusters a worker takes at a time.
const CHUNK: usize = 32;

/// The compressed clusters to inflate, shared by the workers.
struct Inflate<'a, R, W: ?Sized> {
    img: &'a Image<R>,
    out: &'a W,
    comp: &'a [Extent],
    sparse: bool,
    progress: &'a (dyn Fn(u64) + Sync),
    /// The next cluster no worker has taken.
    next: AtomicUsize,
    written: AtomicU64,
    failed: AtomicBool,
}

/// One worker's buffers.
struct Bufs {
    cluster: Vec<u8>,
    scratch: Vec<u8>,
    span: Vec<u8>,
    dec: Decoder,
}

impl<R: ReadAt + Sync, W: WriteAt + ?Sized> Inflate<'_, R, W> {
    /// Takes chunks until none are left or a worker failed.
    fn work(&self) -> Result<()> {
        let mut bufs = Bufs {
            cluster: vec![0u8; self.img.header().cluster_size() as usize],
            scratch: Vec::new(),
            span: Vec::new(),
            dec: Decoder::default(),
        };
        loop {
            let i = self.next.fetch_add(CHUNK, Ordering::Relaxed);
            if i >= self.comp.len() || self.failed.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.chunk(&self.comp[i..(i + CHUNK).min(self.comp.len())], &mut bufs)?;
        }
    }

    /// Inflates and writes the clusters of `chunk`: with one read for the
    /// run when it is dense, else cluster by cluster.
    fn chunk(&self, chunk: &[Extent], b: &mut Bufs) -> Result<()> {
        let img = self.img;
        let cs = img.header().cluster_size();
        let csize = |e: &Extent| match e.kind {
            Kind::Compressed { csize } => csize,
            Kind::Data => 0,
        };
        let lo = chunk[0].host;
        let hi = chunk.iter().map(|e| e.host + csize(e)).max().unwrap_or(lo);
        let dense = hi - lo <= READ_MAX && hi - lo <= chunk.len() as u64 * cs * 2;
        if dense {
            b.span.resize((hi - lo) as usize, 0);
            img.read_padded(&mut b.span, lo)?;
        }
        for e in chunk {
            if dense {
                let at = (e.host - lo) as usize;
                let src = &b.span[at..at + csize(e) as usize];
                b.dec
                    .decompress(img.header().compression, src, &mut b.cluster)
                    .with_context(|| img.cluster_error(e))?;
            } else {
                img.decompress_extent(e, &mut b.scratch, &mut b.cluster, &mut b.dec)?;
            }
            let n = write_nonzero(self.out, &b.cluster[..e.len as usize], e.guest, self.sparse)
                .context("write failed")?;
            self.written.fetch_add(n, Ordering::Relaxed);
            (self.progress)(e.len);
        }
        Ok(())
    }
}

fn is_zero(b: &[u8]) -> bool {
    // Data blocks rarely start with 16 zero bytes: most exit here.
    if b.iter().take(16).any(|&x| x != 0) {
        return false;
    }
    let (head, body, tail) = unsafe { b.align_to::<u128>() };
    head.iter().all(|&x| x == 0)
        && tail.iter().all(|&x| x == 0)
        && body.iter().fold(0u128, |a, &x| a | x) == 0
}

/// Writes `buf` at guest offset `guest`, leaving out every part of a 4 KiB
/// guest block that is all zeros (the output already reads as zeros there).
pub(crate) fn write_nonzero<W: WriteAt + ?Sized>(
    out: &W,
    buf: &[u8],
    guest: u64,
    sparse: bool,
) -> std::io::Result<u64> {
    if !sparse {
        out.write_at_all(buf, guest)?;
        return Ok(buf.len() as u64);
    }
    let mut written = 0;
    let mut run: Option<usize> = None;
    let mut pos = 0usize;
    while pos < buf.len() {
        let g = guest + pos as u64;
        let end = ((g / BLOCK + 1) * BLOCK - guest).min(buf.len() as u64) as usize;
        if is_zero(&buf[pos..end]) {
            if let Some(s) = run.take() {
                out.write_at_all(&buf[s..pos], guest + s as u64)?;
                written += (pos - s) as u64;
            }
        } else if run.is_none() {
            run = Some(pos);
        }
        pos = end;
    }
    if let Some(s) = run {
        out.write_at_all(&buf[s..], guest + s as u64)?;
        written += (buf.len() - s) as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Rec(Mutex<Vec<(u64, usize)>>);
    impl WriteAt for Rec {
        fn write_at_all(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
            self.0.lock().unwrap().push((off, buf.len()));
            Ok(())
        }
    }

    #[test]
    fn zero_blocks_are_skipped_at_guest_alignment() {
        let mut buf = vec![0u8; 3 * 4096];
        buf[100] = 1; // guest 2048+100: block 0
        buf[2048 + 4096 + 5] = 1; // guest 8192+5: block 2
        let rec = Rec(Mutex::new(Vec::new()));
        let n = write_nonzero(&rec, &buf, 2048, true).unwrap();
        assert_eq!(*rec.0.lock().unwrap(), vec![(2048, 2048), (8192, 4096)]);
        assert_eq!(n, 6144);
    }

    #[test]
    fn groups_merge_and_split() {
        let e = |guest, host, len| Extent {
            guest,
            host,
            len,
            kind: Kind::Data,
        };
        let g = groups(&[
            e(0, 0, 65536),
            e(1 << 30, 65536, 65536),
            e(0, 20 << 20, 9 << 20),
        ]);
        assert_eq!(g.len(), 3);
        assert_eq!(g[0].span, 131072);
        assert_eq!(g[1].span, READ_MAX);
        assert_eq!(g[2].span, 1 << 20);
    }
}
