//! Multi-member gzip in the Mgzip layout, as written by `gzp` and `crabz`:
//! the input is cut into blocks, each block becomes an independent gzip
//! member, and each member's header carries its own total size, so a reader
//! can find the member boundaries without inflating and inflate members on
//! several cores. Any gzip reader (gzip, pigz, Python's gzip, flate2's
//! `MultiGzDecoder`) reads the concatenation as one stream.
//!
//! A member written here is, byte for byte (RFC 1952):
//!
//! ```text
//! 1f 8b 08 04 | mtime 0 (4) | XFL | OS ff | XLEN 8 (2) | 'I' 'G' | LEN 4 (2) | SIZE (4) | deflate … | CRC32 (4) | ISIZE (4)
//! ```
//!
//! `SIZE` is the member's total size in bytes, header and trailer included
//! (gzp's convention; with level 6 and 16 MiB blocks our output is byte for
//! byte what gzp 2.0.4's `ParCompress<Mgzip>` writes). Python's `mgzip` package (0.2.5) writes subfield `MZ`
//! instead, holding only the deflate data's size (its comments still say
//! `IG`); [`crate::par_decode`] reads both, an `IG` holding the deflate size,
//! and BGZF's `BC` subfield (total size − 1, as u16).
//!
//! This module holds the format (header writing, the streaming header
//!
//! This module holds the format: header writing, the streaming header
//! parser, the size claims. The compressor is `pack::gzip`'s, the parallel
//! decoder this folder's `mod.rs`.

/// Header length of a member written here: 10 fixed bytes, XLEN, one
/// 8-byte subfield.
pub const HEADER_LEN: usize = 20;
/// CRC32 and ISIZE.
pub const TRAILER_LEN: usize = 8;

const FTEXT: u8 = 1;
const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;
const FRESERVED: u8 = !(FTEXT | FHCRC | FEXTRA | FNAME | FCOMMENT);

/// Defaults, chosen by measurement on a 1.5 GiB disk-image tar on 2 cores
/// (`examples/mgzip_bench.rs`): libdeflate level 6 makes 685.1 MB from it
/// with 1 MiB blocks in 15.5 s of CPU, where `pigz -6` makes 685.7 MB in
/// 45 s. Bigger blocks shrink the output little (4 MiB: −0.11%, 16 MiB:
/// −0.14%) but every block in flight is held as input and output, in the
/// compressor and in the parallel decoder alike (peak RSS 13 vs 38 MB
/// compressing, 23 vs 36 MB decoding, 1 vs 4 MiB).
pub const DEFAULT_LEVEL: u32 = 6;
/// Input bytes a member holds unless told otherwise.
pub const DEFAULT_BLOCK: usize = 1 << 20;
/// Members must fit the u32 size field with room for the deflate bound.
pub const MAX_BLOCK: usize = 1 << 30;

/// The 20-byte header of a member whose total size is `total`.
pub fn member_header(total: u32, level: u32) -> [u8; HEADER_LEN] {
    // XFL as gzip sets it: 2 = slowest/best, 4 = fastest.
    let xfl = if level >= 9 {
        2
    } else if level <= 1 {
        4
    } else {
        0
    };
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&[0x1f, 0x8b, 8, FEXTRA]);
    // mtime 0: "no time stamp", so equal input gives equal output.
    h[8] = xfl;
    h[9] = 0xff; // OS unknown
    h[10..12].copy_from_slice(&8u16.to_le_bytes());
    h[12..16].copy_from_slice(&[b'I', b'G', 4, 0]);
    h[16..20].copy_from_slice(&total.to_le_bytes());
    h
}

// ---------------------------------------------------------------------------
// Reading headers

/// What a member's FEXTRA field says about its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SizeClaim {
    /// Mgzip `IG`: the member's total size (gzp), or perhaps the deflate
    /// data's size (Python `mgzip`'s convention). The reader tries both.
    Ig(u32),
    /// Python `mgzip` `MZ`: the deflate data's size.
    Mz(u32),
    /// BGZF `BC`: the member's total size (the field stores it minus one).
    Bc(u32),
}

