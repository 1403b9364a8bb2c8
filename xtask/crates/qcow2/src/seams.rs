//! Entry points for the tests and the fuzz targets, behind the `seams`
//! feature: converting an image held in memory, the file converter without
//! progress, and a sink that only checks bounds. Not the shipping API.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{bail, Result};

use super::convert::convert_file;
use super::copy::{copy_image, WriteAt};
use super::{ConvertStats, Image};
use util::progress::Style;

/// An in-memory raw image of a fixed size.
struct MemSink(pub Mutex<Vec<u8>>);

impl WriteAt for MemSink {
    fn write_at_all(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        let mut v = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let dst = usize::try_from(off)
            .ok()
            .and_then(|s| v.get_mut(s..s.checked_add(buf.len())?))
            .ok_or_else(|| std::io::Error::other("write past the virtual size"))?;
        dst.copy_from_slice(buf);
        Ok(())
    }
}

/// Discards everything but checks that writes stay inside the virtual size.
pub struct NullSink(pub u64);

impl WriteAt for NullSink {
    fn write_at_all(&self, buf: &[u8], off: u64) -> std::io::Result<()> {
        match off.checked_add(buf.len() as u64) {
            Some(end) if end <= self.0 => Ok(()),
            _ => Err(std::io::Error::other("write past the virtual size")),
        }
    }
}

/// Converts an in-memory qcow2 image into a raw image in memory, refusing
/// virtual sizes above `max_size` (the fuzz target's entry point).
pub fn convert_bytes(data: &[u8], max_size: u64) -> Result<Vec<u8>> {
    let img = Image::from_reader(data, "<memory>")?;
    let size = img.virtual_size();
    if size > max_size {
        bail!("<memory>: virtual size {size} is above the limit {max_size}");
    }
    let sink = MemSink(Mutex::new(vec![0; size as usize]));
    copy_image(&img, &sink, true, &|_| {})?;
    Ok(sink.0.into_inner().unwrap_or_else(|e| e.into_inner()))
}

/// Converts `input` (qcow2) into the raw image `output`, sparse; `output` is
/// replaced only once the new image is complete and synced.
pub fn convert_native(input: &Path, output: &Path, sparse_detect: bool) -> Result<ConvertStats> {
    convert_file(input, output, sparse_detect, Style::PLAIN)
}
