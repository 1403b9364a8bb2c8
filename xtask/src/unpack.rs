//! Unpacking the downloaded disk image: this module owns reading checksum
//! files (`sha256sum` output), recognising the compression by its magic
//! bytes, walking the tar stream, and writing the one `.qcow2` it holds to its
//! final name while hashing it. It writes exactly one file, `dest`, through a
//! temporary name, and never extracts anything by its member path.
//!
//! Everything streams: the input may still be downloading while it is read,
//! and the image is several GiB, so decompression runs on the calling thread
//! while hashing and writing run on a second one.

use std::cell::Cell;
use std::fs::File;
use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use anyhow::{anyhow, bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::fsutil::{hex, human_bytes, TempFile};

/// Size of the buffers handed from the decompressor to the writer: big enough
/// that per-call overhead (channel, syscall, hasher setup) is negligible.
const CHUNK: usize = 1 << 20;
/// Buffers in flight between the two threads; a few let either side run ahead
/// briefly without holding much memory.
const IN_FLIGHT: usize = 4;
/// The advice every "the download is bad" error ends with.
const REDO: &str = "delete the downloads with --force or re-run";
const QCOW2_MAGIC: &[u8; 4] = b"QFI\xfb";
/// Caps on tar extension headers we hold in memory, so a hostile size field
/// (or a decompression bomb) cannot make us allocate without bound.
const MAX_LONG_NAME: u64 = 64 * 1024;
const MAX_PAX: u64 = 1024 * 1024;
/// How many member names an error lists before saying "and N more".
const LIST_MAX: usize = 20;

/// The archive's content is bad (corrupt or truncated compressed data, a
/// broken tar, a sha256 mismatch): the bytes downloaded are at fault, not
/// this machine. `at` is how far into the input (the compressed stream) the
/// fault showed, when it could be placed; the caller uses it to throw away
/// the part that holds it.
#[derive(Debug)]
pub struct BadContent {
    pub at: Option<u64>,
    pub msg: String,
}

impl std::fmt::Display for BadContent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.msg)
    }
}
impl std::error::Error for BadContent {}

/// A failure of this machine (disk full, permissions), not of the archive.
#[derive(Debug)]
struct Local(String);

impl std::fmt::Display for Local {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Local {}

fn local(e: anyhow::Error) -> anyhow::Error {
    anyhow::Error::new(Local(format!("{e:#}")))
}

// ---------------------------------------------------------------------------
// Checksum files

/// One line of a `sha256sum` / `shasum -a 256` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumEntry {
    pub sha256: [u8; 32],
    pub path: String,
}

/// Parses `sha256sum`/`shasum -a 256` output: `<64 hex>  <path>` (text mode),
/// `<64 hex> *<path>` (binary mode), GNU's escaped form (`\<64 hex>  <path
/// with \\ and \n>`) and the BSD/`--tag` form `SHA256 (<path>) = <64 hex>`.
/// Blank lines and CRLF line ends are accepted. Errors name `source` and the
/// line number.
pub fn parse_sums(text: &str, source: &str) -> Result<Vec<SumEntry>> {
    let mut out = Vec::new();
    // Editors on some systems start a UTF-8 file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let entry = parse_sum_line(line).map_err(|why| {
            anyhow!(
                "{source} line {}: {why} (line: `{}`); the checksum file is damaged: {REDO}",
                i + 1,
                crate::text::clean(line, 100)
            )
        })?;
        out.push(entry);
    }
    Ok(out)
}