impl SizeClaim {
    /// Possible total member sizes, most likely first, given the header's
    /// length. Sizes too small to hold the header, the shortest deflate
    /// stream and the trailer are dropped.
    pub(crate) fn totals(self, header_len: usize) -> Vec<u64> {
        let min = (header_len + 2 + TRAILER_LEN) as u64;
        let raw = match self {
            SizeClaim::Ig(v) => vec![v as u64, v as u64 + (header_len + TRAILER_LEN) as u64],
            SizeClaim::Mz(v) => vec![v as u64 + (header_len + TRAILER_LEN) as u64],
            SizeClaim::Bc(v) => vec![v as u64],
        };
        raw.into_iter().filter(|&t| t >= min).collect()
    }
}

/// The size claim in an FEXTRA field's content, if it has exactly one
/// well-formed `IG` or `MZ` (length 4) or `BC` (length 2) subfield. Malformed
/// subfield lists are ignored, as gzip ignores FEXTRA: such members are
/// decoded serially.
pub(crate) fn size_claim(extra: &[u8]) -> Option<SizeClaim> {
    let mut rest = extra;
    let mut found = None;
    while !rest.is_empty() {
        if rest.len() < 4 {
            return None;
        }
        let len = u16::from_le_bytes([rest[2], rest[3]]) as usize;
        let data = rest.get(4..4 + len)?;
        let claim = match (rest[0], rest[1], len) {
            (b'I', b'G', 4) => Some(SizeClaim::Ig(u32::from_le_bytes([
                data[0], data[1], data[2], data[3],
            ]))),
            (b'M', b'Z', 4) => Some(SizeClaim::Mz(u32::from_le_bytes([
                data[0], data[1], data[2], data[3],
            ]))),
            (b'B', b'C', 2) => Some(SizeClaim::Bc(
                u16::from_le_bytes([data[0], data[1]]) as u32 + 1,
            )),
            _ => None,
        };
        if claim.is_some() {
            if found.is_some() {
                return None;
            }
            found = claim;
        }
        rest = &rest[4 + len..];
    }
    found
}

/// Why a header is not a gzip member header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// The first two bytes are not 1f 8b.
    NotGzip,
    Method(u8),
    ReservedFlags(u8),
    HeaderCrc {
        stored: u16,
        computed: u16,
    },
}

impl std::fmt::Display for HeaderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HeaderError::NotGzip => write!(f, "no gzip magic (1f 8b)"),
            HeaderError::Method(m) => write!(f, "compression method {m}, not deflate (8)"),
            HeaderError::ReservedFlags(fl) => write!(f, "reserved header flags set ({fl:#04x})"),
            HeaderError::HeaderCrc { stored, computed } => write!(
                f,
                "header CRC16 mismatch (stored {stored:#06x}, computed {computed:#06x})"
            ),
        }
    }
}

/// A parsed member header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// Bytes from the magic to the first deflate byte.
    pub(crate) len: u64,
    pub(crate) claim: Option<SizeClaim>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Fixed,
    Xlen,
    Extra,
    Name,
    Comment,
    Hcrc,
    Done,
}

/// A streaming header parser: feed it bytes until it says it is done. It
/// holds at most the 10 fixed bytes and the FEXTRA content (≤ 64 KiB), so
/// arbitrarily long names cost nothing.
#[derive(Debug)]
pub(crate) struct HeaderParser {
    field: Field,
    flags: u8,
    /// Fixed header, XLEN, or header CRC bytes collected so far.
    small: Vec<u8>,
    extra: Vec<u8>,
    extra_left: usize,
    len: u64,
    crc: flate2::Crc,
}

impl Default for HeaderParser {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderParser {
    pub(crate) fn new() -> Self {
        HeaderParser {
            field: Field::Fixed,
            flags: 0,
            small: Vec::with_capacity(10),
            extra: Vec::new(),
            extra_left: 0,
            len: 0,
            crc: flate2::Crc::new(),
        }
    }

    /// Feeds `data`; returns how many bytes belong to the header and, once
    /// it is complete, the header. Bytes past the header are not consumed.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<(usize, Option<Header>), HeaderError> {
        let mut i = 0;
        while i < data.len() && self.field != Field::Done {
            let rest = &data[i..];
            let used = match self.field {
                Field::Fixed => self.fixed(rest)?,
                Field::Xlen => self.xlen(rest),
                Field::Extra => self.extra(rest),
                Field::Name | Field::Comment => match rest.iter().position(|&b| b == 0) {
                    Some(z) => {
                        self.field = self.after(self.field);
                        z + 1
                    }
                    None => rest.len(),
                },
                Field::Hcrc => {
                    // The CRC covers the header up to, not including, itself.
                    let n = self.hcrc(rest)?;
                    self.len += n as u64;
                    i += n;
                    continue;
                }
                Field::Done => 0,
            };
            self.crc.update(&rest[..used]);
            self.len += used as u64;
            i += used;
        }
        if self.field != Field::Done {
            return Ok((i, None));
        }
        let claim = if self.flags & FEXTRA != 0 {
            size_claim(&self.extra)
        } else {
            None
        };
        let header = Header {
            len: self.len,
            claim,
        };
        Ok((i, Some(header)))
    }

