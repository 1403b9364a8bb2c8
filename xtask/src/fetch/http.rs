//! The HTTP client: one ureq agent for the API and the asset hosts. It
//! follows redirects itself, so that every hop is checked (http or https
//! only, no loops, at most ten) and the token goes only to the API's own
//! origin; API calls are retried and have an overall deadline; transport
//! failures become messages that say which host (or proxy) and what to do.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use ureq::config::RedirectAuthHeaders;
use ureq::http::{HeaderMap, Response};
use ureq::{Agent, Body};

use super::url::{authority, check_url, origin, resolve_location};
use crate::util::text::{clean, Shown};

/// API responses are small JSON documents; anything larger is not GitHub.
const API_BODY_LIMIT: u64 = 32 << 20;
/// Redirect hops one request may take (GitHub uses one).
const MAX_HOPS: usize = 10;
/// Tries of one API call: transient failures (5xx, a dropped connection,
/// 429) are retried with backoff, as downloads are.
const API_TRIES: u32 = 6;
/// The longest `Retry-After` honoured; a longer one fails with the time.
const MAX_RETRY_AFTER: u64 = 60;

/// A GitHub token: never shown by `Debug`, and it knows the variable it came
/// from so errors can name it.
#[derive(Clone)]
pub struct Token {
    value: String,
    pub var: &'static str,
}

impl Token {
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
    pub api: String,
    pub connections: usize,
    pub token: Option<Token>,
    /// How long a connection may stay silent.
    pub timeout: Duration,
    /// From `HTTPS_PROXY`/`ALL_PROXY`/`HTTP_PROXY`, with `NO_PROXY`.
    pub proxy: Option<ureq::Proxy>,
}

pub struct Http {
    pub(super) agent: Agent,
    pub(super) api: String,
    pub(super) api_origin: String,
    token: Option<Token>,
    proxy: Option<ureq::Proxy>,
    pub(super) api_deadline: Duration,
    /// Origins besides the API's that may have the token (uploads).
    pub(super) trusted: Vec<String>,
}

/// A finished API call whose status the caller interprets.
pub struct ApiResponse {
    pub status: u16,
    pub headers: HeaderMap,
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
        }
    }

    pub fn api_base(&self) -> &str {
        &self.api
    }

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
                        let why = format!("{}: HTTP {}", Shown(url), r.status);
                        self.pause(wait, deadline, &why)?;
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
                    self.pause(backoff(tries), deadline, &m)?
                }
                Failure::Transient(m) => {
                    return Err(super::network(format!(
                        "{m} (gave up after {API_TRIES} tries)"
                    )))
                }
                Failure::Fatal(m) if Instant::now() >= deadline => {
                    return Err(super::network(format!("{m}; {}", self.bound())))
                }
                Failure::Fatal(m) => return Err(super::network(m)),
            }
        }
    }

    /// Waits `wait` before the next try (said, with `why`), unless that
    /// would pass the call's deadline: then the call fails.
    fn pause(&self, wait: Duration, deadline: Instant, why: &str) -> Result<()> {
        if Instant::now() + wait >= deadline {
            return Err(super::network(format!("{why}; {}", self.bound())));
        }
        say!("  {why}; retrying in {:.1} s", wait.as_secs_f64());
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
    pub fn asset_get(
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
    pub fn classify(&self, err: &ureq::Error, url: &str) -> Failure {
        let msg = self.explain(err, url);
        match err {
            // The call's own deadline: trying again would only wait as long.
            ureq::Error::Timeout(ureq::Timeout::Global) => Failure::Fatal(msg),
            ureq::Error::BadUri(_)
            | ureq::Error::RequireHttpsOnly(_)
            | ureq::Error::Tls(_)
            | ureq::Error::InvalidProxyUrl
            | ureq::Error::BodyExceedsLimit(_)
            | ureq::Error::Http(_) => Failure::Fatal(msg),
            _ => Failure::Transient(msg),
        }
    }

    /// A message for `err` that names the host, or the proxy.
    pub fn explain(&self, err: &ureq::Error, url: &str) -> String {
        let host = authority(url);
        let unreachable = match err {
            ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => true,
            ureq::Error::Io(io) => {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::ConnectionRefused
                        | std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::AddrNotAvailable
                        | std::io::ErrorKind::HostUnreachable
                        | std::io::ErrorKind::NetworkUnreachable
                ) || io.to_string().contains("lookup")
            }
            _ => false,
        };
        if unreachable {
            if let Some(p) = self.proxied(url) {
                return format!(
                    "cannot reach the proxy {}:{} ({err}) on the way to {host}; check the proxy \
                     in HTTPS_PROXY/ALL_PROXY, or exempt {host} with NO_PROXY",
                    p.host(),
                    p.port()
                );
            }
            return format!(
                "cannot reach {host} ({err}); check the network connection \
                 (a proxy is read from HTTPS_PROXY/NO_PROXY)"
            );
        }
        match err {
            ureq::Error::Timeout(t) => {
                format!("{host}: timed out ({t}) while fetching {}", Shown(url))
            }
            ureq::Error::Io(io) => format!("{host}: {io} while fetching {}", Shown(url)),
            _ => format!("{host}: {err} while fetching {}", Shown(url)),
        }
    }
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
