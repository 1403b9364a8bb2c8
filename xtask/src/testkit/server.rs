//! A loopback fake of GitHub's release REST API plus its asset storage host,
//! with switchable faults (rate limits, 5xx, cut or stalled bodies, ignored
//! ranges, truncated content, bandwidth caps) and a log of every request.
//!
//! Two listeners, like the real thing: the API on `127.0.0.1:P1` (which also
//! answers `browser_download_url`s with a 302) and storage on `127.0.0.2:P2`
//! (a different host, so clients that drop headers on cross-host redirects are
//! exercised). Every response says `Connection: close`: one request per
//! connection keeps the parser trivial and is still valid HTTP/1.1.
//! Threads per connection are detached and watch a shutdown flag, so a stalled
//! handler never keeps a test process alive.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::fixture::{sha256_file_hex, sha256_hex};

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

/// How long a stalled handler holds its socket at most.
const STALL_LIMIT: Duration = Duration::from_secs(120);
/// Writes to a client that stopped reading give up after this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
const CHUNK: usize = 256 * 1024;
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;
const FIXED_DATE: &str = "Wed, 01 May 2024 12:00:00 GMT";

#[derive(Clone)]
struct Asset {
    id: u64,
    name: String,
    body: Body,
    size: u64,
}

#[derive(Clone)]
struct Release {
    id: u64,
    tag: String,
    prerelease: bool,
    draft: bool,
    assets: Vec<Asset>,
    json: String,
}

#[derive(Clone)]
struct Catalog {
    releases: Vec<Release>,
}

impl Catalog {
    fn by_tag(&self, tag: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.tag == tag)
    }

    fn asset(&self, tag: &str, name: &str) -> Option<&Asset> {
        self.by_tag(tag)?.assets.iter().find(|a| a.name == name)
    }

    fn asset_by_id(&self, id: u64) -> Option<(&Release, &Asset)> {
        self.releases
            .iter()
            .find_map(|r| r.assets.iter().find(|a| a.id == id).map(|a| (r, a)))
    }
}

struct FaultSlot {
    fault: Fault,
    /// Remaining uses for counted faults; ignored by the permanent ones.
    left: usize,
}

struct Shared {
    owner: String,
    repo: String,
    api_url: String,
    asset_host: String,
    catalog: Mutex<Arc<Catalog>>,
    faults: Mutex<Vec<FaultSlot>>,
    log: Mutex<Vec<Logged>>,
    shutdown: AtomicBool,
    api_calls: AtomicU64,
}

/// Lock ignoring poison: a panicking handler thread must not wedge the test.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Server {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    asset_addr: SocketAddr,
    acceptors: Vec<JoinHandle<()>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Host {
    Api,
    Assets,
}

impl Host {
    fn name(self) -> &'static str {
        match self {
            Host::Api => "api",
            Host::Assets => "assets",
        }
    }
}

impl Server {
    /// Serve `repo` ("owner/name") with `releases`, newest first. Asset
    /// digests are computed here. Panics on bind failure or unreadable asset
    /// files (test infrastructure errors).
    pub fn start(repo: &str, releases: Vec<ReleaseSpec>) -> Server {
        let (owner, name) = repo
            .split_once('/')
            .unwrap_or_else(|| panic!("testkit: repo {repo:?} is not owner/name"));
        let api = TcpListener::bind("127.0.0.1:0").expect("testkit: bind API listener");
        // A second loopback address makes the redirect truly cross-host; not
        // every system routes all of 127/8, hence the fallback.
        let assets = TcpListener::bind("127.0.0.2:0")
            .or_else(|_| TcpListener::bind("127.0.0.1:0"))
            .expect("testkit: bind asset listener");
        let api_addr = api.local_addr().expect("testkit: API address");
        let asset_addr = assets.local_addr().expect("testkit: asset address");
        let api_url = format!("http://{api_addr}");
        let asset_host = asset_addr.to_string();
        let catalog = build_catalog(&api_url, owner, name, releases);
        let shared = Arc::new(Shared {
            owner: owner.to_string(),
            repo: name.to_string(),
            api_url,
            asset_host,
            catalog: Mutex::new(Arc::new(catalog)),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            api_calls: AtomicU64::new(0),
        });
        let acceptors = vec![
            spawn_acceptor(api, Host::Api, shared.clone()),
            spawn_acceptor(assets, Host::Assets, shared.clone()),
        ];
        Server {
            shared,
            api_addr,
            asset_addr,
            acceptors,
        }
    }

