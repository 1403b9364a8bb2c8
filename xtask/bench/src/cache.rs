//! The cache and adoption round: a first run that fills the download cache,
//! a second output directory installed from it (and both on an XFS loop
//! mount, where the copies are reflinks), and a directory made as
//! artifacts.py leaves it adopted, against the same directory with
//! `--force`. Each row notes the asset bytes the server sent for it.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::measure::{self, fresh_dir, new_log};
use super::report::{Basis, Round};
use super::steps::{resources, Ctx};
use testkit::Server;

/// The rows of the round.
pub fn round(reps: usize) -> Round {
    let mut r = Round::new(&format!(
        "download cache and adoption — {reps} runs each; each row notes the asset bytes served"
    ));
    r.row(
        "cache_fill",
        "ours: first run, filling the cache",
        Basis::Archive,
        None,
    );
    r.row(
        "cache_second",
        "ours: 2nd output dir, from the cache",
        Basis::Archive,
        Some("cache_fill"),
    );
    r.row(
        "cache_fill_xfs",
        "ours: first run on XFS, filling the cache",
        Basis::Archive,
        None,
    );
    r.row(
        "cache_second_xfs",
        "ours: 2nd output dir on XFS, from the cache",
        Basis::Archive,
        Some("cache_fill_xfs"),
    );
    r.row(
        "adopt",
        "ours: adopt an artifacts.py directory",
        Basis::None,
        Some("adopt_force"),
    );
    r.row(
        "adopt_force",
        "ours: same directory, --force --no-cache",
        Basis::None,
        None,
    );
    r
}

/// One repetition: fill, second, adopt, force, under `root` (a directory
/// of the runs, or a loop mount for the `_xfs` rows).
pub fn rep(ctx: &Ctx, server: &Server, r: &mut Round, root: &Path, xfs: bool) -> Result<()> {
    let sfx = if xfs { "_xfs" } else { "" };
    let cache = root.join("cache");
    fresh_dir(&cache)?;
    let first = root.join("first");
    let env = [("VSWARM_CACHE_DIR", cache.as_path())];
    timed(
        ctx,
        server,
        r,
        &format!("cache_fill{sfx}"),
        &first,
        &[],
        &env,
    )?;
    let second = root.join("second");
    timed(
        ctx,
        server,
        r,
        &format!("cache_second{sfx}"),
        &second,
        &[],
        &env,
    )?;
    fs::remove_dir_all(&second).ok();
    if !xfs {
        // What artifacts.py leaves: the four files, no manifest.
        fs::remove_file(first.join("manifest.json"))?;
        let fresh_cache = root.join("adopt-cache");
        fresh_dir(&fresh_cache)?;
        let env = [("VSWARM_CACHE_DIR", fresh_cache.as_path())];
        timed(ctx, server, r, "adopt", &first, &[], &env)?;
        timed(
            ctx,
            server,
            r,
            "adopt_force",
            &first,
            &["--force", "--no-cache"],
            &[],
        )?;
    }
    fs::remove_dir_all(&first).ok();
    fs::remove_dir_all(&cache).ok();
    Ok(())
}

/// One timed run into `dir` (made if missing, kept as it is otherwise).
fn timed(
    ctx: &Ctx,
    server: &Server,
    r: &mut Round,
    key: &str,
    dir: &Path,
    extra: &[&str],
    env: &[(&str, &Path)],
) -> Result<()> {
    if !dir.exists() {
        fresh_dir(dir)?;
    }
    let log = dir.with_extension("log");
    new_log(&log)?;
    let mut c = resources(ctx, dir, extra);
    for (k, v) in env {
        c.env(k, v);
    }
    // The previous row's writes are flushed first, untimed: each row pays
    // only for its own.
    let _ = Command::new("sync").status();
    let before = server.requests().len();
    let s = measure::run(&format!("`xtask resources` ({key})"), &mut c, &log)
        .with_context(|| format!("the {key} row"))?;
    r.add(key, s);
    let served = served_bytes(ctx, server, before);
    let ratio = match key {
        "adopt" => "; ratio: the --force run ÷ this",
        k if k.starts_with("cache_second") => "; ratio: the first run ÷ this",
        _ => "",
    };
    r.note(key, &format!("{served} asset bytes served{ratio}"));
    if !ctx.keep {
        fs::remove_file(&log).ok();
    }
    Ok(())
}

/// Asset bytes the server sent since request `from`: whole assets for a 200,
/// the range for a 206.
fn served_bytes(ctx: &Ctx, server: &Server, from: usize) -> u64 {
    let sizes: Vec<(String, u64)> = ctx
        .img
        .assets()
        .into_iter()
        .map(|a| {
            let size = match &a.body {
                testkit::Body::Bytes(b) => b.len() as u64,
                testkit::Body::File(p) => fs::metadata(p).map_or(0, |m| m.len()),
            };
            (a.name, size)
        })
        .collect();
    server.requests()[from..]
        .iter()
        .filter(|q| q.host == "assets" && q.method == "GET")
        .map(|q| match (q.status, q.header("range")) {
            (206, Some(range)) => range_len(range),
            (200, _) => sizes
                .iter()
                .find(|(n, _)| q.path.ends_with(n.as_str()))
                .map_or(0, |(_, s)| *s),
            _ => 0,
        })
        .sum()
}

fn range_len(range: &str) -> u64 {
    let Some((a, b)) = range.strip_prefix("bytes=").and_then(|r| r.split_once('-')) else {
        return 0;
    };
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(a), Ok(b)) if b >= a => b - a + 1,
        _ => 0,
    }
}
