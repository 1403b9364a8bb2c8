//! The formats the tool reads and writes, in one test binary: qcow2 images
//! through both converters (`qcow2`), multi-member gzip, xz and zstd through
//! the packer and the parallel decoders (`gzip`), and the split, compressed
//! tar archives the unpacker takes apart (`archives`).

mod archives;
#[path = "../common/mod.rs"]
mod common;
mod gzip;
mod qcow2;
