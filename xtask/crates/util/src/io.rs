//! Small `Read` helpers the stages share.

use std::io::{self, Read};

/// Reads several readers one after another.
pub struct Chain<R> {
    parts: std::collections::VecDeque<R>,
}

impl<R: Read> Chain<R> {
    /// A reader of `parts`, in order.
    pub fn new(parts: Vec<R>) -> Self {
        Chain {
            parts: parts.into(),
        }
    }
}

impl<R: Read> Read for Chain<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(r) = self.parts.front_mut() {
            match r.read(buf)? {
                0 if !buf.is_empty() => {
                    self.parts.pop_front();
                }
                n => return Ok(n),
            }
        }
        Ok(0)
    }
}

/// Reads until `buf` is full or EOF; returns the bytes read.
pub fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
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
pub fn skip(r: &mut dyn Read, n: u64) -> io::Result<u64> {
    io::copy(&mut r.take(n), &mut io::sink())
}

/// Reads `r` to EOF, discarding; returns the byte count.
pub fn drain(r: &mut dyn Read) -> io::Result<u64> {
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

/// Gives exactly `len` bytes of `inner`, hashing them (SHA-256) and telling
/// `progress` as they pass: the reader of a file whose size was promised
/// (a tar header, a Content-Length). An end before `len` is an
/// `UnexpectedEof` error, and [`HashedExact::ended_early`] says so after.
pub struct HashedExact<'p, R> {
    inner: R,
    left: u64,
    hash: sha2::Sha256,
    short: bool,
    progress: &'p (dyn Fn(u64) + Sync),
}

impl<'p, R: Read> HashedExact<'p, R> {
    /// A reader of exactly `len` bytes of `inner`, telling `progress` as they pass.
    pub fn new(inner: R, len: u64, progress: &'p (dyn Fn(u64) + Sync)) -> Self {
        HashedExact {
            inner,
            left: len,
            hash: sha2::Digest::new(),
            short: false,
            progress,
        }
    }

    /// Bytes still owed.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Whether `inner` ended before `len` bytes.
    pub fn ended_early(&self) -> bool {
        self.short
    }

    /// The inner reader (positioned after what was read) and the digest.
    pub fn finish(self) -> (R, [u8; 32]) {
        (self.inner, sha2::Digest::finalize(self.hash).into())
    }
}

impl<R: Read> Read for HashedExact<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            self.short = true;
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended early (did it change while it was read?)",
            ));
        }
        sha2::Digest::update(&mut self.hash, &buf[..n]);
        self.left -= n as u64;
        (self.progress)(n as u64);
        Ok(n)
    }
}
