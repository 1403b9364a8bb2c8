//! Small `Read` helpers the stages share.

use std::io::{self, Read};

/// Reads several readers one after another.
pub struct Chain<R> {
    parts: std::collections::VecDeque<R>,
}

impl<R: Read> Chain<R> {
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
