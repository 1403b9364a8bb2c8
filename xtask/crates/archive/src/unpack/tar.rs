//! The tar walker: a bounded iterator over a tar stream's entries (GNU long
//! names and PAX headers folded into the entry they describe, extension
//! data capped so a hostile size never drives an allocation). It reads
//! headers and skips what the caller does not read; it writes nothing.

use std::io::{self, Read};

use anyhow::{bail, Result};

use super::{unsupported, Ctx, REDO};
use util::io::{read_full, skip};

/// Caps on tar extension headers held in memory.
const MAX_LONG_NAME: u64 = 64 * 1024;
const MAX_PAX: u64 = 1024 * 1024;

/// How a member is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MemberKind {
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

    pub(crate) fn label(self) -> &'static str {
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

/// One member: its name (PAX and GNU long names applied), kind and size.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub name: String,
    pub kind: MemberKind,
    pub size: u64,
}

/// What extension headers said about the member that follows them.
#[derive(Default)]
struct Ext {
    long_name: Option<Vec<u8>>,
    pax_path: Option<Vec<u8>>,
    pax_size: Option<u64>,
}

impl Ext {
    /// A member was promised: the stream may not end here.
    fn promised(&self) -> bool {
        self.long_name.is_some() || self.pax_path.is_some() || self.pax_size.is_some()
    }
}

/// The entries of a tar stream, one at a time. The data of the entry last
/// returned is read with [`Entries::data`], or skipped by the next call to
/// [`Entries::next_entry`].
pub(crate) struct Entries<'a, 'c> {
    src: &'a mut dyn Read,
    ctx: &'a Ctx<'c>,
    first: Option<[u8; 512]>,
    /// Bytes of the stream consumed so far.
    pos: u64,
    /// Unread data and padding of the current entry: (data, padding).
    pending: Option<(u64, u64)>,
    done: bool,
}

impl<'a, 'c> Entries<'a, 'c> {
    /// Walks `src`, whose first block `first` the caller has already read.
    pub fn new(src: &'a mut dyn Read, first: [u8; 512], ctx: &'a Ctx<'c>) -> Self {
        Entries {
            src,
            ctx,
            first: Some(first),
            pos: 0,
            pending: None,
            done: false,
        }
    }

    /// The next member, or None at the end of the archive (the zero blocks,
    /// or a clean end of the stream between members, as GNU tar accepts).
    pub(crate) fn next_entry(&mut self) -> Result<Option<Entry>> {
        if let Some((data, pad)) = self.pending.take() {
            self.skip_exact(data + pad)?;
        }
        if self.done {
            return Ok(None);
        }
        let mut ext = Ext::default();
        loop {
            let Some(block) = self.next_block(&ext)? else {
                self.done = true;
                return Ok(None);
            };
            let header_pos = self.pos;
            self.pos += 512;
            if block.iter().all(|&b| b == 0) {
                self.done = true;
                return Ok(None);
            }
            if !checksum_ok(&block) {
                return Err(self.ctx.corrupt_tar(format_args!(
                    "header checksum mismatch at byte {header_pos}"
                )));
            }
            let header = tar::Header::from_byte_slice(&block);
            let etype = header.entry_type();
            let is_extension = etype.is_gnu_longname()
                || etype.is_gnu_longlink()
                || etype.is_pax_local_extensions()
                || etype.is_pax_global_extensions();
            let size = match (is_extension, ext.pax_size.take()) {
                (false, Some(s)) => s,
                _ => header.entry_size().map_err(|e| {
                    self.ctx
                        .corrupt_tar(format_args!("at byte {header_pos}: {e}"))
                })?,
            };
            let padded = size
                .checked_add(511)
                .map(|s| s & !511)
                .ok_or_else(|| self.oversize(header_pos, &size.to_string()))?;
            if is_extension {
                self.extension(etype, size, padded, header_pos, &mut ext)?;
                continue;
            }
            let name_bytes = ext
                .pax_path
                .take()
                .or_else(|| ext.long_name.take())
                .unwrap_or_else(|| header.path_bytes().into_owned());
            self.pending = Some((size, padded - size));
            return Ok(Some(Entry {
                name: String::from_utf8_lossy(&name_bytes).into_owned(),
                kind: MemberKind::of(etype),
                size,
            }));
        }
    }

    /// The next header block; None at a clean end of the stream, unless an
    /// extension header in `ext` promised a member that never came.
    fn next_block(&mut self, ext: &Ext) -> Result<Option<[u8; 512]>> {
        if let Some(b) = self.first.take() {
            return Ok(Some(b));
        }
        let mut b = [0u8; 512];
        match read_full(self.src, &mut b).map_err(|e| self.ctx.read_error(e))? {
            0 if !ext.promised() => Ok(None),
            512 => Ok(Some(b)),
            _ => bail!(
                "{}: the tar archive is truncated at byte {} (inside a member \
                 header); the download is incomplete: {REDO}",
                self.ctx.source,
                self.pos
            ),
        }
    }

