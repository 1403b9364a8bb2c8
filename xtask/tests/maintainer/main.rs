//! The maintainer side, in one test binary: what `pack` writes and refuses
//! (`pack`), what `upload` sends and where (`upload`), and the README's
//! maintainer workflows run as written (`readme`).

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod pack;
mod readme;
mod upload;
