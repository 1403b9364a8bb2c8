//! Releases: their JSON, which release a `--version` means (with the
//! pre-release fallback for `latest`), the paginated release list, and the
//! rules a tag must follow to be used in a URL or a directory name.

use std::collections::HashSet;

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::api;
use fetch::{header, Http};
use util::text::Shown;

/// A GitHub release, as the API (or a mirror's `release.json`) gives it.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Release {
    /// The API's id (uploads and edits name the release by it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// `https://uploads.github.com/repos/o/r/releases/1/assets{?name,label}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_url: Option<String>,
    /// The tag, e.g. `v1.0`.
    pub tag_name: String,
    /// The title.
    #[serde(default)]
    pub name: Option<String>,
    /// A draft is never used.
    #[serde(default)]
    pub draft: bool,
    /// Whether it is marked a pre-release.
    #[serde(default)]
    pub prerelease: bool,
    /// When it was published (RFC 3339).
    #[serde(default)]
    pub published_at: Option<String>,
    /// Its assets.
    #[serde(default)]
    pub assets: Vec<Asset>,
}

/// One asset of a release.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Asset {
    /// The API's id (absent in a mirror).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    /// The file name.
    pub name: String,
    /// The size in bytes.
    pub size: u64,
    /// Where to download it.
    pub browser_download_url: String,
    /// `sha256:<hex>`; absent or null on assets uploaded before 2025.
    #[serde(default)]
    pub digest: Option<String>,
    /// `uploaded` when complete; another state is not usable.
    #[serde(default)]
    pub state: Option<String>,
}

impl Asset {
    /// The sha256 the release's `digest` gives (`sha256:<hex>`); None when
    /// it gives none or one of another algorithm; an error when it is not hex.
    pub fn sha256(&self) -> Result<Option<[u8; 32]>> {
        let Some(field) = self.digest.as_deref() else {
            return Ok(None);
        };
        let Some(hexs) = sha256_hex_of(field) else {
            // Another algorithm: nothing we can check, and not an error.
            return Ok(None);
        };
        util::fmt::parse_sha256_hex(hexs.trim())
            .map(Some)
            .ok_or_else(|| {
                anyhow!(
                    "asset {}: the release's digest `{}` is not a sha256 hex string",
                    Shown(&self.name),
                    util::text::clean(field, 80)
                )
            })
    }

    /// The release's `digest` when it is of an algorithm this tool does not
    /// check (not `sha256:`): the asset is then checked by size (and, for
    /// the disk, by the image's sums) only.
    pub fn unchecked_digest(&self) -> Option<&str> {
        self.digest
            .as_deref()
            .filter(|d| sha256_hex_of(d).is_none())
    }
}

/// The hex of a `sha256:<hex>` digest field; the algorithm's name in any
/// case, as the old upload compared it.
fn sha256_hex_of(field: &str) -> Option<&str> {
    let (algo, hexs) = field.split_once(':')?;
    algo.eq_ignore_ascii_case("sha256").then_some(hexs)
}

/// A release as looked up, with a note when `latest` had to fall back.
pub struct Resolved {
    /// The release.
    pub release: Release,
    /// The JSON the API sent, kept for mirrors.
    pub json: String,
    /// A note to say about how it was resolved, if any.
    pub note: Option<String>,
}

pub(crate) fn releases_url(http: &Http, repo: &str) -> String {
    format!("{}/repos/{repo}/releases", http.api_base())
}

