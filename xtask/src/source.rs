//! Where releases come from: GitHub's API (the default), or a mirror made by
//! `resources mirror` — a directory or the same layout on any static web
//! server: `<tag>/release.json`, `<tag>/<asset>`, and `latest` naming a tag.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use crate::http::Http;
use crate::opts::{check_tag, Opts};
use crate::release::{self, Asset, Release, Resolved};

/// Release JSON documents are small; a larger file is not one.
const MAX_JSON: u64 = 32 << 20;

pub enum Source {
    GitHub,
    Dir(PathBuf),
    Url(String),
}

impl Source {
    pub fn from_opts(opts: &Opts) -> Source {
        match opts.source.as_deref() {
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

    pub fn describe(&self, opts: &Opts) -> String {
        match self {
            Source::GitHub => format!("{} on {}", opts.repo, opts.api),
            Source::Dir(d) => format!("the mirror {}", d.display()),
            Source::Url(u) => format!("the mirror {u}"),
        }
    }

    /// The release `version` names.
    pub fn resolve(&self, http: &Http, opts: &Opts) -> Result<Resolved> {
        match self {
            Source::GitHub => release::resolve(http, &opts.repo, &opts.version),
            Source::Dir(dir) => {
                let tag = if opts.version == "latest" {
                    let path = dir.join("latest");
                    read_small(&path)
                        .with_context(|| {
                            format!("{} is not a mirror (no `latest` file); make one with `cargo xtask resources mirror --output {}`", dir.display(), dir.display())
                        })?
                        .trim()
                        .to_string()
                } else {
                    opts.version.clone()
                };
                check_tag(&tag)
                    .with_context(|| format!("{}/latest names an unusable tag", dir.display()))?;
                let path = dir.join(&tag).join("release.json");
                let json = read_small(&path).map_err(|_| {
                    anyhow!(
                        "the mirror {} has no release {tag}; it has: {}",
                        dir.display(),
                        mirrored_tags(dir).join(", ")
                    )
                })?;
                parse(json, &path.display().to_string())
            }
            Source::Url(base) => {
                let tag = if opts.version == "latest" {
                    let url = format!("{base}/latest");
                    let resp = http.api_get(&url)?;
                    if resp.status != 200 {
                        bail!("{url} answered HTTP {}; is {base} a mirror made by `cargo xtask resources mirror`?", resp.status);
                    }
                    resp.body.trim().to_string()
                } else {
                    opts.version.clone()
                };
                check_tag(&tag).with_context(|| format!("{base}/latest names an unusable tag"))?;
                let url = format!("{base}/{tag}/release.json");
                let resp = http.api_get(&url)?;
                match resp.status {
                    200 => parse(resp.body, &url),
                    404 => bail!("the mirror {base} has no release {tag} ({url} answered 404)"),
                    s => bail!("{url} answered HTTP {s}"),
                }
            }
        }
    }

    /// Where to fetch `asset` of release `tag` from.
    pub fn asset_url(&self, tag: &str, asset: &Asset) -> String {
        match self {
            Source::GitHub => asset.browser_download_url.clone(),
            Source::Dir(dir) => format!("file://{}", dir.join(tag).join(&asset.name).display()),
            Source::Url(base) => format!("{base}/{tag}/{}", asset.name),
        }
    }
}

fn parse(json: String, origin: &str) -> Result<Resolved> {
    let release: Release = serde_json::from_str(&json)
        .with_context(|| format!("{origin} is not a release JSON document"))?;
    Ok(Resolved {
        release,
        json,
        note: None,
    })
}

fn read_small(path: &Path) -> Result<String> {
    let mut s = String::new();
    fs::File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))?
        .take(MAX_JSON)
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(s)
}

fn mirrored_tags(dir: &Path) -> Vec<String> {
    let mut tags: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.path().join("release.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    tags.sort();
    if tags.is_empty() {
        tags.push("no releases".into());
    }
    tags
}
