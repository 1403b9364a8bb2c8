//! The served releases as the API shows them: JSON built like GitHub's,
//! with digests computed here.

use serde_json::{json, Value};

use crate::fixture::{sha256_file_hex, sha256_hex};
use crate::http1::pct_encode;
use crate::spec::{Body, DigestMode, ReleaseSpec};

#[derive(Clone)]
pub(crate) struct Asset {
    pub(crate) id: u64,
    pub(crate) name: String,
    pub(crate) body: Body,
    pub(crate) size: u64,
}

#[derive(Clone)]
pub(crate) struct Release {
    pub(crate) id: u64,
    pub(crate) tag: String,
    pub(crate) prerelease: bool,
    pub(crate) draft: bool,
    pub(crate) assets: Vec<Asset>,
    pub(crate) json: String,
}

#[derive(Clone)]
pub(crate) struct Catalog {
    pub(crate) releases: Vec<Release>,
}

impl Catalog {
    pub(crate) fn by_tag(&self, tag: &str) -> Option<&Release> {
        self.releases.iter().find(|r| r.tag == tag)
    }

    pub(crate) fn asset(&self, tag: &str, name: &str) -> Option<&Asset> {
        self.by_tag(tag)?.assets.iter().find(|a| a.name == name)
    }

    pub(crate) fn asset_by_id(&self, id: u64) -> Option<(&Release, &Asset)> {
        self.releases
            .iter()
            .find_map(|r| r.assets.iter().find(|a| a.id == id).map(|a| (r, a)))
    }
}

pub(crate) fn build_catalog(
    api_url: &str,
    owner: &str,
    repo: &str,
    specs: Vec<ReleaseSpec>,
) -> Catalog {
    let n = specs.len() as u64;
    let releases = specs
        .into_iter()
        .enumerate()
        .map(|(i, spec)| {
            // Older releases get smaller ids, as on GitHub.
            let id = 1_000_000 + (n - i as u64);
            let mut assets = Vec::new();
            let mut assets_json = Vec::new();
            for (j, a) in spec.assets.into_iter().enumerate() {
                let asset_id = id * 1000 + j as u64;
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
                let digest = match a.digest {
                    DigestMode::Correct => Value::String(format!("sha256:{sha}")),
                    DigestMode::Missing => Value::Null,
                    // Hashing the hash gives a valid-looking, certainly different value.
                    DigestMode::Wrong => {
                        Value::String(format!("sha256:{}", sha256_hex(sha.as_bytes())))
                    }
                };
                assets_json.push(json!({
                    "url": format!("{api_url}/repos/{owner}/{repo}/releases/assets/{asset_id}"),
                    "id": asset_id,
                    "node_id": format!("RA_{asset_id}"),
                    "name": a.name,
                    "label": "",
                    "content_type": "application/octet-stream",
                    "state": "uploaded",
                    "size": size,
                    "digest": digest,
                    "download_count": 0,
                    "created_at": spec.published_at,
                    "updated_at": spec.published_at,
                    "browser_download_url": format!(
                        "{api_url}/{owner}/{repo}/releases/download/{}/{}",
                        pct_encode(&spec.tag),
                        pct_encode(&a.name)
                    ),
                }));
                assets.push(Asset {
                    id: asset_id,
                    name: a.name,
                    body: a.body,
                    size,
                });
            }
            let tag = &spec.tag;
            let json = json!({
                "url": format!("{api_url}/repos/{owner}/{repo}/releases/{id}"),
                "assets_url": format!("{api_url}/repos/{owner}/{repo}/releases/{id}/assets"),
                "html_url": format!("{api_url}/{owner}/{repo}/releases/tag/{}", pct_encode(tag)),
                "tarball_url": format!("{api_url}/repos/{owner}/{repo}/tarball/{}", pct_encode(tag)),
                "zipball_url": format!("{api_url}/repos/{owner}/{repo}/zipball/{}", pct_encode(tag)),
                "id": id,
                "node_id": format!("RE_{id}"),
                "tag_name": tag,
                "target_commitish": "main",
                "name": tag,
                "body": "",
                "draft": spec.draft,
                "prerelease": spec.prerelease,
                "created_at": spec.published_at,
                "published_at": spec.published_at,
                "author": {"login": owner, "id": 1, "type": "User"},
                "assets": assets_json,
            });
            Release {
                id,
                tag: spec.tag,
                prerelease: spec.prerelease,
                draft: spec.draft,
                assets,
                json: json.to_string(),
            }
        })
        .collect();
    Catalog { releases }
}
