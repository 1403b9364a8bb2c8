//! How an asset is cut into Range segments, and the `.segs` record of the
//! segments finished, so an interrupted download resumes where it stopped.

use std::io::{self, Write};
use std::path::Path;

use util::fs as fsutil;

/// Segment sizes: at least 4 MiB so a request's overhead (a redirect, maybe
/// a new connection) stays small against its transfer, at most 32 MiB so
/// several connections share one 500 MiB part, and about an eighth of an
/// asset in between so a 50 MiB part still spreads over the connections.
pub(super) const MIN_SEGMENT: u64 = 4 << 20;
pub(super) const MAX_SEGMENT: u64 = 32 << 20;

/// The segment size of an asset of `size` bytes; depends on nothing else,
/// so an interrupted download resumes with the same segments.
pub(crate) fn segment_size(size: u64) -> u64 {
    size.div_ceil(8)
        .next_multiple_of(1 << 20)
        .clamp(MIN_SEGMENT, MAX_SEGMENT)
}

/// The segments an earlier run finished: a header line `segments SEG SIZE`,
/// then one index a line. Anything else means we know nothing.
pub(super) fn read_segs(path: &Path, size: u64) -> Vec<usize> {
    let Ok(text) = fsutil::read_small(path, 1 << 20) else {
        return Vec::new();
    };
    let mut lines = text.lines();
    if lines.next() != Some(&format!("segments {} {size}", segment_size(size))) {
        return Vec::new();
    }
    lines.filter_map(|l| l.trim().parse().ok()).collect()
}

/// Writes the record of the segments `done` anew, through a temporary name
/// and a rename, so it is always whole: workers finishing at once cannot
/// interleave their lines (the caller holds the record lock).
pub(super) fn write_record(
    path: &Path,
    size: u64,
    done: &[usize],
    durable: bool,
) -> io::Result<()> {
    let mut text = format!("segments {} {size}\n", segment_size(size));
    for i in done {
        text.push_str(&format!("{i}\n"));
    }
    let tmp = fsutil::partial_path(path);
    let mut f = fsutil::create_fresh(&tmp)?;
    f.write_all(text.as_bytes())?;
    if durable {
        f.sync_data()?;
    }
    drop(f);
    std::fs::rename(&tmp, path)?;
    if durable {
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_sizes() {
        const MIB: u64 = 1 << 20;
        assert_eq!(segment_size(MIB), 4 * MIB);
        assert_eq!(segment_size(50 * MIB), 7 * MIB);
        assert_eq!(segment_size(500 * MIB), 32 * MIB);
        assert_eq!(segment_size(u64::MAX), 32 * MIB);
    }
}
