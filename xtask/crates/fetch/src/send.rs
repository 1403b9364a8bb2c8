//! What the client sends: JSON to the API (create a release, delete an
//! asset) with the API's retries, and streamed uploads to an uploads host
//! that belongs to the API, the only other host the token may go to.

use std::io::Read;
use std::time::Instant;

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::http::{api_headers, ApiResponse, Failure, Http};
use super::url::{authority, check_url, origin};
use util::text::{clean, Shown};

impl Http {
    /// POST (with a JSON body) or DELETE on the API, with the retries of
    /// [`Http::api_get`]. Redirects are not followed: GitHub sends none for
    /// these, and a body must not be sent to a host the API did not name.
    pub fn api_send(&self, method: &str, url: &str, json: Option<&Value>) -> Result<ApiResponse> {
        check_url(url, &clean(url, 200)).map_err(|e| anyhow!(e))?;
        self.with_retries(url, |deadline| {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in api_headers() {
                req = req.header(k, v);
            }
            if let Some(auth) = self.auth_for(url) {
                req = req.header("Authorization", auth);
            }
            let body = json.map(|v| v.to_string()).unwrap_or_default();
            if json.is_some() {
                req = req.header("Content-Type", "application/json");
            }
            let req = req
                .body(body)
                .map_err(|e| Failure::Fatal(format!("{}: {e}", Shown(url))))?;
            let req = self
                .agent
                .configure_request(req)
                .timeout_global(Some(deadline.saturating_duration_since(Instant::now())))
                .build();
            let resp = self.agent.run(req).map_err(|e| self.classify(&e, url))?;
            self.read_answer(resp, url)
        })
    }

    /// POSTs `len` bytes from `body` to an uploads URL (one try: a failed
    /// upload may leave an asset behind that the caller must look at first).
    /// `progress` hears of every chunk sent.
    pub fn upload(
        &self,
        url: &str,
        body: &mut dyn Read,
        len: u64,
        progress: &dyn Fn(u64),
    ) -> std::result::Result<ApiResponse, Failure> {
        check_url(url, &clean(url, 200)).map_err(Failure::Fatal)?;
        let mut counted = Counted {
            inner: body,
            progress,
        };
        let mut req = self
            .agent
            .post(url)
            .header("Accept", "application/vnd.github+json")
            .header("Content-Type", "application/octet-stream")
            .header("Content-Length", len.to_string());
        if let Some(auth) = self.auth_for(url) {
            req = req.header("Authorization", auth);
        }
        let resp = req
            .send(ureq::SendBody::from_reader(&mut counted))
            .map_err(|e| self.classify(&e, url))?;
        self.read_answer(resp, url)
    }

    /// Lets the token go to the uploads host a release's `upload_url` names
    /// too, if that host belongs to the API: the API's own origin (GitHub
    /// Enterprise's `/api/uploads`), or `https://uploads.X` beside
    /// `https://api.X` (github.com), on the same port either way.
    pub fn trust_uploads(&mut self, upload_url: &str) -> std::result::Result<(), String> {
        check_url(upload_url, "the release's upload_url")?;
        let (api_scheme, api_host, api_port) = endpoint(&self.api);
        let (up_scheme, up_host, up_port) = endpoint(upload_url);
        let same = api_scheme == up_scheme && api_host == up_host && api_port == up_port;
        let sibling = api_scheme == "https"
            && up_scheme == "https"
            && api_port == up_port
            && api_host
                .strip_prefix("api.")
                .is_some_and(|rest| up_host.strip_prefix("uploads.") == Some(rest));
        if same || sibling {
            self.trusted.push(origin(upload_url));
            return Ok(());
        }
        Err(format!(
            "the release's upload_url points at {}, which does not belong to the API host {}; \
             refusing to send the token there",
            clean(&authority(upload_url), 100),
            authority(&self.api)
        ))
    }
}

/// (scheme, host, port) of `url`, the port defaulted from the scheme.
fn endpoint(url: &str) -> (String, String, Option<u16>) {
    let scheme = url
        .split_once("://")
        .map_or(String::new(), |(s, _)| s.to_ascii_lowercase());
    let auth = authority(url);
    let (host, port) = if let Some(rest) = auth.strip_prefix('[') {
        // [v6]:port
        match rest.split_once(']') {
            Some((h, p)) => (format!("[{h}]"), p.strip_prefix(':').unwrap_or("")),
            None => (auth.clone(), ""),
        }
    } else {
        match auth.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (auth.clone(), ""),
        }
    };
    let port = if port.is_empty() {
        match scheme.as_str() {
            "https" => Some(443),
            "http" => Some(80),
            _ => None,
        }
    } else {
        port.parse().ok()
    };
    (scheme, host, port)
}

/// Counts the bytes an upload reads, for progress.
struct Counted<'a> {
    inner: &'a mut dyn Read,
    progress: &'a dyn Fn(u64),
}

impl Read for Counted<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Config;

    fn http(api: &str) -> Http {
        Http::new(&Config {
            api: api.into(),
            connections: 1,
            token: None,
            timeout: std::time::Duration::from_secs(5),
            proxy: None,
        })
    }

    #[test]
    fn uploads_host_must_belong_to_the_api() {
        let ok = [
            (
                "https://api.github.com",
                "https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}",
            ),
            ("https://api.github.com", "https://uploads.github.com:443/x"),
            (
                "https://ghe.example/api/v3",
                "https://ghe.example/api/uploads/repos/o/r/releases/1/assets",
            ),
            (
                "http://127.0.0.1:8080",
                "http://127.0.0.1:8080/api/uploads/x",
            ),
        ];
        for (api, up) in ok {
            assert!(http(api).trust_uploads(up).is_ok(), "{api} {up}");
        }
        let bad = [
            (
                "https://api.github.com",
                "https://uploads.github.com:8443/x",
            ),
            ("https://api.github.com", "http://uploads.github.com/x"),
            ("https://api.github.com", "https://uploads.evil.com/x"),
            ("https://api.github.com", "https://evil.com/x"),
            ("http://127.0.0.1:8080", "http://127.0.0.1:9090/x"),
            ("https://ghe.example", "http://ghe.example/x"),
        ];
        for (api, up) in bad {
            assert!(http(api).trust_uploads(up).is_err(), "{api} {up}");
        }
    }
}
