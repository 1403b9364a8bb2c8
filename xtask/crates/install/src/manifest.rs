//! `manifest.json`: what set is installed in the output directory (repo, tag,
//! os/arch) and, per file, its size, sha256, modification time and the
//! assets it came from. Written last and atomically; read back by re-runs
//! (to do nothing when nothing changed) and by `verify`.

use std::fs;
use std::path::Path;
use std::time::UNIX_EPOCH;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::layout::NAMES;
use util::fs as fsutil;
use util::time::rfc3339_now;

/// The manifest's name in the output directory.
pub const FILE: &str = "manifest.json";
/// Manifests are small; a larger file is not ours.
const MAX_LEN: u64 = 1 << 20;

/// What is installed in the output directory. `files` may list part of a
/// set (the single steps install one or two files); a set is installed
/// only when all four are listed and no install is pending.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// The manifest format version.
    pub format: u32,
    /// The repository the set came from.
    pub repo: String,
    /// The release tag.
    pub tag: String,
    /// The architecture.
    pub arch: String,
    /// The Ubuntu release.
    pub os: String,
    /// UTC, RFC 3339.
    pub installed_at: String,
    /// The files installed.
    pub files: Vec<FileEntry>,
    /// Written before files are moved in and cleared after: the set being
    /// installed. A run killed meanwhile leaves it, so the next run knows
    /// the files it finds may be this set's, and `verify` fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Box<Manifest>>,
    /// Installed with `--no-raw`: the set is whole without `disk-image.img`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub no_raw: bool,
}

/// One installed file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Its name in the output directory.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Hex. None for the raw image: it is checked against the qcow2's guest
    /// content instead (`verify --deep`), since hashing GiBs of holes costs
    /// more than it tells.
    pub sha256: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub modified_ns: u128,
    /// The release assets it was made from.
    pub sources: Vec<SourceAsset>,
}

/// A release asset a file was made from.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SourceAsset {
    /// The asset's name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The release's digest field for it, if it gave one.
    pub digest: Option<String>,
}

/// The manifest, if there is one. An unreadable or damaged one is an error.
pub fn load(out: &Path) -> Result<Option<Manifest>> {
    let path = out.join(FILE);
    match fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        _ => {}
    }
    let text = fsutil::read_small(&path, MAX_LEN)?;
    let mut m: Manifest = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is damaged; run `cargo xtask resources --force`",
            path.display()
        )
    })?;
    m.keep_known();
    Ok(Some(m))
}

/// The manifest, or an error saying that nothing is installed.
pub fn require(out: &Path) -> Result<Manifest> {
    load(out)?
        .ok_or_else(|| anyhow::anyhow!("no {} in {} (nothing installed yet)", FILE, out.display()))
}

/// Writes `m` as the manifest, atomically.
pub fn store(out: &Path, m: &Manifest) -> Result<()> {
    let mut json = serde_json::to_string_pretty(m).expect("manifest serialises");
    json.push('\n');
    fsutil::write_small(&out.join(FILE), json.as_bytes())
}

/// The size and modification time (ns) of the file at `path`.
pub fn modified_ns(path: &Path) -> Result<(u64, u128)> {
    let meta = fs::metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    let ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    Ok((meta.len(), ns))
}

impl Manifest {
    /// An empty manifest for one set (the single steps add to it).
    pub fn for_set(repo: &str, tag: &str, os: &str, arch: &str) -> Manifest {
        Manifest {
            format: 1,
            repo: repo.into(),
            tag: tag.into(),
            arch: arch.into(),
            os: os.into(),
            installed_at: rfc3339_now(),
            files: Vec::new(),
            pending: None,
            no_raw: false,
        }
    }

    /// Drops entries for names outside the set, here and in `pending`.
    fn keep_known(&mut self) {
        self.files.retain(|f| NAMES.contains(&f.name.as_str()));
        let mut seen = Vec::new();
        self.files.retain(|f| {
            let first = !seen.contains(&f.name);
            seen.push(f.name.clone());
            first
        });
        if let Some(p) = &mut self.pending {
            p.pending = None;
            p.keep_known();
        }
    }

    /// The entry of the file `name`, if installed.
    pub fn entry(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Puts `e` in place of the entry of the same name.
    pub fn set_entry(&mut self, e: FileEntry) {
        self.files.retain(|f| f.name != e.name);
        self.files.push(e);
        self.files
            .sort_by_key(|f| NAMES.iter().position(|n| *n == f.name).unwrap_or(9));
    }

    /// Records the sizes and modification times of the files `names`, just
    /// installed.
    pub(crate) fn with_installed_times(mut self, out: &Path, names: &[&str]) -> Result<Manifest> {
        for f in self
            .files
            .iter_mut()
            .filter(|f| names.contains(&f.name.as_str()))
        {
            let (size, ns) = modified_ns(&out.join(&f.name))?;
            f.size = size;
            f.modified_ns = ns;
        }
        Ok(self)
    }

    /// Same repo/os/arch.
    pub fn same_set(&self, repo: &str, os: &str, arch: &str) -> bool {
        self.repo == repo && self.os == os && self.arch == arch
    }

    /// Same repo/os/arch, and the same tag unless `version` is `latest`.
    pub fn matches_request(&self, repo: &str, os: &str, arch: &str, version: &str) -> bool {
        self.same_set(repo, os, arch) && (version == "latest" || version == self.tag)
    }

    /// All files of the set listed (the raw image unless the set was
    /// installed with `--no-raw`) and no install pending: the manifest says
    /// a whole set is installed.
    pub fn complete(&self) -> bool {
        self.pending.is_none() && self.unlisted().is_empty()
    }

    /// The names a complete set would list that this manifest lacks.
    pub fn unlisted(&self) -> Vec<&'static str> {
        self.names().filter(|n| self.entry(n).is_none()).collect()
    }

    /// The names of the set: all four, or three with `--no-raw`.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        NAMES
            .iter()
            .copied()
            .filter(|n| !(self.no_raw && *n == super::layout::RAW))
    }
}
