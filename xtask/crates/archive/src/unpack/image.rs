//! Which member of the archive is the image: exactly one regular `*.qcow2`
//! member with a safe path, or the bare qcow2 itself; links, devices and
//! paths outside the archive are refused by name, never written.

use std::io::{Cursor, Read};
use std::path::Path;

use anyhow::{bail, Result};

use super::compression::what_it_is;
use super::sums::base_name;
use super::tar::{checksum_ok, Entries, Entry, MemberKind};
use super::write::{copy_hashed, preallocate, Budget};
use super::{local, unsupported, Ctx, Request, REDO};
use qcow2::ConvertStats;
use qcow2::StreamConvert;
use util::fmt::human_bytes;
use util::fs::TempFile;
use util::io::read_full;
use util::text::clean;

/// How many member names an error lists before saying "and N more".
const LIST_MAX: usize = 20;

/// The image written to its temporary name, not yet committed.
pub(super) struct Written {
    pub temp: TempFile,
    pub size: u64,
    pub sha256: [u8; 32],
    pub member: String,
    /// The raw image converted in the same pass, not yet committed, or
    /// why the converter refused the image.
    pub raw: Option<(TempFile, Result<ConvertStats>)>,
}

/// Decides between bare qcow2 and tar, and writes the image.
pub(super) fn extract(
    dec: &mut dyn Read,
    ctx: &Ctx,
    req: &Request,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Written> {
    let (dest, size_hint) = (req.dest, req.size_hint);
    let mut block = [0u8; 512];
    let n = read_full(dec, &mut block).map_err(|e| ctx.read_error(e))?;
    let head = &block[..n];
    if head.starts_with(qcow2::MAGIC.as_slice()) {
        space_check(size_hint.unwrap_or(0)).map_err(local)?;
        // No tar header gives the size: the image's own header bounds it
        // (an unreadable header is the converter's to refuse), and free
        // space is watched while it grows.
        let max = qcow2::max_file_len(head).unwrap_or(u64::MAX);
        let mut temp = TempFile::create(dest).map_err(local)?;
        let tmp_path = temp.path().to_path_buf();
        let mut src = Cursor::new(head).chain(dec);
        let budget = Budget {
            max,
            watch: dest.parent().map(Path::to_path_buf),
        };
        // No size up front, so no stream conversion: the caller converts after.
        let (size, sha256) = copy_hashed(&mut src, temp.file(), &tmp_path, ctx, &budget, None)?;
        return Ok(Written {
            temp,
            size,
            sha256,
            member: String::new(),
            raw: None,
        });
    }
    if n == 0 {
        bail!("{} is empty; {REDO}", ctx.content());
    }
    let all_zero = head.iter().all(|&b| b == 0);
    if n < 512 || !(all_zero || checksum_ok(head)) {
        bail!(
            "{} is neither a tar archive nor a qcow2 image (it looks like {}); {REDO}",
            ctx.content(),
            what_it_is(head)
        );
    }
    from_tar(Entries::new(dec, block, ctx), ctx, req, space_check)
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
fn from_tar(
    mut entries: Entries,
    ctx: &Ctx,
    req: &Request,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Written> {
    let mut seen = Seen::default();
    let mut found: Option<Written> = None;
    while let Some(e) = entries.next_entry()? {
        seen.member(&e);
        if !is_qcow2_name(&e.name) {
            continue;
        }
        if e.kind != MemberKind::Regular || unsafe_path(&e.name) {
            seen.refuse(&e);
            continue;
        }
        if let Some(prev) = &found {
            return Err(unsupported(format!(
                "{} holds more than one qcow2 image ({} and {}); cannot tell which \
                 to use (members: {}); pick another --version",
                ctx.content(),
                clean(&prev.member, 200),
                clean(&e.name, 200),
                seen.list()
            )));
        }
        found = Some(write_member(&mut entries, e, ctx, req, space_check)?);
    }
    seen.verdict(found, ctx)
}

/// Streams the image member `e` into the temporary file of `req.dest` (and
/// with `req.raw`, the raw image in the same pass), hashing it.
fn write_member(
    entries: &mut Entries,
    e: Entry,
    ctx: &Ctx,
    req: &Request,
    space_check: &mut dyn FnMut(u64) -> Result<()>,
) -> Result<Written> {
    let size = e.size;
    space_check(size).map_err(local)?;
    let mut temp = TempFile::create(req.dest).map_err(local)?;
    let tmp_path = temp.path().to_path_buf();
    preallocate(temp.file(), size, &tmp_path).map_err(local)?;
    let budget = Budget {
        max: size,
        watch: None,
    };
    let mut raw = match req.raw {
        Some(raw_dest) => Some(raw_converter(raw_dest, &mut temp, size)?),
        None => None,
    };
    let (written, sha256) = copy_hashed(
        &mut entries.data(),
        temp.file(),
        &tmp_path,
        ctx,
        &budget,
        raw.as_mut().map(|(_, c)| c),
    )?;
    if written < size {
        bail!(
            "{}: the tar archive is truncated: member {} ends after {} of {} \
             ({written} of {size} bytes); the download is incomplete: {REDO}",
            ctx.source,
            clean(&e.name, 200),
            human_bytes(written),
            human_bytes(size)
        );
    }
    // A qcow2 the converter refuses is refused here, before anything is
    // installed, but judged once the sha256 is known: a refusal of a bad
    // download is the download's fault, of a good one the image's.
    let raw = raw.map(|(raw_temp, conv)| {
        let stats = conv.finish(temp.file());
        (raw_temp, stats.map(Into::into))
    });
    Ok(Written {
        temp,
        size,
        sha256,
        member: e.name,
        raw,
    })
}

/// The raw image written in the same pass as the qcow2 of `size` bytes in
/// `qcow2`: its clusters as they stream past, the rest when it is complete.
fn raw_converter(
    raw_dest: &Path,
    qcow2: &mut TempFile,
    size: u64,
) -> Result<(TempFile, StreamConvert)> {
    let raw_temp = TempFile::create(raw_dest).map_err(local)?;
    let file = raw_temp.try_clone_file().map_err(local)?;
    let mut conv = StreamConvert::new(
        size,
        &qcow2.path().display().to_string(),
        file,
        &raw_temp.path().display().to_string(),
        true,
    );
    conv.prefer_reflink(qcow2.file());
    Ok((raw_temp, conv))
}

/// The members a walk saw, for its errors: the first [`LIST_MAX`] named
/// (bounded: a hostile archive may hold millions), and the images refused.
#[derive(Default)]
struct Seen {
    listed: Vec<String>,
    count: usize,
    refused: Vec<String>,
}

impl Seen {
    fn member(&mut self, e: &Entry) {
        self.count += 1;
        if self.listed.len() < LIST_MAX {
            // Names may be long (PAX); errors only need a recognisable prefix.
            let short = clean(&e.name, 200);
            self.listed.push(if e.kind == MemberKind::Regular {
                short
            } else {
                format!("{short} ({})", e.kind.label())
            });
        }
    }

    /// A `.qcow2` member that is not a regular file, or whose path is unsafe.
    fn refuse(&mut self, e: &Entry) {
        let why = if e.kind != MemberKind::Regular {
            e.kind.label()
        } else if e.name.starts_with('/') {
            "absolute path"
        } else {
            "path with `..`"
        };
        if self.refused.len() < LIST_MAX {
            self.refused
                .push(format!("{} ({why})", clean(&e.name, 200)));
        }
    }

    fn list(&self) -> String {
        list_members(&self.listed, self.count)
    }

    /// The image `found`, or why there is none. Members that are all
    /// there, well-formed, and not an image we take: the archive as made,
    /// not a transfer's fault.
    fn verdict(self, found: Option<Written>, ctx: &Ctx) -> Result<Written> {
        match found {
            Some(w) => Ok(w),
            None if !self.refused.is_empty() => Err(unsupported(format!(
                "{} holds no usable qcow2 image: refused {} (links, devices and paths outside \
                 the archive are never extracted); members: {}; pick another --version",
                ctx.content(),
                self.refused.join(", "),
                self.list()
            ))),
            // Zeros alone may be a hole where a transfer wrote nothing.
            None if self.count == 0 => bail!(
                "{} is an empty tar archive, not a disk image; {REDO}",
                ctx.content()
            ),
            None => Err(unsupported(format!(
                "{} holds no .qcow2 file (members: {}); pick another --version",
                ctx.content(),
                self.list()
            ))),
        }
    }
}

fn list_members(listed: &[String], total: usize) -> String {
    let mut s = listed.join(", ");
    if total > listed.len() {
        s.push_str(&format!(" … and {} more", total - listed.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

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