    /// Reads an extension header (of `size` bytes, `padded` with its
    /// padding, at `at`) into `ext`: a GNU long name or PAX records. Long
    /// link names and global PAX headers change nothing we use.
    fn extension(
        &mut self,
        etype: tar::EntryType,
        size: u64,
        padded: u64,
        at: u64,
        ext: &mut Ext,
    ) -> Result<()> {
        if !(etype.is_gnu_longname() || etype.is_pax_local_extensions()) {
            return self.skip_exact(padded);
        }
        let mut data = self.extension_data(size, padded, at, etype.is_gnu_longname())?;
        if etype.is_gnu_longname() {
            while data.last() == Some(&0) {
                data.pop();
            }
            ext.long_name = Some(data);
            return Ok(());
        }
        let records = parse_pax(&data).map_err(|why| {
            self.ctx
                .corrupt_tar(format_args!("bad PAX header at byte {at}: {why}"))
        })?;
        for (key, value) in records {
            match key {
                b"path" => ext.pax_path = Some(value.to_vec()),
                b"size" => ext.pax_size = Some(self.pax_size(value, at)?),
                _ => {}
            }
        }
        Ok(())
    }

    /// The data of the entry last returned; reading it to its end consumes
    /// it. Padding after it is skipped by the next [`Entries::next_entry`],
    /// and a stream that ends in the padding of a complete member is
    /// tolerated, as a missing end-of-archive marker is.
    pub(crate) fn data(&mut self) -> EntryData<'_, 'a, 'c> {
        EntryData { entries: self }
    }

    /// A PAX `size` record's value: decimal digits that fit 64 bits.
    fn pax_size(&self, value: &[u8], at: u64) -> Result<u64> {
        let digits = !value.is_empty() && value.iter().all(u8::is_ascii_digit);
        if !digits {
            return Err(self
                .ctx
                .corrupt_tar(format_args!("bad PAX size at byte {at}")));
        }
        let text = String::from_utf8_lossy(value);
        text.parse::<u64>()
            .map_err(|_| self.oversize(at, &util::text::clean(&text, 40)))
    }

    /// A well-formed record giving a size no file can have (twenty digits
    /// and more): the archive was made so, no transfer garbles one into it.
    fn oversize(&self, at: u64, size: &str) -> anyhow::Error {
        unsupported(format!(
            "{}: the tar header at byte {at} gives a member size of {size} bytes (in its PAX \
             header or its own), more than any file can hold; the archive cannot be unpacked \
             as published, pick another --version",
            self.ctx.source
        ))
    }

    /// Reads an extension header's data (a long name, PAX records), within
    /// the caps.
    fn extension_data(
        &mut self,
        size: u64,
        padded: u64,
        at: u64,
        long_name: bool,
    ) -> Result<Vec<u8>> {
        let cap = if long_name { MAX_LONG_NAME } else { MAX_PAX };
        if size > cap {
            return Err(self.ctx.corrupt_tar(format_args!(
                "an extension header at byte {at} claims {size} bytes (at most {cap} are plausible)"
            )));
        }
        let mut data = vec![0u8; size as usize];
        let got = read_full(self.src, &mut data).map_err(|e| self.ctx.read_error(e))?;
        if got < data.len() {
            bail!(
                "{}: the tar archive is truncated at byte {} (inside an extension header); \
                 the download is incomplete: {REDO}",
                self.ctx.source,
                self.pos + got as u64
            );
        }
        self.pos += size;
        self.skip_exact(padded - size)?;
        Ok(data)
    }

    /// Skips `n` bytes of member data; the stream ending first is a
    /// truncated archive.
    fn skip_exact(&mut self, n: u64) -> Result<()> {
        let got = skip(self.src, n).map_err(|e| self.ctx.read_error(e))?;
        if got < n {
            bail!(
                "{}: the tar archive is truncated at byte {} (inside a member); the download \
                 is incomplete: {REDO}",
                self.ctx.source,
                self.pos + got
            );
        }
        self.pos += n;
        Ok(())
    }
}

/// The data of one entry, read through.
pub(crate) struct EntryData<'e, 'a, 'c> {
    entries: &'e mut Entries<'a, 'c>,
}

impl Read for EntryData<'_, '_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let e = &mut *self.entries;
        let Some((left, pad)) = e.pending else {
            return Ok(0);
        };
        let want = (buf.len() as u64).min(left) as usize;
        if want == 0 {
            return Ok(0);
        }
        let n = e.src.read(&mut buf[..want])?;
        e.pos += n as u64;
        e.pending = Some((left - n as u64, pad));
        if n == 0 {
            // Truncated inside the data: the caller sees the short count.
            e.pending = None;
            e.done = true;
        } else if left == n as u64 {
            // Padding is optional after a complete member at the very end.
            let p = skip(e.src, pad)?;
            e.pos += p;
            e.pending = None;
            if p < pad {
                e.done = true;
            }
        }
        Ok(n)
    }
}

/// A tar header checksum: the byte sum with the checksum field read as
/// spaces. Old tars summed signed bytes; accept either.
pub(crate) fn checksum_ok(block: &[u8]) -> bool {
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

/// One PAX record: key and value bytes.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// PAX records: `<decimal length> <key>=<value>\n`, the length counting the
/// whole record.
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
