//! The promises the tool keeps to its users, one module each, in one test
//! binary: the user's files are never lost (`your_files`), what is
//! installed is what the release holds (`integrity`), a hostile server,
//! mirror or manifest gains nothing (`trust`), an interrupted run is finished
//! by the next (`resume`), and the release asked for is the one installed
//! (`releases`).

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod integrity;
mod releases;
mod resume;
mod trust;
mod your_files;
