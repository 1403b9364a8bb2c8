//! The options every command shares, command line and environment alike,
//! resolved once by `cli`; a [`Session`](super::Session) holds them.

use std::path::PathBuf;

use fetch::{Config, Token};
use github::assets::{Arch, Os};
use github::source::Source;
use install::layout;
use util::progress::Style;

pub const DEFAULT_REPO: &str = "vhive-serverless/vSwarm-u";
pub const DEFAULT_API: &str = "https://api.github.com";

/// Everything a command needs to know, command line and environment alike;
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
    /// The download cache's root; None with `--no-cache` or when the
    /// environment names no place for it.
    pub cache: Option<PathBuf>,
    /// `--offline`: releases and assets from the cache only, no network.
    pub offline: bool,
    /// `--no-raw`: the full run does not make `disk-image.img`.
    pub no_raw: bool,
    /// Wait while another run holds a lock (`--no-wait`: fail at once).
    pub wait: bool,
    /// `--json`: one JSON document on stdout at the end, nothing else there.
    pub json: bool,
    /// `--quiet`: only errors on stderr.
    pub quiet: bool,
    /// `GH_TOKEN`, else `GITHUB_TOKEN`.
    pub token: Option<Token>,
    /// From `HTTPS_PROXY` and friends, with `NO_PROXY`.
    pub proxy: Option<ureq::Proxy>,
    /// `VSWARM_HTTP_TIMEOUT`: how long a connection may stay silent.
    pub http_timeout: std::time::Duration,
    pub progress: Style,
}

impl Opts {
    /// The options of a plain run into `output`, with nothing read from the
    /// environment; `cli` sets the rest from the command line.
    pub fn new(output: PathBuf) -> Opts {
        Opts {
            version: "latest".into(),
            arch: Arch::Amd64,
            os: Os::Focal,
            output,
            repo: DEFAULT_REPO.into(),
            api: DEFAULT_API.into(),
            connections: fetch::DEFAULT_CONNECTIONS,
            keep_downloads: false,
            force: false,
            source: None,
            cache: None,
            offline: false,
            no_raw: false,
            wait: true,
            json: false,
            quiet: false,
            token: None,
            proxy: None,
            http_timeout: std::time::Duration::from_secs(30),
            progress: Style::PLAIN,
        }
    }
}

impl Opts {
    /// The HTTP client's settings, with `connections` connections.
    pub fn http(&self, connections: usize) -> Config {
        Config {
            api: self.api.clone(),
            connections,
            token: self.token.clone(),
            timeout: self.http_timeout,
            proxy: self.proxy.clone(),
        }
    }

    /// Where releases come from: GitHub, or the mirror `--source` names.
    pub fn source(&self) -> Source {
        Source::new(self.source.as_deref())
    }

    /// Hidden working directory for one release's downloads.
    pub fn work_dir(&self, tag: &str) -> PathBuf {
        layout::work_dir(&self.output, tag)
    }
}
