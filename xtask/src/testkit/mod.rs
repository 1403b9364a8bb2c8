//! Test kit shared by the integration tests and `cargo xtask bench`: a loopback
//! fake of GitHub's release API and asset storage (`server`), and builders of
//! release fixtures packed the way upstream packs them (`fixture`). It lives in
//! the library rather than `tests/` because the benchmark command uses it too.
//!
//! ```no_run
//! use xtask::testkit::*;
//! let s = Server::start("acme/widgets", vec![ReleaseSpec::new("v1", vec![
//!     AssetSpec::bytes("a.bin", vec![7; 1000])])]);
//! s.add_fault(Fault::Status { asset: "a.bin".into(), status: 500, times: 1 });
//! // point the client at s.api_url(); afterwards inspect s.requests()
//! ```

pub mod fixture;
pub mod server;

pub use fixture::*;
pub use server::*;

/// Environment that would change what a child run against the loopback
/// server does: proxies (curl and ureq would send 127.0.0.1 traffic to
/// them), tokens, and defaults for the output, API and source. Tests and the
/// benchmark remove these from every child they start.
pub const SCRUB_ENV: &[&str] = &[
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "RESOURCES",
    "GITHUB_API_URL",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "CURL_HOME",
    "VSWARM_RESOURCES_SOURCE",
];
