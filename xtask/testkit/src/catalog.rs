//! The served releases as the API shows them: JSON built like GitHub's,
//! with digests computed here, rebuilt after every change (a release
//! created, an asset uploaded or deleted).

use serde_json::{json, Value};

use crate::fixture::{sha256_file_hex, sha256_hex};
use crate::http1::pct_encode;
use crate::spec::{Body, DigestMode, ReleaseSpec};

/// Where the JSON's URLs point.
#[derive(Clone)]
pub(crate) struct Urls {
    pub(crate) api: String,
    pub(crate) uploads: String,
    pub(crate) owner: String,
    pub(crate) repo: String,
}

#[derive(Clone)]
pub(crate) struct Asset {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) body: Body,
    pub(crate) size: u64,
    pub(crate) sha: String,
    pub(crate) digest: DigestMode,
    /// `uploaded`, or `starter` for an upload that failed midway.
    pub(crate) state: &'static str,
}

#[derive(Clone)]
pub(crate) struct Release {
    pub(crate) id: u64,
    pub(crate) tag: String,
    pub(crate) prerelease: bool,
    pub(crate) draft: bool,
    pub(crate) published_at: String,
    pub(crate) assets: Vec<Asset>,
    /// What the API serves for this release.
    pub(crate) json: String,
    /// Set by a test that serves hand-made JSON: kept as it is.
    pub(crate) json_fixed: bool,
}

#[derive(Clone)]
pub(crate) struct Catalog {
    pub(crate) releases: Vec<Release>,
    pub(crate) urls: Urls,
    next_id: u64,
}

impl Catalog {
    pub(crate) fn by_tag(&self, tag: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.tag == tag)
    }

    pub(crate) fn asset(&self, tag: &str, name: &str) -> Option<&Asset> {
        self.by_tag(tag)?
            .assets
            .iter()
            .find(|a| a.name == name && a.state == "uploaded")
    }

    pub(crate) fn asset_by_id(&self, id: u64) -> Option<(&Release, &Asset)> {
        self.releases
            .iter()
            .find_map(|r| r.assets.iter().find(|a| a.id == id).map(|a| (r, a)))
    }

    /// The JSON of one asset, as the release lists it.
    pub(crate) fn asset_json(&self, rel: &Release, a: &Asset) -> Value {
        asset_json(&self.urls, rel, a)
    }

    /// A new release (newest first); its JSON.
    pub(crate) fn create(&mut self, tag: &str, draft: bool, prerelease: bool) -> String {
        self.next_id += 1;
        let mut r = Release {
            id: self.next_id,
            tag: tag.to_string(),
            prerelease,
            draft,
            published_at: "2024-06-01T12:00:00Z".into(),
            assets: Vec::new(),
            json: String::new(),
            json_fixed: false,
        };
        r.json = render(&self.urls, &r);
        let json = r.json.clone();
        self.releases.insert(0, r);
        json
    }

    /// Publishes the draft `tag`; whether there was one.
    pub(crate) fn publish(&mut self, tag: &str) -> bool {
        let urls = self.urls.clone();
        let Some(r) = self.releases.iter_mut().find(|r| r.tag == tag && r.draft) else {
            return false;
        };
        r.draft = false;
        if !r.json_fixed {
            r.json = render(&urls, r);
        }
        true
    }

    /// Adds an asset to release `id`; its JSON.
    pub(crate) fn add_asset(
        &mut self,
        id: u64,
        name: &str,
        data: Vec<u8>,
        state: &'static str,
    ) -> Option<Value> {
        self.next_id += 1;
        let asset_id = self.next_id;
        let urls = self.urls.clone();
        let r = self.releases.iter_mut().find(|r| r.id == id)?;
        let a = Asset {
            id: asset_id,
            name: name.to_string(),
            size: data.len() as u64,
            sha: sha256_hex(&data),
            body: Body::Bytes(std::sync::Arc::new(data)),
            digest: if state == "uploaded" {
                DigestMode::Correct
            } else {
                DigestMode::Missing
            },
            state,
        };
        let j = asset_json(&urls, r, &a);
        r.assets.push(a);
        if !r.json_fixed {
            r.json = render(&urls, r);
        }
        Some(j)
    }

    /// Deletes asset `id`; whether there was one.
    pub(crate) fn delete_asset(&mut self, id: u64) -> bool {
        let urls = self.urls.clone();
        for r in &mut self.releases {
            let before = r.assets.len();
            r.assets.retain(|a| a.id != id);
            if r.assets.len() != before {
                if !r.json_fixed {
                    r.json = render(&urls, r);
                }
                return true;
            }
        }
        false
    }
}

