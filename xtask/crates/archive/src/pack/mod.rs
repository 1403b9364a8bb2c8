//! Making release assets on every core, in formats that also decode on
//! every core: gzip as Mgzip members (`gzip`), zstd as independent frames
//! and xz as blocks with their sizes (`blocks`, which also holds the
//! ordered block pipeline the gzip and zstd compressors share); the tar of
//! one image (`archive`) and the parts it is split into (`split`).

mod archive;
mod blocks;
mod gzip;
mod split;

pub use archive::{pack_image, Codec, Packed, MEMBER};
pub use blocks::{compress_xz, compress_zstd, PackStats, XzOptions, ZstdOptions};
pub use gzip::{compress as compress_gzip, GzipOptions};
pub use split::{Part, Splitter};
