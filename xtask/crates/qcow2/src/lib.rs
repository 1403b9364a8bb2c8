//! qcow2 reading: the header checks and the opened [`Image`]; the walk over
//! the active L1/L2 tables that yields where each allocated guest range lives
//! in the file (`extents`); cluster decompression (`decoder`); the copy to a
//! raw image (`convert`) and `compare_with_raw` for `verify --deep`
//! (`compare`). The reference is QEMU's docs/interop/qcow2.txt; snapshots
//! are ignored (only the active tables matter for the guest content).
//!
//! Everything read from the file is untrusted: sizes and offsets are checked
//! against the file length and fixed caps before anything is allocated, and a
//! bad value is an error naming the file, never a panic.
#![warn(missing_docs)]

mod clone;
mod compare;
mod convert;
mod copy;
mod decoder;
mod extents;
mod l2;
#[cfg(feature = "seams")]
mod seams;
mod stream;

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};

pub use compare::compare_with_raw;
pub use convert::{convert_file, ConvertStats};
#[cfg(feature = "seams")]
pub use copy::{copy_image, WriteAt};
pub(crate) use decoder::Decoder;
pub(crate) use extents::{Extent, Extents, Kind};
#[cfg(feature = "seams")]
pub use seams::{convert_bytes, convert_native, NullSink};
pub use stream::{StreamConvert, StreamStats};

/// The first four bytes of a qcow2 image.
pub const MAGIC: [u8; 4] = *b"QFI\xfb";

/// Incompatible feature bits (header bytes 72..80).
const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 = (1 << 5) - 1;

/// Bits 9..=55 of L1 and standard L2 entries hold the host offset.
pub(crate) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
pub(crate) const L2_COMPRESSED: u64 = 1 << 62;
pub(crate) const L2_ZERO: u64 = 1;

/// QEMU's own limit on the L1 table (QCOW_MAX_L1_SIZE); a header asking for
/// more is hostile or broken, and this keeps the table walk bounded.
const MAX_L1_BYTES: u64 = 32 << 20;
/// L1 entries are read this many at a time, so memory does not grow with the
/// virtual size.
pub(crate) const L1_CHUNK: u64 = 8192;

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

/// The guest size of an image whose header states `header_size`: QEMU
/// counts whole 512-byte sectors (`total_sectors = size / 512`), so the
/// bytes of a last partial sector are never read, and `qemu-img convert`
/// writes a raw image of this length.
fn guest_size(header_size: u64) -> u64 {
    header_size & !511
}

/// Random access to the image bytes: a `File`, or a byte slice for fuzzing.
pub trait ReadAt {
    /// The size in bytes.
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

/// How compressed clusters are compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterCompression {
    /// Raw deflate (the default).
    Deflate,
    /// zstd (compression_type 1).
    Zstd,
}

/// A qcow2 header, read and checked: what this tool reads of an image, and
/// where the tables it does not read (refcounts, snapshots) lie, for a
/// caller that checks QEMU would open the image. Only images this tool can
/// convert pass: versions 2 and 3, no encryption, no backing or external
/// data file, not dirty or corrupt, no unknown incompatible feature.
#[derive(Clone, Debug)]
pub struct Header {
    /// 2 or 3.
    pub version: u32,
    /// log2 of the cluster size, 9..=21.
    pub cluster_bits: u32,
    /// The guest size: the header's size rounded down to 512, as QEMU reads it.
    pub virtual_size: u64,
    /// The size the header states (`virtual_size` before rounding).
    size: u64,
    pub(crate) l1_size: u32,
    pub(crate) l1_table_offset: u64,
    /// Where the refcount table is, and how many clusters it takes.
    pub refcount_table_offset: u64,
    /// Clusters the refcount table takes.
    pub refcount_table_clusters: u32,
    /// How many snapshots the snapshot table holds, and where it is.
    pub nb_snapshots: u32,
    /// Where the snapshot table is.
    pub snapshots_offset: u64,
    /// How compressed clusters are compressed.
    pub compression: ClusterCompression,
    /// Whether L2 entries carry subcluster bitmaps.
    pub extended_l2: bool,
}

/// The header bytes read: the version 3 header with the compression type.
const HEADER_READ: usize = 112;

