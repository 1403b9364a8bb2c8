//! qcow2 → raw while the qcow2 streams past (the unpacker's writer thread
//! feeds it the member's bytes in order), so the raw image is (nearly) done
//! when the qcow2 is.
//!
//! As the bytes pass: the header is checked by `Image::from_reader` itself
//! (same refusals, same messages, before anything is written); the L1 table is
//! read when it passes; each L2 table it points to further on is read when it
//! passes; and every data cluster (or run of allocated subclusters) that such
//! a table maps further on is written to its guest offset the moment its bytes
//! pass, zero 4 KiB blocks skipped; a compressed cluster is inflated once its
//! last byte has passed. Per L2 table only one number is remembered: the
//! stream position `P` at which it was read. Its clusters at host offsets from
//! `P` on have then been written in the stream; everything else (clusters
//! before `P`, tables that passed before their L1 entry or that did not fit
//! the caps) is done by `finish`, which walks the finished file with the
//! ordinary `Extents` iterator (so any damaged table is refused exactly as
//! `convert_native` refuses it) and copies only what the stream did not.
//! Bytes that are data for one mapping and metadata for another are simply
//! both: the stream sees the file's final bytes, as qemu-img would read them.
//!
//! Memory is bounded whatever the header says: at most one cluster (2 MiB) of
//! header or L2 table and one compressed cluster (4 MiB) spanning two calls
//! are buffered, and the tables and clusters waiting for their bytes are
//! capped (`MAX_TABLES`, `MAX_PIECES`); what does not fit is left to `finish`.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io;

use anyhow::{anyhow, bail, Context, Result};

mod run;

use super::clone::copy_selected;
use super::convert::ConvertStats;
use super::{Decoder, Image, Kind, ReadAt};
use run::{Done, Run, Sink};
use util::fmt::human_bytes;
use util::fs::free_space_of;
use util::Cloner;

/// L2 tables tracked in the stream (16 + 16 bytes each); more go to `finish`.
pub(super) const MAX_TABLES: usize = 1 << 17;
/// Runs and clusters waiting for their bytes (32 bytes each); an L2 table
/// whose pieces would not fit goes to `finish` whole.
pub(super) const MAX_PIECES: usize = 1 << 18;
/// Merged runs stop growing here, as in `Extents`.
pub(super) const MAX_MERGE: u64 = 1 << 40;
pub(super) const NOT_READ: u64 = u64::MAX;

/// What a conversion did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// The guest size: the raw image's length.
    pub virtual_size: u64,
    /// Guest bytes written or shared (allocated and not all-zero).
    pub data_bytes: u64,
    /// Of those, written while the qcow2 streamed past.
    pub streamed: u64,
    /// Of those, shared with the qcow2 by reflink in `finish`.
    pub cloned: u64,
}

impl From<StreamStats> for ConvertStats {
    fn from(s: StreamStats) -> ConvertStats {
        ConvertStats {
            virtual_size: s.virtual_size,
            data_bytes: s.data_bytes,
        }
    }
}

/// A fused qcow2 → raw converter fed the qcow2's bytes in order.
pub struct StreamConvert {
    qcow2_name: String,
    qcow2_len: u64,
    raw: File,
    raw_name: String,
    sparse: bool,
    /// False when `finish` will share all data by reflink instead.
    stream_writes: bool,
    /// Bytes fed so far.
    pos: u64,
    streamed: u64,
    state: State,
}

enum State {
    /// Gathering the header cluster.
    Head(Vec<u8>),
    Run(Box<Run>),
    /// An error was returned; the message is repeated by `finish`.
    Failed(String),
}

/// Bytes of the header cluster, as a file of the member's full length, so that
/// `Image::from_reader` applies its checks to what the finished file will be.
struct HeadBytes<'a> {
    bytes: &'a [u8],
    len: u64,
}

impl ReadAt for HeadBytes<'_> {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len)
    }
    fn read_exact_at_(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        self.bytes.read_exact_at_(buf, off)
    }
}

/// Header bytes `Image::from_reader` may read: the fixed fields and, for the
/// backing file's name, up to the end of the first cluster.
fn head_needed(head: &[u8], len: u64) -> u64 {
    let cs = if head.len() >= 24 {
        let bits = u32::from_be_bytes([head[20], head[21], head[22], head[23]]);
        if (9..=21).contains(&bits) {
            1u64 << bits
        } else {
            0
        }
    } else {
        0
    };
    len.min(cs.max(112))
}

