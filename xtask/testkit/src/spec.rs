//! What a test asks the fake GitHub to serve: releases and assets, how
//! digests appear, faults to switch on, and the log of requests.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where an asset's content comes from.
#[derive(Clone, Debug)]
pub enum Body {
    Bytes(Arc<Vec<u8>>),
    /// Streamed from disk in chunks: the benchmark serves GiBs.
    File(PathBuf),
}

/// What the release JSON says in an asset's `digest` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestMode {
    Correct,
    /// JSON `null`, as for assets uploaded before GitHub computed digests.
    Missing,
    /// A well-formed sha256 that does not match the content.
    Wrong,
}

#[derive(Clone, Debug)]
pub struct AssetSpec {
    pub name: String,
    pub body: Body,
    pub digest: DigestMode,
}

impl AssetSpec {
    pub fn bytes(name: &str, data: Vec<u8>) -> AssetSpec {
        AssetSpec {
            name: name.to_string(),
            body: Body::Bytes(Arc::new(data)),
            digest: DigestMode::Correct,
        }
    }

    pub fn file(name: &str, path: &Path) -> AssetSpec {
        AssetSpec {
            name: name.to_string(),
            body: Body::File(path.to_path_buf()),
            digest: DigestMode::Correct,
        }
    }
}

#[derive(Clone, Debug)]
pub struct ReleaseSpec {
    pub tag: String,
    pub prerelease: bool,
    pub draft: bool,
    /// ISO 8601, e.g. `2024-05-01T12:00:00Z`; also used as `created_at`.
    pub published_at: String,
    pub assets: Vec<AssetSpec>,
}

impl ReleaseSpec {
    pub fn new(tag: &str, assets: Vec<AssetSpec>) -> ReleaseSpec {
        ReleaseSpec {
            tag: tag.to_string(),
            prerelease: false,
            draft: false,
            published_at: "2024-05-01T12:00:00Z".to_string(),
            assets,
        }
    }
}

/// A misbehaviour switched on with [`Server::add_fault`]. API faults apply to
/// `/repos/...` requests only (not to the `browser_download_url` redirect);
/// asset faults match the asset by name in any release and count GETs only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Every API request: 403 with `X-RateLimit-Remaining: 0`.
    ApiRateLimited { reset_epoch: u64 },
    /// The first `times` API requests answer `status`.
    ApiStatus { status: u16, times: usize },
    /// API answers 401 unless `Authorization: Bearer <token>` (or `token <token>`).
    RequireToken { token: String },
    /// The first `times` GETs of `asset` answer `status`.
    Status {
        asset: String,
        status: u16,
        times: usize,
    },
    /// The first `times` GETs of `asset` promise the full length, send `bytes`
    /// bytes, then close the socket.
    CutAfter {
        asset: String,
        bytes: u64,
        times: usize,
    },
    /// The first `times` GETs of `asset` send headers and `after_bytes` bytes,
    /// then hold the socket open silently (until the client leaves, ~120 s pass,
    /// or the server stops).
    Stall {
        asset: String,
        after_bytes: u64,
        times: usize,
    },
    /// Ignore `Range` for `asset`: always 200 with the full body.
    NoRange { asset: String },
    /// Serve `asset` minus its last 10 bytes, always (lengths match the short body).
    Truncated { asset: String },
    /// Throttle every asset-host connection to this many bytes per second.
    RateCap { bytes_per_sec: u64 },
    /// The `browser_download_url` of `asset` answers 302 to `location`
    /// (another scheme, or itself for a loop).
    Redirect { asset: String, location: String },
    /// The first `times` GETs of `asset` send pseudo-random bytes of the
    /// right length instead of its content.
    Garbage { asset: String, times: usize },
    /// The first `times` API requests answer `status` with a body that
    /// echoes the request's headers (as a misconfigured proxy might).
    ApiEcho { status: u16, times: usize },
    /// The first `times` API requests answer 429 with `Retry-After: secs`
    /// (a secondary rate limit, not the spent quota).
    ApiRetryAfter { secs: u64, times: usize },
    /// API answers dribble out one byte every `interval_ms`.
    ApiTrickle { interval_ms: u64 },
    /// Every API request is read and never answered: the socket stays open
    /// and silent (until the client leaves, ~120 s pass, or the server stops).
    /// Such requests are logged with status 0.
    ApiSilent,
    /// The release list's pagination loops: every page serves the first
    /// page's releases, and its `rel="next"` is the URL just asked for
    /// (`fresh_urls: false`) or the next page number, a URL never asked for
    /// before (`fresh_urls: true`, so only the content repeats).
    ListLoop { fresh_urls: bool },
    /// The first `times` uploads read `after_bytes` of the body, leave an
    /// empty asset in state `starter` (as GitHub does), and close the socket.
    UploadCut { after_bytes: u64, times: usize },
    /// The first `times` uploads read the body, leave a `starter` asset and
    /// answer `status` (GitHub's 502 on an upstream failure).
    UploadStatus { status: u16, times: usize },
    /// The first `times` uploads read `after_bytes` of the body, then wait
    /// until [`crate::Server::release_uploads`] (a test changes the file
    /// meanwhile, with [`crate::Server::wait_upload_held`] to know when),
    /// then take the rest and finish as usual.
    UploadHold { after_bytes: u64, times: usize },
}

/// One request as the server saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Logged {
    /// `"api"` or `"assets"`.
    pub host: &'static str,
    pub method: String,
    /// Path including the query string, as sent.
    pub path: String,
    /// Header names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
    pub status: u16,
}

impl Logged {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
