//! xz on every core: liblzma's multithreaded decoder.

use std::io::{self, BufRead, BufReader, Read};

/// Input buffer of the decoder.
const BUF: usize = 256 << 10;

/// liblzma's multithreaded xz decoder: it decodes blocks in parallel when
/// their headers record their sizes (what `xz -T0` and
/// [`crate::pack::compress_xz`] write) and falls back to one thread
/// otherwise. Like `XzDecoder::new_multi_decoder`, it reads every
/// concatenated stream (with stream padding) to the end of the input.
pub struct XzMtDecoder<R: Read> {
    dec: Option<liblzma::bufread::XzDecoder<BufReader<R>>>,
    threads: u32,
    done: bool,
}

/// Per-thread memory allowed to liblzma before it uses fewer threads.
const XZ_MEMLIMIT_THREADING: u64 = 512 << 20;

impl<R: Read> XzMtDecoder<R> {
    /// `threads`: 0 means one per core.
    pub fn new(inner: R, threads: usize) -> io::Result<Self> {
        let threads = u32::try_from(util::threads(threads)).unwrap_or(u32::MAX);
        let mut d = XzMtDecoder {
            dec: None,
            threads,
            done: false,
        };
        d.dec = Some(d.stream(BufReader::with_capacity(BUF, inner))?);
        Ok(d)
    }

    fn stream(&self, r: BufReader<R>) -> io::Result<liblzma::bufread::XzDecoder<BufReader<R>>> {
        let stream = liblzma::stream::MtStreamBuilder::new()
            .threads(self.threads)
            .memlimit_threading(XZ_MEMLIMIT_THREADING)
            .memlimit_stop(u64::MAX)
            .decoder()
            .map_err(io::Error::other)?;
        Ok(liblzma::bufread::XzDecoder::new_stream(r, stream))
    }
}

impl<R: Read> Read for XzMtDecoder<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.done || buf.is_empty() {
                return Ok(0);
            }
            let Some(dec) = self.dec.as_mut() else {
                return Ok(0);
            };
            let n = dec.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // End of one stream: skip stream padding (zeros, a multiple of
            // four), then either the input ends or another stream starts.
            let Some(dec) = self.dec.take() else {
                return Ok(0);
            };
            let mut r = dec.into_inner();
            let mut zeros = 0u64;
            loop {
                let data = r.fill_buf()?;
                let z = data.iter().take_while(|&&b| b == 0).count();
                if z == 0 {
                    break;
                }
                r.consume(z);
                zeros += z as u64;
            }
            let more = !r.fill_buf()?.is_empty();
            if !zeros.is_multiple_of(4) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "xz stream padding is not a multiple of four bytes",
                ));
            }
            if !more {
                self.done = true;
                return Ok(0);
            }
            self.dec = Some(self.stream(r)?);
        }
    }
}
