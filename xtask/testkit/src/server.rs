//! A loopback fake of GitHub's release REST API plus its asset storage host,
//! with switchable faults (rate limits, 5xx, cut or stalled bodies, ignored
//! ranges, truncated content, bandwidth caps) and a log of every request.
//!
//! [`Server::start_https`] serves both over TLS with a certificate signed by
//! a CA made for the server, which a client must be told to trust.
//!
//! Two listeners, like the real thing: the API on `127.0.0.1:P1` (which also
//! answers `browser_download_url`s with a 302) and storage on `127.0.0.2:P2`
//! (a different host, so clients that drop headers on cross-host redirects are
//! exercised). Every response says `Connection: close`: one request per
//! connection keeps the parser trivial and is still valid HTTP/1.1.
//! Threads per connection are detached and watch a shutdown flag, so a stalled
//! handler never keeps a test process alive.

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::api::api_reply;
use crate::catalog::{build_catalog, Urls};
use crate::http1::{read_body, read_request, send_reply, send_trickled, Reply};
use crate::spec::{Body, Fault, Logged, ReleaseSpec};
use crate::state::{lock, FaultSlot, Host, Shared};
use crate::store::serve_asset;
use crate::tls::{make_ca, Conn};
use crate::uploads::receive_upload;

/// The path under the API's origin where uploads go.
const UPLOADS_PREFIX: &str = "/api/uploads";

/// Writes to a client that stopped reading give up after this.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Server {
    shared: Arc<Shared>,
    api_addr: SocketAddr,
    asset_addr: SocketAddr,
    acceptors: Vec<JoinHandle<()>>,
    /// The CA's certificate (PEM) when serving HTTPS.
    ca_pem: Option<String>,
}

impl Server {
    /// Serve `repo` ("owner/name") with `releases`, newest first. Asset
    /// digests are computed here. Panics on bind failure or unreadable asset
    /// files (test infrastructure errors).
    pub fn start(repo: &str, releases: Vec<ReleaseSpec>) -> Server {
        Server::start_with(repo, releases, false)
    }

    /// [`Server::start`] over HTTPS on both hosts, with a certificate for
    /// 127.0.0.1, 127.0.0.2 and localhost signed by a CA made now, which no
    /// system trusts: [`Server::ca_pem`] is what a client must be given.
    pub fn start_https(repo: &str, releases: Vec<ReleaseSpec>) -> Server {
        Server::start_with(repo, releases, true)
    }

    fn start_with(repo: &str, releases: Vec<ReleaseSpec>, https: bool) -> Server {
        let ca = https.then(make_ca);
        let scheme = if https { "https" } else { "http" };
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
        let api_url = format!("{scheme}://{api_addr}");
        let asset_host = asset_addr.to_string();
        let urls = Urls {
            api: api_url.clone(),
            // As GitHub Enterprise serves them: on the API's own origin,
            // the only other place a client may send the token to.
            uploads: format!("{api_url}{UPLOADS_PREFIX}"),
            owner: owner.to_string(),
            repo: name.to_string(),
        };
        let catalog = build_catalog(urls, releases);
        let shared = Arc::new(Shared {
            owner: owner.to_string(),
            repo: name.to_string(),
            api_url,
            asset_host,
            scheme,
            tls: ca.as_ref().map(|c| c.config.clone()),
            catalog: Mutex::new(Arc::new(catalog)),
            faults: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            shutdown: AtomicBool::new(false),
            api_calls: AtomicU64::new(0),
            gate: Default::default(),
            served: Default::default(),
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
            ca_pem: ca.map(|c| c.pem),
        }
    }

    /// The PEM certificate of the CA that signed an HTTPS server's
    /// certificate (None for plain HTTP): write it where `SSL_CERT_FILE`
    /// points to make a client trust the server.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// `http://127.0.0.1:P1` (`https://` from [`Server::start_https`]): the API base (what `api.github.com` is upstream).
    pub fn api_url(&self) -> String {
        self.shared.api_url.clone()
    }

    /// `127.0.0.2:P2`, or `127.0.0.1:P2` where 127.0.0.2 could not be bound.
    pub fn asset_host(&self) -> String {
        self.shared.asset_host.clone()
    }

    /// `http://` (or `https://`) + [`Server::asset_host`].
    pub fn asset_url(&self) -> String {
        format!("{}://{}", self.shared.scheme, self.shared.asset_host)
    }

    /// `http://127.0.0.1:P1/api/uploads`: where uploads go (what
    /// `uploads.github.com` is upstream, and `/api/uploads` on GitHub Enterprise).
    pub fn uploads_url(&self) -> String {
        format!("{}{UPLOADS_PREFIX}", self.shared.api_url)
    }

    /// The assets release `tag` holds: (name, state, bytes), in upload order.
    pub fn assets_of(&self, tag: &str) -> Vec<(String, String, Vec<u8>)> {
        let catalog = lock(&self.shared.catalog).clone();
        let Some(r) = catalog.by_tag(tag) else {
            return Vec::new();
        };
        r.assets
            .iter()
            .map(|a| {
                let bytes = match &a.body {
                    Body::Bytes(b) => b.as_ref().clone(),
                    Body::File(p) => std::fs::read(p).unwrap_or_default(),
                };
                (a.name.clone(), a.state.to_string(), bytes)
            })
            .collect()
    }

    /// Whether release `tag` exists and is a draft.
    pub fn is_draft(&self, tag: &str) -> Option<bool> {
        lock(&self.shared.catalog).by_tag(tag).map(|r| r.draft)
    }

    /// Publishes the draft `tag` (as its owner would on GitHub); whether
    /// there was one.
    pub fn publish(&self, tag: &str) -> bool {
        self.shared.edit_catalog(|c| c.publish(tag))
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
            | Fault::ApiRetryAfter { times, .. }
            | Fault::UploadCut { times, .. }
            | Fault::UploadStatus { times, .. }
            | Fault::UploadHold { times, .. } => *times,
            _ => usize::MAX,
        };
        lock(&self.shared.faults).push(FaultSlot { fault: f, left });
    }