    /// `http://127.0.0.1:P1`: the API base (what `api.github.com` is upstream).
    pub fn api_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// `127.0.0.2:P2`, or `127.0.0.1:P2` where 127.0.0.2 could not be bound.
    pub fn asset_host(&self) -> String {
        self.shared.asset_host.clone()
    }

    /// `http://` + [`Server::asset_host`].
    pub fn asset_url(&self) -> String {
        format!("http://{}", self.shared.asset_host)
    }

    /// Whether storage got its own address (127.0.0.2) rather than the fallback.
    pub fn asset_host_is_distinct(&self) -> bool {
        self.asset_addr.ip() != self.api_addr.ip()
    }

    pub fn add_fault(&self, f: Fault) {
        let left = match &f {
            Fault::ApiStatus { times, .. }
            | Fault::Status { times, .. }
            | Fault::CutAfter { times, .. }
            | Fault::Stall { times, .. }
            | Fault::Garbage { times, .. }
            | Fault::ApiEcho { times, .. }
            | Fault::ApiRetryAfter { times, .. } => *times,
            _ => usize::MAX,
        };
        lock(&self.shared.faults).push(FaultSlot { fault: f, left });
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every request so far, both hosts, in the order their status was decided.
    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.shared.log).clone()
    }

    pub fn request_count(&self) -> usize {
        lock(&self.shared.log).len()
    }

    /// Byte-exact JSON the API serves for `tag` (drafts included here).
    pub fn release_json(&self, tag: &str) -> Option<String> {
        let catalog = lock(&self.shared.catalog).clone();
        catalog.by_tag(tag).map(|r| r.json.clone())
    }

    /// Serve `json` verbatim as release `tag` (by tag, as latest, and in
    /// lists), e.g. with a lying size, URL or tag name.
    pub fn set_release_json(&self, tag: &str, json: &str) {
        let mut guard = lock(&self.shared.catalog);
        let mut catalog: Catalog = (**guard).clone();
        if let Some(r) = catalog.releases.iter_mut().find(|r| r.tag == tag) {
            r.json = json.to_string();
        }
        *guard = Arc::new(catalog);
    }

    /// Replace the served releases (newest first), e.g. to publish a new tag.
    pub fn set_releases(&self, releases: Vec<ReleaseSpec>) {
        let s = &self.shared;
        let catalog = build_catalog(&s.api_url, &s.owner, &s.repo, releases);
        *lock(&s.catalog) = Arc::new(catalog);
    }

    /// Stop accepting and release stalled handlers. Also done on drop.
    pub fn stop(self) {}

    fn shutdown(&mut self) {
        self.shared.shutdown.store(true, Ordering::SeqCst);
        // Wake the blocking accept() calls so the acceptors see the flag.
        for addr in [self.api_addr, self.asset_addr] {
            let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
        }
        for t in self.acceptors.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn spawn_acceptor(listener: TcpListener, host: Host, shared: Arc<Shared>) -> JoinHandle<()> {
    std::thread::Builder::new()
        .name(format!("testkit-{}", host.name()))
        .spawn(move || {
            for conn in listener.incoming() {
                if shared.shutdown.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = conn else {
                    // EMFILE and friends: back off instead of spinning.
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let shared = shared.clone();
                // Detached on purpose: handlers watch the shutdown flag.
                let _ = std::thread::Builder::new()
                    .name("testkit-conn".into())
                    .spawn(move || handle_conn(&shared, stream, host));
            }
        })
        .expect("testkit: spawn acceptor")
}

fn build_catalog(api_url: &str, owner: &str, repo: &str, specs: Vec<ReleaseSpec>) -> Catalog {
    let n = specs.len() as u64;
    let releases = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            // Older releases get smaller ids, as on GitHub.
            let id = 1_000_000 + (n - i as u64);
            let mut assets = Vec::new();
            let mut assets_json = Vec::new();
            for (j, a) in spec.assets.into_iter().enumerate() {
                let asset_id = id * 1000 + j as u64;
                let (size, sha) = match &a.body {
                    Body::Bytes(b) => (b.len() as u64, sha256_hex(b)),
                    Body::File(p) => {
                        let size = std::fs::metadata(p)
                            .unwrap_or_else(|e| panic!("testkit: asset {}: {e}", p.display()))
                            .len();
                        let sha = sha256_file_hex(p)
                            .unwrap_or_else(|e| panic!("testkit: asset {}: {e}", p.display()));
                        (size, sha)
                    }
                };
                let digest = match a.digest {
                    DigestMode::Correct => Value::String(format!("sha256:{sha}")),
                    DigestMode::Missing => Value::Null,
                    // Hashing the hash gives a valid-looking, certainly different value.
                    DigestMode::Wrong => {
                        Value::String(format!("sha256:{}", sha256_hex(sha.as_bytes())))
                    }
                };
                assets_json.push(json!({
                    "url": format!("{api_url}/repos/{owner}/{repo}/releases/assets/{asset_id}"),
                    "id": asset_id,
                    "node_id": format!("RA_{asset_id}"),
                    "name": a.name,
                    "label": "",
                    "content_type": "application/octet-stream",
                    "state": "uploaded",
                    "size": size,
                    "digest": digest,
                    "download_count": 0,
                    "created_at": spec.published_at,
                    "updated_at": spec.published_at,
                    "browser_download_url": format!(
                        "{api_url}/{owner}/{repo}/releases/download/{}/{}",
                        pct_encode(&spec.tag),
                        pct_encode(&a.name)
                    ),
                }));
                assets.push(Asset {
                    id: asset_id,
                    name: a.name,
                    body: a.body,
                    size,
                });
            }
            let tag = &spec.tag;
            let json = json!({
                "url": format!("{api_url}/repos/{owner}/{repo}/releases/{id}"),
                "assets_url": format!("{api_url}/repos/{owner}/{repo}/releases/{id}/assets"),
                "html_url": format!("{api_url}/{owner}/{repo}/releases/tag/{}", pct_encode(tag)),
                "tarball_url": format!("{api_url}/repos/{owner}/{repo}/tarball/{}", pct_encode(tag)),
                "zipball_url": format!("{api_url}/repos/{owner}/{repo}/zipball/{}", pct_encode(tag)),
                "id": id,
                "node_id": format!("RE_{id}"),
                "tag_name": tag,
                "target_commitish": "main",
                "name": tag,
                "body": "",
                "draft": spec.draft,
                "prerelease": spec.prerelease,
                "created_at": spec.published_at,
                "published_at": spec.published_at,
                "author": {"login": owner, "id": 1, "type": "User"},
                "assets": assets_json,
            });
            Release {
                id,
                tag: spec.tag,
                prerelease: spec.prerelease,
                draft: spec.draft,
                assets,
                json: json.to_string(),
            }
        })
        .collect();
    Catalog { releases }
}

fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

struct Request {
    method: String,
    /// Path and query as sent (absolute-form reduced to origin-form).
    target: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// Read the request head (up to the blank line); bodies are ignored.
fn read_request(stream: &mut TcpStream) -> io::Result<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let mut target = parts.next().unwrap_or("").to_string();
    if let Some(rest) = target.strip_prefix("http://") {
        target = rest.find('/').map_or("/".into(), |i| rest[i..].to_string());
    }
    if method.is_empty() || !target.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Request {
        method,
        target,
        path,
        query,
        headers,
    })
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_head(stream: &mut TcpStream, status: u16, headers: &[(String, String)]) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("Server: testkit\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())
}

/// A complete small response (API answers, errors, redirects).
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: body.into_bytes(),
        }
    }

    fn message(status: u16, message: &str) -> Reply {
        let body = json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.to_string(),
        });
        Reply::json(status, body.to_string())
    }

    fn text(status: u16, text: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: text.as_bytes().to_vec(),
        }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

fn send_reply(stream: &mut TcpStream, reply: Reply, head_only: bool) -> io::Result<()> {
    let mut headers = reply.headers;
    headers.push(("Content-Length".into(), reply.body.len().to_string()));
    write_head(stream, reply.status, &headers)?;
    if !head_only {
        stream.write_all(&reply.body)?;
    }
    stream.flush()
}

