//! The copy to a raw image sharing data with the qcow2 by reflink where the
//! file system allows (the data is still read, to find the zero blocks and
//! keep the output as sparse as `qemu-img convert`'s); for `convert` when
//! both files are on one such file system, and for the stream converter's
//! `finish`.

use std::fs::File;
use std::io;

use anyhow::{Context, Result};

use super::copy::{copy_compressed, copy_data, groups, next_batch, write_nonzero, WriteAt, BATCH};
use super::{Extent, Image, ReadAt};
use util::Cloner;

/// A `WriteAt` over the raw image for one piece of guest data whose bytes sit
/// at `host_minus_guest` + guest offset in the qcow2: clones where it can.
struct CloneSink<'a, 'b> {
    raw: &'a File,
    cloner: &'a Cloner<'b>,
    /// host = guest + this (wrapping: host may be below guest)
    host_minus_guest: u64,
}

impl WriteAt for CloneSink<'_, '_> {
    fn write_at_all(&self, buf: &[u8], off: u64) -> io::Result<()> {
        let host = off.wrapping_add(self.host_minus_guest);
        if self.cloner.try_clone(host, off, buf.len() as u64) {
            return Ok(());
        }
        std::os::unix::fs::FileExt::write_all_at(self.raw, buf, off)
    }
}

/// Like `convert::copy_data`, but each run of non-zero 4 KiB guest blocks is
/// shared with the qcow2 where the file system allows, written otherwise. The
/// data is still read: finding the zero blocks keeps the output as sparse as
/// `qemu-img convert`'s. Returns the guest bytes written or shared.
pub(crate) fn copy_data_cloning<R: ReadAt>(
    img: &Image<R>,
    raw: &File,
    data: &[Extent],
    sparse: bool,
    cloner: &Cloner,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    let mut buf = Vec::new();
    let mut written = 0;
    for g in groups(data) {
        buf.resize(g.span as usize, 0);
        img.read_padded(&mut buf, g.host)?;
        for &(at, guest, len) in &g.pieces {
            let sink = CloneSink {
                raw,
                cloner,
                host_minus_guest: (g.host + at).wrapping_sub(guest),
            };
            let piece = &buf[at as usize..(at + len) as usize];
            written += write_nonzero(&sink, piece, guest, sparse).context("write failed")?;
            progress(len);
        }
    }
    Ok(written)
}

/// Like `convert::copy_image`, for the extents `select` keeps (or cuts), and
/// sharing data by reflink where `cloner` can.
pub(crate) fn copy_selected<R: ReadAt + Sync>(
    img: &Image<R>,
    raw: &File,
    sparse: bool,
    cloner: Option<&Cloner>,
    progress: &(dyn Fn(u64) + Sync),
    mut select: impl FnMut(Extent, &mut Vec<Extent>),
) -> Result<u64> {
    let mut it = img.extents();
    let mut batch: Vec<Extent> = Vec::with_capacity(BATCH);
    let mut written = 0;
    while let Some((data, comp)) = next_batch(&mut it, &mut batch, &mut select)? {
        written += match cloner {
            Some(c) => copy_data_cloning(img, raw, &data, sparse, c, progress)?,
            None => copy_data(img, raw, &data, sparse, progress)?,
        };
        written += copy_compressed(img, raw, &comp, sparse, progress)?;
    }
    Ok(written)
}

/// `convert::copy_image` sharing data with the qcow2 by reflink: for
/// `convert_native` when both files are on one file system that has them.
pub(crate) fn copy_image_cloning<R: ReadAt + Sync>(
    img: &Image<R>,
    raw: &File,
    cloner: &Cloner,
    sparse: bool,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<u64> {
    copy_selected(img, raw, sparse, Some(cloner), progress, |e, out| {
        out.push(e)
    })
}