    /// Collects `small` bytes of a fixed-size field (up to `len` of them)
    /// from `rest`; how many it took.
    fn collect(&mut self, rest: &[u8], len: usize) -> usize {
        let n = rest.len().min(len - self.small.len());
        self.small.extend_from_slice(&rest[..n]);
        n
    }

    /// The 10 fixed bytes: magic, method, flags.
    fn fixed(&mut self, rest: &[u8]) -> Result<usize, HeaderError> {
        let n = self.collect(rest, 10);
        // Reject early, so a stray byte after the last member is reported
        // where it is.
        if self.small.len() >= 2 && self.small[..2] != [0x1f, 0x8b] {
            return Err(HeaderError::NotGzip);
        }
        if self.small.len() == 1 && self.small[0] != 0x1f {
            return Err(HeaderError::NotGzip);
        }
        if self.small.len() == 10 {
            if self.small[2] != 8 {
                return Err(HeaderError::Method(self.small[2]));
            }
            self.flags = self.small[3];
            if self.flags & FRESERVED != 0 {
                return Err(HeaderError::ReservedFlags(self.flags));
            }
            self.small.clear();
            self.field = self.after(Field::Fixed);
        }
        Ok(n)
    }

    /// XLEN: the length of the extra field.
    fn xlen(&mut self, rest: &[u8]) -> usize {
        let n = self.collect(rest, 2);
        if self.small.len() == 2 {
            self.extra_left = u16::from_le_bytes([self.small[0], self.small[1]]) as usize;
            self.small.clear();
            self.field = if self.extra_left == 0 {
                self.after(Field::Extra)
            } else {
                Field::Extra
            };
        }
        n
    }

    /// The extra field's content, kept for its size claim.
    fn extra(&mut self, rest: &[u8]) -> usize {
        let n = rest.len().min(self.extra_left);
        self.extra.extend_from_slice(&rest[..n]);
        self.extra_left -= n;
        if self.extra_left == 0 {
            self.field = self.after(Field::Extra);
        }
        n
    }

    /// The header CRC16, checked against the bytes before it.
    fn hcrc(&mut self, rest: &[u8]) -> Result<usize, HeaderError> {
        let n = self.collect(rest, 2);
        if self.small.len() == 2 {
            let stored = u16::from_le_bytes([self.small[0], self.small[1]]);
            let computed = (self.crc.sum() & 0xffff) as u16;
            if stored != computed {
                return Err(HeaderError::HeaderCrc { stored, computed });
            }
            self.field = Field::Done;
        }
        Ok(n)
    }

