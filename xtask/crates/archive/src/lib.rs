//! Release archives: what `unpack` reads (the compression formats, the tar
//! walker, the sums, an image unpacked and checked in one pass) and what
//! `pack` writes (the release tar, compressed on every core, split into
//! parts).
#![warn(missing_docs)]

mod error;
pub mod pack;
pub mod unpack;

pub use error::Error;
