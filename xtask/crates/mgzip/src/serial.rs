//! The serial decoder: one member at a time, inflated by flate2's own gzip
//! decoder (`bufread::GzDecoder`, which takes exactly one member from a
//! `BufRead` and checks its CRC32 and length), for members without a
//! usable size claim and for those a worker could not decode. The input is
//! lent to it for the member and given back at its end. Its errors are
//! said with the member and the input offset where they showed. The header
//! is read and checked by this crate's parser (so that a stream that ends
//! there, or a header that is not gzip's, is said exactly), and flate2 gets
//! a plain one in its place: it caps names and comments at 64 KiB, which
//! gzip and pigz do not.

use std::io::{self, Chain, Cursor, Read};

use flate2::bufread::GzDecoder;

use super::input::Input;
use super::member::{HeaderError, HeaderParser};

/// The header flate2 reads in place of the member's own: no name, no
/// comment, no extra field (the member's were read and checked already).
const PLAIN_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// What flate2 reads: the plain header, then the member's deflate data and
/// trailer, straight from the input.
type Body<R> = Chain<Cursor<[u8; 10]>, Input<R>>;

pub(super) enum SerialState {
    More,
    MemberDone,
    /// Clean end of the stream at a member boundary.
    StreamEnd,
}

pub(super) struct SerialMember<R> {
    /// 0-based member number, for messages.
    index: u64,
    /// Where the member starts in the stream.
    start: u64,
    /// Output bytes not to hand on: a worker handed them on already.
    skip: u64,
    /// The member being inflated, holding the input.
    dec: Option<Box<GzDecoder<Body<R>>>>,
}

impl<R: Read> SerialMember<R> {
    pub(super) fn new(index: u64, start: u64, skip: u64) -> Self {
        SerialMember {
            index,
            start,
            skip,
            dec: None,
        }
    }

    fn name(&self) -> String {
        format!("gzip member #{} (at byte {})", self.index + 1, self.start)
    }

    /// Decodes into `buf` (not empty); returns the bytes produced and where
    /// it is. `input` is taken for the member and put back at its end.
    pub(super) fn read(
        &mut self,
        input: &mut Option<Input<R>>,
        buf: &mut [u8],
    ) -> io::Result<(usize, SerialState)> {
        if self.dec.is_none() {
            let Some(mut inp) = input.take() else {
                return Err(io::Error::other("gzip decoder: the input is lent out"));
            };
            let checked = self.read_header(&mut inp);
            if !matches!(checked, Ok(Header::Member)) {
                *input = Some(inp);
                return checked.map(|_| (0, SerialState::StreamEnd));
            }
            let body = Cursor::new(PLAIN_HEADER).chain(inp);
            self.dec = Some(Box::new(GzDecoder::new(body)));
        }
        let name = self.name();
        let Some(dec) = self.dec.as_mut() else {
            return Err(io::Error::other("gzip decoder: no member"));
        };
        let mut aside = [0u8; 16 << 10];
        loop {
            let skipping = self.skip > 0;
            let dst = if skipping {
                let n = self.skip.min(aside.len() as u64) as usize;
                &mut aside[..n]
            } else {
                &mut *buf
            };
            match dec.read(dst) {
                Ok(0) => break,
                Ok(n) if skipping => self.skip -= n as u64,
                Ok(n) => return Ok((n, SerialState::More)),
                Err(e) => return Err(explain(e, &name, dec.get_ref().get_ref().1)),
            }
        }
        if let Some(dec) = self.dec.take() {
            *input = Some(dec.into_inner().into_inner().1);
        }
        if self.skip > 0 {
            return Err(io::Error::other(format!(
                "{}: internal error: it decodes to less than was already handed on",
                self.name()
            )));
        }
        Ok((0, SerialState::MemberDone))
    }

    /// Reads the next member's header (any length) and checks it, or finds
    /// the end of the stream. An error of the input passes as it is.
    fn read_header(&mut self, input: &mut Input<R>) -> io::Result<Header> {
        self.start = input.offset;
        if input.fill_buf()?.is_empty() {
            if self.index == 0 {
                return Err(eof("the gzip stream is empty".into()));
            }
            return Ok(Header::StreamEnd);
        }
        let mut parser = HeaderParser::new();
        loop {
            let data = input.fill_buf()?;
            if data.is_empty() {
                return Err(eof(format!(
                    "the gzip stream ends early at byte {}, inside the header of {}",
                    input.offset,
                    self.name()
                )));
            }
            let (used, done) = parser.feed(data).map_err(|e| self.bad_header(e))?;
            input.consume(used);
            if done.is_some() {
                return Ok(Header::Member);
            }
        }
    }

    fn bad_header(&self, e: HeaderError) -> io::Error {
        corrupt(match e {
            HeaderError::NotGzip if self.index > 0 => format!(
                "unexpected data at byte {} after gzip member #{}: not a gzip header \
                 (trailing garbage or a corrupt stream)",
                self.start, self.index
            ),
            HeaderError::NotGzip => format!(
                "not gzip data: byte {} does not start with the gzip magic 1f 8b",
                self.start
            ),
            e => format!("{} has a bad header: {e}", self.name()),
        })
    }
}

/// flate2's error `e`, said with the member and where the input was;
/// an error of the input itself is passed on as it is.
fn explain<R>(e: io::Error, name: &str, input: &Input<R>) -> io::Error {
    if input.failed {
        return e;
    }
    let at = input.offset;
    if e.kind() == io::ErrorKind::UnexpectedEof {
        return eof(format!(
            "the gzip stream ends early at byte {at}, inside {name}"
        ));
    }
    corrupt(if e.to_string().contains("checksum") {
        format!(
            "{name} is corrupt: the CRC32 or the length of its data is not what its \
             trailer says"
        )
    } else if e.to_string().contains("header") {
        format!("{name} has a bad header: {e}")
    } else {
        format!("{name} is corrupt: invalid deflate data near byte {at} ({e})")
    })
}

/// What the next header is.
enum Header {
    Member,
    StreamEnd,
}

pub(super) fn corrupt(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

pub(super) fn eof(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, msg)
}
