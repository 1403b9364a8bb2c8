//! The flags of `pack`: compression, part size (read as `split -b` reads
//! it), level, and the files it ships.

use anyhow::Result;

use super::flags::{CLIENT, COMPRESSION, KERNEL, LEVEL, PART_SIZE};
use super::{free_path, usage, Given};
use crate::commands::maintain::local::MAX_PART;
use crate::commands::maintain::pack::{self, PackArgs};
use archive::unpack::Compression;

/// The flags of `pack` and its DISK.
pub(super) fn pack_args(g: &mut Given) -> Result<PackArgs> {
    let compression = match g.text(&COMPRESSION)?.as_deref() {
        None | Some("gz") | Some("gzip") => Compression::Gzip,
        Some("xz") => Compression::Xz,
        Some("zst") | Some("zstd") => Compression::Zstd,
        Some(other) => {
            return Err(usage(format!(
                "invalid --compression `{}`: expected gz, xz or zst",
                util::text::clean(other, 40)
            )))
        }
    };
    let part_size = match g.text_as_given(&PART_SIZE)? {
        None => pack::DEFAULT_PART,
        Some(s) => match parse_size(&s) {
            Some(n) if (1..=MAX_PART).contains(&n) => n,
            Some(n) if n > MAX_PART => {
                return Err(usage(format!(
                    "--part-size {}: GitHub refuses assets of 2 GiB or more; give at most 2047M",
                    util::text::clean(&s, 40)
                )))
            }
            _ => {
                return Err(usage(format!(
                    "invalid --part-size `{}`: expected what `split -b` takes: bytes, or a number \
                     with K, M or G (powers of 1024: 500M) or KB, MB, GB (powers of 1000)",
                    util::text::clean(&s, 40)
                )))
            }
        },
    };
    let (lo, hi, _) = pack::levels(compression).expect("pack writes this compression");
    let level = match g.text(&LEVEL)? {
        None => None,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Some(n),
            _ => {
                return Err(usage(format!(
                    "invalid --level `{}` for {}: expected {lo} to {hi}",
                    util::text::clean(&s, 40),
                    compression.ext()
                )))
            }
        },
    };
    let kernel = g.path(&KERNEL);
    let client = g.path(&CLIENT);
    let Some(disk) = free_path(g)? else {
        return Err(usage("pack needs DISK, the qcow2 image to pack"));
    };
    Ok(PackArgs {
        disk,
        compression,
        part_size,
        level,
        kernel,
        client,
    })
}

/// `500M` → 524288000: exactly what GNU `split -b` takes (gnulib's
/// `xstrtoimax` with split's suffixes): C-locale blanks and one sign before
/// decimal digits (none means 1, as in `-b M`), then nothing, `b` (512), or
/// one of K k M m G T P E with nothing or `iB` after it (powers of 1024) or
/// `B`/`D` (powers of 1000). None for anything else, for 0, and past
/// 2^63 - 1, all of which split refuses.
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let body = s.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (negative, body) = match body.as_bytes().first() {
        Some(b'+') => (false, &body[1..]),
        Some(b'-') => (true, &body[1..]),
        _ => (false, body),
    };
    let digits = body.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = body.split_at(digits);
    let n: u64 = if digits > 0 {
        num.parse().ok()?
    } else if body.len() == s.len() && !unit.is_empty() {
        // No digits at all: a unit alone counts one of it.
        1
    } else {
        return None;
    };
    let mut chars = unit.chars();
    let power = match chars.next() {
        None => 0,
        Some('b') if chars.as_str().is_empty() => return scale(negative, n, 512, 1),
        Some('K' | 'k') => 1,
        Some('M' | 'm') => 2,
        Some('G') => 3,
        Some('T') => 4,
        Some('P') => 5,
        Some('E') => 6,
        _ => return None,
    };
    let base = match chars.as_str() {
        "" | "iB" => 1024,
        "B" | "D" => 1000,
        _ => return None,
    };
    scale(negative, n, base, power)
}

/// `n · base^power` if split would take it: positive and at most 2^63 - 1.
fn scale(negative: bool, n: u64, base: u64, power: u32) -> Option<u64> {
    let v = base.checked_pow(power)?.checked_mul(n)?;
    (!negative && v >= 1 && v <= i64::MAX as u64).then_some(v)
}