fn parse_sum_line(line: &str) -> std::result::Result<SumEntry, String> {
    if let Some(rest) = line.strip_prefix("SHA256 (") {
        // BSD tag form: `SHA256 (path) = hex`. The path may itself contain
        // ") = ", so split at the last one.
        let (path, digest) = rest
            .rsplit_once(") = ")
            .ok_or_else(|| "expected `SHA256 (<file>) = <64 hex digits>`".to_string())?;
        let sha256 = parse_hex_digest(digest.trim_end())?;
        if path.is_empty() {
            return Err("the file name is empty".into());
        }
        return Ok(SumEntry {
            sha256,
            path: path.to_string(),
        });
    }
    // GNU coreutils prefixes a line with `\` when the name needed escaping.
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(l) => (true, l),
        None => (false, line),
    };
    let digits = line.bytes().take_while(u8::is_ascii_hexdigit).count();
    let digest = &line[..digits];
    let rest = &line[digits..];
    let path = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))
        .ok_or_else(|| {
            if digits != 64 && rest.starts_with(' ') {
                format!("the checksum has {digits} hex digits; SHA-256 needs 64")
            } else {
                "expected `<64 hex digits>  <file name>` as written by sha256sum".to_string()
            }
        })?;
    let sha256 = parse_hex_digest(digest)?;
    if path.is_empty() {
        return Err("the file name is empty".into());
    }
    let path = if escaped {
        unescape_gnu(path)?
    } else {
        path.to_string()
    };
    Ok(SumEntry { sha256, path })
}

fn parse_hex_digest(s: &str) -> std::result::Result<[u8; 32], String> {
    if s.len() != 64 {
        return Err(format!(
            "the checksum has {} hex digits; SHA-256 needs 64",
            s.chars().count()
        ));
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16);
        let lo = (pair[1] as char).to_digit(16);
        match (hi, lo) {
            (Some(h), Some(l)) => out[i] = (h * 16 + l) as u8,
            _ => return Err("the checksum is not hexadecimal".into()),
        }
    }
    Ok(out)
}

fn unescape_gnu(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            _ => return Err("bad escape in file name".into()),
        }
    }
    Ok(out)
}

fn shorten(s: &str, max: usize) -> String {
    crate::text::clean(s, max)
}

/// The one entry whose path's file name equals `file_name` (upstream writes
/// `temp/disk-image.qcow2`; we match it as `disk-image.qcow2`). Zero matches,
/// or several with different digests, is an error listing the entries.
pub fn expected_sha256(entries: &[SumEntry], file_name: &str, source: &str) -> Result<[u8; 32]> {
    let matches: Vec<&SumEntry> = entries
        .iter()
        .filter(|e| base_name(&e.path) == file_name)
        .collect();
    let listing = || {
        if entries.is_empty() {
            "it lists nothing".to_string()
        } else {
            let names: Vec<String> = entries.iter().map(|e| shorten(&e.path, 100)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("it lists: {}", list_names(&names))
        }
    };
    match matches.as_slice() {
        [] => bail!(
            "{source} has no checksum for {file_name} ({}); the release may be incomplete: \
             {REDO}, or pick another --version",
            listing()
        ),
        [first, rest @ ..] => {
            // The same digest listed twice (e.g. `./x` and `x`) is harmless.
            if rest.iter().any(|e| e.sha256 != first.sha256) {
                bail!(
                    "{source} lists {file_name} {} times with different checksums ({}); \
                     cannot tell which is right: {REDO}, or pick another --version",
                    matches.len(),
                    listing()
                );
            }
            Ok(first.sha256)
        }
    }
}

/// The last path component, ignoring trailing slashes.
fn base_name(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    p.rsplit('/').next().unwrap_or(p)
}

fn list_names(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(LIST_MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LIST_MAX {
        s.push_str(&format!(" … and {} more", names.len() - LIST_MAX));
    }
    s
}

// ---------------------------------------------------------------------------
// Compression detection

/// Compression of a stream, recognised by its first bytes (names lie:
/// releases have been renamed, and `split` parts carry no hint).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip,
    Xz,
    Zstd,
    /// Recognised only to say so in errors; not supported.
    Bzip2,
    None,
}

impl Compression {
    /// Recognises gzip, xz, zstd and bzip2 magic; anything else is `None`.
    /// Six bytes are enough; fewer just match less.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else {
            Compression::None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::None => "uncompressed",
        }
    }
}

