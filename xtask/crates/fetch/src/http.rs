//! The HTTP client: one ureq agent for the API and the asset hosts. It
//! follows redirects itself, so that every hop is checked (http or https
//! only, no loops, at most ten) and the token goes only to the API's own
//! origin; API calls are retried and have an overall deadline; transport
//! failures become messages that say which host (or proxy) and what to do.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ureq::config::RedirectAuthHeaders;
use ureq::http::{HeaderMap, Response};
use ureq::{Agent, Body};

use super::url::{authority, check_url, origin, resolve_location};
use util::text::{clean, clean_message, Shown};

/// API responses are small JSON documents; anything larger is not GitHub.
const API_BODY_LIMIT: u64 = 32 << 20;
/// Redirect hops one request may take (GitHub uses one).
const MAX_HOPS: usize = 10;
/// Tries of one API call: transient failures (5xx, a dropped connection,
/// 429) are retried with backoff, as downloads are.
const API_TRIES: u32 = 6;
/// Tries of a host name that does not resolve.
const RESOLVE_TRIES: u32 = 2;
/// How the message of a name that did not resolve starts.
const UNRESOLVED: &str = "cannot resolve ";
/// The longest `Retry-After` honoured; a longer one fails with the time.
const MAX_RETRY_AFTER: u64 = 60;

/// A GitHub token: never shown by `Debug`, and it knows the variable it came
/// from so errors can name it.
#[derive(Clone)]
pub struct Token {
    value: String,
    /// The environment variable it came from, said in messages instead of the value.
    pub var: &'static str,
}

impl Token {
    /// A token read from the variable `var`.
    pub fn new(value: String, var: &'static str) -> Token {
        Token { value, var }
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(from {}, ***)", self.var)
    }
}

/// What the client needs, resolved by the command line.
#[derive(Clone, Debug)]
pub struct Config {
    /// The API's base URL.
    pub api: String,
    /// Connections asset downloads may use at once.
    pub connections: usize,
    /// Sent to the API host only, never to another host.
    pub token: Option<Token>,
    /// How long a connection may stay silent.
    pub timeout: Duration,
    /// From `HTTPS_PROXY`/`ALL_PROXY`/`HTTP_PROXY`, with `NO_PROXY`.
    pub proxy: Option<ureq::Proxy>,
}

/// The HTTP client: API requests with retries and the token, asset requests for the download engine.
pub struct Http {
    pub(super) agent: Agent,
    pub(super) api: String,
    pub(super) api_origin: String,
    token: Option<Token>,
    proxy: Option<ureq::Proxy>,
    pub(super) api_deadline: Duration,
    /// Origins besides the API's that may have the token (uploads).
    pub(super) trusted: Vec<String>,
    /// Names that did not resolve, with their failed tries.
    unresolved: Mutex<HashMap<String, u32>>,
    /// What to check after the last connection failure, said on giving up.
    hint: Mutex<Option<String>>,
}

/// A finished API call whose status the caller interprets.
pub struct ApiResponse {
    /// The HTTP status.
    pub status: u16,
    /// The answer's headers.
    pub headers: HeaderMap,
    /// The body, read within a cap.
    pub body: String,
}

/// What went wrong with one request, sorted by what the caller should do.
#[derive(Debug)]
pub enum Failure {
    /// Connection refused/reset, timeout, body cut short, 5xx, 408, 429: try again.
    Transient(String),
    /// Anything else (a 4xx, a bad URL or scheme, a redirect loop): trying
    /// again will not help.
    Fatal(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Transient(m) | Failure::Fatal(m) => f.write_str(m),
        }
    }
}

