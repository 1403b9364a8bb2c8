//! Writing to a repository's releases: find the release a tag names
//! (drafts too, which only the list shows) or an id names, create one,
//! delete an asset, and upload a file as an asset to the uploads host its
//! `upload_url` names. What GitHub's refusals mean is said here, per call.

use std::io::Read;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::json;

use super::api;
use super::release::{for_each_release, releases_url, Asset, Release};
use fetch::{ApiResponse, Failure, Http};
use util::text::Shown;

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

/// The release whose API id is `id`, or None (404). Drafts answer too, to
/// a token that may push (upstream's workflows name the release so, as
/// `RELEASE_ID`). An answer for another id is refused.
pub fn release_by_id(http: &Http, repo: &str, id: u64) -> Result<Option<Release>> {
    let url = format!("{}/{id}", releases_url(http, repo));
    let resp = http.api_get(&url)?;
    if let Some(e) = api::api_refusal(&resp, &url, http) {
        return Err(e);
    }
    if resp.status == 404 {
        return Ok(None);
    }
    refused(&resp, &url, http, repo)?;
    if resp.status != 200 {
        return Err(api::unexpected(&resp, &url));
    }
    let r: Release = serde_json::from_str(&resp.body)
        .with_context(|| format!("{} is not a release (unexpected JSON)", Shown(&url)))?;
    if r.id != Some(id) {
        bail!(
            "{} answered with release id {} when asked for {id}; the server is not serving \
             what was asked, refusing it",
            Shown(&url),
            r.id.map_or_else(|| "(none)".to_string(), |i| i.to_string())
        );
    }
    Ok(Some(r))
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

/// The RFC 6570 expression GitHub ends every `upload_url` with.
const UPLOAD_TEMPLATE: &str = "{?name,label}";

/// A release's `upload_url`, read once: the base URL before its
/// `{?name,label}` template, strictly checked (see [`fetch::check_strict`]).
/// Every URL a file is sent to is built from it and checked again.
pub struct UploadUrl {
    base: fetch::Checked,
}

impl UploadUrl {
    /// `upload_url` must be a strict URL with no query, followed by exactly
    /// `{?name,label}`: anything else is refused, naming GitHub's form.
    pub fn parse(upload_url: &str) -> Result<UploadUrl> {
        let what = "the release's upload_url";
        let form = format!("GitHub's form is https://uploads.github.com/…/assets{UPLOAD_TEMPLATE}");
        let Some(base) = upload_url.strip_suffix(UPLOAD_TEMPLATE) else {
            bail!(
                "{what} `{}` does not end with {UPLOAD_TEMPLATE}; {form}; the API's answer is \
                 not GitHub's, nothing was sent",
                Shown(upload_url)
            );
        };
        let base = fetch::check_strict(base, what)
            .map_err(|e| anyhow!("{e}; {form}; nothing was sent"))?;
        if base.has_query {
            bail!(
                "{what} `{}` has a query before its template; {form}; nothing was sent",
                Shown(upload_url)
            );
        }
        Ok(UploadUrl { base })
    }

    /// The base URL, for `Http::trust_uploads`.
    pub fn base(&self) -> &str {
        &self.base.url
    }

    /// The template expanded for an asset `name` without a label (RFC 6570
    /// form-style query: an undefined variable is left out), checked again:
    /// what is returned is what is sent, on the base's origin.
    pub fn for_name(&self, name: &str) -> Result<String> {
        let target = format!("{}?name={}", self.base.url, query_encode(name));
        let checked = fetch::check_strict(&target, "the upload URL").map_err(|e| anyhow!(e))?;
        if checked.origin != self.base.origin {
            bail!(
                "the upload URL {} is not on {}; refusing to send to it",
                Shown(&target),
                self.base.origin
            );
        }
        Ok(checked.url)
    }
}

/// How one upload ended.
pub enum Sent {
    /// The asset is uploaded.
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

#[cfg(test)]
mod tests {
    use super::UploadUrl;

    #[test]
    fn upload_urls_expand_githubs_template_and_nothing_else() {
        let u =
            UploadUrl::parse("https://uploads.github.com/repos/o/r/releases/7/assets{?name,label}")
                .unwrap();
        assert_eq!(
            u.base(),
            "https://uploads.github.com/repos/o/r/releases/7/assets"
        );
        assert_eq!(
            u.for_name("disk a+b.tar.gz.aa").unwrap(),
            "https://uploads.github.com/repos/o/r/releases/7/assets?name=disk%20a%2Bb.tar.gz.aa"
        );
        for bad in [
            "http://127.0.0.3:1{@127.0.0.1:2/uploads/x/assets{?name,label}",
            "http://127.0.0.3:1{?name,label}@127.0.0.1:2/x{?name,label}",
            "https://u@uploads.github.com/x/assets{?name,label}",
            "https://uploads.github.com/x/assets",
            "https://uploads.github.com/x/assets{?name}",
            "https://uploads.github.com/x/assets{?name,label}x",
            "https://uploads.github.com/x/{id}/assets{?name,label}",
            "https://uploads.github.com/x/assets?a=b{?name,label}",
            "https://uploads.github.com/x/assets#f{?name,label}",
            "https://uploads.github.com/x /assets{?name,label}",
            "ftp://uploads.github.com/x/assets{?name,label}",
        ] {
            let e = UploadUrl::parse(bad)
                .err()
                .unwrap_or_else(|| panic!("took {bad}"));
            assert!(format!("{e:#}").contains("upload_url"), "{bad}: {e:#}");
        }
    }
}
