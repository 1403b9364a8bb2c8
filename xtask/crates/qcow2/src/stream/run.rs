//! The stream's state once the header is known: the L1 table and the L2
//! tables read as they pass, the clusters and runs waiting for their bytes,
//! and what `finish` still has to do.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::File;

use anyhow::{bail, Context, Result};

use super::{MAX_MERGE, MAX_PIECES, MAX_TABLES, NOT_READ};
use crate::copy::write_nonzero;
use crate::l2::decode_entry;
use crate::{Decoder, Extent, Header, Kind, OFFSET_MASK};

/// An L2 table the stream knows of, in L1 order.
pub(super) struct Table {
    pub(super) idx: u64,
    /// Stream position at which the whole table had passed, or `NOT_READ`.
    pub(super) read_at: u64,
}

/// A cluster or run waiting for its host bytes: (host, guest, len, csize):
/// `len` guest bytes stored as-is at `host` when `csize` is 0, else one
/// compressed cluster in the `csize` bytes at `host`.
pub(super) type Piece = (u64, u64, u64, u64);

/// The stream state once the header is known.
pub(super) struct Run {
    pub(super) hdr: Header,
    pub(super) cs: u64,
    pub(super) l1_span: u64,
    pub(super) file_len: u64,
    pub(super) l1_off: u64,
    pub(super) l1_end: u64,
    pub(super) l1_carry: [u8; 8],
    pub(super) tables: Vec<Table>,
    /// (host, index into `tables`) of L2 tables not yet passed.
    pub(super) pending: BinaryHeap<Reverse<(u64, usize)>>,
    /// The start of the first pending table, while it passes.
    pub(super) l2_buf: Vec<u8>,
    pub(super) pieces: BinaryHeap<Reverse<Piece>>,
    pub(super) scratch: Vec<Piece>,
    /// Compressed clusters whose bytes have started to pass but not ended.
    pub(super) started: Vec<Piece>,
    /// Stream bytes from `cbuf_start` to the end of the previous call, kept
    /// for `started` (at most one compressed cluster, 4 MiB).
    pub(super) cbuf: Vec<u8>,
    pub(super) cbuf_start: u64,
    /// A compressed cluster and its inflated form, when one spans calls.
    pub(super) zsrc: Vec<u8>,
    pub(super) cluster: Vec<u8>,
    pub(super) dec: Decoder,
    /// A cluster did not inflate: `finish` redoes them all and reports it.
    pub(super) inflate_failed: bool,
    /// Host bytes the stream may still take on: an honest image maps each at
    /// most once, so aliasing clusters cannot make the stream write more.
    pub(super) budget: u64,
}

/// Where the stream writes.
pub(super) struct Sink<'a> {
    pub(super) raw: &'a File,
    pub(super) name: &'a str,
    pub(super) sparse: bool,
}

impl Run {
    /// Handles the stream's bytes `data` at `base..`; returns the bytes written.
    pub(super) fn process(&mut self, data: &[u8], base: u64, sink: &Sink) -> Result<u64> {
        let end = base + data.len() as u64;
        let mut written = 0;
        let mut cur = base;
        // Segments end where new mappings become known (the end of the L1
        // table, the end of the next L2 table), so that data learnt of at a
        // position is written from that position on in the same call.
        while cur < end {
            let mut b = end;
            if cur < self.l1_end {
                b = b.min(self.l1_end);
            }
            if let Some(&Reverse((h, _))) = self.pending.peek() {
                if h + self.cs > cur {
                    b = b.min(h + self.cs);
                }
            }
            written += self.emit(data, base, cur, b, sink)?;
            self.absorb_l1(data, base, cur, b);
            self.gather_l2(data, base, cur, b);
            cur = b;
        }
        self.keep_started(data, base);
        Ok(written)
    }

    /// Writes the waiting runs and clusters whose bytes are in `cur..b`.
    pub(super) fn emit(
        &mut self,
        data: &[u8],
        base: u64,
        cur: u64,
        b: u64,
        sink: &Sink,
    ) -> Result<u64> {
        let mut written = 0;
        let mut i = 0;
        while i < self.started.len() {
            let p = self.started[i];
            if p.0 + p.3 <= b {
                self.started.swap_remove(i);
                written += self.inflate(p, data, base, sink)?;
            } else {
                i += 1;
            }
        }
        while let Some(&Reverse(p)) = self.pieces.peek() {
            let (host, guest, len, csize) = p;
            if host >= b {
                break;
            }
            self.pieces.pop();
            if host < cur {
                // Pieces are only taken on for bytes still to come.
                bail!("{}: internal error: a data run was left behind", sink.name);
            }
            if csize > 0 {
                if host + csize <= b {
                    written += self.inflate(p, data, base, sink)?;
                } else {
                    self.started.push(p);
                }
                continue;
            }
            let hi = (host + len).min(b);
            let buf = &data[(host - base) as usize..(hi - base) as usize];
            written += write_nonzero(sink.raw, buf, guest, sink.sparse)
                .with_context(|| format!("cannot write {}", sink.name))?;
            if hi < host + len {
                self.pieces
                    .push(Reverse((hi, guest + (hi - host), host + len - hi, 0)));
            }
        }
        Ok(written)
    }