impl Http {
    /// A client for `cfg`.
    pub fn new(cfg: &Config) -> Http {
        let timeout = cfg.timeout;
        let config = Agent::config_builder()
            // Statuses are ours to interpret (rate limits, 404 → tag list, 206 vs 200).
            .http_status_as_error(false)
            // Redirects are followed in `send`, hop by hop, to check each one.
            .max_redirects(0)
            .redirect_auth_headers(RedirectAuthHeaders::Never)
            .proxy(cfg.proxy.clone())
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(timeout))
            // Per read, not per body: a multi-GiB body takes minutes.
            .timeout_per_read(Some(timeout))
            .max_idle_connections_per_host(cfg.connections + 2)
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(super::trust::trust().roots.clone())
                    .build(),
            )
            .user_agent(concat!("vswarm-xtask/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.new_agent(),
            api: cfg.api.trim_end_matches('/').to_string(),
            api_origin: origin(&cfg.api),
            token: cfg.token.clone(),
            proxy: cfg.proxy.clone(),
            // A whole API call with its retries, so a server that dribbles
            // bytes or never answers cannot hold a run.
            api_deadline: timeout * 5,
            trusted: Vec::new(),
            unresolved: Mutex::new(HashMap::new()),
            hint: Mutex::new(None),
        }
    }

    /// The API's base URL, as configured.
    pub fn api_base(&self) -> &str {
        &self.api
    }

    /// Whether a token is sent to the API.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The variable the token came from, for messages.
    pub fn token_var(&self) -> &'static str {
        self.token
            .as_ref()
            .map_or("GH_TOKEN/GITHUB_TOKEN", |t| t.var)
    }

    /// The token goes only to the API's own scheme and host, and to an
    /// uploads host [`Http::trust_uploads`] accepted.
    pub(super) fn auth_for(&self, url: &str) -> Option<String> {
        let o = origin(url);
        match &self.token {
            Some(t) if o == self.api_origin || self.trusted.contains(&o) => {
                Some(format!("Bearer {}", t.value))
            }
            _ => None,
        }
    }

    /// Sends GET `url` with `headers`, following redirects itself, every hop
    /// done by `deadline` if one is given. `what` names the asset or
    /// document in errors.
    fn get(
        &self,
        url: &str,
        headers: &[(&str, String)],
        deadline: Option<Instant>,
        what: &str,
    ) -> std::result::Result<Response<Body>, Failure> {
        let mut url = url.to_string();
        let mut seen = HashSet::new();
        for _ in 0..=MAX_HOPS {
            check_url(&url, what).map_err(Failure::Fatal)?;
            if !seen.insert(url.clone()) {
                return Err(Failure::Fatal(format!(
                    "{what}: {} redirects in a loop (back to {}); the server is misconfigured, \
                     try again later",
                    authority(&url),
                    clean(&url, 120)
                )));
            }
            let mut req = self.agent.get(&url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            if let Some(auth) = self.auth_for(&url) {
                req = req.header("Authorization", auth);
            }
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                req = req.config().timeout_global(Some(left)).build();
            }
            let resp = req.call().map_err(|e| self.classify(&e, &url))?;
            let status = resp.status().as_u16();
            if !matches!(status, 301 | 302 | 303 | 307 | 308) {
                return Ok(resp);
            }
            let Some(loc) = header(resp.headers(), "location") else {
                return Err(Failure::Fatal(format!(
                    "{what}: {} answered {status} without a Location",
                    clean(&url, 120)
                )));
            };
            url = resolve_location(&url, loc);
        }
        Err(Failure::Fatal(format!(
            "{what}: more than {MAX_HOPS} redirects from {}; try again later",
            authority(&url)
        )))
    }

    /// GET a JSON document from the API (or a mirror), retrying transient
    /// failures; statuses other than those are the caller's to interpret.
    pub fn api_get(&self, url: &str) -> Result<ApiResponse> {
        self.with_retries(url, |deadline| {
            let resp = self.get(url, &api_headers(), Some(deadline), &clean(url, 200))?;
            self.read_answer(resp, url)
        })
    }

    /// Reads a small answer whole.
    pub(super) fn read_answer(
        &self,
        resp: Response<Body>,
        url: &str,
    ) -> std::result::Result<ApiResponse, Failure> {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .with_config()
            .limit(API_BODY_LIMIT)
            .read_to_string()
            .map_err(|e| self.classify(&e, url))?;
        super::count_received(body.len() as u64);
        Ok(ApiResponse {
            status,
            headers,
            body,
        })
    }

    /// Runs `attempt` until it gives a final answer: transient failures and
    /// answers (5xx, 408, 429 that is not a spent quota) are retried with
    /// backoff, honouring `Retry-After` within a bound. Every try, wait and
    /// body read ends by one deadline, the call's `api_deadline` from now,
    /// which `attempt` is given.
    pub(super) fn with_retries(
        &self,
        url: &str,
        mut attempt: impl FnMut(Instant) -> std::result::Result<ApiResponse, Failure>,
    ) -> Result<ApiResponse> {
        let deadline = Instant::now() + self.api_deadline;
        let mut tries = 0;
        loop {
            tries += 1;
            let failure = match attempt(deadline) {
                Ok(r) => match self.retry_after(&r, url) {
                    None => return Ok(r),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(wait)) if tries < API_TRIES => {
                        let why = format!("{} answered HTTP {}", authority(url), r.status);
                        self.pause(wait, deadline, &why, tries + 1)?;
                        continue;
                    }
                    Some(Ok(_)) => {
                        Failure::Transient(format!("{} answered HTTP {}", Shown(url), r.status))
                    }
                },
                Err(f) => f,
            };
            match failure {
                Failure::Transient(m) if tries < API_TRIES => {
                    self.pause(backoff(tries), deadline, &m, tries + 1)?
                }
                Failure::Transient(m) => {
                    return Err(super::network(format!(
                        "{m} (gave up after {API_TRIES} tries){}",
                        self.hint()
                    )))
                }
                Failure::Fatal(m) if Instant::now() >= deadline => {
                    return Err(super::network(format!("{m}; {}", self.bound())))
                }
                Failure::Fatal(m) => return Err(super::network(m)),
            }
        }
    }

    /// Waits `wait` before try `next` (said in one short line, with `why`),
    /// unless that would pass the call's deadline: then the call fails.
    fn pause(&self, wait: Duration, deadline: Instant, why: &str, next: u32) -> Result<()> {
        if Instant::now() + wait >= deadline {
            return Err(super::network(format!(
                "{why}; {}{}",
                self.bound(),
                self.hint()
            )));
        }
        say!(
            "{}",
            clean_message(&retry_line("", wait, next, API_TRIES, why))
        );
        std::thread::sleep(wait);
        Ok(())
    }

    /// Why an API call gave up before its tries ran out.
    fn bound(&self) -> String {
        format!(
            "gave up: one API call may take {:.1} s in all (five times VSWARM_HTTP_TIMEOUT)",
            self.api_deadline.as_secs_f64()
        )
    }

    /// For an answer worth retrying (5xx, 408, 429 that is not a spent
    /// quota), how long to wait; an error when the server asks for longer
    /// than we wait. None: the answer is final.
    fn retry_after(&self, r: &ApiResponse, url: &str) -> Option<Result<Duration>> {
        let transient = matches!(r.status, 408 | 429 | 500..=599);
        if !transient || quota_spent(r) {
            return None;
        }
        let asked = header(&r.headers, "retry-after").and_then(|v| v.trim().parse::<u64>().ok());
        match asked {
            Some(s) if s > MAX_RETRY_AFTER => Some(Err(anyhow!(
                "{} answered HTTP {} and asks to wait {s} s before trying again; run again later",
                Shown(url),
                r.status
            ))),
            Some(s) => Some(Ok(Duration::from_secs(s.max(1)))),
            None => Some(Ok(backoff(1))),
        }
    }

    /// GET an asset, optionally bytes `from..=to`. The caller checks the
    /// status: 200, 206, or an error class.
    pub(crate) fn asset_get(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
        what: &str,
    ) -> std::result::Result<Response<Body>, Failure> {
        let mut headers = vec![
            ("Accept", "application/octet-stream".to_string()),
            // No transparent gunzip: we hash and store the bytes as published.
            ("Accept-Encoding", "identity".to_string()),
        ];
        if let Some((from, to)) = range {
            headers.push(("Range", format!("bytes={from}-{to}")));
        }
        let resp = self.get(url, &headers, None, what)?;
        let status = resp.status().as_u16();
        match status {
            200 | 206 => Ok(resp),
            408 | 429 | 500..=599 => Err(Failure::Transient(format!(
                "{} answered HTTP {status}",
                Shown(url)
            ))),
            _ => Err(Failure::Fatal(format!(
                "{} answered HTTP {status}",
                Shown(url)
            ))),
        }
    }

    /// Whether a request to `url` goes through the proxy.
    fn proxied(&self, url: &str) -> Option<&ureq::Proxy> {
        let p = self.proxy.as_ref()?;
        let uri: ureq::http::Uri = url.parse().ok()?;
        (!p.is_no_proxy(&uri)).then_some(p)
    }

    /// Turns a ureq error into a retry decision with a message naming the
    /// host, or the proxy when it is the proxy that cannot be reached.
    pub(crate) fn classify(&self, err: &ureq::Error, url: &str) -> Failure {
        let host = authority(url);
        if let Some(why) = refused_certificate(err) {
            return Failure::Fatal(format!(
                "{host}: the server's certificate is not trusted ({why}); {}",
                super::trust::advice(&host)
            ));
        }
        if unresolved(err) {
            return self.unresolved(&host, url);
        }
        let msg = self.explain(err, url);
        match err {
            // The call's own deadline: trying again would only wait as long.
            ureq::Error::Timeout(ureq::Timeout::Global) => Failure::Fatal(msg),
            ureq::Error::BadUri(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::BodyExceedsLimit(_)
            | ureq::Error::Http(_) => Failure::Fatal(msg),
            ureq::Error::Io(io) if tls_error(io).is_some() => Failure::Fatal(msg),
            _ => Failure::Transient(msg),
        }
    }

    /// A name that did not resolve is tried once more (a resolver may
    /// hiccup), then given up on: more tries only make an offline user wait.
    fn unresolved(&self, host: &str, url: &str) -> Failure {
        let (name, via) = match self.proxied(url) {
            Some(p) => (p.host().to_string(), format!(" (the proxy for {host})")),
            None => (host.to_string(), String::new()),
        };
        let mut seen = self.unresolved.lock().unwrap_or_else(|e| e.into_inner());
        let n = seen.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n < RESOLVE_TRIES {
            return Failure::Transient(format!("{UNRESOLVED}{name}{via}"));
        }
        let hint = if via.is_empty() {
            "offline, or a proxy needed? (a proxy is read from HTTPS_PROXY/ALL_PROXY)".to_string()
        } else {
            format!("check the proxy in HTTPS_PROXY/ALL_PROXY, or exempt {host} with NO_PROXY")
        };
        Failure::Fatal(format!("cannot resolve {name}{via}: {hint}"))
    }

    /// A short message for `err` that names the host, or the proxy; what to
    /// check is kept for [`Http::hint`], said once when giving up.
    fn explain(&self, err: &ureq::Error, url: &str) -> String {
        let host = authority(url);
        let unreachable = match err {
            ureq::Error::ConnectionFailed => true,
            ureq::Error::Io(io) => matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::AddrNotAvailable
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ),
            _ => false,
        };
        let cause = cause(err);
        if unreachable {
            let (msg, hint) = match self.proxied(url) {
                Some(p) => (
                    format!(
                        "cannot reach the proxy {}:{} on the way to {host}: {cause}",
                        p.host(),
                        p.port()
                    ),
                    format!(
                        "check the proxy in HTTPS_PROXY/ALL_PROXY, or exempt {host} with NO_PROXY"
                    ),
                ),
                None => (
                    format!("cannot reach {host}: {cause}"),
                    "check the network connection (a proxy is read from HTTPS_PROXY/ALL_PROXY)"
                        .to_string(),
                ),
            };
            *self.hint.lock().unwrap_or_else(|e| e.into_inner()) = Some(hint);
            return msg;
        }
        match err {
            ureq::Error::Timeout(t) => format!("{host}: timed out ({t})"),
            _ => format!("{host}: {cause}"),
        }
    }

    /// What to check after the connection failures that made a call give
    /// up, as `"; …"`, or nothing.
    pub(super) fn hint(&self) -> String {
        self.hint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(String::new(), |h| format!("; {h}"))
    }
}

