//! The walk over the active L1/L2 tables: where each allocated guest range
//! lives in the file, in guest order. Memory is one L2 table and one L1
//! chunk, whatever the image size.

use std::collections::VecDeque;

use anyhow::{bail, Context, Result};

use super::{be64, subcluster_runs, Image, ReadAt, L1_CHUNK, L2_COMPRESSED, L2_ZERO, OFFSET_MASK};

/// Where one allocated guest range lives in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    pub guest: u64,
    pub host: u64,
    /// Guest bytes (for a compressed cluster: the cluster, cut at the virtual size).
    pub len: u64,
    pub kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `len` bytes stored as-is at `host`.
    Data,
    /// One cluster compressed into `csize` bytes at `host` (cut at end of file).
    Compressed { csize: u64 },
}

/// Iterator over the allocated extents, in guest order, with adjacent data
/// runs (contiguous in guest and host) merged. Memory is one L2 table and one
/// L1 chunk, whatever the image size.
pub struct Extents<'a, R> {
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

    pub fn next_extent(&mut self) -> Result<Option<Extent>> {
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
        let hdr = &img.hdr;
        let cs = hdr.cluster_size();
        let guest = self.l2_guest + i * cs;
        let glen = cs.min(hdr.virtual_size - guest);
        let at = (i * hdr.l2_entry_bytes()) as usize;
        let entry = be64(&self.l2, at);
        let past_eof = |host: u64| {
            anyhow::anyhow!(
                "{}: the L2 entry for guest offset {guest:#x} points at {host:#x}, past the end of the file ({} bytes); the file is truncated, re-download it",
                img.name,
                img.file_len
            )
        };
        if entry & L2_COMPRESSED != 0 {
            let shift = 62 - (hdr.cluster_bits - 8);
            let host = entry & ((1u64 << shift) - 1);
            let sectors = ((entry >> shift) & ((1u64 << (hdr.cluster_bits - 8)) - 1)) + 1;
            let csize = sectors * 512 - (host & 511);
            if host >= img.file_len {
                return Err(past_eof(host));
            }
            let csize = csize.min(img.file_len - host);
            self.queue.push_back(Extent {
                guest,
                host,
                len: glen,
                kind: Kind::Compressed { csize },
            });
            return Ok(());
        }
        let host = entry & OFFSET_MASK;
        if !host.is_multiple_of(cs) {
            bail!("{}: the L2 entry for guest offset {guest:#x} points at an unaligned cluster ({host:#x}); the file is damaged", img.name);
        }
        if !hdr.extended_l2 {
            if entry & L2_ZERO != 0 && hdr.version < 3 {
                bail!("{}: the L2 entry for guest offset {guest:#x} has the zero flag, which a version 2 image cannot have (QEMU refuses it too: \"Zero cluster entry found in pre-v3 image\"); the file is damaged", img.name);
            }
            if entry & L2_ZERO != 0 || host == 0 {
                return Ok(());
            }
            if host >= img.file_len {
                return Err(past_eof(host));
            }
            self.queue.push_back(Extent {
                guest,
                host,
                len: glen,
                kind: Kind::Data,
            });
            return Ok(());
        }
        let bitmap = be64(&self.l2, at + 8);
        let alloc = bitmap as u32;
        let zero = (bitmap >> 32) as u32;
        if alloc & zero != 0 || (alloc != 0 && host == 0) {
            bail!("{}: invalid subcluster bitmap {bitmap:#018x} for guest offset {guest:#x}; the file is damaged, repair it with `qemu-img check -r all`", img.name);
        }
        for (start, len) in subcluster_runs(alloc, cs, glen) {
            if host + start >= img.file_len {
                return Err(past_eof(host + start));
            }
            self.queue.push_back(Extent {
                guest: guest + start,
                host: host + start,
                len,
                kind: Kind::Data,
            });
        }
        Ok(())
    }
}
