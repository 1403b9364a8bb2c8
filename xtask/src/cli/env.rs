//! The environment, read once: defaults for the output directory, the API
//! and the source, the token, upload's `RELEASE_ID`, the HTTP timeout, the
//! proxy, and how progress is shown. A bad value is a usage error that
//! names the variable.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

use super::args::usage;
use crate::commands::session::DEFAULT_API;
use fetch::Token;
use util::progress::Style;

/// Where resources go unless `--output` says otherwise: `$RESOURCES`, else the
/// workspace's `resources/`, found from this crate's location at build time so
/// that running from another directory never scatters files there. A
/// `RESOURCES` that names a file is an error naming the variable.
pub fn default_output() -> Result<PathBuf> {
    match std::env::var_os("RESOURCES") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.exists() && !dir.is_dir() {
                return Err(usage(format!(
                    "RESOURCES=`{}` is a file, not a directory; fix or unset it, or pass --output DIR",
                    shown_path(&dir)
                )));
            }
            Ok(dir)
        }
        _ => Ok(Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives inside the workspace")
            .join("resources")),
    }
}

/// `$GITHUB_API_URL`, checked here so that a bad value is blamed on the
/// variable, not on `--github-api`; else github.com's API.
pub fn default_api() -> Result<String> {
    match std::env::var("GITHUB_API_URL") {
        Ok(url) if !url.is_empty() => {
            fetch::check_url(&url, "GITHUB_API_URL")
                .map_err(|e| usage(format!("{e}; fix or unset it, or pass --github-api URL")))?;
            Ok(url)
        }
        _ => Ok(DEFAULT_API.to_string()),
    }
}

fn shown_path(p: &Path) -> String {
    util::text::clean(&p.to_string_lossy(), 200)
}

/// Where the download cache lives: `$VSWARM_CACHE_DIR`, else
/// `$XDG_CACHE_HOME/vswarm-u` (an absolute one, as the XDG rules say),
/// else `~/.cache/vswarm-u`; None when none of them is set.
pub fn cache_root() -> Option<PathBuf> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("VSWARM_CACHE_DIR") {
        return Some(std::path::absolute(&dir).unwrap_or(dir));
    }
    if let Some(xdg) = var("XDG_CACHE_HOME").filter(|p| p.is_absolute()) {
        return Some(xdg.join("vswarm-u"));
    }
    var("HOME").map(|home| home.join(".cache").join("vswarm-u"))
}

/// `RELEASE_ID` (upstream's `artifacts.sh` reads it): the release `upload`
/// writes to; empty counts as unset, anything but a positive number is a
/// usage error naming the variable.
pub fn release_id() -> Result<Option<u64>> {
    let Some(raw) = std::env::var_os("RELEASE_ID") else {
        return Ok(None);
    };
    let s = raw.to_string_lossy();
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    parse_release_id(s).map(Some).ok_or_else(|| {
        usage(format!(
            "RELEASE_ID=`{}` is not a release id (the positive number GitHub gives a release); \
             fix or unset it, or pass --release-id",
            util::text::clean(s, 40)
        ))
    })
}

/// A release id: decimal digits only, not 0.
pub(super) fn parse_release_id(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|&n| n > 0)
}

/// `VSWARM_RESOURCES_SOURCE`, if set and not empty: an http(s) URL or a
/// directory, else an error naming the variable.
pub fn default_source() -> Result<Option<String>> {
    const VAR: &str = "VSWARM_RESOURCES_SOURCE";
    let Some(s) = std::env::var(VAR).ok().filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let fix = "fix or unset it, or pass --source";
    if s.contains("://") {
        fetch::check_url(&s, VAR).map_err(|e| usage(format!("{e}; {fix}")))?;
    } else if !Path::new(&s).is_dir() {
        return Err(usage(format!(
            "{VAR}=`{}` is not a directory (a mirror made by `cargo xtask resources mirror`) \
             nor an http(s) URL; {fix}",
            shown_path(Path::new(&s))
        )));
    }
    Ok(Some(s))
}

/// Bars when stderr is a terminal and `CI` is unset; colour unless `NO_COLOR`.
pub fn progress_style() -> Style {
    use std::io::IsTerminal;
    Style {
        bars: std::io::stderr().is_terminal() && std::env::var_os("CI").is_none(),
        colour: std::env::var_os("NO_COLOR").is_none(),
    }
}

/// `GH_TOKEN`, else `GITHUB_TOKEN` (gh's order); empty values count as unset.
/// A value that cannot be an HTTP header is an error naming the variable.
pub fn token() -> Result<Option<Token>> {
    for var in ["GH_TOKEN", "GITHUB_TOKEN"] {
        let Some(raw) = std::env::var_os(var) else {
            continue;
        };
        let Some(t) = raw.to_str().map(str::trim) else {
            return Err(usage(format!(
                "{var} is not valid UTF-8, so it cannot be a GitHub token; fix or unset it"
            )));
        };
        if t.is_empty() {
            continue;
        }
        if !t.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(usage(format!(
                "{var} holds characters a token cannot have (spaces, control characters or \
                 non-ASCII), so it cannot be sent as a header; fix or unset it"
            )));
        }
        util::text::register_secret(t);
        return Ok(Some(Token::new(t.to_string(), var)));
    }
    Ok(None)
}

/// `VSWARM_HTTP_TIMEOUT`: seconds, finite, from 0.1 to an hour.
pub fn http_timeout() -> Result<Duration> {
    const VAR: &str = "VSWARM_HTTP_TIMEOUT";
    let Some(raw) = std::env::var_os(VAR) else {
        return Ok(Duration::from_secs(30));
    };
    let s = raw.to_string_lossy();
    let s = s.trim();
    if s.is_empty() {
        return Ok(Duration::from_secs(30));
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(usage(format!(
            "{VAR}=`{}` is not a number of seconds from 0.1 to 3600",
            util::text::clean(s, 40)
        ))),
    }
}
