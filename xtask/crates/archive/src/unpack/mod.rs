//! Unpacking the downloaded disk image: the input (gzip incl. multi-member,
//! xz, zstd, or none, recognised by magic bytes) holding a tar with one
//! regular `.qcow2` member, or a bare qcow2, becomes exactly one file,
//! `dest`, written through a temporary name while it is hashed. Nothing is
//! ever extracted by its member path.
//!
//! Everything streams: the input may still be downloading while it is read,
//! and the image is several GiB, so decompression runs on the calling thread
//! while hashing and writing run on a second one. The parts: `sums`
//! (checksum files), `compression` (the formats), `tar` (the walker),
//! `image` (which member is the image), `write` (the writer).

mod compression;
mod image;
mod sums;
mod tar;
mod write;
mod xz;

use std::cell::Cell;
use std::io::{self, Cursor, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

pub use compression::Compression;
use qcow2::ConvertStats;
pub use sums::{expected_sha256, parse_sums, SumEntry};
use util::fmt::{hex, human_bytes};
use util::io::{drain, read_full};
pub use xz::XzMtDecoder;

pub use crate::error::REDO;
use crate::error::{local, unsupported, Error};

// ---------------------------------------------------------------------------
// Unpacking

/// The image written by [`unpack_qcow2`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// Where the image is: the request's `dest`.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its SHA-256, hashed as it was written.
    pub sha256: [u8; 32],
    /// The tar member it came from; empty for a bare (possibly compressed)
    /// qcow2.
    pub member: String,
    /// The raw image written while the qcow2 streamed past, when one was
    /// asked for and the image came in a tar (whose header gives its size).
    pub raw: Option<ConvertStats>,
}

/// What to unpack and where.
pub struct Request<'a> {
    /// Names the input in messages.
    pub source: &'a str,
    /// The final name of the image.
    pub dest: &'a Path,
    /// The sums file's sha256 of the image.
    pub expected: Option<[u8; 32]>,
    /// The input's size, if known (see [`unpack_qcow2_hinted`]).
    pub size_hint: Option<u64>,
    /// Also write the raw image here, in the same pass, sparse.
    pub raw: Option<&'a Path>,
    /// What a mismatch with `expected` advises, for a checksum that is no
    /// release's (`decompress --from`); None: the download's advice.
    pub mismatch_advice: Option<&'a str>,
}

