//! The options every `resources` step shares, their defaults, and the checks
//! on their values. Parsing argv is `main.rs`'s; this module owns the meaning.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub const DEFAULT_REPO: &str = "vhive-serverless/vSwarm-u";
pub const DEFAULT_API: &str = "https://api.github.com";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    Amd64,
    Arm64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Os {
    Focal,
    Jammy,
}

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::Amd64, Arch::Arm64];
    pub fn parse(s: &str) -> Result<Arch> {
        match s {
            "amd64" => Ok(Arch::Amd64),
            "arm64" => Ok(Arch::Arm64),
            _ => bail!("invalid --arch `{s}`: expected amd64 or arm64"),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }
}

impl Os {
    pub const ALL: [Os; 2] = [Os::Focal, Os::Jammy];
    pub fn parse(s: &str) -> Result<Os> {
        match s {
            "focal" => Ok(Os::Focal),
            "jammy" => Ok(Os::Jammy),
            _ => bail!("invalid --os-version `{s}`: expected focal or jammy"),
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Os::Focal => "focal",
            Os::Jammy => "jammy",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
        bail!("invalid --version `{tag}`: expected `latest` or a release tag such as v0.3.0");
    }
    Ok(())
}

pub fn check_repo(repo: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if part_ok(owner) && part_ok(name) => Ok(()),
        _ => bail!("invalid --repo `{repo}`: expected OWNER/NAME"),
    }
}

/// Where resources go unless `--output` says otherwise: `$RESOURCES`, else the
/// workspace's `resources/`, found from this crate's location at build time so
/// that running from another directory never scatters files there.
pub fn default_output() -> PathBuf {
    match std::env::var_os("RESOURCES") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives inside the workspace")
            .join("resources"),
    }
}

pub fn default_api() -> String {
    match std::env::var("GITHUB_API_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => DEFAULT_API.to_string(),
    }
}

/// Everything a step needs to know; built once by `main.rs`.
#[derive(Clone, Debug)]
pub struct Opts {
    pub version: String,
    pub arch: Arch,
    pub os: Os,
    pub output: PathBuf,
    pub repo: String,
    pub api: String,
    pub jobs: usize,
    pub keep_downloads: bool,
    pub force: bool,
    /// `--source`/`VSWARM_RESOURCES_SOURCE`: a mirror directory or URL.
    pub source: Option<String>,
}

impl Opts {
    /// Hidden working directory for one release's downloads.
    pub fn work_dir(&self, tag: &str) -> PathBuf {
        self.output.join(".downloads").join(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in ["latest", "v0.3.0", "v1.0.0-rc.1", "release_2"] {
            check_tag(ok).unwrap();
        }
        for bad in ["", "..", "v1/../x", "v 1", "a?b", "%2e"] {
            assert!(check_tag(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repos() {
        check_repo("vhive-serverless/vSwarm-u").unwrap();
        for bad in ["x", "/x", "x/", "a/b/c", "../x", "a/.."] {
            assert!(check_repo(bad).is_err(), "{bad}");
        }
    }
}