/// A short description of what `head` (a stream's first bytes) looks like,
/// for errors: "gzip", "xz", "a tar archive", "a qcow2 image", "HTML", ….
pub fn describe_magic(head: &[u8]) -> String {
    match Compression::detect(head) {
        Compression::None => {}
        c => return format!("{} data", c.name()),
    }
    if head.starts_with(QCOW2_MAGIC) {
        "a qcow2 image".into()
    } else if head.len() >= 512 && tar_checksum_ok(&head[..512]) {
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

// ---------------------------------------------------------------------------
// Unpacking

/// The image written by [`unpack_qcow2`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    pub path: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The tar member it came from; empty for a bare (possibly compressed)
    /// qcow2.
    pub member: String,
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
    mut input: impl Read + Send,
    size_hint: Option<u64>,
    source: &str,
    dest: &Path,
    expected: Option<[u8; 32]>,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Unpacked> {
    let state = InputState::default();
    let mut tracked = Tracked {
        inner: &mut input,
        state: &state,
    };
    let r = unpack_inner(&mut tracked, size_hint, source, dest, expected, space_check);
    r.map_err(|e| {
        if e.is::<Local>() || e.is::<BadContent>() || state.failed.get() {
            e
        } else {
            let at = Some(state.bytes.get());
            anyhow::Error::new(BadContent {
                at,
                msg: format!("{e:#}"),
            })
        }
    })
}

fn unpack_inner(
    tracked: &mut Tracked<'_, &mut (impl Read + Send)>,
    size_hint: Option<u64>,
    source: &str,
    dest: &Path,
    expected: Option<[u8; 32]>,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Unpacked> {
    let state = tracked.state;
    let mut magic = [0u8; 6];
    let n = read_full(tracked, &mut magic).map_err(|e| input_error(source, e))?;
    if n == 0 {
        bail!("{source} is empty; {REDO}");
    }
    let kind = Compression::detect(&magic[..n]);
    let ctx = Ctx {
        source,
        kind,
        state,
    };
    let out = {
        let head = Cursor::new(&magic[..n]).chain(&mut *tracked);
        let mut dec: Box<dyn Read + '_> = match kind {
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(head)),
            Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(head)),
            Compression::Zstd => {
                Box::new(zstd::stream::read::Decoder::new(head).map_err(|e| ctx.read_error(e))?)
            }
            Compression::Bzip2 => bail!(
                "{source} is bzip2-compressed, which this tool does not read; \
                 pick a release with a .gz or .xz image"
            ),
            Compression::None => Box::new(head),
        };
        let out = extract(&mut *dec, &ctx, dest, size_hint, space_check)?;
        // The tar ends before the stream does (record padding), and the
        // decoder checks its CRC only at the end of each member/stream.
        drain(&mut *dec).map_err(|e| ctx.read_error(e))?;
        out
    };
    // A decoder may stop at the end of its last stream; the parts reader only
    // checks a part's digest when it reaches that part's end.
    drain(tracked).map_err(|e| input_error(source, e))?;

    let Written {
        temp,
        size,
        sha256,
        member,
    } = out;
    if let Some(want) = expected {
        if want != sha256 {
            let what = if member.is_empty() {
                "the image".to_string()
            } else {
                format!("the image ({member})")
            };
            // The fault may be in any part: no place to point at.
            return Err(anyhow::Error::new(BadContent {
                at: None,
                msg: format!(
                    "{source}: {what} has SHA-256 {} but the published checksum is {}; \
                     the download is corrupt: {REDO}",
                    hex(&sha256),
                    hex(&want)
                ),
            }));
        }
    }
    temp.commit()
        .with_context(|| format!("{source}: cannot put the image in place"))
        .map_err(local)?;
    Ok(Unpacked {
        path: dest.to_path_buf(),
        size,
        sha256,
        member,
    })
}

struct Written {
    temp: TempFile,
    size: u64,
    sha256: [u8; 32],
    member: String,
}

/// What the raw input did, so a decoder's error can be told apart from the
/// input's own (network, part digest) and from a truncated download.
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

