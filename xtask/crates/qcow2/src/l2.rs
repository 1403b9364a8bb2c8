//! One L2 entry decoded into the extents it maps: the one decoding both
//! table walks use (`Extents` over a file, the stream converter over the
//! bytes as they pass), so they accept and refuse exactly the same tables.

use super::{be64, Extent, Header, Kind, L2_COMPRESSED, L2_ZERO, OFFSET_MASK};

/// Why an L2 entry is refused.
pub(crate) enum Bad {
    PastEof { guest: u64, host: u64 },
    Unaligned { guest: u64, host: u64 },
    ZeroInV2 { guest: u64 },
    Bitmap { guest: u64, bitmap: u64 },
}

impl Bad {
    /// The error naming the image `name` of `file_len` bytes.
    pub(crate) fn error(&self, name: &str, file_len: u64) -> anyhow::Error {
        match *self {
            Bad::PastEof { guest, host } => anyhow::anyhow!(
                "{name}: the L2 entry for guest offset {guest:#x} points at {host:#x}, past the end of the file ({file_len} bytes); the file is truncated, re-download it"
            ),
            Bad::Unaligned { guest, host } => anyhow::anyhow!(
                "{name}: the L2 entry for guest offset {guest:#x} points at an unaligned cluster ({host:#x}); the file is damaged"
            ),
            Bad::ZeroInV2 { guest } => anyhow::anyhow!(
                "{name}: the L2 entry for guest offset {guest:#x} has the zero flag, which a version 2 image cannot have (QEMU refuses it too: \"Zero cluster entry found in pre-v3 image\"); the file is damaged"
            ),
            Bad::Bitmap { guest, bitmap } => anyhow::anyhow!(
                "{name}: invalid subcluster bitmap {bitmap:#018x} for guest offset {guest:#x}; the file is damaged, repair it with `qemu-img check -r all`"
            ),
        }
    }
}

/// Decodes entry `i` of the L2 table `l2`, whose first entry maps guest
/// offset `l2_guest`, into `out` (in guest order); an image of `file_len`
/// bytes. Unallocated and zero clusters give nothing.
pub(crate) fn decode_entry(
    hdr: &Header,
    file_len: u64,
    l2: &[u8],
    l2_guest: u64,
    i: u64,
    out: &mut dyn FnMut(Extent),
) -> Result<(), Bad> {
    let cs = hdr.cluster_size();
    let guest = l2_guest + i * cs;
    let glen = cs.min(hdr.virtual_size - guest);
    let at = (i * hdr.l2_entry_bytes()) as usize;
    let entry = be64(l2, at);
    if entry & L2_COMPRESSED != 0 {
        let (host, csize) = compressed(hdr.cluster_bits, entry);
        if host >= file_len {
            return Err(Bad::PastEof { guest, host });
        }
        let csize = csize.min(file_len - host);
        let kind = Kind::Compressed { csize };
        out(Extent {
            guest,
            host,
            len: glen,
            kind,
        });
        return Ok(());
    }
    let host = entry & OFFSET_MASK;
    if !host.is_multiple_of(cs) {
        return Err(Bad::Unaligned { guest, host });
    }
    let data = |guest, host, len| Extent {
        guest,
        host,
        len,
        kind: Kind::Data,
    };
    if !hdr.extended_l2 {
        if entry & L2_ZERO != 0 && hdr.version < 3 {
            return Err(Bad::ZeroInV2 { guest });
        }
        if entry & L2_ZERO != 0 || host == 0 {
            return Ok(());
        }
        if host >= file_len {
            return Err(Bad::PastEof { guest, host });
        }
        out(data(guest, host, glen));
        return Ok(());
    }
    let bitmap = be64(l2, at + 8);
    let alloc = bitmap as u32;
    let zero = (bitmap >> 32) as u32;
    if alloc & zero != 0 || (alloc != 0 && host == 0) {
        return Err(Bad::Bitmap { guest, bitmap });
    }
    for (start, len) in subcluster_runs(alloc, cs, glen) {
        if host + start >= file_len {
            return Err(Bad::PastEof {
                guest,
                host: host + start,
            });
        }
        out(data(guest + start, host + start, len));
    }
    Ok(())
}

/// A compressed L2 entry's (host offset, compressed bytes): the offset takes
/// the low `62 - (cluster_bits - 8)` bits, the count of 512-byte sectors
/// (less one) the bits above, and the first sector is counted from the
/// offset's place in it.
fn compressed(cluster_bits: u32, entry: u64) -> (u64, u64) {
    let shift = 62 - (cluster_bits - 8);
    let host = entry & ((1u64 << shift) - 1);
    let sectors = ((entry >> shift) & ((1u64 << (cluster_bits - 8)) - 1)) + 1;
    (host, sectors * 512 - (host & 511))
}

/// The runs of allocated subclusters of an extended L2 entry whose
/// allocation bits are `alloc`, as (offset in the cluster, length), cut at
/// `glen` (the part of the cluster inside the virtual size). Subclusters
/// outside the runs read as zeros.
fn subcluster_runs(alloc: u32, cluster: u64, glen: u64) -> impl Iterator<Item = (u64, u64)> {
    let sc = cluster / 32;
    let mut bits = alloc;
    std::iter::from_fn(move || {
        if bits == 0 {
            return None;
        }
        let a = bits.trailing_zeros();
        let b = a + (bits >> a).trailing_ones();
        bits &= !(((1u64 << b) - 1) as u32);
        let start = u64::from(a) * sc;
        if start >= glen {
            bits = 0;
            return None;
        }
        Some((start, (u64::from(b) * sc).min(glen) - start))
    })
}
