//! Sharing blocks instead of copying them: on a file system with reflinks
//! (XFS made with `reflink=1`, btrfs) `FICLONERANGE` makes a range of one
//! file point at another's blocks, so the copy costs no writes and no
//! space. Cloning is an optimisation only: every range it cannot take
//! (unaligned, another file system, no reflink support) the caller writes.

use std::fs::File;
use std::io;
use std::os::unix::io::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shares ranges of `src` into `dst`.
pub struct Cloner<'a> {
    src: &'a File,
    dst: &'a File,
    /// `src`'s size when probed: clones never reach past it, so the kernel
    /// never rounds a range up to a block it would then share beyond.
    src_len: u64,
    /// The file system block: clones must start and end on it.
    block: u64,
    off: AtomicBool,
    cloned: AtomicU64,
}

fn clone_range(src: &File, src_off: u64, len: u64, dst: &File, dst_off: u64) -> io::Result<()> {
    let arg = libc::file_clone_range {
        src_fd: i64::from(src.as_raw_fd()),
        src_offset: src_off,
        src_length: len,
        dest_offset: dst_off,
    };
    // SAFETY: the kernel only reads `arg`; both descriptors are open.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONERANGE, &arg) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl<'a> Cloner<'a> {
    /// A cloner when `dst` can share `src`'s blocks (same file system, with
    /// reflink support). `src`'s size is read now, so nothing may append to
    /// it concurrently (call it from the thread that writes `src`, or after).
    pub fn probe(src: &'a File, dst: &'a File) -> Option<Cloner<'a>> {
        let src_len = src.metadata().ok()?.len();
        // A clone of zero bytes at `src`'s end: the kernel checks that both
        // files are on one file system that supports it, and then does nothing.
        clone_range(src, src_len, 0, dst, 0).ok()?;
        // SAFETY: fstatfs only writes into the zeroed struct we pass.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::fstatfs(dst.as_raw_fd(), &mut st) };
        let bsize = if rc == 0 { st.f_bsize as u64 } else { 0 };
        let block = if bsize.is_power_of_two() && bsize >= 512 {
            bsize
        } else {
            4096
        };
        Some(Cloner {
            src,
            dst,
            src_len,
            block,
            off: AtomicBool::new(false),
            cloned: AtomicU64::new(0),
        })
    }

    /// Shares `len` bytes of `src` at `src_off` into `dst` at `dst_off`.
    /// False when it did not (the caller writes the bytes instead).
    pub fn try_clone(&self, src_off: u64, dst_off: u64, len: u64) -> bool {
        let b = self.block;
        if len == 0
            || self.off.load(Ordering::Relaxed)
            || !src_off.is_multiple_of(b)
            || !dst_off.is_multiple_of(b)
            || !len.is_multiple_of(b)
            || src_off
                .checked_add(len)
                .is_none_or(|end| end > self.src_len)
        {
            return false;
        }
        match clone_range(self.src, src_off, len, self.dst, dst_off) {
            Ok(()) => {
                self.cloned.fetch_add(len, Ordering::Relaxed);
                true
            }
            // EINVAL is about this range (alignment); anything else would
            // fail the same way for every range, so stop trying.
            Err(e) => {
                if e.raw_os_error() != Some(libc::EINVAL) {
                    self.off.store(true, Ordering::Relaxed);
                }
                false
            }
        }
    }

    /// Bytes shared so far.
    pub fn cloned(&self) -> u64 {
        self.cloned.load(Ordering::Relaxed)
    }
}
