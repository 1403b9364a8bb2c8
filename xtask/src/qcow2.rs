//! qcow2 reading: the header checks, the walk over the active L1/L2 tables
//! that yields where each allocated guest range lives in the file, cluster
//! decompression, and `compare_with_raw` for `verify --deep`. Writing a raw
//! image from this is `convert.rs`'s job. The reference is QEMU's
//! docs/interop/qcow2.txt; snapshots are ignored (only the active tables
//! matter for the guest content).
//!
//! Everything read from the file is untrusted: sizes and offsets are checked
//! against the file length and fixed caps before anything is allocated, and a
//! bad value is an error naming the file, never a panic.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Incompatible feature bits (header bytes 72..80).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = (1 << 5) - 1;

/// Bits 9..=55 of L1 and standard L2 entries hold the host offset.
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const L2_COMPRESSED: u64 = 1 << 62;
const L2_ZERO: u64 = 1;

/// QEMU's own limit on the L1 table (QCOW_MAX_L1_SIZE); a header asking for
/// more is hostile or broken, and this keeps the table walk bounded.
const MAX_L1_BYTES: u64 = 32 << 20;
/// L1 entries are read this many at a time, so memory does not grow with the
/// virtual size.
const L1_CHUNK: u64 = 8192;

/// The most bytes a qcow2 file whose header starts `head` can plausibly
/// hold: its virtual size plus the tables that map it (L1/L2 and refcounts
/// take at most 1/32 of it, whatever the cluster size), plus a margin.
/// None when `head` is not a qcow2 header. Bounds the write of an image
/// that arrives without a size (a bare `.qcow2.gz`).
pub fn max_file_len(head: &[u8]) -> Option<u64> {
    if head.len() < 32 || head[..4] != MAGIC {
        return None;
    }
    let version = be32(head, 4);
    let cluster_bits = be32(head, 20);
    if !(2..=3).contains(&version) || !(9..=21).contains(&cluster_bits) {
        return None;
    }
    let vsize = be64(head, 24);
    vsize.checked_add(vsize / 32)?.checked_add(64 << 20)
}

/// Random access to the image bytes: a `File`, or a byte slice for fuzzing.
pub trait ReadAt {
    fn size(&self) -> io::Result<u64>;
    /// Fills `buf` from `off`; reading past the end is an error.
    fn read_exact_at_(&self, buf: &mut [u8], off: u64) -> io::Result<()>;
}

impl ReadAt for File {
    fn size(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }
    fn read_exact_at_(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, off)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> io::Result<u64> {
        Ok(self.len() as u64)
    }
    fn read_exact_at_(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        let start = usize::try_from(off).ok().filter(|&s| s <= self.len());
        match start.and_then(|s| self.get(s..s.checked_add(buf.len())?)) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> io::Result<u64> {
        (**self).size()
    }
    fn read_exact_at_(&self, buf: &mut [u8], off: u64) -> io::Result<()> {
        (**self).read_exact_at_(buf, off)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    Deflate,
    Zstd,
}

/// The header fields the reader uses, already checked.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub virtual_size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub incompatible: u64,
    pub header_length: u32,
    pub compression: Compression,
    pub extended_l2: bool,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    fn l2_entry_bytes(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }
    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_bytes()
    }
    /// Guest bytes one L1 entry covers.
    fn l1_span(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }
}

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

