//! The options every step shares ([`Opts`]), read from a step's flags and,
//! for the flags that step takes, the environment's defaults. A flag the
//! step does not take keeps [`Opts::new`]'s value; its variable is not read.

use std::path::PathBuf;

use anyhow::Result;

use super::args::{usage, Given};
use super::env;
use super::flags::{
    Cmd, Flag, ARCH, FORCE, GITHUB_API, JOBS, JSON, KEEP_DOWNLOADS, NO_CACHE, NO_RAW, NO_WAIT,
    OFFLINE, OS_VERSION, OUTPUT, QUIET, REPO, SOURCE, VERSION,
};
use crate::commands::session::{Opts, DEFAULT_API, DEFAULT_REPO};
use github::assets::{Arch, Os};
use github::release::check_tag;
use util::text::clean;

/// The shared options of `g`'s step.
pub(super) fn opts(g: &Given) -> Result<Opts> {
    let mut o = Opts::new(output(g)?);
    o.version = g.text(&VERSION)?.unwrap_or_else(|| "latest".into());
    check_tag(&o.version).map_err(|e| usage(e.to_string()))?;
    // `mirror` also takes `all`: its step reads these itself.
    o.arch = one_of(g, &ARCH, Arch::parse)?.unwrap_or(Arch::Amd64);
    o.os = one_of(g, &OS_VERSION, Os::parse)?.unwrap_or(Os::Focal);
    o.repo = g.text(&REPO)?.unwrap_or_else(|| DEFAULT_REPO.into());
    check_repo(&o.repo).map_err(|e| usage(e.to_string()))?;
    o.api = api(g)?;
    o.connections = jobs(g)?;
    o.source = match g.text(&SOURCE)? {
        Some(s) => Some(s),
        None if SOURCE.takes(g.cmd) => env::default_source()?,
        None => None,
    };
    o.keep_downloads = g.on(&KEEP_DOWNLOADS);
    o.force = g.on(&FORCE);
    o.offline = g.on(&OFFLINE);
    o.no_raw = g.on(&NO_RAW);
    o.wait = !g.on(&NO_WAIT);
    o.json = g.on(&JSON);
    o.quiet = g.on(&QUIET);
    o.cache = if g.on(&NO_CACHE) {
        None
    } else {
        env::cache_root()
    };
    check_offline(&o, g.on(&NO_CACHE))?;
    o.token = env::token()?;
    o.proxy = ureq::Proxy::try_from_env();
    o.http_timeout = env::http_timeout()?;
    o.progress = if o.quiet {
        util::progress::Style::PLAIN
    } else {
        env::progress_style()
    };
    Ok(o)
}

fn output(g: &Given) -> Result<PathBuf> {
    Ok(match g.path(&OUTPUT) {
        Some(p) => p,
        // Assets are not resources: they go where the maintainer is.
        None if g.cmd == Cmd::Pack => PathBuf::from("."),
        None => env::default_output()?,
    })
}

/// The value of `f` parsed by `parse`, unless it is `all` (`mirror`'s).
pub(super) fn one_of<T>(g: &Given, f: &Flag, parse: fn(&str) -> Result<T>) -> Result<Option<T>> {
    match g.text(f)? {
        Some(v) if v == "all" && g.cmd == Cmd::Mirror => Ok(None),
        Some(v) => parse(&v).map(Some).map_err(|e| usage(e.to_string())),
        None => Ok(None),
    }
}

/// `--github-api`, else (for a step that takes it) `GITHUB_API_URL`, else
/// GitHub's; a bad value is named by where it came from.
fn api(g: &Given) -> Result<String> {
    let (api, from) = match g.text(&GITHUB_API)? {
        Some(a) => (a, "--github-api"),
        None if GITHUB_API.takes(g.cmd) => (env::default_api()?, "GITHUB_API_URL"),
        None => (DEFAULT_API.to_string(), "--github-api"),
    };
    fetch::check_url(&api, from).map_err(usage)?;
    Ok(api.trim_end_matches('/').to_string())
}

fn jobs(g: &Given) -> Result<usize> {
    let Some(j) = g.text(&JOBS)? else {
        return Ok(fetch::DEFAULT_CONNECTIONS);
    };
    match j.parse::<usize>() {
        Ok(n) if (1..=fetch::MAX_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(usage(format!(
            "invalid --jobs `{}`: expected 1 to {}",
            clean(&j, 40),
            fetch::MAX_CONNECTIONS
        ))),
    }
}

fn check_offline(o: &Opts, no_cache: bool) -> Result<()> {
    let why = if !o.offline {
        return Ok(());
    } else if no_cache {
        "--offline reads only the cache, so it cannot go with --no-cache"
    } else if o.force {
        "--offline installs from the cache, which --force would empty first; drop one of them"
    } else if o.source.is_some() {
        "--offline reads only the cache; a --source mirror is read directly without it"
    } else {
        return Ok(());
    };
    Err(usage(why))
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
        _ => anyhow::bail!("invalid --repo `{}`: expected OWNER/NAME", clean(repo, 100)),
    }
}
