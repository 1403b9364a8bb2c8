//! One qcow2 as a release archive: a tar with the single member
//! `temp/disk-image.qcow2` (the name upstream's `tar` gave it), hashed
//! while it is read and compressed on every core.

use std::io::{self, Read, Write};

use super::blocks::{compress_xz, compress_zstd, PackStats, XzOptions, ZstdOptions};
use super::gzip::{compress, GzipOptions};
use util::io::HashedExact;

/// The member name old readers (`artifacts.py`, `sha256sum -c`) expect.
pub const MEMBER: &str = "temp/disk-image.qcow2";

/// The codec and its settings.
#[derive(Debug, Clone, Copy)]
pub enum Codec {
    /// Gzip in Mgzip members (parallel decoding).
    Gzip(GzipOptions),
    /// xz in blocks with their sizes.
    Xz(XzOptions),
    /// zstd in independent frames.
    Zstd(ZstdOptions),
}

/// What [`pack_image`] made.
#[derive(Debug, Clone, Copy)]
pub struct Packed {
    /// Of the image bytes, for the `.sums` line.
    pub sha256: [u8; 32],
    /// What the compressor did.
    pub stats: PackStats,
}

/// Writes `image` (`size` bytes, modified at `mtime` seconds) as the tar of
/// [`MEMBER`] compressed by `codec` into `out`, calling `progress` with the
/// image bytes read. An image that ends early or grows while it is read is
/// an error: the archive would not match its sum.
pub fn pack_image(
    image: impl Read,
    size: u64,
    mtime: u64,
    codec: &Codec,
    out: impl Write,
    progress: &(dyn Fn(u64) + Sync),
) -> io::Result<Packed> {
    let header = tar_header(size, mtime)?;
    let mut hashed = HashedExact::new(image, size, progress);
    let pad = (512 - size % 512) % 512;
    // Two zero blocks end the archive, as every tar writes.
    let trailer = vec![0u8; pad as usize + 1024];
    let stats = {
        let input = header
            .as_slice()
            .chain(&mut hashed)
            .chain(trailer.as_slice());
        match codec {
            Codec::Gzip(o) => compress(input, out, o)?,
            Codec::Xz(o) => compress_xz(input, out, o)?,
            Codec::Zstd(o) => compress_zstd(input, out, o)?,
        }
    };
    if hashed.left() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the image ended early (did it change while it was packed?)",
        ));
    }
    let (mut image, sha256) = hashed.finish();
    let mut probe = [0u8; 1];
    if image.read(&mut probe)? != 0 {
        return Err(io::Error::other(
            "the image grew while it was packed; pack it again when nothing writes to it",
        ));
    }
    Ok(Packed { sha256, stats })
}

/// A GNU header (sizes of 8 GiB and more in base-256, which GNU tar,
/// Python's tarfile and the tar crate read), owner root, mode 0644.
fn tar_header(size: u64, mtime: u64) -> io::Result<[u8; 512]> {
    let mut h = tar::Header::new_gnu();
    h.set_path(MEMBER)?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut out = [0u8; 512];
    out.copy_from_slice(h.as_bytes());
    Ok(out)
}
