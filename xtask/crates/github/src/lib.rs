//! GitHub and mirrors: what its answers mean (`api`), release JSON and
//! lookup (`release`), which assets
//! make up one os/arch set (`assets`), where a release comes from — the API
//! or a mirror directory or URL (`source`) — the per-user download cache,
//! which is laid out as a mirror (`cache`), the documentation's support
//! table (`support`), and writing releases and their assets (`upload`).
#![warn(missing_docs)]

#[macro_use]
extern crate util;

pub mod api;
pub mod assets;
pub mod cache;
pub mod release;
pub mod source;
pub mod support;
pub mod upload;