struct Ctx<'a> {
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
        if self.state.eof.get() {
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

/// Decides between bare qcow2 and tar, and writes the image.
fn extract(
    dec: &mut dyn Read,
    ctx: &Ctx,
    dest: &Path,
    size_hint: Option<u64>,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Written> {
    let mut block = [0u8; 512];
    let n = read_full(dec, &mut block).map_err(|e| ctx.read_error(e))?;
    let head = &block[..n];
    if head.starts_with(QCOW2_MAGIC) {
        space_check(size_hint.unwrap_or(0)).map_err(local)?;
        // No tar header gives the size: the image's own header bounds it
        // (an unreadable header is the converter's to refuse), and free
        // space is watched while it grows.
        let max = crate::qcow2::max_file_len(head).unwrap_or(u64::MAX);
        let mut temp = TempFile::create(dest).map_err(local)?;
        let tmp_path = temp.path().to_path_buf();
        let mut src = Cursor::new(head).chain(dec);
        let budget = Budget {
            max,
            watch: dest.parent().map(Path::to_path_buf),
        };
        let (size, sha256) = copy_hashed(&mut src, temp.file(), &tmp_path, ctx, &budget)?;
        return Ok(Written {
            temp,
            size,
            sha256,
            member: String::new(),
        });
    }
    if n == 0 {
        bail!("{} is empty; {REDO}", ctx.content());
    }
    let all_zero = head.iter().all(|&b| b == 0);
    if n < 512 || !(all_zero || tar_checksum_ok(head)) {
        bail!(
            "{} is neither a tar archive nor a qcow2 image (it looks like {}); {REDO}",
            ctx.content(),
            describe_magic(head)
        );
    }
    extract_tar(dec, block, ctx, dest, space_check)
}

/// A tar header checksum: the byte sum with the checksum field read as
/// spaces. Old tars summed signed bytes; accept either.
fn tar_checksum_ok(block: &[u8]) -> bool {
    let header = tar::Header::from_byte_slice(&block[..512]);
    let Ok(want) = header.cksum() else {
        return false;
    };
    let field = 148..156;
    let (mut unsigned, mut signed) = (0u32, 0i64);
    for (i, &b) in block[..512].iter().enumerate() {
        let b = if field.contains(&i) { b' ' } else { b };
        unsigned += b as u32;
        signed += b as i8 as i64;
    }
    unsigned == want || signed == want as i64
}

/// How a member is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberKind {
    Regular,
    Directory,
    Symlink,
    HardLink,
    Device,
    Fifo,
    Sparse,
    Other,
}

impl MemberKind {
    fn of(t: tar::EntryType) -> MemberKind {
        use tar::EntryType as T;
        match t {
            T::Regular | T::Continuous => MemberKind::Regular,
            T::Directory => MemberKind::Directory,
            T::Symlink => MemberKind::Symlink,
            T::Link => MemberKind::HardLink,
            T::Char | T::Block => MemberKind::Device,
            T::Fifo => MemberKind::Fifo,
            T::GNUSparse => MemberKind::Sparse,
            _ => MemberKind::Other,
        }
    }

    fn label(self) -> &'static str {
        match self {
            MemberKind::Regular => "file",
            MemberKind::Directory => "directory",
            MemberKind::Symlink => "symlink",
            MemberKind::HardLink => "hard link",
            MemberKind::Device => "device",
            MemberKind::Fifo => "fifo",
            MemberKind::Sparse => "GNU sparse file",
            MemberKind::Other => "special entry",
        }
    }
}

/// Absolute, or climbing out with `..`: never acceptable, even though we
/// would not write there anyway, because it marks a hostile archive.
fn unsafe_path(name: &str) -> bool {
    name.is_empty() || name.starts_with('/') || name.split('/').any(|c| c == "..")
}

fn is_qcow2_name(name: &str) -> bool {
    base_name(name).ends_with(".qcow2") && !name.ends_with('/')
}

