//! Cluster decompression with QEMU's rules (deflate, or zstd when the
//! header says so), one reusable decoder state per thread.

use anyhow::{bail, Result};

use super::ClusterCompression;

/// Reusable decompression state (one per thread).
#[derive(Default)]
pub(crate) struct Decoder {
    deflate: Option<flate2::Decompress>,
    zstd: Option<zstd::stream::raw::Decoder<'static>>,
}

impl Decoder {
    /// Fills all of `out` from `src` or fails, with QEMU's rules: the stream
    /// may end inside `src` (the descriptor counts whole sectors), but must
    /// produce exactly one cluster.
    pub(crate) fn decompress(
        &mut self,
        kind: ClusterCompression,
        src: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        match kind {
            ClusterCompression::Deflate => {
                let d = self
                    .deflate
                    .get_or_insert_with(|| flate2::Decompress::new(false));
                d.reset(false);
                let status = d
                    .decompress(src, out, flate2::FlushDecompress::Finish)
                    .map_err(|e| anyhow::anyhow!("deflate: {e}"))?;
                let full = d.total_out() == out.len() as u64;
                match status {
                    flate2::Status::StreamEnd | flate2::Status::BufError if full => Ok(()),
                    flate2::Status::Ok if full => Ok(()),
                    _ => bail!(
                        "deflate stream gave {} of {} bytes",
                        d.total_out(),
                        out.len()
                    ),
                }
            }
            ClusterCompression::Zstd => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                let d = match &mut self.zstd {
                    Some(d) => {
                        d.reinit()?;
                        d
                    }
                    None => self.zstd.insert(zstd::stream::raw::Decoder::new()?),
                };
                let mut input = InBuffer::around(src);
                let mut output = OutBuffer::around(out);
                let mut last = 1;
                while output.pos() < output.capacity() {
                    let (ip, op) = (input.pos(), output.pos());
                    last = d.run(&mut input, &mut output)?;
                    if input.pos() <= ip && output.pos() <= op {
                        bail!("zstd stream ended after {} bytes", output.pos());
                    }
                }
                if last != 0 {
                    bail!("zstd frame is longer than one cluster");
                }
                Ok(())
            }
        }
    }
}
