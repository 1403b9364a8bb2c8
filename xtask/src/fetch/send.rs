//! What the client sends: JSON to the API (create a release, delete an
//! asset) with the API's retries, and streamed uploads to an uploads host
//! that belongs to the API, the only other host the token may go to.

use std::io::Read;

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::http::{api_headers, ApiResponse, Failure, Http};
use super::url::{authority, check_url, origin};
use crate::util::text::{clean, Shown};

impl Http {
    /// POST (with a JSON body) or DELETE on the API, with the retries of
    /// [`Http::api_get`]. Redirects are not followed: GitHub sends none for
    /// these, and a body must not be sent to a host the API did not name.
    pub fn api_send(&self, method: &str, url: &str, json: Option<&Value>) -> Result<ApiResponse> {
        check_url(url, &clean(url, 200)).map_err(|e| anyhow!(e))?;
        self.with_retries(url, || {
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
                .timeout_global(Some(self.api_deadline))
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
    /// too, if that host belongs to the API: the same host (GitHub
    /// Enterprise), or `uploads.X` beside `api.X` (github.com).
    pub fn trust_uploads(&mut self, upload_url: &str) -> std::result::Result<(), String> {
        check_url(upload_url, "the release's upload_url")?;
        let host = |url: &str| {
            let a = authority(url);
            match a.rsplit_once(':') {
                Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
                _ => a,
            }
        };
        let (api, up) = (host(&self.api), host(upload_url));
        let sibling = api
            .strip_prefix("api.")
            .is_some_and(|rest| up.strip_prefix("uploads.") == Some(rest));
        let scheme_ok =
            upload_url.starts_with("https://") || self.api_origin.starts_with("http://");
        if (api == up || sibling) && scheme_ok {
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
