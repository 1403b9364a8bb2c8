//! Release lookup: which GitHub release a `--version` means (with the
//! pre-release fallback for `latest`), the paginated release list, and the
//! `list` step that shows them.

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::assets;
use crate::http::{self, Http};
use crate::opts::{Arch, Opts, Os};
use crate::text::Shown;

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Release {
    pub tag_name: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub draft: bool,
    #[serde(default)]
    pub prerelease: bool,
    #[serde(default)]
    pub published_at: Option<String>,
    #[serde(default)]
    pub assets: Vec<Asset>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Asset {
    pub name: String,
    pub size: u64,
    pub browser_download_url: String,
    /// `sha256:<hex>`; absent or null on assets uploaded before 2025.
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
}

/// A release as looked up, with a note when `latest` had to fall back.
pub struct Resolved {
    pub release: Release,
    /// The JSON the API sent, kept for mirrors.
    pub json: String,
    pub note: Option<String>,
}

fn releases_url(http: &Http, repo: &str) -> String {
    format!("{}/repos/{repo}/releases", http.api_base())
}

/// Finds the release `version` names (`latest` or a tag).
pub fn resolve(http: &Http, repo: &str, version: &str) -> Result<Resolved> {
    let base = releases_url(http, repo);
    if version == "latest" {
        let url = format!("{base}/latest");
        let resp = http.api_get(&url)?;
        if let Some(err) = http::api_refusal(&resp, &url, http) {
            return Err(err);
        }
        match resp.status {
            200 => return parse_release(resp.body, &url, None, None),
            404 => {}
            _ => return Err(http::unexpected(&resp, &url)),
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
    if let Some(err) = http::api_refusal(&resp, &url, http) {
        return Err(err);
    }
    match resp.status {
        200 => parse_release(resp.body, &url, None, Some(version)),
        404 => {
            let all = list_all(http, repo)
                .with_context(|| format!("release {version} does not exist in {repo}"))?;
            let newest: Vec<String> = all
                .iter()
                .take(10)
                .map(|r| crate::text::clean(&r.tag_name, 40))
                .collect();
            if newest.is_empty() {
                bail!("release {version} does not exist in {repo}, which has no releases");
            }
            bail!(
                "release {version} does not exist in {repo}; the newest tags are: {}",
                newest.join(", ")
            )
        }
        _ => Err(http::unexpected(&resp, &url)),
    }
}

fn parse_release(
    json: String,
    url: &str,
    note: Option<String>,
    asked: Option<&str>,
) -> Result<Resolved> {
    let release: Release = serde_json::from_str(&json).with_context(|| {
        format!(
            "{} did not answer with a release (unexpected JSON)",
            Shown(url)
        )
    })?;
    if let Some(tag) = asked {
        check_answered_tag(&release, tag, url)?;
    }
    Ok(Resolved {
        release,
        json,
        note,
    })
}

/// A release asked for by tag must answer with that tag: anything else is a
/// server (or mirror) that is not telling the truth about what it serves.
pub fn check_answered_tag(release: &Release, asked: &str, origin: &str) -> Result<()> {
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
    if let Some(err) = http::api_refusal(&resp, url, http) {
        return Err(err);
    }
    if resp.status != 200 {
        return Err(http::unexpected(&resp, url));
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
    let next = http::header(&resp.headers, "link").and_then(next_link);
    Ok((out, next))
}

/// Every release, newest first, following `Link: rel="next"`.
pub fn list_all(http: &Http, repo: &str) -> Result<Vec<Release>> {
    let mut url = Some(format!("{}?per_page=100", releases_url(http, repo)));
    let mut all = Vec::new();
    // GitHub caps listings at 10 000 entries; a longer chain is a loop.
    let mut pages = 0;
    while let Some(u) = url {
        pages += 1;
        if pages > 100 {
            bail!(
                "{}: the release list does not end (more than 100 pages)",
                Shown(&u)
            );
        }
        let (page, next) = list_page(http, &u)?;
        all.extend(page.into_iter().map(|(r, _)| r));
        url = next;
    }
    Ok(all)
}

/// The `rel="next"` target of a `Link` header.
pub fn next_link(link: &str) -> Option<String> {
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

/// Support status of one os/arch set, from the documentation's tables.
pub struct Support {
    pub kernel: &'static str,
    pub ubuntu: &'static str,
    pub stable: bool,
    pub gem5: bool,
}

pub fn support(os: Os, arch: Arch) -> Support {
    match (os, arch) {
        (Os::Focal, Arch::Amd64) => Support {
            kernel: "v5.4.84",
            ubuntu: "Ubuntu 20.04",
            stable: true,
            gem5: true,
        },
        (Os::Jammy, _) => Support {
            kernel: "v5.15.59",
            ubuntu: "Ubuntu 22.04",
            stable: false,
            gem5: false,
        },
        (Os::Focal, Arch::Arm64) => Support {
            kernel: "v5.4.84",
            ubuntu: "Ubuntu 20.04",
            stable: false,
            gem5: true,
        },
    }
}

impl Support {
    pub fn describe(&self) -> String {
        format!(
            "kernel {}, {}: {}, QEMU {}",
            self.kernel,
            self.ubuntu,
            if self.stable {
                "stable"
            } else {
                "experimental"
            },
            if self.gem5 {
                "+ gem5"
            } else {
                "only (no gem5 support)"
            }
        )
    }
}

/// `cargo xtask resources list`
pub fn list(opts: &Opts) -> Result<()> {
    let http = Http::new(&opts.http(opts.connections));
    let all = list_all(&http, &opts.repo)?;
    println!("Releases of {} (newest first):", opts.repo);
    if all.is_empty() {
        println!("  (none)");
    }
    for r in all.iter().filter(|r| !r.draft) {
        println!(
            "{}  {}{}",
            crate::text::clean(&r.tag_name, 60),
            crate::text::clean(r.published_at.as_deref().unwrap_or("(unpublished)"), 40),
            if r.prerelease { "  pre-release" } else { "" }
        );
        for os in Os::ALL {
            for arch in Arch::ALL {
                let line = match assets::select(r, os, arch) {
                    Ok(sel) => format!(
                        "complete, {} to download",
                        crate::fsutil::human_bytes(sel.total_size())
                    ),
                    Err(e) => match assets::missing(r, os, arch) {
                        Some(missing) => format!("missing: {}", missing.join(", ")),
                        None => format!(
                            "unusable: {}",
                            crate::text::clean(first_line(&e.to_string()), 160)
                        ),
                    },
                };
                println!("    {os:<5} {arch:<5}  {line}");
            }
        }
    }
    println!();
    println!("Support (from the documentation):");
    for os in Os::ALL {
        for arch in Arch::ALL {
            println!("  {os:<5} {arch:<5}  {}", support(os, arch).describe());
        }
    }
    println!("  test client: stable, QEMU + gem5, on both architectures");
    Ok(())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