/// Sends `reply` one body byte at a time, `ms` apart, until done or stopped.
fn send_trickled(shared: &Shared, stream: &mut TcpStream, reply: Reply, ms: u64) -> io::Result<()> {
    let mut headers = reply.headers;
    headers.push(("Content-Length".into(), reply.body.len().to_string()));
    write_head(stream, reply.status, &headers)?;
    for b in &reply.body {
        if shared.stopping() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        stream.write_all(&[*b])?;
        stream.flush()?;
        std::thread::sleep(Duration::from_millis(ms));
    }
    Ok(())
}

impl Shared {
    fn record(&self, host: Host, req: &Request, status: u16) {
        lock(&self.log).push(Logged {
            host: host.name(),
            method: req.method.clone(),
            path: req.target.clone(),
            headers: req.headers.clone(),
            status,
        });
    }

    fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}

fn handle_conn(shared: &Shared, mut stream: TcpStream, host: Host) {
    if shared.stopping() {
        return;
    }
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let req = match read_request(&mut stream) {
        Ok(r) => r,
        Err(_) => {
            let _ = send_reply(&mut stream, Reply::text(400, "bad request\n"), false);
            return;
        }
    };
    let head_only = req.method == "HEAD";
    let result = match host {
        Host::Api => {
            let reply = api_reply(shared, &req);
            shared.record(host, &req, reply.status);
            let trickle = lock(&shared.faults)
                .iter()
                .find_map(|slot| match slot.fault {
                    Fault::ApiTrickle { interval_ms } => Some(interval_ms),
                    _ => None,
                });
            match trickle {
                Some(ms) => send_trickled(shared, &mut stream, reply, ms),
                None => send_reply(&mut stream, reply, head_only),
            }
        }
        Host::Assets => serve_asset(shared, &mut stream, &req),
    };
    if result.is_ok() {
        // Half-close so the client sees a clean EOF after the body.
        let _ = stream.shutdown(Shutdown::Write);
    }
}

fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn api_reply(shared: &Shared, req: &Request) -> Reply {
    let path = pct_decode(&req.path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let catalog = lock(&shared.catalog).clone();
    let ours = |o: &str, r: &str| {
        // GitHub treats owner/repo case-insensitively.
        o.eq_ignore_ascii_case(&shared.owner) && r.eq_ignore_ascii_case(&shared.repo)
    };

    // The browser_download_url lives on the web host, outside the API proper:
    // no API faults, no rate-limit headers.
    if let [o, r, "releases", "download", tag, name] = segs[..] {
        if !ours(o, r) {
            return Reply::text(404, "Not Found");
        }
        let redirected = lock(&shared.faults)
            .iter()
            .find_map(|slot| match &slot.fault {
                Fault::Redirect { asset, location } if asset == name => Some(location.clone()),
                _ => None,
            });
        if let Some(location) = redirected {
            return Reply::text(302, "").header("Location", location);
        }
        return match catalog.asset(tag, name) {
            Some(_) => redirect(shared, tag, name),
            None => Reply::text(404, "Not Found"),
        };
    }

    if let Some(reply) = api_fault(shared, req) {
        return reply;
    }
    let used = shared.api_calls.fetch_add(1, Ordering::SeqCst) + 1;
    let reply = route_api(shared, req, &segs, &catalog, ours);
    // Plausible, never-zero quota headers: zero belongs to the rate-limit fault.
    reply
        .header("X-RateLimit-Limit", "5000")
        .header(
            "X-RateLimit-Remaining",
            5000u64.saturating_sub(used).max(1).to_string(),
        )
        .header("X-RateLimit-Reset", (now_epoch() + 3600).to_string())
        .header("X-RateLimit-Used", used.to_string())
        .header("X-RateLimit-Resource", "core")
}

fn redirect(shared: &Shared, tag: &str, name: &str) -> Reply {
    let location = format!(
        "http://{}/blob/{}/{}",
        shared.asset_host,
        pct_encode(tag),
        pct_encode(name)
    );
    Reply::text(302, "").header("Location", location)
}

/// Order: transient statuses first (they model a failing front end), then
/// credentials, then the quota.
fn api_fault(shared: &Shared, req: &Request) -> Option<Reply> {
    let mut faults = lock(&shared.faults);
    for slot in faults.iter_mut() {
        if let Fault::ApiStatus { status, .. } = slot.fault {
            if slot.left > 0 {
                slot.left -= 1;
                return Some(Reply::message(status, reason(status)));
            }
        }
        if let Fault::ApiEcho { status, .. } = slot.fault {
            if slot.left > 0 {
                slot.left -= 1;
                let echo: String = req
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\n"))
                    .collect();
                return Some(Reply::text(
                    status,
                    &format!("upstream said no; you sent:\n{echo}"),
                ));
            }
        }
        if let Fault::ApiRetryAfter { secs, .. } = slot.fault {
            if slot.left > 0 {
                slot.left -= 1;
                return Some(
                    Reply::message(429, "secondary rate limit")
                        .header("Retry-After", secs.to_string()),
                );
            }
        }
    }
    for slot in faults.iter() {
        if let Fault::RequireToken { token } = &slot.fault {
            let ok = req.header("authorization").is_some_and(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
                    .is_some_and(|t| t.trim() == token)
            });
            if !ok {
                return Some(Reply::message(401, "Bad credentials"));
            }
        }
    }
    for slot in faults.iter() {
        if let Fault::ApiRateLimited { reset_epoch } = slot.fault {
            let body = json!({
                "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: \
                    Authenticated requests get a higher rate limit. Check out the documentation \
                    for more details.)",
                "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
            });
            return Some(
                Reply::json(403, body.to_string())
                    .header("X-RateLimit-Limit", "60")
                    .header("X-RateLimit-Remaining", "0")
                    .header("X-RateLimit-Reset", reset_epoch.to_string())
                    .header("X-RateLimit-Used", "60")
                    .header("X-RateLimit-Resource", "core"),
            );
        }
    }
    None
}

fn route_api(
    shared: &Shared,
    req: &Request,
    segs: &[&str],
    catalog: &Catalog,
    ours: impl Fn(&str, &str) -> bool,
) -> Reply {
    let not_found = || Reply::message(404, "Not Found");
    let ["repos", o, r, "releases", rest @ ..] = segs else {
        return not_found();
    };
    if !ours(o, r) {
        return not_found();
    }
    match rest {
        [] | [""] => list_releases(shared, req, catalog),
        ["latest"] => catalog
            .releases
            .iter()
            .find(|r| !r.draft && !r.prerelease)
            .map_or_else(not_found, |r| Reply::json(200, r.json.clone())),
        // Drafts are not reachable by tag (GitHub hides them from this route).
        ["tags", tag] => catalog
            .by_tag(tag)
            .filter(|r| !r.draft)
            .map_or_else(not_found, |r| Reply::json(200, r.json.clone())),
        ["assets", id] => {
            let Some((rel, asset)) = id.parse().ok().and_then(|id| catalog.asset_by_id(id)) else {
                return not_found();
            };
            let wants_bytes = req
                .header("accept")
                .is_some_and(|a| a.contains("application/octet-stream"));
            if wants_bytes {
                return redirect(shared, &rel.tag, &asset.name);
            }
            let v: Value = serde_json::from_str(&rel.json).expect("own JSON");
            let a = v["assets"]
                .as_array()
                .and_then(|l| l.iter().find(|a| a["id"] == asset.id))
                .cloned()
                .unwrap_or(Value::Null);
            Reply::json(200, a.to_string())
        }
        [id] => id
            .parse::<u64>()
            .ok()
            .and_then(|id| catalog.releases.iter().find(|r| r.id == id))
            .map_or_else(not_found, |r| Reply::json(200, r.json.clone())),
        _ => not_found(),
    }
}