/// Finds the release `version` names (`latest` or a tag).
pub fn resolve(http: &Http, repo: &str, version: &str) -> Result<Resolved> {
    let base = releases_url(http, repo);
    if version == "latest" {
        let url = format!("{base}/latest");
        let resp = http.api_get(&url)?;
        if let Some(err) = api::api_refusal(&resp, &url, http) {
            return Err(err);
        }
        match resp.status {
            200 => return parse_release(resp.body, &url, None, None),
            404 => {}
            _ => return Err(api::unexpected(&resp, &url)),
        }
        // Upstream publishes every release as a pre-release, which GitHub's
        // `latest` skips: take the newest non-draft from the list instead.
        let (first_page, _) = list_page(http, &format!("{base}?per_page=100"))?;
        let newest = first_page
            .into_iter()
            .find(|(r, _)| !r.draft)
            .ok_or_else(|| anyhow!("{repo} has no published releases ({base})"))?;
        let note = format!(
            "{repo} has no release marked latest (all are pre-releases); using the newest, {}",
            Shown(&newest.0.tag_name)
        );
        return Ok(Resolved {
            release: newest.0,
            json: newest.1,
            note: Some(note),
        });
    }
    let url = format!("{base}/tags/{version}");
    let resp = http.api_get(&url)?;
    if let Some(err) = api::api_refusal(&resp, &url, http) {
        return Err(err);
    }
    match resp.status {
        200 => parse_release(resp.body, &url, None, Some(version)),
        404 => {
            // Walked page by page; only the newest ten names are kept.
            let mut newest: Vec<String> = Vec::new();
            for_each_release(http, repo, |r| {
                if newest.len() < 10 {
                    newest.push(util::text::clean(&r.tag_name, 40));
                }
                Ok(())
            })
            .with_context(|| format!("release {version} does not exist in {repo}"))?;
            if newest.is_empty() {
                bail!("release {version} does not exist in {repo}, which has no releases");
            }
            bail!(
                "release {version} does not exist in {repo}; the newest tags are: {}",
                newest.join(", ")
            )
        }
        _ => Err(api::unexpected(&resp, &url)),
    }
}

/// Reads a release JSON document from `origin` (a URL or a mirror's
/// file); when a tag was `asked` for, the release must be that tag.
pub fn parse_release(
    json: String,
    origin: &str,
    note: Option<String>,
    asked: Option<&str>,
) -> Result<Resolved> {
    let release: Release = serde_json::from_str(&json)
        .with_context(|| format!("{} is not a release (unexpected JSON)", Shown(origin)))?;
    if let Some(tag) = asked {
        check_answered_tag(&release, tag, origin)?;
    }
    Ok(Resolved {
        release,
        json,
        note,
    })
}

/// A release asked for by tag must answer with that tag: anything else is a
/// server (or mirror) that is not telling the truth about what it serves.
pub(crate) fn check_answered_tag(release: &Release, asked: &str, origin: &str) -> Result<()> {
    if release.tag_name != asked {
        bail!(
            "{} answered with release {} when asked for {asked}; the server is not serving \
             what was asked, refusing it",
            Shown(origin),
            Shown(&release.tag_name)
        );
    }
    Ok(())
}

/// Releases of one page, each with its own JSON, and the next page's URL.
type Page = (Vec<(Release, String)>, Option<String>);

fn list_page(http: &Http, url: &str) -> Result<Page> {
    let resp = http.api_get(url)?;
    if let Some(err) = api::api_refusal(&resp, url, http) {
        return Err(err);
    }
    if resp.status != 200 {
        return Err(api::unexpected(&resp, url));
    }
    let values: Vec<serde_json::Value> = serde_json::from_str(&resp.body)
        .with_context(|| format!("{} did not answer with a release list", Shown(url)))?;
    let mut out = Vec::with_capacity(values.len());
    for v in values {
        let json = v.to_string();
        let r: Release = serde_json::from_value(v)
            .with_context(|| format!("{} listed a release in an unexpected form", Shown(url)))?;
        out.push((r, json));
    }
    let next = header(&resp.headers, "link").and_then(next_link);
    Ok((out, next))
}

