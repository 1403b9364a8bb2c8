//! Writing the image: the member's bytes go to a temporary file on a thread
//! of their own while they are hashed, within a budget (the size the tar
//! header or the qcow2 header allows, and the free space, keeping a reserve).

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{anyhow, Result};
use sha2::{Digest, Sha256};

use super::{local, Ctx, REDO};
use qcow2::StreamConvert;
use util::fmt::human_bytes;
use util::io::read_full;

/// Size of the buffers handed from the decompressor to the writer: big enough
/// that per-call overhead (channel, syscall, hasher setup) is negligible.
const CHUNK: usize = 1 << 20;
/// Buffers in flight between the two threads; a few let either side run ahead
/// briefly without holding much memory.
const IN_FLIGHT: usize = 4;

/// Reserves the member's size up front so a full disk fails now rather than
/// gigabytes in, and the file is laid out contiguously. Best effort: file
/// systems without `fallocate` just skip it.
pub(super) fn preallocate(file: &File, size: u64, path: &Path) -> Result<()> {
    use std::os::unix::io::AsRawFd;
    let Ok(len) = libc::off_t::try_from(size) else {
        return Ok(());
    };
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on an open descriptor we own; no memory is shared.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSPC) {
            return Err(util::fs::no_space(format!(
                "cannot reserve {} for {}: the disk is full; free some space or choose \
                 another --output",
                human_bytes(size),
                path.display()
            )));
        }
    }
    Ok(())
}

/// Limits on what one image may take.
pub(super) struct Budget {
    /// Bytes the image may have at most.
    pub max: u64,
    /// Watch free space here while writing (when the size was not known up front).
    pub watch: Option<PathBuf>,
}

/// Free space kept for the rest of the system while an image of unknown
/// size grows: a twentieth of the file system, at most this.
const RESERVE_MAX: u64 = 512 << 20;

enum WriteStop {
    Io(io::Error),
    TooBig(u64),
    LowSpace(u64),
}

/// Copies `src` to EOF into `out`, hashing it. Decompression (the caller's
/// reads) stays on this thread; SHA-256 and the writes run on another, so
/// the two overlap on separate cores.
pub(super) fn copy_hashed(
    src: &mut dyn Read,
    out: &mut File,
    out_path: &Path,
    ctx: &Ctx,
    budget: &Budget,
    convert: Option<&mut StreamConvert>,
) -> Result<(u64, [u8; 32])> {
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<(Box<[u8]>, usize)>(IN_FLIGHT);
        let (free_tx, free_rx) = mpsc::channel::<Box<[u8]>>();
        for _ in 0..IN_FLIGHT + 1 {
            let _ = free_tx.send(vec![0u8; CHUNK].into_boxed_slice());
        }
        let writer = s.spawn(move || write_hashed(full_rx, free_tx, out, budget, convert));
        let read_err = feed(src, &free_rx, full_tx);
        let written = writer
            .join()
            .map_err(|_| anyhow!("the writer thread for {} panicked", out_path.display()))?;
        match (written, read_err) {
            (Ok(done), None) => Ok(done),
            (Err(stop), None)
            | (Err(stop @ (WriteStop::TooBig(_) | WriteStop::LowSpace(_))), Some(_)) => {
                Err(stopped(stop, out_path, ctx, budget))
            }
            // The writer saw only the end of what the reader gave up on.
            (_, Some(e)) => Err(ctx.read_error(e)),
        }
    })
}

/// The writer thread: hashes and writes each full buffer (and feeds the
/// stream converter), within the budget, and hands the buffer back.
fn write_hashed(
    full_rx: mpsc::Receiver<(Box<[u8]>, usize)>,
    free_tx: mpsc::Sender<Box<[u8]>>,
    out: &mut File,
    budget: &Budget,
    mut convert: Option<&mut StreamConvert>,
) -> std::result::Result<(u64, [u8; 32]), WriteStop> {
    let mut hasher = Sha256::new();
    let mut n = 0u64;
    for (buf, len) in full_rx {
        if n + len as u64 > budget.max {
            return Err(WriteStop::TooBig(n + len as u64));
        }
        // One statvfs per MiB written costs nothing next to the write.
        if let Some(dir) = &budget.watch {
            if let Ok((free, total)) = util::fs::space(dir) {
                if free < (total / 20).min(RESERVE_MAX) + len as u64 {
                    return Err(WriteStop::LowSpace(free));
                }
            }
        }
        hasher.update(&buf[..len]);
        out.write_all(&buf[..len]).map_err(WriteStop::Io)?;
        // An error here is kept by the converter and named by its
        // `finish`; the unpack itself goes on.
        if let Some(c) = convert.as_deref_mut() {
            let _ = c.feed(&buf[..len]);
        }
        n += len as u64;
        // The reader may be gone after an error; nothing to do then.
        let _ = free_tx.send(buf);
    }
    Ok((n, hasher.finalize().into()))
}

/// The reading side: fills free buffers from `src` and hands them over,
/// until EOF, a read error (returned), or the writer has stopped (it
/// dropped its end of `free`).
fn feed(
    src: &mut dyn Read,
    free: &mpsc::Receiver<Box<[u8]>>,
    full: mpsc::SyncSender<(Box<[u8]>, usize)>,
) -> Option<io::Error> {
    while let Ok(mut buf) = free.recv() {
        match read_full(src, &mut buf) {
            Ok(0) => return None,
            Ok(len) => {
                if full.send((buf, len)).is_err() {
                    return None;
                }
            }
            Err(e) => return Some(e),
        }
    }
    None
}

/// Why the writer stopped, said with the file and what to do.
fn stopped(stop: WriteStop, out_path: &Path, ctx: &Ctx, budget: &Budget) -> anyhow::Error {
    match stop {
        WriteStop::TooBig(n) => anyhow!(
            "{}: the image grows past {} ({} bytes), more than its own qcow2 header \
             allows; the archive is bogus: {REDO}",
            ctx.source,
            human_bytes(budget.max),
            n
        ),
        WriteStop::LowSpace(free) => local(util::fs::no_space(format!(
            "stopped writing {} with only {} left free, to keep the disk from filling; \
             free some space or choose another --output",
            out_path.display(),
            human_bytes(free)
        ))),
        WriteStop::Io(e) => local(anyhow::Error::new(e).context(format!(
            "cannot write {}; check free space and permissions, or choose another --output",
            out_path.display()
        ))),
    }
}
