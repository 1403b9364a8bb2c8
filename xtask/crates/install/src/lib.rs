//! The output directory's house rules: where the installed files and the
//! working directory live (`layout`), what is installed (`manifest`), and
//! how files get there — by rename only, a set with its install pending in
//! the manifest first (`swap`); and what an installed kernel or client must
//! be (`elf`).
#![warn(missing_docs)]

pub mod elf;
pub mod layout;
pub mod manifest;
pub mod swap;
