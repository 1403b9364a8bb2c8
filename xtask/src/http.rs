//! The HTTP client: one ureq agent for the API and the asset hosts, the token
//! rule (sent to the API host only, never across a redirect), timeouts, and
//! turning transport failures into messages that say which host and what to do.

use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use ureq::config::RedirectAuthHeaders;
use ureq::http::{HeaderMap, Response};
use ureq::{Agent, Body};

/// API responses are small JSON documents; anything larger is not GitHub.
const API_BODY_LIMIT: u64 = 32 << 20;

pub struct Http {
    agent: Agent,
    api: String,
    api_authority: String,
    token: Option<String>,
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
    /// Anything else (a 4xx, a bad URL): trying again will not help.
    Fatal(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Transient(m) | Failure::Fatal(m) => f.write_str(m),
        }
    }
}

/// Read timeout: how long a connection may stay silent before we give up on
/// it and retry. `VSWARM_HTTP_TIMEOUT` (seconds) overrides it.
pub fn read_timeout() -> Duration {
    std::env::var("VSWARM_HTTP_TIMEOUT")
        .ok()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(30))
}

/// `GITHUB_TOKEN`, else `GH_TOKEN`; empty values count as unset.
pub fn token_from_env() -> Option<String> {
    ["GITHUB_TOKEN", "GH_TOKEN"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .map(|t| t.trim().to_string())
        .find(|t| !t.is_empty())
}

/// `scheme://host[:port]` → `host[:port]`, lowercased.
pub fn authority(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    // Drop any userinfo: it is not part of the host.
    let auth = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
    auth.to_ascii_lowercase()
}

impl Http {
    pub fn new(api: &str, connections: usize) -> Http {
        let timeout = read_timeout();
        let config = Agent::config_builder()
            // Statuses are ours to interpret (rate limits, 404 → tag list, 206 vs 200).
            .http_status_as_error(false)
            // Already ureq's default; stated because the token's safety rests on it.
            .redirect_auth_headers(RedirectAuthHeaders::Never)
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(timeout))
            // Per read, not per body: a multi-GiB body takes minutes.
            .timeout_per_read(Some(timeout))
            .max_idle_connections_per_host(connections + 2)
            .user_agent(concat!("vswarm-xtask/", env!("CARGO_PKG_VERSION")))
            .build();
        Http {
            agent: config.new_agent(),
            api: api.trim_end_matches('/').to_string(),
            api_authority: authority(api),
            token: token_from_env(),
        }
    }

    pub fn api_base(&self) -> &str {
        &self.api
    }

    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The token goes only to the API host itself.
    fn auth_for(&self, url: &str) -> Option<String> {
        match &self.token {
            Some(t) if authority(url) == self.api_authority => Some(format!("Bearer {t}")),
            _ => None,
        }
    }

    /// GET a JSON document from the API.
    pub fn api_get(&self, url: &str) -> Result<ApiResponse> {
        let mut req = self
            .agent
            .get(url)
            .header("Accept", "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28");
        if let Some(auth) = self.auth_for(url) {
            req = req.header("Authorization", auth);
        }
        let resp = req.call().map_err(|e| anyhow!(describe(&e, url)))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .with_config()
            .limit(API_BODY_LIMIT)
            .read_to_string()
            .map_err(|e| anyhow!("reading the answer of {url}: {}", describe(&e, url)))?;
        Ok(ApiResponse {
            status,
            headers,
            body,
        })
    }

    /// GET an asset, optionally from byte `from` (to `to`, inclusive). The
    /// caller checks the status: 200, 206, or an error class.
    pub fn asset_get(
        &self,
        url: &str,
        range: Option<(u64, u64)>,
    ) -> std::result::Result<Response<Body>, Failure> {
        let mut req = self
            .agent
            .get(url)
            .header("Accept", "application/octet-stream")
            // No transparent gunzip: we hash and store the bytes as published.
            .header("Accept-Encoding", "identity");
        if let Some((from, to)) = range {
            req = req.header("Range", format!("bytes={from}-{to}"));
        }
        if let Some(auth) = self.auth_for(url) {
            req = req.header("Authorization", auth);
        }
        let resp = req.call().map_err(|e| classify(&e, url))?;
        let status = resp.status().as_u16();
        match status {
            200 | 206 => Ok(resp),
            408 | 429 | 500..=599 => {
                Err(Failure::Transient(format!("{url} answered HTTP {status}")))
            }
            _ => Err(Failure::Fatal(format!("{url} answered HTTP {status}"))),
        }
    }
}

