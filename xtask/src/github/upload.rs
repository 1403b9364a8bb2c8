//! Writing to a repository's releases: find the release a tag names
//! (drafts too, which only the list shows), create one, delete an asset,
//! and upload a file as an asset to the uploads host its `upload_url`
//! names. What GitHub's refusals mean is said here, per call.

use std::io::Read;

use anyhow::{bail, Context, Result};
use serde_json::json;

use super::api;
use super::release::{for_each_release, releases_url, Asset, Release};
use crate::fetch::http::{ApiResponse, Failure, Http};
use crate::util::text::Shown;

/// The release tagged `tag`, drafts included, or None.
pub fn find_release(http: &Http, repo: &str, tag: &str) -> Result<Option<Release>> {
    let url = format!("{}/tags/{tag}", releases_url(http, repo));
    let resp = http.api_get(&url)?;
    refused(&resp, &url, http, repo)?;
    match resp.status {
        200 => {
            let r: Release = serde_json::from_str(&resp.body)
                .with_context(|| format!("{} is not a release (unexpected JSON)", Shown(&url)))?;
            super::release::check_answered_tag(&r, tag, &url)?;
            return Ok(Some(r));
        }
        404 => {}
        _ => return Err(api::unexpected(&resp, &url)),
    }
    // A draft has no tag route; the list shows it to those who may push.
    let mut found = None;
    for_each_release(http, repo, |r| {
        if found.is_none() && r.tag_name == tag {
            found = Some(r);
        }
        Ok(())
    })?;
    Ok(found)
}

/// Creates the release `tag` as a pre-release (as upstream's release
/// workflow does), published or a draft.
pub fn create_release(http: &Http, repo: &str, tag: &str, draft: bool) -> Result<Release> {
    let url = releases_url(http, repo);
    let body = json!({
        "tag_name": tag,
        "name": tag,
        "draft": draft,
        "prerelease": true,
    });
    let resp = http.api_send("POST", &url, Some(&body))?;
    refused(&resp, &url, http, repo)?;
    match resp.status {
        201 | 200 => serde_json::from_str(&resp.body)
            .with_context(|| format!("{} did not answer with a release", Shown(&url))),
        422 => bail!(
            "{} refused to create release {tag} (HTTP 422: {}); a release with that tag may \
             exist already, or the tag name is not allowed",
            Shown(&url),
            Shown(&resp.body)
        ),
        _ => Err(api::unexpected(&resp, &url)),
    }
}

/// Deletes asset `id` of `repo` (the URL is built here, not taken from
/// the server, so a DELETE only ever goes to the API).
pub fn delete_asset(http: &Http, repo: &str, id: u64, name: &str) -> Result<()> {
    let url = format!("{}/assets/{id}", releases_url(http, repo));
    let resp = http.api_send("DELETE", &url, None)?;
    // Already gone (GitHub cleaned a starter up, or another run deleted it).
    if resp.status == 404 {
        return Ok(());
    }
    refused(&resp, &url, http, repo)?;
    match resp.status {
        204 | 200 => Ok(()),
        _ => Err(api::unexpected(&resp, &url))
            .with_context(|| format!("cannot delete the asset {}", Shown(name))),
    }
}

/// The URL a file named `name` is uploaded to: `upload_url` (a release's,
/// already vetted by `Http::trust_uploads`) without its `{?name,label}`
/// template, with the name as a query.
pub fn upload_target(upload_url: &str, name: &str) -> String {
    let base = upload_url.split('{').next().unwrap_or(upload_url);
    format!("{base}?name={}", query_encode(name))
}

/// How one upload ended.
pub enum Sent {
    Done(Asset),
    /// Worth another try after the release is looked at again (a cut
    /// connection, a 5xx): GitHub may have kept a `starter` asset.
    Retry(String),
}

/// Uploads `len` bytes of `body` as `name` to `url`; `progress` hears of
/// every chunk.
pub fn upload_asset(
    http: &Http,
    url: &str,
    repo: &str,
    name: &str,
    body: &mut dyn Read,
    len: u64,
    progress: &dyn Fn(u64),
) -> Result<Sent> {
    let resp = match http.upload(url, body, len, progress) {
        Ok(r) => r,
        Err(Failure::Transient(m)) => return Ok(Sent::Retry(m)),
        Err(Failure::Fatal(m)) => bail!("uploading {}: {m}", Shown(name)),
    };
    refused(&resp, url, http, repo)?;
    match resp.status {
        201 | 200 => {
            let a: Asset = serde_json::from_str(&resp.body)
                .with_context(|| format!("{} did not answer with an asset", Shown(url)))?;
            Ok(Sent::Done(a))
        }
        422 => bail!(
            "the release already has an asset named {} (GitHub answered 422); run again to \
             compare it, or pass --clobber to replace it",
            Shown(name)
        ),
        408 | 429 | 500..=599 => Ok(Sent::Retry(format!(
            "{} answered HTTP {}",
            Shown(url),
            resp.status
        ))),
        _ => Err(api::unexpected(&resp, url)),
    }
}

/// 401, 403 and 404 on a write say what the token lacks.
fn refused(resp: &ApiResponse, url: &str, http: &Http, repo: &str) -> Result<()> {
    if let Some(e) = api::api_refusal(resp, url, http) {
        return Err(e);
    }
    let var = http.token_var();
    match resp.status {
        403 => bail!(
            "{} answered 403: the token in {var} may not write releases of {repo}; it needs \
             `contents: write` (a fine-grained token or GITHUB_TOKEN in a workflow with \
             `permissions: contents: write`) or the `repo` scope (a classic token)",
            Shown(url)
        ),
        404 if !url.contains("/releases/tags/") => bail!(
            "{} answered 404: {repo} does not exist, or the token in {var} cannot see it",
            Shown(url)
        ),
        _ => Ok(()),
    }
}

/// Percent-encodes everything outside RFC 3986's unreserved set.
fn query_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