/// An opened qcow2 image over any [`ReadAt`] source.
pub struct Image<R = File> {
    src: R,
    name: String,
    file_len: u64,
    hdr: Header,
    /// L1 entries that cover the virtual size (the rest are never read).
    l1_needed: u64,
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

impl Image<File> {
    pub fn open(path: &Path) -> Result<Image<File>> {
        let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        Image::from_reader(file, &path.display().to_string())
    }
}

impl<R: ReadAt> Image<R> {
    /// Parses and checks the header of `src`; `name` prefixes every error.
    pub fn from_reader(src: R, name: &str) -> Result<Image<R>> {
        let file_len = src
            .size()
            .with_context(|| format!("{name}: cannot read the file size"))?;
        let mut h = [0u8; 112];
        let got = file_len.min(h.len() as u64) as usize;
        src.read_exact_at_(&mut h[..got], 0)
            .with_context(|| format!("{name}: cannot read the qcow2 header"))?;
        if got < 72 || h[..4] != MAGIC {
            bail!("{name}: not a qcow2 image (no qcow2 header); check the path or re-download it");
        }
        let version = be32(&h, 4);
        if version != 2 && version != 3 {
            bail!("{name}: qcow2 version {version} is not supported (only 2 and 3)");
        }
        let cluster_bits = be32(&h, 20);
        if !(9..=21).contains(&cluster_bits) {
            bail!("{name}: invalid cluster_bits {cluster_bits} in the qcow2 header (must be 9..=21); the file is damaged");
        }
        let cluster_size = 1u64 << cluster_bits;
        let (incompatible, header_length) = if version == 3 {
            if got < 104 {
                bail!("{name}: file ends inside the qcow2 header; it is truncated, re-download it");
            }
            (be64(&h, 72), be32(&h, 100))
        } else {
            (0, 72)
        };
        if version == 3 && (header_length < 104 || u64::from(header_length) > cluster_size) {
            bail!("{name}: invalid qcow2 header_length {header_length}; the file is damaged");
        }
        if u64::from(header_length) > file_len {
            bail!("{name}: file ends inside the qcow2 header; it is truncated, re-download it");
        }

        let crypt_method = be32(&h, 32);
        if crypt_method != 0 {
            bail!("{name}: encrypted qcow2 images are not supported (crypt_method={crypt_method}); decrypt it with qemu-img convert first");
        }
        let backing_off = be64(&h, 8);
        if backing_off != 0 {
            let backing_len = u64::from(be32(&h, 16));
            let backing = if backing_len <= 1023
                && backing_off
                    .checked_add(backing_len)
                    .is_some_and(|end| end <= file_len.min(cluster_size))
            {
                let mut b = vec![0u8; backing_len as usize];
                match src.read_exact_at_(&mut b, backing_off) {
                    Ok(()) => format!("`{}`", String::from_utf8_lossy(&b)),
                    Err(_) => "(name unreadable)".into(),
                }
            } else {
                "(name out of bounds)".into()
            };
            bail!("{name}: qcow2 images with a backing file are not supported (backing file {backing}); flatten it with `qemu-img convert -O qcow2` first");
        }
        if incompatible & INCOMPAT_DIRTY != 0 {
            bail!("{name}: the qcow2 image is marked dirty (not closed cleanly); repair it with `qemu-img check -r all` first");
        }
        if incompatible & INCOMPAT_CORRUPT != 0 {
            bail!("{name}: the qcow2 image is marked corrupt; repair it with `qemu-img check -r all` or re-download it");
        }
        if incompatible & INCOMPAT_DATA_FILE != 0 {
            bail!("{name}: qcow2 images with an external data file are not supported; convert it with qemu-img first");
        }
        let unknown = incompatible & !INCOMPAT_KNOWN;
        if unknown != 0 {
            bail!("{name}: the qcow2 image uses unknown incompatible features (bits {unknown:#x}); convert it with qemu-img instead (--with-qemu-img)");
        }
        let ctype = if header_length > 104 { h[104] } else { 0 };
        let compression = match ctype {
            0 => Compression::Deflate,
            1 if incompatible & INCOMPAT_COMPRESSION != 0 => Compression::Zstd,
            1 => bail!("{name}: compression_type is zstd but the compression-type feature bit is clear; the header is damaged"),
            t => bail!("{name}: unknown qcow2 compression_type {t}; convert it with qemu-img instead (--with-qemu-img)"),
        };
        let extended_l2 = incompatible & INCOMPAT_EXTL2 != 0;
        if extended_l2 && cluster_bits < 14 {
            bail!("{name}: extended L2 entries with {cluster_size}-byte clusters are invalid (need 16 KiB or more); the header is damaged");
        }

        let hdr = Header {
            version,
            cluster_bits,
            virtual_size: be64(&h, 24),
            l1_size: be32(&h, 36),
            l1_table_offset: be64(&h, 40),
            incompatible,
            header_length,
            compression,
            extended_l2,
        };
        let l1_needed = hdr.virtual_size.div_ceil(hdr.l1_span());
        if l1_needed * 8 > MAX_L1_BYTES || u64::from(hdr.l1_size) * 8 > MAX_L1_BYTES {
            bail!(
                "{name}: the L1 table is too large (virtual size {} bytes, l1_size {}); the header is damaged",
                hdr.virtual_size,
                hdr.l1_size
            );
        }
        if u64::from(hdr.l1_size) < l1_needed {
            bail!(
                "{name}: the L1 table ({} entries) is too small for the virtual size {} bytes; the header is damaged",
                hdr.l1_size,
                hdr.virtual_size
            );
        }
        if l1_needed > 0
            && (!hdr.l1_table_offset.is_multiple_of(cluster_size)
                || hdr.l1_table_offset == 0
                || hdr
                    .l1_table_offset
                    .checked_add(l1_needed * 8)
                    .is_none_or(|end| end > file_len))
        {
            bail!(
                "{name}: the L1 table offset {:#x} points outside the file ({file_len} bytes); the file is truncated or damaged",
                hdr.l1_table_offset
            );
        }
        Ok(Image {
            src,
            name: name.to_string(),
            file_len,
            hdr,
            l1_needed,
        })
    }