/// Every release, newest first, following `Link: rel="next"`, handed to
/// `each` page by page so that only one page is held at a time. Each release
/// is handed on once (by id, else by tag: a release published during the
/// walk shifts the pages), and a list that loops (a page read before, or one
/// that adds no release) ends there with a note.
pub fn for_each_release(
    http: &Http,
    repo: &str,
    mut each: impl FnMut(Release) -> Result<()>,
) -> Result<()> {
    let mut url = Some(format!("{}?per_page=100", releases_url(http, repo)));
    let mut pages: HashSet<String> = HashSet::new();
    let mut releases: HashSet<String> = HashSet::new();
    while let Some(u) = url {
        // GitHub caps listings at 10 000 entries: 100 pages of 100.
        if pages.len() >= 100 {
            bail!(
                "{}: the release list does not end (more than 100 pages)",
                Shown(&u)
            );
        }
        if !pages.insert(u.clone()) {
            list_loops(&u, "links back to a page already read");
            break;
        }
        let (page, next) = list_page(http, &u)?;
        let mut new = 0;
        for (r, _) in page {
            let key =
                r.id.map_or_else(|| format!("tag {}", r.tag_name), |id| format!("id {id}"));
            if releases.insert(key) {
                new += 1;
                each(r)?;
            }
        }
        if new == 0 && next.is_some() {
            list_loops(&u, "holds no release not listed before");
            break;
        }
        url = next;
    }
    Ok(())
}

fn list_loops(url: &str, why: &str) {
    note!(
        "the release list repeats itself ({} {why}); stopped there, each release \
         listed once",
        Shown(url)
    );
}

/// The `rel="next"` target of a `Link` header.
pub(crate) fn next_link(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (target, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().replace(' ', "") == "rel=\"next\"");
        let target = target.trim();
        (is_next && target.starts_with('<') && target.ends_with('>'))
            .then(|| target[1..target.len() - 1].to_string())
    })
}

/// `latest`, or a tag as GitHub allows it in a URL path segment. Rejecting
/// anything else keeps a typo from turning into a request for another path.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= 100
        && tag != "."
        && tag != ".."
        && tag
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'+'));
    if !ok {
        bail!(
            "invalid --version `{}`: expected `latest` or a release tag such as v0.3.0",
            util::text::clean(tag, 60)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asset(digest: Option<&str>) -> Asset {
        serde_json::from_value(serde_json::json!({
            "name": "a", "size": 1, "browser_download_url": "http://x/a", "digest": digest,
        }))
        .unwrap()
    }

    #[test]
    fn a_sha256_digest_is_read_whatever_the_case_of_its_algorithm() {
        let hex = "ab".repeat(32);
        for field in [
            format!("sha256:{hex}"),
            format!("SHA256:{}", hex.to_uppercase()),
        ] {
            let a = asset(Some(&field));
            assert_eq!(a.sha256().unwrap(), Some([0xab; 32]), "{field}");
            assert_eq!(a.unchecked_digest(), None);
        }
        let md5 = asset(Some("md5:00"));
        assert_eq!(md5.sha256().unwrap(), None);
        assert_eq!(md5.unchecked_digest(), Some("md5:00"));
        assert!(asset(Some("sha256:zz")).sha256().is_err());
        assert_eq!(asset(None).sha256().unwrap(), None);
    }

    #[test]
    fn link_header() {
        let h = r#"<https://api.github.com/repositories/1/releases?per_page=100&page=2>; rel="next", <https://api.github.com/repositories/1/releases?per_page=100&page=3>; rel="last""#;
        assert_eq!(
            next_link(h).as_deref(),
            Some("https://api.github.com/repositories/1/releases?per_page=100&page=2")
        );
        assert_eq!(next_link(r#"<https://x/?page=1>; rel="prev""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    #[test]
    fn tags() {
        for ok in ["latest", "v0.3.0", "v1.0.0-rc.1", "release_2"] {
            check_tag(ok).unwrap();
        }
        for bad in ["", "..", "v1/../x", "v 1", "a?b", "%2e"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }
}
