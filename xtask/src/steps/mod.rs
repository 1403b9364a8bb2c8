//! The steps of `cargo xtask resources`, one module each, and what they
//! share: the options (`opts`), the release plan and working directory
//! (`plan`), the guard of the user's files (`guard`), and the checks of a
//! set (`verify`). A step uses every layer below it; nothing below uses a step.

pub mod adopt;
pub mod bench;
pub mod cache;
pub mod convert;
pub mod decompress;
pub mod download;
pub mod guard;
pub mod image;
pub mod list;
pub mod mirror;
pub mod opts;
pub mod pack;
pub mod plan;
pub mod run;
pub mod store;
pub mod upload;
pub mod verify;

pub use opts::Opts;
