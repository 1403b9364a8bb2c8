//! Compression formats: one table of their magic bytes, the file-name
//! extensions releases use for them, and their decoders. Asset selection
//! reads the extensions, the unpacker the magic bytes and the decoders, so
//! a format the unpacker reads is always one a release may ship.

use std::io::{self, Read};

use util::fmt::hex;

/// Compression of a stream, recognised by its first bytes (names lie:
/// releases have been renamed, and `split` parts carry no hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// gzip, single or multi-member.
    Gzip,
    /// xz, single or multi-stream.
    Xz,
    /// zstd.
    Zstd,
    /// Recognised only to say so in errors; not read.
    Bzip2,
    /// No compression recognised.
    None,
}

/// One row of the table.
struct Format {
    compression: Compression,
    magic: &'static [u8],
    /// The extension after `.tar` or `.qcow2`; empty for no compression.
    ext: &'static str,
    name: &'static str,
    readable: bool,
}

const TABLE: &[Format] = &[
    Format {
        compression: Compression::Gzip,
        magic: &[0x1f, 0x8b],
        ext: "gz",
        name: "gzip",
        readable: true,
    },
    Format {
        compression: Compression::Xz,
        magic: &[0xfd, b'7', b'z', b'X', b'Z', 0x00],
        ext: "xz",
        name: "xz",
        readable: true,
    },
    Format {
        compression: Compression::Zstd,
        magic: &[0x28, 0xb5, 0x2f, 0xfd],
        ext: "zst",
        name: "zstd",
        readable: true,
    },
    Format {
        compression: Compression::Bzip2,
        magic: b"BZh",
        ext: "bz2",
        name: "bzip2",
        readable: false,
    },
    Format {
        compression: Compression::None,
        magic: &[],
        ext: "",
        name: "uncompressed",
        readable: true,
    },
];

impl Compression {
    fn row(self) -> &'static Format {
        TABLE
            .iter()
            .find(|f| f.compression == self)
            .expect("every variant has a row")
    }

    /// Recognises the magic bytes; anything unknown is `None`. Six bytes
    /// are enough; fewer just match less.
    pub(crate) fn detect(head: &[u8]) -> Compression {
        TABLE
            .iter()
            .find(|f| !f.magic.is_empty() && head.starts_with(f.magic))
            .map_or(Compression::None, |f| f.compression)
    }

    /// The name said in messages: `gzip`, `xz`, ….
    pub fn name(self) -> &'static str {
        self.row().name
    }

    /// The file-name extension, `gz`, or empty for no compression.
    pub fn ext(self) -> &'static str {
        self.row().ext
    }

    /// The formats this tool reads, in the order a release's assets are
    /// looked for (gzip first, as upstream packs).
    pub fn readable() -> impl Iterator<Item = Compression> {
        TABLE.iter().filter(|f| f.readable).map(|f| f.compression)
    }

    /// A decoder of `input`; None for a format this tool does not read.
    /// Multi-member gzip and multi-stream xz are read whole: `GzDecoder`
    /// would stop silently after the first member.
    pub(crate) fn decoder<'a>(
        self,
        input: impl Read + 'a,
    ) -> Option<io::Result<Box<dyn Read + 'a>>> {
        let dec: io::Result<Box<dyn Read + 'a>> = match self {
            // Members that carry their sizes (what `pack` writes) inflate
            // on every core; any other gzip streams serially.
            Compression::Gzip => Ok(Box::new(mgzip::ParallelGzDecoder::new(input))),
            // Blocks with sizes in their headers (`xz -T0`) decode on every core.
            Compression::Xz => {
                super::xz::XzMtDecoder::new(input, 0).map(|d| Box::new(d) as Box<dyn Read>)
            }
            Compression::Zstd => {
                zstd::stream::read::Decoder::new(input).map(|d| Box::new(d) as Box<dyn Read>)
            }
            Compression::None => Ok(Box::new(input)),
            Compression::Bzip2 => return None,
        };
        Some(dec)
    }
}

/// A short description of what `head` (a stream's first bytes) looks like,
/// for errors: "gzip data", "a tar archive", "a qcow2 image", "an HTML
/// page", ….
pub(crate) fn what_it_is(head: &[u8]) -> String {
    match Compression::detect(head) {
        Compression::None => {}
        c => return format!("{} data", c.name()),
    }
    if head.starts_with(qcow2::MAGIC.as_slice()) {
        "a qcow2 image".into()
    } else if head.len() >= 512 && super::tar::checksum_ok(&head[..512]) {
        "a tar archive".into()
    } else if head.is_empty() {
        "empty".into()
    } else {
        let t = String::from_utf8_lossy(&head[..head.len().min(64)]).to_ascii_lowercase();
        if t.trim_start().starts_with("<!doctype html") || t.trim_start().starts_with("<html") {
            "an HTML page".into()
        } else {
            format!(
                "unknown data starting with {}",
                hex(&head[..head.len().min(8)])
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magic_detection() {
        assert_eq!(Compression::detect(&[0x1f, 0x8b, 8]), Compression::Gzip);
        assert_eq!(Compression::detect(b"\xfd7zXZ\x00rest"), Compression::Xz);
        assert_eq!(
            Compression::detect(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::detect(b"BZh9"), Compression::Bzip2);
        assert_eq!(Compression::detect(b"QFI\xfb"), Compression::None);
        assert_eq!(Compression::detect(b""), Compression::None);
        assert_eq!(what_it_is(b"QFI\xfb\0\0\0\x03"), "a qcow2 image");
        assert_eq!(what_it_is(b"<!DOCTYPE html>"), "an HTML page");
    }

    #[test]
    fn every_readable_format_has_a_decoder_and_an_extension() {
        let exts: Vec<&str> = Compression::readable().map(Compression::ext).collect();
        assert_eq!(exts, ["gz", "xz", "zst", ""]);
        for c in Compression::readable() {
            assert!(c.decoder(io::empty()).is_some(), "{c:?}");
        }
        assert!(Compression::Bzip2.decoder(io::empty()).is_none());
    }
}