/// Turns a ureq error into a retry decision with a message naming the host.
pub fn classify(err: &ureq::Error, url: &str) -> Failure {
    let msg = describe(err, url);
    match err {
        ureq::Error::BadUri(_) | ureq::Error::RequireHttpsOnly(_) | ureq::Error::Tls(_) => {
            Failure::Fatal(msg)
        }
        _ => Failure::Transient(msg),
    }
}

pub fn describe(err: &ureq::Error, url: &str) -> String {
    let host = authority(url);
    match err {
        ureq::Error::Timeout(t) => format!("{host}: timed out ({t}) while fetching {url}"),
        ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => format!(
            "cannot reach {host} ({err}); check the network connection \
             (a proxy is read from HTTPS_PROXY/NO_PROXY)"
        ),
        ureq::Error::Io(io) => match io.kind() {
            std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::NotFound
            | std::io::ErrorKind::AddrNotAvailable => format!(
                "cannot reach {host} ({io}); check the network connection \
                 (a proxy is read from HTTPS_PROXY/NO_PROXY)"
            ),
            _ => format!("{host}: {io} while fetching {url}"),
        },
        _ => format!("{host}: {err} while fetching {url}"),
    }
}

/// Reads a header as a string, if present and ASCII.
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Formats a Unix time as local time, e.g. `2026-11-26 14:05:00 CET`.
pub fn local_time(epoch: i64) -> String {
    let t: libc::time_t = epoch as libc::time_t;
    // SAFETY: localtime_r and strftime write only into the buffers we pass.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return format!("{epoch} (Unix time)");
        }
        let mut buf = [0u8; 64];
        let fmt = b"%Y-%m-%d %H:%M:%S %Z\0";
        let n = libc::strftime(
            buf.as_mut_ptr() as *mut libc::c_char,
            buf.len(),
            fmt.as_ptr() as *const libc::c_char,
            &tm,
        );
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

/// The error for a rate-limited or unauthorised API answer, if it is one.
pub fn api_refusal(resp: &ApiResponse, url: &str, has_token: bool) -> Option<anyhow::Error> {
    let remaining = header(&resp.headers, "x-ratelimit-remaining");
    if matches!(resp.status, 403 | 429) && remaining == Some("0") {
        let reset = header(&resp.headers, "x-ratelimit-reset")
            .and_then(|s| s.parse::<i64>().ok())
            .map(|t| format!("it resets at {}", local_time(t)))
            .unwrap_or_else(|| "the reset time was not given".into());
        let hint = if has_token {
            "wait until then (the token's own limit is exhausted)"
        } else {
            "set GITHUB_TOKEN (or GH_TOKEN) to a GitHub token to lift the limit to 5000 an hour, or wait"
        };
        return Some(anyhow!(
            "the GitHub API rate limit is exhausted ({url} answered {}); {reset}; {hint}",
            resp.status
        ));
    }
    if resp.status == 401 {
        return Some(anyhow!(
            "{url} answered 401: the token in GITHUB_TOKEN/GH_TOKEN is wrong or expired; \
             fix it or unset it"
        ));
    }
    None
}

pub fn unexpected(resp: &ApiResponse, url: &str) -> anyhow::Error {
    let snippet: String = resp.body.chars().take(200).collect();
    anyhow!("{url} answered HTTP {}: {snippet}", resp.status)
}

/// Fails unless `url` is http(s).
pub fn check_url(url: &str, what: &str) -> Result<()> {
    if !(url.starts_with("https://") || url.starts_with("http://")) {
        bail!("{what} has an unusable URL `{url}`");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorities() {
        assert_eq!(
            authority("https://api.github.com/repos/x"),
            "api.github.com"
        );
        assert_eq!(authority("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(authority("https://u:p@Host.example/x?y"), "host.example");
    }
}