    pub fn virtual_size(&self) -> u64 {
        self.hdr.virtual_size
    }
    pub fn header(&self) -> &Header {
        &self.hdr
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
    pub fn source(&self) -> &R {
        &self.src
    }

    /// Walks the active tables in guest order.
    pub fn extents(&self) -> Extents<'_, R> {
        Extents {
            img: self,
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

    /// Guest bytes held in allocated (data or compressed) clusters: what the
    /// output may need on disk at most, and the progress total.
    pub fn allocated_bytes(&self) -> Result<u64> {
        let mut it = self.extents();
        let mut n = 0u64;
        while let Some(e) = it.next_extent()? {
            n += e.len;
        }
        Ok(n)
    }

    /// Reads `buf.len()` bytes at `off`; bytes past the end of the file read
    /// as zeros (as QEMU does for a last cluster the file does not fully hold),
    /// but a start at or past the end is an error.
    pub fn read_padded(&self, buf: &mut [u8], off: u64) -> Result<()> {
        if off >= self.file_len {
            bail!(
                "{}: a table points at offset {off:#x}, past the end of the file ({} bytes); the file is truncated, re-download it",
                self.name,
                self.file_len
            );
        }
        let avail = (self.file_len - off).min(buf.len() as u64) as usize;
        self.src
            .read_exact_at_(&mut buf[..avail], off)
            .with_context(|| format!("{}: cannot read at offset {off:#x}", self.name))?;
        buf[avail..].fill(0);
        Ok(())
    }

    /// Reads the compressed bytes of `e` into `scratch` and inflates them into
    /// `out` (one cluster). `dec` keeps decoder state between calls.
    pub fn decompress_extent(
        &self,
        e: &Extent,
        scratch: &mut Vec<u8>,
        out: &mut [u8],
        dec: &mut Decoder,
    ) -> Result<()> {
        let Kind::Compressed { csize } = e.kind else {
            bail!("{}: internal error: not a compressed extent", self.name);
        };
        scratch.resize(csize as usize, 0);
        self.read_padded(scratch, e.host)?;
        dec.decompress(self.hdr.compression, scratch, out)
            .with_context(|| {
                format!(
                    "{}: cannot decompress the cluster at guest offset {:#x} (host {:#x}); the file is damaged",
                    self.name, e.guest, e.host
                )
            })
    }
}

/// Reusable decompression state (one per thread).
#[derive(Default)]
pub struct Decoder {
    deflate: Option<flate2::Decompress>,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl Decoder {
    /// Fills all of `out` from `src` or fails, with QEMU's rules: the stream
    /// may end inside `src` (the descriptor counts whole sectors), but must
    /// produce exactly one cluster.
    pub fn decompress(&mut self, kind: Compression, src: &[u8], out: &mut [u8]) -> Result<()> {
        match kind {
            Compression::Deflate => {
                let d = self
                    .deflate
                    .get_or_insert_with(|| flate2::Decompress::new(false));
                d.reset(false);
                let status = d
                    .decompress(src, out, flate2::FlushDecompress::Finish)
                    .map_err(|e| anyhow::anyhow!("deflate: {e}"))?;
                let full = d.total_out() == out.len() as u64;
                match status {
                    flate2::Status::StreamEnd | flate2::Status::BufError if full => Ok(()),
                    flate2::Status::Ok if full => Ok(()),
                    _ => bail!(
                        "deflate stream gave {} of {} bytes",
                        d.total_out(),
                        out.len()
                    ),
                }
            }
            Compression::Zstd => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let d = match &mut self.zstd {
                    Some(d) => {
                        d.reinit()?;
                        d
                    }
                    None => self.zstd.insert(zstd::stream::raw::Decoder::new()?),
                };
                let mut input = InBuffer::around(src);
                let mut output = OutBuffer::around(out);
                let mut last = 1;
                while output.pos() < output.capacity() {
                    let (ip, op) = (input.pos(), output.pos());
                    last = d.run(&mut input, &mut output)?;
                    if input.pos() <= ip && output.pos() <= op {
                        bail!("zstd stream ended after {} bytes", output.pos());
                    }
                }
                if last != 0 {
                    bail!("zstd frame is longer than one cluster");
                }
                Ok(())
            }
        }
    }
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

impl<R: ReadAt> Extents<'_, R> {
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
        // Runs of allocated subclusters; the others read as zeros.
        let sc = cs / 32;
        let mut bits = alloc;
        while bits != 0 {
            let a = bits.trailing_zeros();
            let b = a + (bits >> a).trailing_ones();
            bits &= !(((1u64 << b) - 1) as u32);
            let start = u64::from(a) * sc;
            if start >= glen {
                break;
            }
            let len = (u64::from(b) * sc).min(glen) - start;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_garbage_without_panicking() {
        let mut img = vec![0u8; 512];
        img[..4].copy_from_slice(&MAGIC);
        for version in [0u32, 1, 2, 3, 4] {
            img[4..8].copy_from_slice(&version.to_be_bytes());
            for bits in [0u32, 8, 9, 16, 21, 22, 63, 64, u32::MAX] {
                img[20..24].copy_from_slice(&bits.to_be_bytes());
                let _ = Image::from_reader(&img[..], "x");
            }
        }
        assert!(Image::from_reader(&b"QFI"[..], "x").is_err());
    }
}