/// The rustls error inside an I/O error, if that is what it is.
fn tls_error(io: &std::io::Error) -> Option<&rustls::Error> {
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

/// Why the server's certificate was refused, when that is the failure.
fn refused_certificate(err: &ureq::Error) -> Option<String> {
    let tls = match err {
        ureq::Error::Rustls(e) => e,
        ureq::Error::Io(io) => tls_error(io)?,
        _ => return None,
    };
    use rustls::CertificateError as C;
    let rustls::Error::InvalidCertificate(c) = tls else {
        return None;
    };
    Some(match c {
        C::UnknownIssuer => "signed by an unknown certificate authority".into(),
        C::NotValidForName | C::NotValidForNameContext { .. } => "it is for another name".into(),
        C::Expired | C::ExpiredContext { .. } => "it has expired; check the clock".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => {
            "it is not valid yet; check the clock".into()
        }
        _ => clean(&c.to_string(), 160),
    })
}

/// Whether `err` is a name that did not resolve.
fn unresolved(err: &ureq::Error) -> bool {
    match err {
        ureq::Error::HostNotFound => true,
        // std's resolver error: "failed to lookup address information: …".
        ureq::Error::Io(io) => io.to_string().contains("lookup address"),
        _ => false,
    }
}

/// The cause of a transport error, short: "connection refused".
fn cause(err: &ureq::Error) -> String {
    use std::io::ErrorKind as K;
    let io = match err {
        ureq::Error::Io(io) => io,
        ureq::Error::ConnectionFailed => return "connection failed".into(),
        _ => return clean(&err.to_string(), 160),
    };
    match io.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::AddrNotAvailable => "address not available".into(),
        K::TimedOut => "timed out".into(),
        K::UnexpectedEof => "connection closed early".into(),
        _ => clean(&io.to_string(), 160),
    }
}