impl Header {
    /// Reads and checks the header of `src`; `name` prefixes every error.
    pub fn read<R: ReadAt + ?Sized>(src: &R, name: &str) -> Result<Header> {
        let file_len = src
            .size()
            .with_context(|| format!("{name}: cannot read the file size"))?;
        let mut h = [0u8; HEADER_READ];
        let got = file_len.min(h.len() as u64) as usize;
        src.read_exact_at_(&mut h[..got], 0)
            .with_context(|| format!("{name}: cannot read the qcow2 header"))?;
        let (version, cluster_bits, incompatible, header_length) =
            check_layout(&h, got, file_len, name)?;
        refuse_unsupported(src, &h, file_len, incompatible, name)?;
        let compression = compression(&h, header_length, incompatible, name)?;
        let extended_l2 = incompatible & INCOMPAT_EXTL2 != 0;
        if extended_l2 && cluster_bits < 14 {
            bail!("{name}: extended L2 entries with {}-byte clusters are invalid (need 16 KiB or more); the header is damaged", 1u64 << cluster_bits);
        }
        let size = be64(&h, 24);
        Ok(Header {
            version,
            cluster_bits,
            virtual_size: guest_size(size),
            size,
            l1_size: be32(&h, 36),
            l1_table_offset: be64(&h, 40),
            refcount_table_offset: be64(&h, 48),
            refcount_table_clusters: be32(&h, 56),
            nb_snapshots: be32(&h, 60),
            snapshots_offset: be64(&h, 64),
            compression,
            extended_l2,
        })
    }

    /// The most bytes a qcow2 file with this header can plausibly hold
    /// (see [`max_file_len`]).
    pub fn max_file_len(&self) -> Option<u64> {
        self.size.checked_add(self.size / 32)?.checked_add(64 << 20)
    }

    /// Bytes in a cluster.
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }
    pub(crate) fn l2_entry_bytes(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }
    pub(crate) fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_bytes()
    }
    /// Guest bytes one L1 entry covers.
    pub(crate) fn l1_span(&self) -> u64 {
        self.cluster_size() * self.l2_entries()
    }

    /// Checks that the L1 table covers the stated size, within QEMU's cap,
    /// and lies inside a file of `file_len` bytes; the entries that map
    /// guest bytes (the rest are never read).
    fn check_l1(&self, file_len: u64, name: &str) -> Result<u64> {
        let size = self.size;
        // The table must cover the size the header states, as QEMU checks.
        let needed = size.div_ceil(self.l1_span());
        if needed * 8 > MAX_L1_BYTES || u64::from(self.l1_size) * 8 > MAX_L1_BYTES {
            bail!(
                "{name}: the L1 table is too large (virtual size {size} bytes, l1_size {}); the header is damaged",
                self.l1_size
            );
        }
        if u64::from(self.l1_size) < needed {
            bail!(
                "{name}: the L1 table ({} entries) is too small for the virtual size {size} bytes; the header is damaged",
                self.l1_size
            );
        }
        let off = self.l1_table_offset;
        if needed > 0
            && (!off.is_multiple_of(self.cluster_size())
                || off == 0
                || off.checked_add(needed * 8).is_none_or(|end| end > file_len))
        {
            bail!(
                "{name}: the L1 table offset {off:#x} points outside the file ({file_len} bytes); the file is truncated or damaged"
            );
        }
        Ok(self.virtual_size.div_ceil(self.l1_span()))
    }
}

/// The magic, version, cluster size and header length of header bytes `h`
/// (`got` of them read from a file of `file_len`): (version, cluster_bits,
/// incompatible features, header_length).
fn check_layout(h: &[u8], got: usize, file_len: u64, name: &str) -> Result<(u32, u32, u64, u32)> {
    if got < 72 || h[..4] != MAGIC {
        bail!("{name}: not a qcow2 image (no qcow2 header); check the path or re-download it");
    }
    let version = be32(h, 4);
    if version != 2 && version != 3 {
        bail!("{name}: qcow2 version {version} is not supported (only 2 and 3)");
    }
    let cluster_bits = be32(h, 20);
    if !(9..=21).contains(&cluster_bits) {
        bail!("{name}: invalid cluster_bits {cluster_bits} in the qcow2 header (must be 9..=21); the file is damaged");
    }
    let (incompatible, header_length) = if version == 3 {
        if got < 104 {
            bail!("{name}: file ends inside the qcow2 header; it is truncated, re-download it");
        }
        (be64(h, 72), be32(h, 100))
    } else {
        (0, 72)
    };
    if version == 3 && (header_length < 104 || u64::from(header_length) > 1u64 << cluster_bits) {
        bail!("{name}: invalid qcow2 header_length {header_length}; the file is damaged");
    }
    if u64::from(header_length) > file_len {
        bail!("{name}: file ends inside the qcow2 header; it is truncated, re-download it");
    }
    Ok((version, cluster_bits, incompatible, header_length))
}