/// Walks the tar, streaming the one regular `.qcow2` member into the
/// temporary file and skipping everything else. The archive is read to its
/// end so a second image is still noticed.
fn extract_tar(
    dec: &mut dyn Read,
    first: [u8; 512],
    ctx: &Ctx,
    dest: &Path,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Written> {
    let mut first = Some(first);
    let mut pos: u64 = 0;
    let mut long_name: Option<Vec<u8>> = None;
    let mut pax_path: Option<Vec<u8>> = None;
    let mut pax_size: Option<u64> = None;
    let mut members: Vec<String> = Vec::new();
    let mut member_count = 0usize;
    let mut refused: Vec<String> = Vec::new();
    let mut found: Option<Written> = None;
    let rerr = |e: io::Error| ctx.read_error(e);

    loop {
        let block = match first.take() {
            Some(b) => b,
            None => {
                let mut b = [0u8; 512];
                match read_full(dec, &mut b).map_err(rerr)? {
                    // No end-of-archive blocks: tolerated, as GNU tar does,
                    // unless a header promised a member that never came.
                    0 if long_name.is_none() && pax_path.is_none() && pax_size.is_none() => break,
                    512 => b,
                    _ => bail!(
                        "{}: the tar archive is truncated at byte {pos} (inside a member \
                         header); the download is incomplete: {REDO}",
                        ctx.source
                    ),
                }
            }
        };
        let header_pos = pos;
        pos += 512;
        if block.iter().all(|&b| b == 0) {
            break;
        }
        if !tar_checksum_ok(&block) {
            return Err(ctx.corrupt_tar(format_args!(
                "header checksum mismatch at byte {header_pos}"
            )));
        }
        let header = tar::Header::from_byte_slice(&block);
        let etype = header.entry_type();
        let is_extension = etype.is_gnu_longname()
            || etype.is_gnu_longlink()
            || etype.is_pax_local_extensions()
            || etype.is_pax_global_extensions();
        let header_size = || {
            header
                .entry_size()
                .map_err(|e| ctx.corrupt_tar(format_args!("at byte {header_pos}: {e}")))
        };
        let size = if is_extension {
            header_size()?
        } else {
            match pax_size.take() {
                Some(s) => s,
                None => header_size()?,
            }
        };
        let padded = size
            .checked_add(511)
            .map(|s| s & !511)
            .ok_or_else(|| ctx.corrupt_tar(format_args!("member size {size} overflows")))?;

        if etype.is_gnu_longname() || etype.is_pax_local_extensions() {
            let cap = if etype.is_gnu_longname() {
                MAX_LONG_NAME
            } else {
                MAX_PAX
            };
            if size > cap {
                return Err(ctx.corrupt_tar(format_args!(
                    "an extension header at byte {header_pos} claims {size} bytes \
                     (at most {cap} are plausible)"
                )));
            }
            let mut data = vec![0u8; size as usize];
            let got = read_full(dec, &mut data).map_err(rerr)?;
            if got < data.len() {
                bail!(
                    "{}: the tar archive is truncated at byte {} (inside an extension \
                     header); the download is incomplete: {REDO}",
                    ctx.source,
                    pos + got as u64
                );
            }
            skip_exact(dec, padded - size, ctx, pos + size)?;
            pos += padded;
            if etype.is_gnu_longname() {
                while data.last() == Some(&0) {
                    data.pop();
                }
                long_name = Some(data);
            } else {
                for (key, value) in parse_pax(&data).map_err(|why| {
                    ctx.corrupt_tar(format_args!("bad PAX header at byte {header_pos}: {why}"))
                })? {
                    match key {
                        b"path" => pax_path = Some(value.to_vec()),
                        b"size" => {
                            let s = std::str::from_utf8(value)
                                .ok()
                                .and_then(|v| v.parse::<u64>().ok())
                                .ok_or_else(|| {
                                    ctx.corrupt_tar(format_args!(
                                        "bad PAX size at byte {header_pos}"
                                    ))
                                })?;
                            pax_size = Some(s);
                        }
                        _ => {}
                    }
                }
            }
            continue;
        }
        if is_extension {
            // Long link names and global PAX headers change nothing we use.
            skip_exact(dec, padded, ctx, pos)?;
            pos += padded;
            continue;
        }

        let name_bytes = pax_path
            .take()
            .or_else(|| long_name.take())
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let name = String::from_utf8_lossy(&name_bytes).into_owned();
        let kind = MemberKind::of(etype);
        member_count += 1;
        if members.len() < LIST_MAX {
            // Names may be long (PAX); errors only need a recognisable prefix.
            let short = shorten(&name, 200);
            members.push(if kind == MemberKind::Regular {
                short
            } else {
                format!("{short} ({})", kind.label())
            });
        }

        let wanted = is_qcow2_name(&name);
        if wanted && kind == MemberKind::Regular && !unsafe_path(&name) {
            if let Some(prev) = &found {
                bail!(
                    "{} holds more than one qcow2 image ({} and {name}); cannot tell which \
                     to use (members: {}); {REDO}, or pick another --version",
                    ctx.content(),
                    prev.member,
                    list_members(&members, member_count)
                );
            }
            space_check(size).map_err(local)?;
            let mut temp = TempFile::create(dest).map_err(local)?;
            let tmp_path = temp.path().to_path_buf();
            preallocate(temp.file(), size, &tmp_path).map_err(local)?;
            let mut src = (&mut *dec).take(size);
            let budget = Budget {
                max: size,
                watch: None,
            };
            let (written, sha256) = copy_hashed(&mut src, temp.file(), &tmp_path, ctx, &budget)?;
            if written < size {
                bail!(
                    "{}: the tar archive is truncated: member {name} ends after {} of {} \
                     ({written} of {size} bytes); the download is incomplete: {REDO}",
                    ctx.source,
                    human_bytes(written),
                    human_bytes(size)
                );
            }
            pos += size;
            // Missing padding after a complete member is tolerated, like a
            // missing end-of-archive marker.
            skip(dec, padded - size).map_err(rerr)?;
            pos += padded - size;
            found = Some(Written {
                temp,
                size,
                sha256,
                member: name,
            });
            continue;
        }
        if wanted {
            let why = if kind != MemberKind::Regular {
                kind.label()
            } else if name.starts_with('/') {
                "absolute path"
            } else {
                "path with `..`"
            };
            // Bounded: a hostile archive may hold millions of these.
            if refused.len() < LIST_MAX {
                refused.push(format!("{} ({why})", shorten(&name, 200)));
            }
        }
        skip_exact(dec, padded, ctx, pos)?;
        pos += padded;
    }

    match found {
        Some(w) => Ok(w),
        None if !refused.is_empty() => bail!(
            "{} holds no usable qcow2 image: refused {} (links, devices and paths outside \
             the archive are never extracted); members: {}; {REDO}, or pick another --version",
            ctx.content(),
            refused.join(", "),
            list_members(&members, member_count)
        ),
        None if member_count == 0 => bail!(
            "{} is an empty tar archive, not a disk image; {REDO}",
            ctx.content()
        ),
        None => bail!(
            "{} holds no .qcow2 file (members: {}); {REDO}, or pick another --version",
            ctx.content(),
            list_members(&members, member_count)
        ),
    }
}

fn list_members(listed: &[String], total: usize) -> String {
    let mut s = listed.join(", ");
    if total > listed.len() {
        s.push_str(&format!(" … and {} more", total - listed.len()));
    }
    s
}

/// PAX records: `<decimal length> <key>=<value>\n`, the length counting the
/// whole record.
/// One PAX record: key and value bytes.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

fn parse_pax(data: &[u8]) -> std::result::Result<Vec<PaxRecord<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        if rest.iter().all(|&b| b == 0) {
            break;
        }
        let sp = rest
            .iter()
            .position(|&b| b == b' ')
            .ok_or("record without length")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad record length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("record length does not fit");
        }
        let record = &rest[sp + 1..len - 1];
        let eq = record
            .iter()
            .position(|&b| b == b'=')
            .ok_or("record without `=`")?;
        out.push((&record[..eq], &record[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

/// Reserves the member's size up front so a full disk fails now rather than
/// gigabytes in, and the file is laid out contiguously. Best effort: file
/// systems without `fallocate` just skip it.
fn preallocate(file: &File, size: u64, path: &Path) -> Result<()> {
    use std::os::unix::io::AsRawFd;
    let Ok(len) = libc::off_t::try_from(size) else {
        return Ok(());
    };
    if len == 0 {
        return Ok(());
    }
    // SAFETY: fallocate on an open descriptor we own; no memory is shared.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, 0, len) };
    if rc != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::ENOSPC) {
            bail!(
                "cannot reserve {} for {}: the disk is full; free some space or choose \
                 another --output",
                human_bytes(size),
                path.display()
            );
        }
    }
    Ok(())
}

/// Limits on what one image may take.
struct Budget {
    /// Bytes the image may have at most.
    max: u64,
    /// Watch free space here while writing (when the size was not known up front).
    watch: Option<PathBuf>,
}

/// Free space kept for the rest of the system while an image of unknown
/// size grows: a twentieth of the file system, at most this.
const RESERVE_MAX: u64 = 512 << 20;

enum WriteStop {
    Io(io::Error),
    TooBig(u64),
    LowSpace(u64),
}

/// Copies `src` to EOF into `out`, hashing it. Decompression (the caller's
/// reads) stays on this thread; SHA-256 and the writes run on another, so
/// the two overlap on separate cores.
fn copy_hashed(
    src: &mut dyn Read,
    out: &mut File,
    out_path: &Path,
    ctx: &Ctx,
    budget: &Budget,
) -> Result<(u64, [u8; 32])> {
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<(Box<[u8]>, usize)>(IN_FLIGHT);
        let (free_tx, free_rx) = mpsc::channel::<Box<[u8]>>();
        for _ in 0..IN_FLIGHT + 1 {
            let _ = free_tx.send(vec![0u8; CHUNK].into_boxed_slice());
        }
        let writer = s.spawn(move || -> std::result::Result<(u64, [u8; 32]), WriteStop> {
            let mut hasher = Sha256::new();
            let mut n = 0u64;
            for (buf, len) in full_rx {
                if n + len as u64 > budget.max {
                    return Err(WriteStop::TooBig(n + len as u64));
                }
                // One statvfs per MiB written costs nothing next to the write.
                if let Some(dir) = &budget.watch {
                    if let Ok((free, total)) = crate::fsutil::space(dir) {
                        if free < (total / 20).min(RESERVE_MAX) + len as u64 {
                            return Err(WriteStop::LowSpace(free));
                        }
                    }
                }
                hasher.update(&buf[..len]);
                out.write_all(&buf[..len]).map_err(WriteStop::Io)?;
                n += len as u64;
                // The reader may be gone after an error; nothing to do then.
                let _ = free_tx.send(buf);
            }
            Ok((n, hasher.finalize().into()))
        });
        let mut read_err = None;
        // Ends when the writer has stopped (it dropped `free_tx`) or at EOF.
        while let Ok(mut buf) = free_rx.recv() {
            match read_full(src, &mut buf) {
                Ok(0) => break,
                Ok(len) => {
                    if full_tx.send((buf, len)).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    read_err = Some(e);
                    break;
                }
            }
        }
        drop(full_tx);
        let written = writer
            .join()
            .map_err(|_| anyhow!("the writer thread for {} panicked", out_path.display()))?;
        match written {
            Err(WriteStop::TooBig(n)) => {
                return Err(anyhow!(
                    "{}: the image grows past {} ({} bytes), more than its own qcow2 header \
                     allows; the archive is bogus: {REDO}",
                    ctx.source,
                    human_bytes(budget.max),
                    n
                ))
            }
            Err(WriteStop::LowSpace(free)) => {
                return Err(local(anyhow!(
                    "stopped writing {} with only {} left free, to keep the disk from filling; \
                     free some space or choose another --output",
                    out_path.display(),
                    human_bytes(free)
                )))
            }
            Err(WriteStop::Io(e)) if read_err.is_none() => {
                return Err(local(anyhow::Error::new(e).context(format!(
                    "cannot write {}; check free space and permissions, or choose another --output",
                    out_path.display()
                ))))
            }
            _ => {}
        }
        if let Some(e) = read_err {
            return Err(ctx.read_error(e));
        }
        written.map_err(|_| anyhow!("cannot write {}", out_path.display()))
    })
}

