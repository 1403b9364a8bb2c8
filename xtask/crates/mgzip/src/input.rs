//! The decoder's input: a buffered reader with push-back (a member a worker
//! could not decode goes back in front) and look-ahead (headers are looked
//! at before they are consumed).

use std::collections::VecDeque;
use std::io::{self, Read};
use std::sync::Arc;

use super::BUF;

/// Bytes given back, in front of everything else.
pub(super) struct Segment {
    pub(super) data: Arc<Vec<u8>>,
    pub(super) start: usize,
    pub(super) end: usize,
}

pub(super) struct Input<R> {
    pub(super) inner: R,
    pub(super) pushback: VecDeque<Segment>,
    pub(super) buf: Box<[u8]>,
    pub(super) pos: usize,
    pub(super) len: usize,
    /// Stream offset of the next byte `fill_buf` returns.
    pub(super) offset: u64,
    pub(super) eof: bool,
    /// A read error met while reading ahead; returned once the bytes before
    /// it are used up.
    pub(super) err: Option<io::Error>,
    /// The inner reader's error was returned: a decoder passes it on as it is.
    pub(super) failed: bool,
    pub(super) scratch: Vec<u8>,
}

impl<R: Read> Input<R> {
    pub(super) fn new(inner: R) -> Self {
        Input {
            inner,
            pushback: VecDeque::new(),
            buf: vec![0u8; BUF].into_boxed_slice(),
            pos: 0,
            len: 0,
            offset: 0,
            eof: false,
            err: None,
            failed: false,
            scratch: Vec::new(),
        }
    }

    pub(super) fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pushback.front().is_some_and(|s| s.start >= s.end) {
            self.pushback.pop_front();
        }
        if !self.pushback.is_empty() {
            let s = &self.pushback[0];
            return Ok(&s.data[s.start..s.end]);
        }
        if self.pos == self.len {
            self.pos = 0;
            self.len = 0;
            if self.err.is_none() {
                self.fill_quiet(1);
            }
            if self.len == 0 {
                if let Some(e) = self.err.take() {
                    self.failed = true;
                    return Err(e);
                }
            }
        }
        Ok(&self.buf[self.pos..self.len])
    }

    pub(super) fn consume(&mut self, n: usize) {
        if let Some(s) = self.pushback.front_mut() {
            s.start += n;
        } else {
            self.pos += n;
        }
        self.offset += n as u64;
    }

    /// Reads from `inner` until `buf` holds `want` bytes from `pos` (at
    /// most its size), or EOF, or an error (kept for later).
    pub(super) fn fill_quiet(&mut self, want: usize) {
        let want = want.min(self.buf.len());
        if self.pos + want > self.buf.len() {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.pos = 0;
        }
        while self.len - self.pos < want && !self.eof && self.err.is_none() {
            match self.inner.read(&mut self.buf[self.len..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => self.err = Some(e),
            }
        }
    }

    /// Up to `want` bytes ahead, without consuming them; fewer only at the
    /// end of the input (or before a read error).
    pub(super) fn peek(&mut self, want: usize) -> &[u8] {
        let queued: usize = self.pushback.iter().map(|s| s.end - s.start).sum();
        if queued == 0 {
            self.pushback.clear();
            self.fill_quiet(want);
            let end = self.len.min(self.pos + want);
            return &self.buf[self.pos..end];
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        for s in &self.pushback {
            let n = (s.end - s.start).min(want - scratch.len());
            scratch.extend_from_slice(&s.data[s.start..s.start + n]);
            if scratch.len() == want {
                break;
            }
        }
        if scratch.len() < want {
            self.fill_quiet(want - scratch.len());
            let n = (self.len - self.pos).min(want - scratch.len());
            scratch.extend_from_slice(&self.buf[self.pos..self.pos + n]);
        }
        self.scratch = scratch;
        &self.scratch
    }

    /// Whether the next bytes start a gzip member, or nothing follows.
    pub(super) fn at_boundary(&mut self) -> bool {
        let p = self.peek(3);
        p.is_empty() || p.starts_with(&[0x1f, 0x8b, 8])
    }

    /// Appends up to `n` bytes to `out`, consuming them; fewer only at the
    /// end of the input (or before a read error, kept for later).
    pub(super) fn read_into(&mut self, out: &mut Vec<u8>, n: usize) -> usize {
        let mut got = 0;
        while got < n {
            if let Some(s) = self.pushback.front_mut() {
                let k = (s.end - s.start).min(n - got);
                out.extend_from_slice(&s.data[s.start..s.start + k]);
                s.start += k;
                if s.start >= s.end {
                    self.pushback.pop_front();
                }
                got += k;
                self.offset += k as u64;
                continue;
            }
            if self.pos < self.len {
                let k = (self.len - self.pos).min(n - got);
                out.extend_from_slice(&self.buf[self.pos..self.pos + k]);
                self.pos += k;
                got += k;
                self.offset += k as u64;
                continue;
            }
            if self.eof || self.err.is_some() {
                break;
            }
            // Large reads go straight into `out`, in pieces, so a claim
            // larger than the data never fills memory beyond what arrives.
            let k = (n - got).min(4 << 20);
            let old = out.len();
            out.resize(old + k, 0);
            let r = loop {
                match self.inner.read(&mut out[old..]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r,
                }
            };
            match r {
                Ok(0) => {
                    out.truncate(old);
                    self.eof = true;
                }
                Ok(m) => {
                    out.truncate(old + m);
                    got += m;
                    self.offset += m as u64;
                }
                Err(e) => {
                    out.truncate(old);
                    self.err = Some(e);
                }
            }
        }
        got
    }

    /// Puts `segs` (in stream order) back in front of the input.
    pub(super) fn push_front(&mut self, segs: Vec<Segment>) {
        for s in segs.into_iter().rev() {
            if s.start < s.end {
                self.offset -= (s.end - s.start) as u64;
                self.pushback.push_front(s);
            }
        }
    }
}

/// flate2's gzip decoder reads the member through these: it takes only
/// what it uses, so the next member stays in the input.
impl<R: Read> io::BufRead for Input<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        Input::fill_buf(self)
    }

    fn consume(&mut self, n: usize) {
        Input::consume(self, n)
    }
}

impl<R: Read> Read for Input<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let data = self.fill_buf()?;
        let n = data.len().min(buf.len());
        buf[..n].copy_from_slice(&data[..n]);
        self.consume(n);
        Ok(n)
    }
}