    /// Inflates compressed cluster `p`, whose bytes have all passed (the
    /// start possibly in `cbuf`), and writes it.
    pub(super) fn inflate(&mut self, p: Piece, data: &[u8], base: u64, sink: &Sink) -> Result<u64> {
        let (host, guest, len, csize) = p;
        let end = (host + csize - base) as usize;
        let src: &[u8] = if host >= base {
            &data[(host - base) as usize..end]
        } else {
            let Some(kept) = host
                .checked_sub(self.cbuf_start)
                .and_then(|at| self.cbuf.get(at as usize..))
                .filter(|k| k.len() as u64 == base - host)
            else {
                bail!(
                    "{}: internal error: a compressed cluster was lost",
                    sink.name
                );
            };
            self.zsrc.clear();
            self.zsrc.extend_from_slice(kept);
            self.zsrc.extend_from_slice(&data[..end]);
            &self.zsrc
        };
        self.cluster.resize(self.cs as usize, 0);
        if self
            .dec
            .decompress(self.hdr.compression, src, &mut self.cluster)
            .is_err()
        {
            // `finish` redoes compressed clusters and names the bad one.
            self.inflate_failed = true;
            return Ok(0);
        }
        write_nonzero(sink.raw, &self.cluster[..len as usize], guest, sink.sparse)
            .with_context(|| format!("cannot write {}", sink.name))
    }

    /// At the end of a call: keeps the stream bytes the started compressed
    /// clusters still need.
    pub(super) fn keep_started(&mut self, data: &[u8], base: u64) {
        let Some(from) = self.started.iter().map(|p| p.0).min() else {
            self.cbuf.clear();
            return;
        };
        if from >= base {
            self.cbuf.clear();
            self.cbuf.extend_from_slice(&data[(from - base) as usize..]);
        } else {
            let drop = (from.saturating_sub(self.cbuf_start) as usize).min(self.cbuf.len());
            self.cbuf.drain(..drop);
            self.cbuf.extend_from_slice(data);
        }
        self.cbuf_start = from;
    }

    pub(super) fn absorb_l1(&mut self, data: &[u8], base: u64, cur: u64, b: u64) {
        let (lo, hi) = (cur.max(self.l1_off), b.min(self.l1_end));
        let mut p = lo;
        while p < hi {
            let k = ((p - self.l1_off) % 8) as usize;
            let n = (8 - k).min((hi - p) as usize);
            let at = (p - base) as usize;
            self.l1_carry[k..k + n].copy_from_slice(&data[at..at + n]);
            p += n as u64;
            if k + n == 8 {
                let idx = (p - 8 - self.l1_off) / 8;
                self.l1_entry(idx, u64::from_be_bytes(self.l1_carry));
            }
        }
    }

    /// Takes on the L2 table of L1 entry `idx` if it lies wholly ahead.
    pub(super) fn l1_entry(&mut self, idx: u64, entry: u64) {
        let l2 = entry & OFFSET_MASK;
        // Tables at or before the L1 table's end have passed (or overlap it),
        // and a table cut by the end of the file never completes: `finish`.
        if self.budget == 0
            || l2 == 0
            || !l2.is_multiple_of(self.cs)
            || l2 < self.l1_end
            || l2 + self.cs > self.file_len
            || self.tables.len() >= MAX_TABLES
        {
            return;
        }
        self.pending.push(Reverse((l2, self.tables.len())));
        self.tables.push(Table {
            idx,
            read_at: NOT_READ,
        });
    }

