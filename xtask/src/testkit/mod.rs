//! Test kit shared by the integration tests and `cargo xtask bench`: a loopback
//! fake of GitHub's release API and asset storage (`server`), and builders of
//! release fixtures packed the way upstream packs them (`fixture`). It lives in
//! the library rather than `tests/` because the benchmark command uses it too.

pub mod fixture;
pub mod server;

pub use fixture::*;
pub use server::*;