impl StreamConvert {
    /// `qcow2_len`: the member's size from the tar header. `raw`: the new,
    /// empty raw file (opened for writing), sized to the virtual size once the
    /// header has passed. `qcow2_name`/`raw_name` prefix every error.
    pub fn new(
        qcow2_len: u64,
        qcow2_name: &str,
        raw: File,
        raw_name: &str,
        sparse_detect: bool,
    ) -> StreamConvert {
        StreamConvert {
            qcow2_name: qcow2_name.to_string(),
            qcow2_len,
            raw,
            raw_name: raw_name.to_string(),
            sparse: sparse_detect,
            stream_writes: true,
            pos: 0,
            streamed: 0,
            state: State::Head(Vec::new()),
        }
    }

    /// When `qcow2` (the file the fed bytes are written to) and the raw file
    /// can share blocks, the stream writes no data and `finish` shares it all
    /// instead: the raw image then costs no data writes and no space. Call it
    /// before the first `feed`, from the thread that writes `qcow2`. Returns
    /// whether reflinks will be used.
    pub fn prefer_reflink(&mut self, qcow2: &File) -> bool {
        let yes = self.pos == 0 && Cloner::probe(qcow2, &self.raw).is_some();
        if yes {
            self.stream_writes = false;
        }
        yes
    }

    /// The next bytes of the qcow2, in order from offset 0. After an error,
    /// further calls do nothing and `finish` returns the same error.
    pub fn feed(&mut self, data: &[u8]) -> Result<()> {
        if matches!(self.state, State::Failed(_)) {
            return Ok(());
        }
        let r = self.feed_inner(data);
        if let Err(e) = &r {
            self.state = State::Failed(format!("{e:#}"));
        }
        r
    }

    fn feed_inner(&mut self, mut data: &[u8]) -> Result<()> {
        let base = self.pos;
        let end = base
            .checked_add(data.len() as u64)
            .filter(|&e| e <= self.qcow2_len)
            .ok_or_else(|| {
                anyhow!(
                    "{}: more than the {} bytes announced were fed to the converter",
                    self.qcow2_name,
                    self.qcow2_len
                )
            })?;
        self.pos = end;
        let mut at = base;
        if let State::Head(head) = &mut self.state {
            loop {
                let need = head_needed(head, self.qcow2_len);
                if head.len() as u64 >= need {
                    break;
                }
                if data.is_empty() {
                    return Ok(());
                }
                let n = ((need - head.len() as u64) as usize).min(data.len());
                head.extend_from_slice(&data[..n]);
                data = &data[n..];
                at += n as u64;
            }
            self.start()?;
        }
        self.process(data, at)
    }

    /// Checks the gathered header, sizes the raw file and replays the header
    /// bytes through the stream.
    fn start(&mut self) -> Result<()> {
        let State::Head(head) = std::mem::replace(&mut self.state, State::Head(Vec::new())) else {
            return Ok(());
        };
        let img = Image::from_reader(
            HeadBytes {
                bytes: &head,
                len: self.qcow2_len,
            },
            &self.qcow2_name,
        )?;
        let hdr = img.header().clone();
        let vsize = hdr.virtual_size;
        // Whatever the file held must read as zeros. Only truncate when it
        // is not empty: on ext4 a truncate to 0 makes close() flush the file.
        let r = match self.raw.metadata() {
            Ok(m) if m.len() == 0 => Ok(()),
            _ => self.raw.set_len(0),
        };
        r.and_then(|()| self.raw.set_len(vsize))
            .with_context(|| format!("{}: cannot set the size to {vsize} bytes", self.raw_name))?;
        let cs = hdr.cluster_size();
        let l1_span = hdr.l1_span();
        let l1_needed = vsize.div_ceil(l1_span);
        let l1_off = hdr.l1_table_offset;
        self.state = State::Run(Box::new(Run {
            cs,
            l1_span,
            file_len: self.qcow2_len,
            l1_off,
            // In the file: `from_reader` checked it.
            l1_end: l1_off + l1_needed * 8,
            l1_carry: [0; 8],
            tables: Vec::new(),
            pending: BinaryHeap::new(),
            l2_buf: Vec::new(),
            pieces: BinaryHeap::new(),
            scratch: Vec::new(),
            started: Vec::new(),
            cbuf: Vec::new(),
            cbuf_start: 0,
            zsrc: Vec::new(),
            cluster: Vec::new(),
            dec: Decoder::default(),
            inflate_failed: false,
            budget: if self.stream_writes {
                self.qcow2_len
            } else {
                0
            },
            hdr,
        }));
        self.process(&head, 0)
    }