/// Reads until `buf` is full or EOF; returns the bytes read.
fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Skips up to `n` bytes; returns how many were there.
fn skip(r: &mut dyn Read, n: u64) -> io::Result<u64> {
    io::copy(&mut r.take(n), &mut io::sink())
}

/// Skips `n` bytes of member data; EOF before that is a truncated archive.
fn skip_exact(r: &mut dyn Read, n: u64, ctx: &Ctx, pos: u64) -> Result<()> {
    let got = skip(r, n).map_err(|e| ctx.read_error(e))?;
    if got < n {
        bail!(
            "{}: the tar archive is truncated at byte {} (inside a member); the download \
             is incomplete: {REDO}",
            ctx.source,
            pos + got
        );
    }
    Ok(())
}

/// Reads `r` to EOF, discarding; returns the byte count.
fn drain(r: &mut dyn Read) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(n),
            Ok(k) => n += k as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sums_text_binary_crlf_and_blank_lines() {
        let text = format!("\n{H}  temp/disk-image.qcow2\r\n\r\n{H} *other file\n   \n");
        let e = parse_sums(&text, "x.sums").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, "temp/disk-image.qcow2");
        assert_eq!(e[1].path, "other file");
        assert_eq!(e[0].sha256[0], 0x01);
        assert_eq!(e[0].sha256[31], 0xef);
    }

    #[test]
    fn sums_upper_case_tag_and_escaped_forms() {
        let up = H.to_uppercase();
        let text = format!("SHA256 (a b.qcow2) = {H}\n\\{up}  dir\\\\x\\ny\n");
        let e = parse_sums(&text, "s").unwrap();
        assert_eq!(e[0].path, "a b.qcow2");
        assert_eq!(e[1].path, "dir\\x\ny");
        assert_eq!(e[0].sha256, e[1].sha256);
    }

    #[test]
    fn sums_errors_name_source_and_line() {
        let bad_hex = format!("{H}  ok\n{}  x\n", H.replace('a', "g"));
        let err = parse_sums(&bad_hex, "disk.sums").unwrap_err().to_string();
        assert!(err.contains("disk.sums line 2"), "{err}");

        let short = format!("{}  x\n", &H[..63]);
        let err = parse_sums(&short, "disk.sums").unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("63 hex digits"),
            "{err}"
        );

        let long = format!("{H}0  x\n");
        let err = parse_sums(&long, "disk.sums").unwrap_err().to_string();
        assert!(err.contains("65"), "{err}");

        for bad in [
            format!("{H} x"),
            format!("{H}  "),
            H.to_string(),
            "hello".into(),
        ] {
            assert!(parse_sums(&bad, "s").is_err(), "accepted {bad:?}");
        }
        // Non-ASCII must not make slicing panic.
        assert!(parse_sums("ééééé  x", "s").is_err());
        assert!(parse_sums("SHA256 (x) = zz", "s").is_err());
    }

    #[test]
    fn expected_matches_base_name_only() {
        let e = parse_sums(&format!("{H}  temp/disk-image.qcow2\n"), "s").unwrap();
        assert_eq!(
            expected_sha256(&e, "disk-image.qcow2", "s").unwrap(),
            e[0].sha256
        );
        let err = expected_sha256(&e, "image.qcow2", "sums.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sums.txt") && err.contains("temp/disk-image.qcow2"));
        assert!(expected_sha256(&[], "x", "s").is_err());

        let other = H.replace('0', "1");
        let two = parse_sums(&format!("{H}  a/x.qcow2\n{other}  b/x.qcow2\n"), "s").unwrap();
        assert!(expected_sha256(&two, "x.qcow2", "s").is_err());
        let same = parse_sums(&format!("{H}  a/x.qcow2\n{H}  ./x.qcow2\n"), "s").unwrap();
        assert!(expected_sha256(&same, "x.qcow2", "s").is_ok());
    }

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
        assert_eq!(describe_magic(b"QFI\xfb\0\0\0\x03"), "a qcow2 image");
        assert_eq!(describe_magic(b"<!DOCTYPE html>"), "an HTML page");
    }

    #[test]
    fn pax_records() {
        let data = b"30 path=temp/disk-image.qcow2\n20 size=17179869184\n";
        let r = parse_pax(data).unwrap();
        assert_eq!(r[0], (&b"path"[..], &b"temp/disk-image.qcow2"[..]));
        assert_eq!(r[1].1, b"17179869184");
        assert!(parse_pax(b"99 path=x\n").is_err());
        assert!(parse_pax(b"x").is_err());
        assert!(parse_pax(b"3 \n").is_err());
    }

    #[test]
    fn path_rules() {
        assert!(unsafe_path("/abs/x.qcow2"));
        assert!(unsafe_path("a/../../x.qcow2"));
        assert!(!unsafe_path("temp/disk-image.qcow2"));
        assert!(!unsafe_path("./a..b.qcow2"));
        assert!(is_qcow2_name("./temp/disk-image.qcow2"));
        assert!(!is_qcow2_name("x.qcow2/"));
        assert!(!is_qcow2_name("x.qcow2.sums"));
    }
}
