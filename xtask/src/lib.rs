//! The vSwarm-u resources tool: the command line (`cli`) over the commands
//! (`steps`), a thin app over the engine crates in `xtask/crates/`, which
//! import one way only, as the dependency graph enforces:
//!
//! `github` (releases, mirrors, the download cache, uploads) → `fetch` (HTTP
//! and the download engine) → `archive` (compression formats, the tar
//! walker, sums, unpacking and packing) → `mgzip` (gzip on every core) and
//! `qcow2` (the image format and its converters) → `install` (the output
//! directory's layout, manifest and swap) → `util` (file-system rules,
//! locks, progress, what is said).
//!
//! `main.rs` only dispatches.

#[macro_use]
extern crate util;

pub mod cli;
pub mod steps;