    pub(super) fn gather_l2(&mut self, data: &[u8], base: u64, cur: u64, b: u64) {
        while let Some(&Reverse((h, _))) = self.pending.peek() {
            let (lo, hi) = (cur.max(h), b.min(h + self.cs));
            if lo >= hi {
                if h + self.cs <= cur {
                    // Cannot happen (tables are taken on ahead); drop it.
                    self.pending.pop();
                    self.l2_buf.clear();
                    continue;
                }
                return;
            }
            if self.l2_buf.len() as u64 != lo - h {
                self.pending.pop();
                self.l2_buf.clear();
                continue;
            }
            self.l2_buf
                .extend_from_slice(&data[(lo - base) as usize..(hi - base) as usize]);
            if hi < h + self.cs {
                return;
            }
            // Complete: every L1 entry that points here (aliases included).
            while let Some(&Reverse((h2, slot))) = self.pending.peek() {
                if h2 != h {
                    break;
                }
                self.pending.pop();
                self.read_l2(slot, hi);
            }
            self.l2_buf.clear();
        }
    }

    /// Decodes the table in `l2_buf` for `tables[slot]`, completed at stream
    /// position `p`: its data runs at host >= `p` wait for their bytes. Mirrors
    /// `Extents::decode`; on anything `Extents` refuses, or when the runs do
    /// not fit the caps, the table is left to `finish` whole.
    pub(super) fn read_l2(&mut self, slot: usize, p: u64) {
        let hdr = &self.hdr;
        let cs = self.cs;
        let vsize = hdr.virtual_size;
        let idx = self.tables[slot].idx;
        let l2_guest = idx * self.l1_span;
        let n = hdr.l2_entries().min((vsize - l2_guest).div_ceil(cs));
        let room = MAX_PIECES.saturating_sub(self.pieces.len());
        let mut runs = std::mem::take(&mut self.scratch);
        runs.clear();
        let mut total = 0u64;
        let mut add = |host: u64, guest: u64, len: u64, csize: u64| -> bool {
            if host < p {
                return true; // passed already: `finish` copies it
            }
            total += if csize > 0 { csize } else { len };
            if let Some(last) = runs.last_mut() {
                if csize == 0
                    && last.3 == 0
                    && last.1 + last.2 == guest
                    && last.0 + last.2 == host
                    && last.2 < MAX_MERGE
                {
                    last.2 += len;
                    return true;
                }
            }
            if runs.len() >= room {
                return false;
            }
            runs.push((host, guest, len, csize));
            true
        };
        let buf = &self.l2_buf;
        let mut ok = true;
        for i in 0..n {
            let mut fits = true;
            let r = decode_entry(hdr, self.file_len, buf, l2_guest, i, &mut |e| {
                let csize = match e.kind {
                    Kind::Compressed { csize } => csize,
                    Kind::Data => 0,
                };
                fits = fits && add(e.host, e.guest, e.len, csize);
            });
            if r.is_err() || !fits {
                ok = false;
                break;
            }
        }
        if ok && total <= self.budget {
            self.budget -= total;
            self.pieces.extend(runs.drain(..).map(Reverse));
            self.tables[slot].read_at = p;
        }
        runs.clear();
        self.scratch = runs;
    }
}

/// The L2 tables the stream read, and where: decides what `finish` still does.
pub(super) struct Done {
    /// (L1 index, stream position when read), by index.
    pub(super) tables: Vec<(u64, u64)>,
    pub(super) l1_span: u64,
    /// Some compressed cluster did not inflate in the stream.
    pub(super) redo_compressed: bool,
}

impl Done {
    pub(super) fn read_at(&self, idx: u64) -> u64 {
        match self.tables.binary_search_by_key(&idx, |t| t.0) {
            Ok(i) => self.tables[i].1,
            Err(_) => NOT_READ,
        }
    }

    /// Hands `out` the parts of `e` the stream did not write.
    pub(super) fn left(&self, e: Extent, out: &mut dyn FnMut(Extent)) {
        if e.kind != Kind::Data {
            // Inflated in the stream when its table was read before it passed.
            let read_at = self.read_at(e.guest / self.l1_span);
            if self.redo_compressed || read_at == NOT_READ || e.host < read_at {
                out(e);
            }
            return;
        }
        // `Extents` merges runs across L1 entries: split per entry.
        let mut done = 0;
        while done < e.len {
            let guest = e.guest + done;
            let host = e.host + done;
            let idx = guest / self.l1_span;
            let len = ((idx + 1) * self.l1_span - guest).min(e.len - done);
            done += len;
            let read_at = self.read_at(idx);
            // Runs at host >= read_at were written; runs start and end on
            // cluster bounds relative to it, so one cut suffices.
            let before = if read_at == NOT_READ {
                len
            } else {
                read_at.saturating_sub(host).min(len)
            };
            if before > 0 {
                out(Extent {
                    guest,
                    host,
                    len: before,
                    kind: Kind::Data,
                });
            }
        }
    }
}