/// `  retrying[ WHAT] in 0.25 s (try 2 of 6): WHY`: one line per retry; what
/// to check is said once, when giving up.
pub(super) fn retry_line(what: &str, wait: Duration, next: u32, tries: u32, why: &str) -> String {
    // A name that does not resolve gets fewer tries (see `Http::unresolved`).
    let tries = if why.starts_with(UNRESOLVED) {
        RESOLVE_TRIES
    } else {
        tries
    };
    let secs = (wait.as_secs_f64() * 100.0).round() / 100.0;
    let what = if what.is_empty() {
        String::new()
    } else {
        format!(" {what}")
    };
    format!("  retrying{what} in {secs} s (try {next} of {tries}): {why}")
}

/// 0.25 s, doubling, at most 8 s.
pub fn backoff(try_number: u32) -> Duration {
    Duration::from_millis(250u64 << try_number.saturating_sub(1).min(5))
}

/// Reads a header as a string, if present and ASCII.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A 403 or 429 that says the hourly quota is used up: waiting a little
/// will not help.
pub fn quota_spent(r: &ApiResponse) -> bool {
    matches!(r.status, 403 | 429) && header(&r.headers, "x-ratelimit-remaining") == Some("0")
}

pub(super) fn api_headers() -> [(&'static str, String); 2] {
    [
        ("Accept", "application/vnd.github+json".to_string()),
        ("X-GitHub-Api-Version", "2022-11-28".to_string()),
    ]
}
