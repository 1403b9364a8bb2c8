//! Comparing a raw image with a qcow2's guest content (`verify --deep`, and
//! the check of a raw image whose time changed): holes are skipped unread.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

use super::{Decoder, Image, Kind};

/// Compares the raw file with the guest content of the qcow2 image. `None`
/// when they are equal (content and size); else the first differing offset
/// (a missing or extra byte counts at its offset). Writes nothing.
pub fn compare_with_raw(qcow2: &Path, raw: &Path) -> Result<Option<u64>> {
    let img = Image::open(qcow2)?;
    let raw_file = File::open(raw).with_context(|| format!("cannot open {}", raw.display()))?;
    let raw_len = raw_file
        .metadata()
        .with_context(|| format!("cannot stat {}", raw.display()))?
        .len();
    let mut cmp = RawCompare {
        raw: &raw_file,
        name: raw.display().to_string(),
        raw_len,
        buf: vec![0; 1 << 20],
    };
    let cs = img.header().cluster_size() as usize;
    let mut data = vec![0u8; 4 << 20];
    let mut cluster = vec![0u8; cs];
    let mut scratch = Vec::new();
    let mut dec = Decoder::default();
    let mut pos = 0u64;
    let mut it = img.extents();
    while let Some(e) = it.next_extent()? {
        if let Some(d) = cmp.zeros(pos, e.guest - pos)? {
            return Ok(Some(d));
        }
        match e.kind {
            Kind::Data => {
                let mut done = 0;
                while done < e.len {
                    let n = (e.len - done).min(data.len() as u64) as usize;
                    img.read_padded(&mut data[..n], e.host + done)?;
                    if let Some(d) = cmp.bytes(e.guest + done, &data[..n])? {
                        return Ok(Some(d));
                    }
                    done += n as u64;
                }
            }
            Kind::Compressed { .. } => {
                img.decompress_extent(&e, &mut scratch, &mut cluster, &mut dec)?;
                if let Some(d) = cmp.bytes(e.guest, &cluster[..e.len as usize])? {
                    return Ok(Some(d));
                }
            }
        }
        pos = e.guest + e.len;
    }
    let vsize = img.virtual_size();
    if let Some(d) = cmp.zeros(pos, vsize - pos)? {
        return Ok(Some(d));
    }
    Ok((raw_len != vsize).then_some(vsize))
}

struct RawCompare<'a> {
    raw: &'a File,
    name: String,
    raw_len: u64,
    buf: Vec<u8>,
}

impl RawCompare<'_> {
    /// First offset in `off..off+expected.len()` where the raw file differs.
    fn bytes(&mut self, off: u64, expected: &[u8]) -> Result<Option<u64>> {
        let mut done = 0usize;
        while done < expected.len() {
            let at = off + done as u64;
            if at >= self.raw_len {
                return Ok(Some(at));
            }
            let n = (expected.len() - done)
                .min(self.buf.len())
                .min((self.raw_len - at) as usize);
            FileExt::read_exact_at(self.raw, &mut self.buf[..n], at)
                .with_context(|| format!("cannot read {}", self.name))?;
            let want = &expected[done..done + n];
            if self.buf[..n] != *want {
                let i = self.buf[..n].iter().zip(want).position(|(a, b)| a != b);
                return Ok(Some(at + i.unwrap_or(0) as u64));
            }
            done += n;
        }
        Ok(None)
    }

    /// Same for a range that must read as zeros; holes are skipped unread.
    fn zeros(&mut self, off: u64, len: u64) -> Result<Option<u64>> {
        let end = off + len;
        let mut at = off;
        while at < end {
            if at >= self.raw_len {
                return Ok(Some(at));
            }
            // SEEK_DATA finds the next non-hole byte, so sparse regions cost
            // nothing; where the file system cannot tell, it returns `at`.
            let data = next_data(self.raw, at).unwrap_or(at);
            if data >= end.min(self.raw_len) {
                at = end.min(self.raw_len);
                continue;
            }
            at = at.max(data);
            let n = (end.min(self.raw_len) - at).min(self.buf.len() as u64) as usize;
            FileExt::read_exact_at(self.raw, &mut self.buf[..n], at)
                .with_context(|| format!("cannot read {}", self.name))?;
            if let Some(i) = self.buf[..n].iter().position(|&b| b != 0) {
                return Ok(Some(at + i as u64));
            }
            at += n as u64;
        }
        Ok(None)
    }
}

/// Offset of the next data byte at or after `off` (`u64::MAX` when only a hole
/// follows), or `None` when the file system does not say.
fn next_data(f: &File, off: u64) -> Option<u64> {
    let off_t = libc::off_t::try_from(off).ok()?;
    // SAFETY: lseek on a valid descriptor has no memory effects.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off_t, libc::SEEK_DATA) };
    if r >= 0 {
        Some(r as u64)
    } else if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
        Some(u64::MAX)
    } else {
        None
    }
}
