//! `manifest.json`: what set is installed in the output directory (repo, tag,
//! os/arch) and, per file, its size, sha256, modification time and the
//! assets it came from. Written last and atomically; read back by re-runs
//! (to do nothing when nothing changed) and by `verify`.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::fsutil::{self, hex};
use crate::opts::Opts;
use crate::pipeline::{self, Plan, CLIENT, KERNEL, QCOW2, RAW};
use crate::release::Asset;
use crate::unpack::Unpacked;

pub const FILE: &str = "manifest.json";
/// Manifests are small; a larger file is not ours.
const MAX_LEN: u64 = 1 << 20;
/// The only names a manifest may speak for: an entry naming anything else
/// (another file, an absolute path) is ignored, so a manifest can never make
/// the tool read or replace a file outside the set.
pub const NAMES: [&str; 4] = [KERNEL, CLIENT, QCOW2, RAW];

/// What is installed in the output directory. `files` may list part of a
/// set (the single steps install one or two files); a set is installed
/// only when all four are listed and no install is pending.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: u32,
    pub repo: String,
    pub tag: String,
    pub arch: String,
    pub os: String,
    /// UTC, RFC 3339.
    pub installed_at: String,
    pub files: Vec<FileEntry>,
    /// Written before files are moved in and cleared after: the set being
    /// installed. A run killed meanwhile leaves it, so the next run knows
    /// the files it finds may be this set's, and `verify` fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Box<Manifest>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    /// Hex. None for the raw image: it is checked against the qcow2's guest
    /// content instead (`verify --deep`), since hashing GiBs of holes costs
    /// more than it tells.
    pub sha256: Option<String>,
    /// Nanoseconds since the Unix epoch.
    pub modified_ns: u128,
    pub sources: Vec<Source>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Source {
    pub name: String,
    pub size: u64,
    pub digest: Option<String>,
}

impl From<&Asset> for Source {
    fn from(a: &Asset) -> Source {
        Source {
            name: a.name.clone(),
            size: a.size,
            digest: a.digest.clone(),
        }
    }
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
    pipeline::write_small(&out.join(FILE), json.as_bytes())
}

pub fn remove(out: &Path) -> Result<()> {
    match fs::remove_file(out.join(FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("cannot remove {}", out.join(FILE).display()))
        }
        _ => Ok(()),
    }
}

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

/// The sha256 of the regular file at `path` (a link there is refused).
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let mut f =
        fsutil::open_regular(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// The manifest of a staged set (times are filled in after installing).
pub fn build(opts: &Opts, plan: &Plan, unpacked: &Unpacked) -> Result<Manifest> {
    let sel = &plan.sel;
    let work = &plan.work;
    let kernel = work.join(&sel.kernel.name);
    let client = work.join(&sel.client.name);
    let mut disk_sources: Vec<Source> = sel.disk.iter().map(Source::from).collect();
    disk_sources.push(Source::from(&sel.sums));
    let entry = |name: &str, path: &Path, sha: Option<String>, sources: Vec<Source>| {
        let (size, _) = modified_ns(path)?;
        Ok::<_, anyhow::Error>(FileEntry {
            name: name.to_string(),
            size,
            sha256: sha,
            modified_ns: 0,
            sources,
        })
    };
    Ok(Manifest {
        format: 1,
        repo: opts.repo.clone(),
        tag: plan.release.tag_name.clone(),
        arch: opts.arch.to_string(),
        os: opts.os.to_string(),
        installed_at: rfc3339_now(),
        pending: None,
        files: vec![
            entry(
                KERNEL,
                &kernel,
                Some(hex(&sha256_file(&kernel)?)),
                vec![Source::from(&sel.kernel)],
            )?,
            entry(
                CLIENT,
                &client,
                Some(hex(&sha256_file(&client)?)),
                vec![Source::from(&sel.client)],
            )?,
            entry(
                QCOW2,
                &unpacked.path,
                Some(hex(&unpacked.sha256)),
                disk_sources.clone(),
            )?,
            entry(RAW, &work.join(RAW), None, disk_sources)?,
        ],
    })
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

    /// Records the installed files' sizes and modification times.
    pub fn with_installed_times(mut self, out: &Path) -> Result<Manifest> {
        for f in &mut self.files {
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

    /// Same repo/os/arch, and the same tag when one was asked for.
    pub fn matches_request(&self, opts: &Opts) -> bool {
        self.same_set(&opts.repo, opts.os.as_str(), opts.arch.as_str())
            && (opts.version == "latest" || opts.version == self.tag)
    }

    /// All four files listed and no install pending: the manifest says a
    /// whole set is installed.
    pub fn complete(&self) -> bool {
        self.pending.is_none() && NAMES.iter().all(|n| self.entry(n).is_some())
    }

    /// The names a complete set would list that this manifest lacks.
    pub fn unlisted(&self) -> Vec<&'static str> {
        NAMES
            .iter()
            .copied()
            .filter(|n| self.entry(n).is_none())
            .collect()
    }
}

/// Now as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
    }
}