/// Reads `input` (gzip incl. multi-member, xz incl. multi-stream, zstd, or
/// uncompressed — chosen by magic bytes), holding a tar with exactly one
/// regular `.qcow2` member or a bare qcow2, and writes that image to `dest`
/// through a temporary file, hashing it on the way. See
/// [`unpack_qcow2_hinted`]; this is it without a size hint.
pub fn unpack_qcow2(
    input: impl Read + Send,
    source: &str,
    dest: &Path,
    expected: Option<[u8; 32]>,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Unpacked> {
    unpack_qcow2_hinted(input, None, source, dest, expected, space_check)
}

/// [`unpack_qcow2`] with the input's size, if known. `space_check` is called
/// once before anything is written, with the member size from the tar header,
/// or — for a bare qcow2, whose unpacked size is unknown — with `size_hint`
/// (a lower bound for compressed input), else 0.
///
/// The input is read to EOF (its reader checks part digests at their ends)
/// before `dest` is committed; a mismatch with `expected` is an error. On any
/// error nothing is left at `dest` from this run: an older `dest` stays as it
/// was and the temporary file is removed.
pub fn unpack_qcow2_hinted(
    input: impl Read + Send,
    size_hint: Option<u64>,
    source: &str,
    dest: &Path,
    expected: Option<[u8; 32]>,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Unpacked> {
    let req = Request {
        source,
        dest,
        expected,
        size_hint,
        raw: None,
        mismatch_advice: None,
    };
    unpack(input, &req, space_check)
}

/// The unpacker with every choice open: see [`Request`]. Both images are
/// committed only once the qcow2's sha256 matches `expected`; on any error
/// neither is left under its name.
pub fn unpack(
    mut input: impl Read + Send,
    req: &Request,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Unpacked> {
    let state = InputState::default();
    let mut tracked = Tracked {
        inner: &mut input,
        state: &state,
    };
    let r = unpack_inner(&mut tracked, req, space_check);
    r.map_err(|e| {
        let classified = e.is::<Error>();
        if classified || state.failed.get() {
            e
        } else if util::Error::is_no_space(&e) {
            // This machine's disk, not the download.
            local(e)
        } else {
            // A fault seen once the input has ended (a gzip CRC, the last
            // tar block) cannot be placed: it may lie anywhere before.
            let at = (!state.eof.get()).then(|| state.bytes.get());
            anyhow::Error::new(Error::BadContent {
                at,
                msg: format!("{e:#}"),
            })
        }
    })
}

fn unpack_inner(
    tracked: &mut Tracked<'_, &mut (impl Read + Send)>,
    req: &Request,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Unpacked> {
    let source = req.source;
    let out = decode(tracked, req, space_check)?;
    // A decoder may stop at the end of its last stream; the parts reader only
    // checks a part's digest when it reaches that part's end.
    drain(tracked).map_err(|e| input_error(source, e))?;
    if let Some(want) = req.expected.filter(|want| *want != out.sha256) {
        return Err(mismatch(req, &out, &want));
    }
    commit(out, req)
}

/// Recognises the compression by its magic bytes and writes the image
/// through its decoder, read to the end.
fn decode(
    tracked: &mut Tracked<'_, &mut (impl Read + Send)>,
    req: &Request,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<image::Written> {
    let source = req.source;
    let mut magic = [0u8; 6];
    let n = read_full(tracked, &mut magic).map_err(|e| input_error(source, e))?;
    if n == 0 {
        bail!("{source} is empty; {REDO}");
    }
    let kind = Compression::detect(&magic[..n]);
    let ctx = Ctx {
        source,
        kind,
        state: tracked.state,
    };
    let head = Cursor::new(&magic[..n]).chain(&mut *tracked);
    let Some(dec) = kind.decoder(head) else {
        return Err(unsupported(format!(
            "{source} is {}-compressed, which this tool does not read; \
             pick a release with a .gz, .xz or .zst image",
            kind.name()
        )));
    };
    let mut dec = dec.map_err(|e| ctx.read_error(e))?;
    let out = image::extract(&mut *dec, &ctx, req, space_check)?;
    // The tar ends before the stream does (record padding), and the
    // decoder checks its CRC only at the end of each member/stream.
    drain(&mut *dec).map_err(|e| ctx.read_error(e))?;
    Ok(out)
}

/// The image's sha256 is not `want`. The fault may be in any part: no
/// place to point at.
fn mismatch(req: &Request, out: &image::Written, want: &[u8; 32]) -> anyhow::Error {
    let source = req.source;
    let what = if out.member.is_empty() {
        "the image".to_string()
    } else {
        format!("the image ({})", util::text::clean(&out.member, 200))
    };
    let (got, want) = (hex(&out.sha256), hex(want));
    let msg = match req.mismatch_advice {
        None => format!(
            "{source}: {what} has SHA-256 {got} but the published checksum is {want}; \
             the download is corrupt: {REDO}"
        ),
        Some(advice) => format!(
            "{source}: {what} has SHA-256 {got} but the checksum file gives {want}; {advice}"
        ),
    };
    anyhow::Error::new(Error::BadContent { at: None, msg })
}

/// Puts the checked image (and the raw image, unless the converter refused
/// the qcow2) under their final names.
fn commit(out: image::Written, req: &Request) -> Result<Unpacked> {
    let source = req.source;
    let image::Written {
        temp,
        size,
        sha256,
        member,
        raw,
    } = out;
    temp.commit()
        .with_context(|| format!("{source}: cannot put the image in place"))
        .map_err(local)?;
    let raw = match raw {
        Some((_, Err(e))) if util::Error::is_no_space(&e) => return Err(local(e)),
        Some((_, Err(e))) => return Err(anyhow::Error::new(Error::BadImage(format!("{e:#}")))),
        Some((temp, Ok(stats))) => {
            temp.commit()
                .with_context(|| format!("{source}: cannot put the raw image in place"))
                .map_err(local)?;
            Some(stats)
        }
        None => None,
    };
    Ok(Unpacked {
        path: req.dest.to_path_buf(),
        size,
        sha256,
        member,
        raw,
    })
}

#[derive(Default)]
struct InputState {
    bytes: Cell<u64>,
    eof: Cell<bool>,
    failed: Cell<bool>,
}

struct Tracked<'a, R> {
    inner: R,
    state: &'a InputState,
}

impl<R: Read> Read for Tracked<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.inner.read(buf) {
            Ok(0) if !buf.is_empty() => {
                self.state.eof.set(true);
                Ok(0)
            }
            Ok(n) => {
                self.state.bytes.set(self.state.bytes.get() + n as u64);
                Ok(n)
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.state.failed.set(true);
                }
                Err(e)
            }
        }
    }
}

fn input_error(source: &str, e: io::Error) -> anyhow::Error {
    anyhow::Error::new(e).context(format!("reading {source} failed"))
}

pub(crate) struct Ctx<'a> {
    source: &'a str,
    kind: Compression,
    state: &'a InputState,
}

impl Ctx<'_> {
    /// Turns an error from the decompressed stream into one that says whose
    /// fault it is: the input's, a truncated download, or corrupt data.
    fn read_error(&self, e: io::Error) -> anyhow::Error {
        let source = self.source;
        if self.state.failed.get() || self.kind == Compression::None {
            return input_error(source, e);
        }
        let kind = self.kind.name();
        let at = human_bytes(self.state.bytes.get());
        // The parallel decoders read ahead: the error's kind says what
        // happened, the input's state only hints.
        let truncated = e.kind() == io::ErrorKind::UnexpectedEof
            || (self.state.eof.get() && e.kind() != io::ErrorKind::InvalidData);
        if truncated {
            anyhow!(
                "{source}: the {kind} stream ends early, after {at} ({e}); \
                 the download is truncated: {REDO}"
            )
        } else {
            anyhow!("{source}: the {kind} stream is corrupt near {at} ({e}); {REDO}")
        }
    }

    /// "the tar in X" / "X": what the decompressed content is called.
    fn content(&self) -> String {
        match self.kind {
            Compression::None => self.source.to_string(),
            k => format!("the {}-decompressed content of {}", k.name(), self.source),
        }
    }

    fn corrupt_tar(&self, why: impl std::fmt::Display) -> anyhow::Error {
        anyhow!("{}: the tar archive is corrupt: {why}; {REDO}", self.source)
    }
}
