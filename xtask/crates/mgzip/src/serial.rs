//! The serial decoder: one member, streaming, with exact error positions.
//! It is the reference the parallel path falls back to: it accepts and
//! rejects what flate2's `MultiGzDecoder` does.

use std::io::{self, Read};

use flate2::{Crc, Decompress, DecompressError, FlushDecompress, Status};

use super::input::Input;
use super::member::{HeaderError, HeaderParser, TRAILER_LEN};

pub(super) enum SerialState {
    More,
    MemberDone,
    /// Clean end of the stream at a member boundary.
    StreamEnd,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Header,
    Body,
    Trailer,
}

pub(super) struct SerialMember {
    /// 0-based member number, for messages.
    pub(super) index: u64,
    pub(super) start: u64,
    pub(super) phase: Phase,
    pub(super) crc: Crc,
    /// Output bytes not to hand on: a worker handed them on already. They
    /// are inflated into `aside` (allocated only then).
    pub(super) skip: u64,
    pub(super) aside: Vec<u8>,
}

impl SerialMember {
    pub(super) fn new(index: u64, start: u64, skip: u64) -> Self {
        SerialMember {
            index,
            start,
            phase: Phase::Header,
            crc: Crc::new(),
            skip,
            aside: Vec::new(),
        }
    }

    pub(super) fn name(&self) -> String {
        format!("gzip member #{} (at byte {})", self.index + 1, self.start)
    }

    /// Decodes into `buf`; returns the bytes produced and where it is.
    pub(super) fn read<R: Read>(
        &mut self,
        input: &mut Input<R>,
        d: &mut Decompress,
        buf: &mut [u8],
    ) -> io::Result<(usize, SerialState)> {
        if self.phase == Phase::Header {
            self.start = input.offset;
            if input.fill_buf()?.is_empty() {
                if self.index == 0 {
                    return Err(eof("the gzip stream is empty".into()));
                }
                return Ok((0, SerialState::StreamEnd));
            }
            self.read_header(input)?;
            d.reset(false);
            self.crc.reset();
            self.phase = Phase::Body;
        }
        if self.phase == Phase::Body {
            loop {
                let at = input.offset;
                let data = input.fill_buf()?;
                if data.is_empty() {
                    return Err(eof(format!(
                        "the gzip stream ends early at byte {at}, inside the compressed data of {}",
                        self.name()
                    )));
                }
                let (r, used, inflated, made) = self.inflate_step(d, data, buf);
                input.consume(used);
                match r {
                    Ok(Status::StreamEnd) => {
                        self.phase = Phase::Trailer;
                        // Output made with the stream end goes out first;
                        // the trailer is read on the next call.
                        if made > 0 {
                            return Ok((made, SerialState::More));
                        }
                        break;
                    }
                    Ok(_) if made > 0 => return Ok((made, SerialState::More)),
                    Ok(_) if used > 0 || inflated > 0 => {}
                    Ok(_) => {
                        return Err(corrupt(format!(
                            "{} is corrupt: the deflate data stalls at byte {}",
                            self.name(),
                            at
                        )))
                    }
                    Err(e) => {
                        return Err(corrupt(format!(
                            "{} is corrupt: invalid deflate data at byte {} ({e})",
                            self.name(),
                            at + used as u64
                        )))
                    }
                }
            }
        }
        self.read_trailer(input)?;
        if self.skip > 0 {
            return Err(io::Error::other(format!(
                "{}: internal error: it decodes to less than was already handed on",
                self.name()
            )));
        }
        Ok((0, SerialState::MemberDone))
    }

    /// One inflate call from `data` into `buf`, or aside while bytes a
    /// worker handed on already are skipped: the result, the input bytes
    /// used, the bytes inflated and how many of them are in `buf`.
    fn inflate_step(
        &mut self,
        d: &mut Decompress,
        data: &[u8],
        buf: &mut [u8],
    ) -> (Result<Status, DecompressError>, usize, usize, usize) {
        let (in0, out0) = (d.total_in(), d.total_out());
        let skipping = self.skip > 0;
        let mut aside = std::mem::take(&mut self.aside);
        let dst = if skipping {
            aside.resize(64 << 10, 0);
            let n = self.skip.min(aside.len() as u64) as usize;
            &mut aside[..n]
        } else {
            buf
        };
        let r = d.decompress(data, dst, FlushDecompress::None);
        let used = (d.total_in() - in0) as usize;
        let inflated = (d.total_out() - out0) as usize;
        self.crc.update(&dst[..inflated]);
        self.aside = aside;
        if skipping {
            self.skip -= inflated as u64;
            return (r, used, inflated, 0);
        }
        (r, used, inflated, inflated)
    }

    pub(super) fn read_header<R: Read>(&mut self, input: &mut Input<R>) -> io::Result<()> {
        let mut p = HeaderParser::new();
        loop {
            let at = input.offset;
            let data = input.fill_buf()?;
            if data.is_empty() {
                return Err(eof(format!(
                    "the gzip stream ends early at byte {at}, inside the header of {}",
                    self.name()
                )));
            }
            match p.feed(data) {
                Ok((n, done)) => {
                    input.consume(n);
                    if done.is_some() {
                        return Ok(());
                    }
                }
                Err(HeaderError::NotGzip) if self.index > 0 => {
                    return Err(corrupt(format!(
                        "unexpected data at byte {} after gzip member #{}: not a gzip header \
                         (trailing garbage or a corrupt stream)",
                        self.start, self.index
                    )))
                }
                Err(HeaderError::NotGzip) => {
                    return Err(corrupt(format!(
                        "not gzip data: byte {} does not start with the gzip magic 1f 8b",
                        self.start
                    )))
                }
                Err(e) => return Err(corrupt(format!("{} has a bad header: {e}", self.name()))),
            }
        }
    }

    pub(super) fn read_trailer<R: Read>(&mut self, input: &mut Input<R>) -> io::Result<()> {
        let mut t = [0u8; TRAILER_LEN];
        let mut got = 0;
        while got < TRAILER_LEN {
            let at = input.offset;
            let data = input.fill_buf()?;
            if data.is_empty() {
                return Err(eof(format!(
                    "the gzip stream ends early at byte {at}, inside the trailer of {}",
                    self.name()
                )));
            }
            let n = data.len().min(TRAILER_LEN - got);
            t[got..got + n].copy_from_slice(&data[..n]);
            input.consume(n);
            got += n;
        }
        let stored_crc = u32::from_le_bytes([t[0], t[1], t[2], t[3]]);
        let stored_len = u32::from_le_bytes([t[4], t[5], t[6], t[7]]);
        if stored_crc != self.crc.sum() {
            return Err(corrupt(format!(
                "{} is corrupt: the CRC32 of its data is {:08x} but its trailer says {stored_crc:08x}",
                self.name(),
                self.crc.sum()
            )));
        }
        // ISIZE is the length mod 2^32.
        if stored_len != self.crc.amount() {
            return Err(corrupt(format!(
                "{} is corrupt: it decodes to {} bytes (mod 2^32) but its trailer says {stored_len}",
                self.name(),
                self.crc.amount()
            )));
        }
        Ok(())
    }
}

pub(super) fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

pub(super) fn eof(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg)
}