fn asset_json(urls: &Urls, rel: &Release, a: &Asset) -> Value {
    let (api, owner, repo) = (&urls.api, &urls.owner, &urls.repo);
    let digest = match a.digest {
        DigestMode::Correct => Value::String(format!("sha256:{}", a.sha)),
        DigestMode::Missing => Value::Null,
        // Hashing the hash gives a valid-looking, certainly different value.
        DigestMode::Wrong => Value::String(format!("sha256:{}", sha256_hex(a.sha.as_bytes()))),
    };
    json!({
        "url": format!("{api}/repos/{owner}/{repo}/releases/assets/{}", a.id),
        "id": a.id,
        "node_id": format!("RA_{}", a.id),
        "name": a.name,
        "label": "",
        "content_type": "application/octet-stream",
        "state": a.state,
        "size": a.size,
        "digest": digest,
        "download_count": 0,
        "created_at": rel.published_at,
        "updated_at": rel.published_at,
        "browser_download_url": format!(
            "{api}/{owner}/{repo}/releases/download/{}/{}",
            pct_encode(&rel.tag),
            pct_encode(&a.name)
        ),
    })
}

fn render(urls: &Urls, r: &Release) -> String {
    let (api, owner, repo, id, tag) = (&urls.api, &urls.owner, &urls.repo, r.id, &r.tag);
    let assets: Vec<Value> = r.assets.iter().map(|a| asset_json(urls, r, a)).collect();
    json!({
        "url": format!("{api}/repos/{owner}/{repo}/releases/{id}"),
        "assets_url": format!("{api}/repos/{owner}/{repo}/releases/{id}/assets"),
        "upload_url": format!("{}/repos/{owner}/{repo}/releases/{id}/assets{{?name,label}}", urls.uploads),
        "html_url": format!("{api}/{owner}/{repo}/releases/tag/{}", pct_encode(tag)),
        "tarball_url": format!("{api}/repos/{owner}/{repo}/tarball/{}", pct_encode(tag)),
        "zipball_url": format!("{api}/repos/{owner}/{repo}/zipball/{}", pct_encode(tag)),
        "id": id,
        "node_id": format!("RE_{id}"),
        "tag_name": tag,
        "target_commitish": "main",
        "name": tag,
        "body": "",
        "draft": r.draft,
        "prerelease": r.prerelease,
        "created_at": r.published_at,
        "published_at": if r.draft { Value::Null } else { Value::String(r.published_at.clone()) },
        "author": {"login": owner, "id": 1, "type": "User"},
        "assets": assets,
    })
    .to_string()
}

pub(crate) fn build_catalog(urls: Urls, specs: Vec<ReleaseSpec>) -> Catalog {
    let n = specs.len() as u64;
    let releases = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            // Older releases get smaller ids, as on GitHub.
            let id = 1_000_000 + (n - i as u64);
            let assets = spec
                .assets
                .into_iter()
                .enumerate()
                .map(|(j, a)| {
                    let (size, sha) = match &a.body {
                        Body::Bytes(b) => (b.len() as u64, sha256_hex(b)),
                        Body::File(p) => {
                            let size = std::fs::metadata(p)
                                .unwrap_or_else(|e| panic!("testkit: asset {}: {e}", p.display()))
                                .len();
                            let sha = sha256_file_hex(p)
                                .unwrap_or_else(|e| panic!("testkit: asset {}: {e}", p.display()));
                            (size, sha)
                        }
                    };
                    Asset {
                        id: id * 1000 + j as u64,
                        name: a.name,
                        body: a.body,
                        size,
                        sha,
                        digest: a.digest,
                        state: "uploaded",
                    }
                })
                .collect();
            let mut r = Release {
                id,
                tag: spec.tag,
                prerelease: spec.prerelease,
                draft: spec.draft,
                published_at: spec.published_at,
                assets,
                json: String::new(),
                json_fixed: false,
            };
            r.json = render(&urls, &r);
            r
        })
        .collect();
    Catalog {
        releases,
        urls,
        next_id: 2_000_000_000,
    }
}
