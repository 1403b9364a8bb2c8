//! The maintainers' commands: `pack` (a qcow2 made into release assets),
//! `upload` (files made assets of a release) and `decompress --from` (a set
//! on disk unpacked with no release); and what they share, the set of
//! assets on disk (`local`).

pub(crate) mod from;
pub(crate) mod local;
pub(crate) mod pack;
pub(crate) mod upload;
