//! Test kit shared by the integration tests and the benchmark, outside the
//! shipping crate: a loopback fake of GitHub's release API and asset
//! storage (`server`, with `spec` for what it serves and how it misbehaves,
//! `catalog` for the JSON, `api` and `store` for the two hosts, `http1` for
//! the plumbing, `tls` for its HTTPS mode), and builders of release fixtures packed the way upstream
//! packs them (`fixture`).
//!
//! ```no_run
//! use testkit::*;
//! let s = Server::start("acme/widgets", vec![ReleaseSpec::new("v1", vec![
//!     AssetSpec::bytes("a.bin", vec![7; 1000])])]);
//! s.add_fault(Fault::Status { asset: "a.bin".into(), status: 500, times: 1 });
//! // point the client at s.api_url(); afterwards inspect s.requests()
//! ```

mod api;
mod catalog;
pub mod fixture;
mod http1;
pub mod server;
pub mod spec;
mod state;
mod store;
mod tls;
mod uploads;

pub use fixture::*;
pub use server::Server;
pub use spec::*;

/// Environment that would change what a child run against the loopback
/// server does: proxies (curl and ureq would send 127.0.0.1 traffic to
/// them), tokens, upload's `RELEASE_ID`, defaults for the output, API and
/// source, the certificate authorities HTTPS trusts (so a test decides),
/// and the places the download cache would go (so a child uses no
/// cache, and never the user's, unless the caller names one with
/// `VSWARM_CACHE_DIR`). Tests and
/// the benchmark remove these from every child they start.
pub const SCRUB_ENV: &[&str] = &[
    "GITHUB_TOKEN",
    "GH_TOKEN",
    "RELEASE_ID",
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
    "VSWARM_CACHE_DIR",
    "XDG_CACHE_HOME",
    "HOME",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];
