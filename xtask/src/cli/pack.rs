//! The flags of `pack`: compression, part size (read as `split -b` reads
//! it), level, and the files it ships.

use anyhow::Result;

use super::{free_path, usage, Parsed};
use crate::steps::pack::{self, PackArgs};
use crate::unpack::Compression;

/// The flags of `pack` and its DISK.
pub(super) fn pack_args(p: &mut Parsed) -> Result<PackArgs> {
    let compression = match p.value("--compression")?.as_deref() {
        None | Some("gz") | Some("gzip") => Compression::Gzip,
        Some("xz") => Compression::Xz,
        Some("zst") | Some("zstd") => Compression::Zstd,
        Some(other) => {
            return Err(usage(format!(
                "invalid --compression `{}`: expected gz, xz or zst",
                crate::util::text::clean(other, 40)
            )))
        }
    };
    let part_size = match p.value("--part-size")? {
        None => pack::DEFAULT_PART,
        Some(s) => match parse_size(&s) {
            Some(n) if (1..=pack::MAX_PART).contains(&n) => n,
            Some(n) if n > pack::MAX_PART => {
                return Err(usage(format!(
                    "--part-size {}: GitHub refuses assets of 2 GiB or more; give at most 2047M",
                    crate::util::text::clean(&s, 40)
                )))
            }
            _ => {
                return Err(usage(format!(
                    "invalid --part-size `{}`: expected bytes, or a number with K, M or G (500M)",
                    crate::util::text::clean(&s, 40)
                )))
            }
        },
    };
    let (lo, hi, _) = pack::levels(compression).expect("pack writes this compression");
    let level = match p.value("--level")? {
        None => None,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Some(n),
            _ => {
                return Err(usage(format!(
                    "invalid --level `{}` for {}: expected {lo} to {hi}",
                    crate::util::text::clean(&s, 40),
                    compression.ext()
                )))
            }
        },
    };
    let kernel = p.path("--kernel")?;
    let client = p.path("--client")?;
    let Some(disk) = free_path(p.args, "pack")? else {
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

/// `500M` → 524288000: bytes, or a number with a unit as `split -b` reads
/// it.
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    let (num, unit) = s.split_at(digits);
    let n: u64 = num.parse().ok()?;
    // As split: K, KiB = 1024; KB = 1000 (and so on for M and G).
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        // split's `b` is a 512-byte block.
        "b" => 512,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        _ => return None,
    };
    n.checked_mul(mult)
}