    /// `data` holds the stream's bytes at `base..`.
    fn process(&mut self, data: &[u8], base: u64) -> Result<()> {
        let State::Run(run) = &mut self.state else {
            return Ok(());
        };
        let sink = Sink {
            raw: &self.raw,
            name: &self.raw_name,
            sparse: self.sparse,
        };
        self.streamed += run.process(data, base, &sink)?;
        Ok(())
    }

    /// Completes the raw image after every byte was fed and written to
    /// `qcow2` (the same bytes, now a file; readable, and for reflinks on the
    /// raw file's file system). Copies, or shares by reflink, what the stream
    /// could not write. Does not sync or rename the raw file.
    pub fn finish(mut self, qcow2: &File) -> Result<StreamStats> {
        if let State::Failed(msg) = &self.state {
            bail!("{msg}");
        }
        if self.pos != self.qcow2_len {
            bail!(
                "{}: only {} of its {} bytes were fed to the converter; the image is incomplete",
                self.qcow2_name,
                self.pos,
                self.qcow2_len
            );
        }
        if matches!(self.state, State::Head(_)) {
            // A member shorter than the header: refused here by the same checks.
            self.start()?;
        }
        let State::Run(run) = std::mem::replace(&mut self.state, State::Head(Vec::new())) else {
            bail!("{}: internal error: no header", self.qcow2_name);
        };
        let img = Image::from_reader(qcow2, &self.qcow2_name)?;
        if img.file_len() != self.qcow2_len {
            bail!(
                "{}: the file holds {} bytes, but {} were fed to the converter",
                self.qcow2_name,
                img.file_len(),
                self.qcow2_len
            );
        }
        let done = Done {
            tables: run
                .tables
                .iter()
                .filter(|t| t.read_at != NOT_READ)
                .map(|t| (t.idx, t.read_at))
                .collect(),
            l1_span: run.l1_span,
            redo_compressed: run.inflate_failed,
        };
        drop(run);

        let raw = &self.raw;
        let cloner = Cloner::probe(qcow2, raw);
        // What is left may need space (reflinked data does not).
        let mut need = 0u64;
        let mut it = img.extents();
        while let Some(e) = it.next_extent()? {
            done.left(e, &mut |e| {
                if cloner.is_none() || e.kind != Kind::Data {
                    need += e.len;
                }
            });
        }
        let free = free_space_of(raw)
            .with_context(|| format!("cannot read the free space for {}", self.raw_name))?;
        if free < need {
            return Err(util::fs::no_space(format!(
                "not enough free space for {}: the rest of the image needs {} but only {} is free; free some space or choose another --output",
                self.raw_name,
                human_bytes(need),
                human_bytes(free)
            )));
        }
        let written = copy_selected(
            &img,
            raw,
            self.sparse,
            cloner.as_ref(),
            &|_| {},
            |e, out| done.left(e, &mut |e| out.push(e)),
        )
        .with_context(|| format!("cannot write {}", self.raw_name))?;
        Ok(StreamStats {
            virtual_size: img.virtual_size(),
            data_bytes: self.streamed + written,
            streamed: self.streamed,
            cloned: cloner.map_or(0, |c| c.cloned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Extent;

    #[test]
    fn head_needs_the_first_cluster() {
        let mut h = vec![0u8; 24];
        assert_eq!(head_needed(&h[..10], 1 << 30), 112);
        h[20..24].copy_from_slice(&16u32.to_be_bytes());
        assert_eq!(head_needed(&h, 1 << 30), 65536);
        assert_eq!(head_needed(&h, 1000), 1000);
        h[20..24].copy_from_slice(&40u32.to_be_bytes());
        assert_eq!(head_needed(&h, 1 << 30), 112);
        h[20..24].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(head_needed(&h, 1 << 30), 512);
    }

    #[test]
    fn left_cuts_per_table_and_position() {
        let done = Done {
            tables: vec![(0, 0x30000), (2, 0x100000)],
            l1_span: 1 << 20,
            redo_compressed: false,
        };
        let mut got = Vec::new();
        let e = |guest, host, len| Extent {
            guest,
            host,
            len,
            kind: Kind::Data,
        };
        // Table 0 read at 0x30000: host 0x20000.. was before it, 0x30000.. after.
        done.left(e(0, 0x20000, 0x20000), &mut |x| got.push(x));
        assert_eq!(got, vec![e(0, 0x20000, 0x10000)]);
        got.clear();
        // Spanning tables 0 (done) and 1 (not read).
        done.left(e(0xf0000, 0x200000, 0x20000), &mut |x| got.push(x));
        assert_eq!(got, vec![e(0x100000, 0x210000, 0x10000)]);
    }
}
