//! Where releases come from: GitHub's API (the default), or a mirror made by
//! `resources mirror` — a directory or the same layout on any static web
//! server: `<tag>/release.json`, `<tag>/<asset>`, and `latest` naming a tag.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::release::{self, check_tag, Asset, Release, Resolved};
use fetch::Http;
use fetch::Origin;
use util::fs as fsutil;
use util::text::Shown;

/// Release JSON documents are small; a larger file is not one.
pub const MAX_JSON: u64 = 32 << 20;
/// A mirror's (and the cache's) release document, in each tag's directory.
pub const RELEASE_JSON: &str = "release.json";
/// A `latest` file names one tag.
const MAX_LATEST: u64 = 256;

/// Where releases come from.
pub enum Source {
    /// GitHub's API.
    GitHub,
    /// A mirror directory on this machine.
    Dir(PathBuf),
    /// A mirror served over HTTP(S).
    Url(String),
}

impl Source {
    /// The source `--source` names (a URL or a directory), else GitHub.
    pub fn new(source: Option<&str>) -> Source {
        match source {
            None => Source::GitHub,
            Some(s) if s.starts_with("http://") || s.starts_with("https://") => {
                Source::Url(s.trim_end_matches('/').to_string())
            }
            Some(s) => {
                let p = PathBuf::from(s);
                // Absolute, so file:// URLs of its assets mean the same from anywhere.
                let p = std::path::absolute(&p).unwrap_or(p);
                Source::Dir(p)
            }
        }
    }

    /// Whether this is a mirror directory (read in place, never cached).
    pub fn is_dir(&self) -> bool {
        matches!(self, Source::Dir(_))
    }

    /// For messages: `OWNER/NAME on API`, or `the mirror …`.
    pub fn name(&self, repo: &str, api: &str) -> String {
        match self {
            Source::GitHub => format!("{repo} on {api}"),
            Source::Dir(d) => format!("the mirror {}", d.display()),
            Source::Url(u) => format!("the mirror {}", Shown(u)),
        }
    }

    /// The release `version` (`latest` or a tag) names.
    pub fn resolve(&self, http: &Http, repo: &str, version: &str) -> Result<Resolved> {
        match self {
            Source::GitHub => release::resolve(http, repo, version),
            Source::Dir(dir) => {
                let tag = if version == "latest" {
                    let path = dir.join("latest");
                    if !path.exists() {
                        bail!(
                            "{} is not a mirror (no `latest` file); make one with `cargo xtask resources mirror --output {}`",
                            dir.display(),
                            dir.display()
                        );
                    }
                    fsutil::read_input(&path, MAX_LATEST)?.trim().to_string()
                } else {
                    version.to_string()
                };
                check_tag(&tag)
                    .with_context(|| format!("{}/latest names an unusable tag", dir.display()))?;
                let path = dir.join(&tag).join("release.json");
                if !path.exists() {
                    bail!(
                        "the mirror {} has no release {tag}; it has: {}",
                        dir.display(),
                        mirrored_tags(dir).join(", ")
                    );
                }
                let json = fsutil::read_input(&path, MAX_JSON)?;
                release::parse_release(json, &path.display().to_string(), None, Some(&tag))
            }
            Source::Url(base) => {
                let tag = if version == "latest" {
                    let url = format!("{base}/latest");
                    let resp = http.api_get(&url)?;
                    if resp.status != 200 {
                        bail!(
                            "{} answered HTTP {}; is {} a mirror made by `cargo xtask resources mirror`?",
                            Shown(&url),
                            resp.status,
                            Shown(base)
                        );
                    }
                    if resp.body.len() as u64 > MAX_LATEST {
                        bail!(
                            "{} is {} bytes, not a tag name; is {} a mirror made by `cargo xtask resources mirror`?",
                            Shown(&url),
                            resp.body.len(),
                            Shown(base)
                        );
                    }
                    resp.body.trim().to_string()
                } else {
                    version.to_string()
                };
                check_tag(&tag)
                    .with_context(|| format!("{}/latest names an unusable tag", Shown(base)))?;
                let url = format!("{base}/{tag}/release.json");
                let resp = http.api_get(&url)?;
                match resp.status {
                    200 => release::parse_release(resp.body, &url, None, Some(&tag)),
                    404 => bail!(
                        "the mirror {} has no release {tag} ({} answered 404)",
                        Shown(base),
                        Shown(&url)
                    ),
                    s => bail!("{} answered HTTP {s}", Shown(&url)),
                }
            }
        }
    }

    /// Where to fetch `asset` of release `tag` from. A URL from the release
    /// must be http(s); a local path only ever comes from a mirror directory.
    pub fn asset_origin(&self, tag: &str, asset: &Asset) -> Result<Origin> {
        match self {
            Source::GitHub => {
                let what = format!("asset {}", Shown(&asset.name));
                fetch::check_url(&asset.browser_download_url, &what).map_err(|e| anyhow!(e))?;
                Ok(Origin::Url(asset.browser_download_url.clone()))
            }
            Source::Dir(dir) => Ok(Origin::Local(dir.join(tag).join(&asset.name))),
            Source::Url(base) => Ok(Origin::Url(format!("{base}/{tag}/{}", asset.name))),
        }
    }

    /// The releases a mirror holds, newest first, each read as
    /// [`Source::resolve`] reads it (one it cannot read is its error, under
    /// its tag): every `<tag>/release.json` of a directory; a URL mirror
    /// has no index, so the release its `latest` names. None for GitHub.
    pub fn mirrored_releases(&self, http: &Http) -> Result<Vec<(String, Result<Release>)>> {
        let mut all: Vec<(String, Result<Release>)> = match self {
            Source::GitHub => Vec::new(),
            Source::Url(_) => {
                let r = self.resolve(http, "", "latest")?.release;
                vec![(r.tag_name.clone(), Ok(r))]
            }
            Source::Dir(dir) => {
                if !dir.is_dir() {
                    bail!(
                        "the mirror {} is not a directory; make one with `cargo xtask resources \
                         mirror --output DIR`",
                        dir.display()
                    );
                }
                tags_in(dir)
                    .into_iter()
                    .map(|t| {
                        let r = self.resolve(http, "", &t).map(|r| r.release);
                        (t, r)
                    })
                    .collect()
            }
        };
        // Newest first: by publication time, then by tag; unreadable ones last.
        all.sort_by(|(ta, a), (tb, b)| {
            let key = |r: &Result<Release>| r.as_ref().ok().map(|r| r.published_at.clone());
            key(b).cmp(&key(a)).then(tb.cmp(ta))
        });
        Ok(all)
    }
}

/// The tags a mirror directory holds: its subdirectories with a
/// `release.json` whose name is a usable tag (at most 1000), sorted.
fn tags_in(dir: &Path) -> Vec<String> {
    let mut tags: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|t| check_tag(t).is_ok() && dir.join(t).join(RELEASE_JSON).is_file())
                .take(1000)
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    tags
}

fn mirrored_tags(dir: &Path) -> Vec<String> {
    let tags = tags_in(dir);
    if tags.is_empty() {
        return vec!["no releases".into()];
    }
    tags
}