/// Refuses what this tool does not convert: encryption, a backing file,
/// a dirty or corrupt image, an external data file, unknown features.
fn refuse_unsupported<R: ReadAt + ?Sized>(
    src: &R,
    h: &[u8],
    file_len: u64,
    incompatible: u64,
    name: &str,
) -> Result<()> {
    let crypt_method = be32(h, 32);
    if crypt_method != 0 {
        bail!("{name}: encrypted qcow2 images are not supported (crypt_method={crypt_method}); decrypt it with qemu-img convert first");
    }
    if be64(h, 8) != 0 {
        let backing = backing_name(src, h, file_len);
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
    Ok(())
}

/// The backing file's name for the refusal, read only when it lies inside
/// the first cluster and is of a sane length.
fn backing_name<R: ReadAt + ?Sized>(src: &R, h: &[u8], file_len: u64) -> String {
    let (off, len) = (be64(h, 8), u64::from(be32(h, 16)));
    let cluster_size = 1u64 << be32(h, 20);
    let inside = off
        .checked_add(len)
        .is_some_and(|end| end <= file_len.min(cluster_size));
    if len > 1023 || !inside {
        return "(name out of bounds)".into();
    }
    let mut b = vec![0u8; len as usize];
    match src.read_exact_at_(&mut b, off) {
        Ok(()) => format!("`{}`", String::from_utf8_lossy(&b)),
        Err(_) => "(name unreadable)".into(),
    }
}

/// The cluster compression the header names.
fn compression(
    h: &[u8],
    header_length: u32,
    incompatible: u64,
    name: &str,
) -> Result<ClusterCompression> {
    let ctype = if header_length > 104 { h[104] } else { 0 };
    Ok(match ctype {
        0 => ClusterCompression::Deflate,
        1 if incompatible & INCOMPAT_COMPRESSION != 0 => ClusterCompression::Zstd,
        1 => bail!("{name}: compression_type is zstd but the compression-type feature bit is clear; the header is damaged"),
        t => bail!("{name}: unknown qcow2 compression_type {t}; convert it with qemu-img instead (--with-qemu-img)"),
    })
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

pub(crate) fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
pub(crate) fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

impl Image<File> {
    /// Opens the regular file at `path` and checks its header.
    pub fn open(path: &Path) -> Result<Image<File>> {
        // Only a regular file: a FIFO at the image's name would hang us.
        let file = util::fs::open_input(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        Image::from_reader(file, &path.display().to_string())
    }
}

impl<R: ReadAt> Image<R> {
    /// Parses and checks the header of `src` and its L1 table's place;
    /// `name` prefixes every error.
    pub fn from_reader(src: R, name: &str) -> Result<Image<R>> {
        let hdr = Header::read(&src, name)?;
        let file_len = src
            .size()
            .with_context(|| format!("{name}: cannot read the file size"))?;
        let l1_needed = hdr.check_l1(file_len, name)?;
        Ok(Image {
            src,
            name: name.to_string(),
            file_len,
            l1_needed,
            hdr,
        })
    }

    /// The guest size (the header's size rounded down to 512, as QEMU reads
    /// it): the raw image's length.
    pub fn virtual_size(&self) -> u64 {
        self.hdr.virtual_size
    }
    /// The checked header.
    pub fn header(&self) -> &Header {
        &self.hdr
    }
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.file_len
    }
    pub(crate) fn source(&self) -> &R {
        &self.src
    }

    /// Walks the active tables in guest order.
    pub(crate) fn extents(&self) -> Extents<'_, R> {
        Extents::new(self)
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
    pub(crate) fn read_padded(&self, buf: &mut [u8], off: u64) -> Result<()> {
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
    pub(crate) fn decompress_extent(
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
            .with_context(|| self.cluster_error(e))
    }

    /// The error for a compressed cluster that does not inflate.
    pub(crate) fn cluster_error(&self, e: &Extent) -> String {
        format!(
            "{}: cannot decompress the cluster at guest offset {:#x} (host {:#x}); the file is damaged",
            self.name, e.guest, e.host
        )
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
