//! Gzip on every core, in the Mgzip layout (the member format is
//! `mgzip`'s): the input cut into blocks, each block an independent member
//! whose header carries its size, compressed by libdeflate.

use std::io::{self, Read, Write};

use super::blocks::{self, PackStats};
use mgzip::{member_header, DEFAULT_BLOCK, DEFAULT_LEVEL, HEADER_LEN, MAX_BLOCK, TRAILER_LEN};

/// Options for [`compress`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GzipOptions {
    /// libdeflate level, 1–12 (6 is gzip's default size, 9–12 are slower
    /// and smaller than gzip -9).
    pub level: u32,
    /// Uncompressed bytes per member.
    pub block_size: usize,
    /// Compression threads; 0 means one per core.
    pub threads: usize,
}

impl Default for GzipOptions {
    fn default() -> Self {
        GzipOptions {
            level: DEFAULT_LEVEL,
            block_size: DEFAULT_BLOCK,
            threads: 0,
        }
    }
}

/// Compresses `input` to `output` as Mgzip members, `opts.block_size`
/// input bytes each, on `opts.threads` threads. Memory is bounded: about
/// two blocks in flight per thread, each held as input and as output.
/// Empty input gives one empty member (a zero-byte file is not gzip).
pub fn compress(input: impl Read, output: impl Write, opts: &GzipOptions) -> io::Result<PackStats> {
    if !(1..=12).contains(&opts.level) {
        return Err(invalid(format!(
            "gzip level {} is out of range (1-12)",
            opts.level
        )));
    }
    if opts.block_size == 0 || opts.block_size > MAX_BLOCK {
        return Err(invalid(format!(
            "gzip block size {} is out of range (1 B-1 GiB)",
            opts.block_size
        )));
    }
    let level = opts.level;
    let make = move || -> io::Result<_> {
        let lvl = libdeflater::CompressionLvl::new(level as i32)
            .map_err(|_| invalid(format!("libdeflate rejects level {level}")))?;
        let mut c = libdeflater::Compressor::new(lvl);
        Ok(move |block: &[u8], out: &mut Vec<u8>| compress_member(&mut c, level, block, out))
    };
    blocks::par_blocks(input, output, opts.block_size, opts.threads, &make)
}

/// One block → one complete member in `out` (cleared first).
fn compress_member(
    c: &mut libdeflater::Compressor,
    level: u32,
    block: &[u8],
    out: &mut Vec<u8>,
) -> io::Result<()> {
    let bound = c.deflate_compress_bound(block.len());
    out.clear();
    out.resize(HEADER_LEN + bound, 0);
    let n = c
        .deflate_compress(block, &mut out[HEADER_LEN..])
        .map_err(|e| io::Error::other(format!("libdeflate: {e:?}")))?;
    let total = u32::try_from(HEADER_LEN + n + TRAILER_LEN)
        .map_err(|_| invalid("a gzip member would exceed 4 GiB".to_string()))?;
    out.truncate(HEADER_LEN + n);
    out[..HEADER_LEN].copy_from_slice(&member_header(total, level));
    let mut crc = flate2::Crc::new();
    crc.update(block);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    // ISIZE is the length mod 2^32 by definition.
    out.extend_from_slice(&(block.len() as u32).to_le_bytes());
    Ok(())
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}
