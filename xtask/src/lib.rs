//! The vSwarm-u resources tool: every stage is a module of its own, and data
//! flows one way: release lookup → asset selection → download → unpack →
//! convert → verify. `main.rs` only parses flags and dispatches here; tests and
//! fuzz targets call the same functions.

pub mod assets;
pub mod bench;
pub mod cli;
pub mod convert;
pub mod download;
pub mod fsutil;
pub mod guard;
pub mod http;
pub mod manifest;
pub mod merge;
pub mod mirror;
pub mod opts;
pub mod pipeline;
pub mod progress;
pub mod qcow2;
pub mod release;
pub mod source;
pub mod testkit;
pub mod text;
pub mod unpack;
pub mod verify;