    /// The field that follows `f`, given the flags.
    fn after(&self, f: Field) -> Field {
        let order = [
            (Field::Xlen, FEXTRA),
            (Field::Name, FNAME),
            (Field::Comment, FCOMMENT),
            (Field::Hcrc, FHCRC),
        ];
        let start = match f {
            Field::Fixed => 0,
            Field::Xlen | Field::Extra => 1,
            Field::Name => 2,
            Field::Comment => 3,
            Field::Hcrc | Field::Done => 4,
        };
        order[start..]
            .iter()
            .find(|(_, bit)| self.flags & bit != 0)
            .map_or(Field::Done, |&(field, _)| field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_gzp() {
        let h = member_header(0x0102_0304, 6);
        assert_eq!(
            h,
            [0x1f, 0x8b, 8, 4, 0, 0, 0, 0, 0, 0xff, 8, 0, b'I', b'G', 4, 0, 4, 3, 2, 1]
        );
        assert_eq!(member_header(1, 9)[8], 2);
        assert_eq!(member_header(1, 1)[8], 4);
        let mut p = HeaderParser::new();
        let (n, hdr) = p.feed(&h).unwrap();
        assert_eq!(n, 20);
        let hdr = hdr.unwrap();
        assert_eq!(hdr.len, 20);
        assert_eq!(hdr.claim, Some(SizeClaim::Ig(0x0102_0304)));
    }

    #[test]
    fn parser_takes_bytes_one_at_a_time_and_stops_at_the_header_end() {
        // FEXTRA with a foreign subfield then BC, FNAME, FCOMMENT, FHCRC.
        let mut h = vec![
            0x1f,
            0x8b,
            8,
            FEXTRA | FNAME | FCOMMENT | FHCRC,
            0,
            0,
            0,
            0,
            0,
            3,
        ];
        let extra = [b'x', b'y', 1, 0, 9, b'B', b'C', 2, 0, 0x10, 0x00];
        h.extend_from_slice(&(extra.len() as u16).to_le_bytes());
        h.extend_from_slice(&extra);
        h.extend_from_slice(b"name\0comment\0");
        let mut crc = flate2::Crc::new();
        crc.update(&h);
        h.extend_from_slice(&((crc.sum() & 0xffff) as u16).to_le_bytes());
        h.extend_from_slice(&[0xaa, 0xbb]); // deflate data
        let mut p = HeaderParser::new();
        let mut done = None;
        for (i, b) in h.iter().enumerate() {
            let (n, hdr) = p.feed(std::slice::from_ref(b)).unwrap();
            if let Some(hdr) = hdr {
                assert_eq!(n, 1);
                done = Some((i, hdr));
                break;
            }
        }
        let (i, hdr) = done.unwrap();
        assert_eq!(i + 1, h.len() - 2);
        assert_eq!(hdr.len as usize, h.len() - 2);
        assert_eq!(hdr.claim, Some(SizeClaim::Bc(0x11)));
        // Whole at once: stops before the deflate bytes.
        let (n, hdr) = HeaderParser::new().feed(&h).unwrap();
        assert_eq!(n, h.len() - 2);
        assert!(hdr.is_some());
        // A wrong header CRC is refused.
        let k = h.len() - 3;
        h[k] ^= 1;
        assert!(matches!(
            HeaderParser::new().feed(&h),
            Err(HeaderError::HeaderCrc { .. })
        ));
    }

    #[test]
    fn parser_refuses_what_gzip_refuses() {
        let p = |b: &[u8]| HeaderParser::new().feed(b);
        assert_eq!(p(b"\x1f\x8c"), Err(HeaderError::NotGzip));
        assert_eq!(p(b"x"), Err(HeaderError::NotGzip));
        assert_eq!(
            p(&[0x1f, 0x8b, 7, 0, 0, 0, 0, 0, 0, 0]),
            Err(HeaderError::Method(7))
        );
        assert_eq!(
            p(&[0x1f, 0x8b, 8, 0x20, 0, 0, 0, 0, 0, 0]),
            Err(HeaderError::ReservedFlags(0x20))
        );
        assert_eq!(p(&[0x1f, 0x8b, 8]), Ok((3, None)));
    }

    #[test]
    fn claims_from_extra_fields() {
        assert_eq!(
            size_claim(b"IG\x04\x00\x10\x00\x00\x00"),
            Some(SizeClaim::Ig(16))
        );
        assert_eq!(
            size_claim(b"BC\x02\x00\xff\xff"),
            Some(SizeClaim::Bc(65536))
        );
        assert_eq!(
            size_claim(b"MZ\x04\x00\x10\x00\x00\x00"),
            Some(SizeClaim::Mz(16))
        );
        assert_eq!(SizeClaim::Mz(16).totals(37), vec![61]);
        // Wrong lengths, truncated lists, duplicates, nothing: no claim.
        assert_eq!(size_claim(b"IG\x02\x00\x10\x00"), None);
        assert_eq!(size_claim(b"IG\x04\x00\x10\x00"), None);
        assert_eq!(size_claim(b"IG\x04"), None);
        assert_eq!(
            size_claim(b"IG\x04\x00\x10\x00\x00\x00BC\x02\x00\x01\x00"),
            None
        );
        assert_eq!(size_claim(b""), None);
        assert_eq!(size_claim(b"ab\x00\x00"), None);
        // Totals: IG as total or as deflate size; too small ones dropped.
        assert_eq!(SizeClaim::Ig(100).totals(20), vec![100, 128]);
        assert_eq!(SizeClaim::Ig(0).totals(20), Vec::<u64>::new());
        assert_eq!(SizeClaim::Ig(2).totals(20), vec![30]);
        assert_eq!(SizeClaim::Bc(27).totals(18), Vec::<u64>::new());
        assert_eq!(SizeClaim::Bc(28).totals(18), vec![28]);
    }
}