    /// Whether an upload held by [`Fault::UploadHold`] waits, within `limit`.
    pub fn wait_upload_held(&self, limit: Duration) -> bool {
        self.shared.gate.wait_held(limit)
    }

    /// Lets every upload held by [`Fault::UploadHold`] go on, now and later.
    pub fn release_uploads(&self) {
        self.shared.gate.open();
    }

    pub fn clear_faults(&self) {
        lock(&self.shared.faults).clear();
    }

    /// Every request so far, both hosts, in the order their status was decided.
    pub fn requests(&self) -> Vec<Logged> {
        lock(&self.shared.log).clone()
    }

    /// Body bytes of asset `name` written to clients so far (every request,
    /// every release, cut transfers counted as far as they went).
    pub fn served_bytes(&self, name: &str) -> u64 {
        lock(&self.shared.served).get(name).copied().unwrap_or(0)
    }

    /// Body bytes of every asset written to clients so far.
    pub fn served_total(&self) -> u64 {
        lock(&self.shared.served).values().sum()
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
        self.shared.edit_catalog(|c| {
            if let Some(r) = c.releases.iter_mut().find(|r| r.tag == tag) {
                r.json = json.to_string();
                r.json_fixed = true;
            }
        });
    }

    /// Replace the served releases (newest first), e.g. to publish a new tag.
    pub fn set_releases(&self, releases: Vec<ReleaseSpec>) {
        let s = &self.shared;
        let urls = lock(&s.catalog).urls.clone();
        let catalog = build_catalog(urls, releases);
        *lock(&s.catalog) = Arc::new(catalog);
    }

    /// Stop accepting and release stalled handlers. Also done on drop.
    pub fn stop(self) {}

    pub(crate) fn shutdown(&mut self) {
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

pub(crate) fn spawn_acceptor(
    listener: TcpListener,
    host: Host,
    shared: Arc<Shared>,
) -> JoinHandle<()> {
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

pub(crate) fn handle_conn(shared: &Shared, tcp: TcpStream, host: Host) {
    if shared.stopping() {
        return;
    }
    let _ = tcp.set_nodelay(true);
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = tcp.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(mut stream) = Conn::new(tcp, shared.tls.as_ref()) else {
        return;
    };
    let req = match read_request(&mut stream) {
        Ok(r) => r,
        Err(_) => {
            let _ = send_reply(&mut stream, Reply::text(400, "bad request\n"), false);
            return;
        }
    };
    let head_only = req.method == "HEAD";
    let host = match host {
        Host::Api if req.path.starts_with(UPLOADS_PREFIX) => Host::Uploads,
        h => h,
    };
    let result = match host {
        Host::Api if shared.api_silent() && req.path.starts_with("/repos/") => {
            shared.record(host, &req, 0);
            crate::store::hold(shared, &mut stream);
            Err(std::io::ErrorKind::TimedOut.into())
        }
        Host::Api => {
            let body = match req.method.as_str() {
                "POST" | "PATCH" => read_body(&mut stream, &req, 1 << 20).unwrap_or_default(),
                _ => Vec::new(),
            };
            let reply = api_reply(shared, &req, &body);
            shared.record(host, &req, reply.status);
            let trickle = lock(&shared.faults)
                .iter()
                .find_map(|slot| match slot.fault {
                    Fault::ApiTrickle { interval_ms } => Some(interval_ms),
                    _ => None,
                });
            match trickle {
                Some(ms) => send_trickled(|| shared.stopping(), &mut stream, reply, ms),
                None => send_reply(&mut stream, reply, head_only),
            }
        }
        Host::Assets => serve_asset(shared, &mut stream, &req),
        Host::Uploads => {
            let mut req = req;
            req.path = req.path[UPLOADS_PREFIX.len()..].to_string();
            receive_upload(shared, &mut stream, &req)
        }
    };
    if result.is_ok() {
        // Half-close so the client sees a clean EOF after the body.
        let _ = stream.shutdown(Shutdown::Write);
    }
}