fn list_releases(shared: &Shared, req: &Request, catalog: &Catalog) -> Reply {
    let per_page = req
        .query_param("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_PER_PAGE)
        .min(MAX_PER_PAGE);
    let page = req
        .query_param("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = catalog.releases.len();
    let last = total.div_ceil(per_page).max(1);
    let items: Vec<&str> = catalog
        .releases
        .iter()
        .skip((page - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|r| r.json.as_str())
        .collect();
    let body = format!("[{}]", items.join(","));
    let mut reply = Reply::json(200, body);
    let url = |k: usize| {
        format!(
            "<{}/repos/{}/{}/releases?per_page={per_page}&page={k}>",
            shared.api_url, shared.owner, shared.repo
        )
    };
    // Same relation order as GitHub: prev, next, last, first.
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    if !links.is_empty() {
        reply = reply.header("Link", links.join(", "));
    }
    reply
}

/// What the fault table says about one asset request.
#[derive(Default)]
struct AssetFaults {
    status: Option<u16>,
    cut: Option<u64>,
    stall: Option<u64>,
    no_range: bool,
    truncated: bool,
    rate: Option<u64>,
    garbage: bool,
}

fn asset_faults(shared: &Shared, name: &str, is_get: bool) -> AssetFaults {
    let mut out = AssetFaults::default();
    let mut faults = lock(&shared.faults);
    // At most one counted fault is consumed per request, first added first.
    let mut consumed = false;
    for slot in faults.iter_mut() {
        let counted = is_get && !consumed && slot.left > 0;
        match &slot.fault {
            Fault::Status { asset, status, .. } if asset == name && counted => {
                out.status = Some(*status);
            }
            Fault::CutAfter { asset, bytes, .. } if asset == name && counted => {
                out.cut = Some(*bytes);
            }
            Fault::Stall {
                asset, after_bytes, ..
            } if asset == name && counted => {
                out.stall = Some(*after_bytes);
            }
            Fault::Garbage { asset, .. } if asset == name && counted => out.garbage = true,
            Fault::NoRange { asset } if asset == name => out.no_range = true,
            Fault::Truncated { asset } if asset == name => out.truncated = true,
            Fault::RateCap { bytes_per_sec } => out.rate = Some((*bytes_per_sec).max(1)),
            _ => continue,
        }
        if !consumed
            && (out.status.is_some() || out.cut.is_some() || out.stall.is_some() || out.garbage)
        {
            consumed = true;
            slot.left -= 1;
        }
    }
    out
}

enum RangeReq {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; anything else (several ranges, bad syntax) is ignored,
/// which RFC 9110 allows.
fn parse_range(value: Option<&str>, total: u64) -> RangeReq {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last N bytes.
        return match b.parse::<u64>() {
            Ok(0) => RangeReq::Unsatisfiable,
            Ok(_) if total == 0 => RangeReq::Unsatisfiable,
            Ok(n) => RangeReq::Part(total.saturating_sub(n), total - 1),
            Err(_) => RangeReq::Full,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeReq::Full,
        }
    };
    if start >= total {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end.min(total - 1))
}

fn serve_asset(shared: &Shared, stream: &mut TcpStream, req: &Request) -> io::Result<()> {
    let path = pct_decode(&req.path);
    let catalog = lock(&shared.catalog).clone();
    let found = match path.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
        ["blob", tag, name] => catalog.asset(tag, name),
        _ => None,
    };
    let Some(asset) = found else {
        shared.record(Host::Assets, req, 404);
        return send_reply(stream, Reply::text(404, "NoSuchKey\n"), false);
    };
    let (is_get, head_only) = (req.method == "GET", req.method == "HEAD");
    if !is_get && !head_only {
        shared.record(Host::Assets, req, 405);
        return send_reply(stream, Reply::text(405, "method not allowed\n"), false);
    }
    let f = asset_faults(shared, &asset.name, is_get);
    if let Some(status) = f.status {
        shared.record(Host::Assets, req, status);
        return send_reply(stream, Reply::text(status, "injected failure\n"), false);
    }
    let total = if f.truncated {
        asset.size.saturating_sub(10)
    } else {
        asset.size
    };
    let range = if f.no_range {
        RangeReq::Full
    } else {
        parse_range(req.header("range"), total)
    };
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/octet-stream".into()),
        ("Last-Modified".into(), FIXED_DATE.into()),
        ("ETag".into(), format!("\"{}-{}\"", asset.id, total)),
    ];
    if !f.no_range {
        headers.push(("Accept-Ranges".into(), "bytes".into()));
    }
    let (status, start, len) = match range {
        RangeReq::Full => (200, 0, total),
        RangeReq::Part(a, b) => {
            headers.push(("Content-Range".into(), format!("bytes {a}-{b}/{total}")));
            (206, a, b - a + 1)
        }
        RangeReq::Unsatisfiable => {
            headers.push(("Content-Range".into(), format!("bytes */{total}")));
            shared.record(Host::Assets, req, 416);
            let reply = Reply {
                status: 416,
                headers,
                body: Vec::new(),
            };
            return send_reply(stream, reply, head_only);
        }
    };
    headers.push(("Content-Length".into(), len.to_string()));
    shared.record(Host::Assets, req, status);
    write_head(stream, status, &headers)?;
    if head_only {
        return stream.flush();
    }
    let send = f.cut.or(f.stall).map_or(len, |n| n.min(len));
    if f.garbage {
        let junk = Body::Bytes(Arc::new(super::fixture::pseudo_random(total, 0x6a75_6e6b)));
        send_body(shared, stream, &junk, start, send, f.rate)?;
    } else {
        send_body(shared, stream, &asset.body, start, send, f.rate)?;
    }
    stream.flush()?;
    if f.cut.is_some() {
        let _ = stream.shutdown(Shutdown::Both);
        return Err(io::ErrorKind::ConnectionAborted.into());
    }
    if f.stall.is_some() {
        hold(shared, stream);
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(())
}

/// Keep a stalled socket open, silent, until the client leaves, the stall
/// limit passes, or the server stops.
fn hold(shared: &Shared, stream: &mut TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + STALL_LIMIT;
    let mut sink = [0u8; 1024];
    while !shared.stopping() && Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

/// Write `count` bytes of `body` from `start`, paced to `rate` bytes/s if set.
fn send_body(
    shared: &Shared,
    stream: &mut TcpStream,
    body: &Body,
    start: u64,
    count: u64,
    rate: Option<u64>,
) -> io::Result<()> {
    // Small chunks under a cap keep the pacing smooth.
    let chunk = rate.map_or(CHUNK, |r| (r / 20).clamp(1, CHUNK as u64) as usize);
    let began = Instant::now();
    let mut sent = 0u64;
    let mut file = match body {
        Body::File(p) => {
            let mut f = std::fs::File::open(p)?;
            f.seek(SeekFrom::Start(start))?;
            Some(f)
        }
        Body::Bytes(_) => None,
    };
    let mut buf = vec![0u8; if file.is_some() { chunk } else { 0 }];
    while sent < count {
        if shared.stopping() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = (count - sent).min(chunk as u64) as usize;
        match (body, file.as_mut()) {
            (Body::Bytes(b), _) => {
                let from = (start + sent) as usize;
                stream.write_all(&b[from..from + n])?;
            }
            (_, Some(f)) => {
                f.read_exact(&mut buf[..n])?;
                stream.write_all(&buf[..n])?;
            }
            (Body::File(_), None) => unreachable!(),
        }
        sent += n as u64;
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(sent as f64 / r as f64);
            let elapsed = began.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    Ok(())
}
