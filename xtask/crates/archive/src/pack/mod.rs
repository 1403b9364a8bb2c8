//! Making release assets on every core, in formats that also decode on
//! every core: gzip as Mgzip members (`gzip`), zstd as independent frames
//! and xz as blocks with their sizes (`blocks`, which also holds the
//! ordered block pipeline the gzip and zstd compressors share); the tar of
//! one image (`archive`) and the parts it is split into (`split`).

pub mod archive;
pub mod blocks;
pub mod gzip;
pub mod split;
