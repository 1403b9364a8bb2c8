//! The options every `resources` step shares, their defaults, and the checks
//! on their values. Parsing argv is `main.rs`'s; this module owns the meaning.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

pub use crate::http::Token;

pub const DEFAULT_REPO: &str = "vhive-serverless/vSwarm-u";
pub const DEFAULT_API: &str = "https://api.github.com";
/// Connections per host: more than 16 is impolite to a shared server.
pub const MAX_CONNECTIONS: usize = 16;
pub const DEFAULT_CONNECTIONS: usize = 4;

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
            _ => bail!(
                "invalid --arch `{}`: expected amd64 or arm64",
                crate::text::clean(s, 40)
            ),
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
            _ => bail!(
                "invalid --os-version `{}`: expected focal or jammy",
                crate::text::clean(s, 40)
            ),
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
        bail!(
            "invalid --version `{}`: expected `latest` or a release tag such as v0.3.0",
            crate::text::clean(tag, 60)
        );
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
        _ => bail!(
            "invalid --repo `{}`: expected OWNER/NAME",
            crate::text::clean(repo, 100)
        ),
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

/// Everything a step needs to know, command line and environment alike;
/// built once by `cli`.
#[derive(Clone, Debug)]
pub struct Opts {
    pub version: String,
    pub arch: Arch,
    pub os: Os,
    pub output: PathBuf,
    pub repo: String,
    pub api: String,
    /// Parallel connections (`--jobs`).
    pub connections: usize,
    pub keep_downloads: bool,
    pub force: bool,
    /// `--source`/`VSWARM_RESOURCES_SOURCE`: a mirror directory or URL.
    pub source: Option<String>,
    /// `GH_TOKEN`, else `GITHUB_TOKEN`.
    pub token: Option<Token>,
    /// From `HTTPS_PROXY` and friends, with `NO_PROXY`.
    pub proxy: Option<ureq::Proxy>,
    /// `VSWARM_HTTP_TIMEOUT`: how long a connection may stay silent.
    pub http_timeout: std::time::Duration,
    pub progress: crate::progress::Style,
}

impl Opts {
    /// The options of a plain run into `output`, with nothing read from the
    /// environment (library callers and tests).
    pub fn new(output: PathBuf) -> Opts {
        Opts {
            version: "latest".into(),
            arch: Arch::Amd64,
            os: Os::Focal,
            output,
            repo: DEFAULT_REPO.into(),
            api: DEFAULT_API.into(),
            connections: DEFAULT_CONNECTIONS,
            keep_downloads: false,
            force: false,
            source: None,
            token: None,
            proxy: None,
            http_timeout: std::time::Duration::from_secs(30),
            progress: crate::progress::Style::PLAIN,
        }
    }
}

impl Opts {
    /// The HTTP client's settings, with `connections` connections.
    pub fn http(&self, connections: usize) -> crate::http::Config {
        crate::http::Config {
            api: self.api.clone(),
            connections,
            token: self.token.clone(),
            timeout: self.http_timeout,
            proxy: self.proxy.clone(),
        }
    }

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
