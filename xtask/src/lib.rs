//! The vSwarm-u resources tool, in layers; each imports only the layers
//! below it (a test checks this):
//!
//! 1. `cli`: the command line and the environment, read once.
//! 2. `steps`: one module per step (`run`, `download`, `verify`, …).
//! 3. `github`: releases, asset selection, sources and mirrors.
//! 4. `fetch`: the HTTP client and the download engine.
//! 5. `pack`: making release assets on every core.
//! 6. `unpack`: checksum files, compression formats and their decoders, the
//!    tar walker.
//! 7. `qcow2`: the image format and the converter.
//! 8. `install`: the output directory's layout, manifest and swap.
//! 9. `util`: file-system rules, progress, text, small helpers.
//!
//! `main.rs` only dispatches; tests and fuzz targets call the same functions.

// First: its macros (`out!`, `say!`, `note!`, `warning!`) serve every layer.
#[macro_use]
pub mod util;

pub mod cli;
pub mod fetch;
pub mod github;
pub mod install;
pub mod pack;
pub mod qcow2;
pub mod steps;
pub mod unpack;
