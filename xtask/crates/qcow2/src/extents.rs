//! The walk over the active L1/L2 tables: where each allocated guest range
//! lives in the file, in guest order. Memory is one L2 table and one L1
//! chunk, whatever the image size.

use std::collections::VecDeque;

use anyhow::{bail, Context, Result};

use super::l2::decode_entry;
use super::{be64, Image, ReadAt, L1_CHUNK, OFFSET_MASK};

/// Where one allocated guest range lives in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Extent {
    pub(crate) guest: u64,
    pub(crate) host: u64,
    /// Guest bytes (for a compressed cluster: the cluster, cut at the virtual size).
    pub(crate) len: u64,
    pub(crate) kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `len` bytes stored as-is at `host`.
    Data,
    /// One cluster compressed into `csize` bytes at `host` (cut at end of file).
    Compressed { csize: u64 },
}

/// Iterator over the allocated extents, in guest order, with adjacent data
/// runs (contiguous in guest and host) merged. Memory is one L2 table and one
/// L1 chunk, whatever the image size.
pub(crate) struct Extents<'a, R> {
    img: &'a Image<R>,
    l1_next: u64,
    l1_buf: Vec<u64>,
    l1_buf_start: u64,
    l2: Vec<u8>,
    l2_guest: u64,
    l2_pos: u64,
    l2_n: u64,
    queue: VecDeque<Extent>,
    held: Option<Extent>,
}

/// Merged data runs stop growing here so that no length computation nears overflow.
const MAX_MERGE: u64 = 1 << 40;

impl<'a, R: ReadAt> Extents<'a, R> {
    pub(super) fn new(img: &'a Image<R>) -> Self {
        Extents {
            img,
            l1_next: 0,
            l1_buf: Vec::new(),
            l1_buf_start: 0,
            l2: Vec::new(),
            l2_guest: 0,
            l2_pos: 0,
            l2_n: 0,
            queue: VecDeque::new(),
            held: None,
        }
    }

    pub(crate) fn next_extent(&mut self) -> Result<Option<Extent>> {
        loop {
            let Some(e) = self.raw_next()? else {
                return Ok(self.held.take());
            };
            if let Some(h) = &mut self.held {
                if h.kind == Kind::Data
                    && e.kind == Kind::Data
                    && h.guest + h.len == e.guest
                    && h.host + h.len == e.host
                    && h.len < MAX_MERGE
                {
                    h.len += e.len;
                    continue;
                }
            }
            if let Some(prev) = self.held.replace(e) {
                return Ok(Some(prev));
            }
        }
    }

    fn l1_entry(&mut self, idx: u64) -> Result<u64> {
        let img = self.img;
        if idx < self.l1_buf_start || idx >= self.l1_buf_start + self.l1_buf.len() as u64 {
            let n = L1_CHUNK.min(img.l1_needed - idx) as usize;
            let mut raw = vec![0u8; n * 8];
            img.src
                .read_exact_at_(&mut raw, img.hdr.l1_table_offset + idx * 8)
                .with_context(|| format!("{}: cannot read the L1 table", img.name))?;
            self.l1_buf = raw.chunks_exact(8).map(|c| be64(c, 0)).collect();
            self.l1_buf_start = idx;
        }
        Ok(self.l1_buf[(idx - self.l1_buf_start) as usize])
    }

    fn raw_next(&mut self) -> Result<Option<Extent>> {
        let img = self.img;
        let hdr = &img.hdr;
        let cs = hdr.cluster_size();
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Ok(Some(e));
            }
            if self.l2_pos < self.l2_n {
                let i = self.l2_pos;
                self.l2_pos += 1;
                self.decode(i)?;
                continue;
            }
            if self.l1_next >= img.l1_needed {
                return Ok(None);
            }
            let idx = self.l1_next;
            self.l1_next += 1;
            let l2_off = self.l1_entry(idx)? & OFFSET_MASK;
            if l2_off == 0 {
                continue;
            }
            if !l2_off.is_multiple_of(cs) {
                bail!("{}: L1 entry {idx} points at an unaligned L2 table ({l2_off:#x}); the file is damaged", img.name);
            }
            self.l2.resize(cs as usize, 0);
            let mut l2 = std::mem::take(&mut self.l2);
            let r = img.read_padded(&mut l2, l2_off);
            self.l2 = l2;
            r.with_context(|| format!("{}: cannot read the L2 table of L1 entry {idx}", img.name))?;
            self.l2_guest = idx * hdr.l1_span();
            self.l2_pos = 0;
            self.l2_n = hdr
                .l2_entries()
                .min((hdr.virtual_size - self.l2_guest).div_ceil(cs));
        }
    }

    /// Turns L2 entry `i` of the current table into extents on the queue.
    fn decode(&mut self, i: u64) -> Result<()> {
        let img = self.img;
        let queue = &mut self.queue;
        decode_entry(
            &img.hdr,
            img.file_len,
            &self.l2,
            self.l2_guest,
            i,
            &mut |e| queue.push_back(e),
        )
        .map_err(|bad| bad.error(&img.name, img.file_len))
    }
}
