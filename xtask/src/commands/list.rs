//! `cargo xtask resources list`: the repository's releases (or with
//! `--source`, a mirror's), newest first, what each holds per os/arch, then
//! the documentation's support table.

use anyhow::Result;

use super::session::Session;
use super::Command;
use fetch::Http;
use github::assets::{self, Arch, Os};
use github::release::{for_each_release, Release};
use github::source::Source;
use github::support::support;
use util::fmt::human_bytes;
use util::text::clean;

/// `cargo xtask resources list`.
#[derive(Debug)]
pub(crate) struct ListArgs;

impl Command for ListArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        let opts = s.opts();
        let http = s.http(opts.connections);
        let source = opts.source();
        let none = match source {
            Source::GitHub => list_github(&opts.repo, &http)?,
            _ => list_mirror(&source.name(&opts.repo, &opts.api), &source, &http)?,
        };
        if none {
            out!("  (none)");
        }
        out!();
        out!("Support (from the documentation):");
        for os in Os::ALL {
            for arch in Arch::ALL {
                out!("  {os:<5} {arch:<5}  {}", support(os, arch).summary());
            }
        }
        out!("  test client: stable, QEMU + gem5, on both architectures");
        Ok(())
    }
}

/// The repository's releases from the API; true when there are none.
fn list_github(repo: &str, http: &Http) -> Result<bool> {
    out!("Releases of {repo} (newest first):");
    let mut none = true;
    let mut listed = Vec::new();
    for_each_release(http, repo, |r| {
        none = false;
        if !r.draft {
            show(&r);
            listed.push(summary(&r));
        }
        Ok(())
    })?;
    util::say::report("releases", serde_json::json!(listed));
    Ok(none)
}

/// The releases a mirror holds (`--source`, named `name`); true when there
/// are none.
fn list_mirror(name: &str, source: &Source, http: &Http) -> Result<bool> {
    out!("Releases in {name} (newest first):");
    if matches!(source, Source::Url(_)) {
        out!("  (a mirror on a web server has no index: only the release its `latest` names)");
    }
    let releases = source.mirrored_releases(http)?;
    let mut listed = Vec::new();
    for (tag, r) in &releases {
        match r {
            Ok(r) if r.draft => {}
            Ok(r) => {
                show(r);
                listed.push(summary(r));
            }
            Err(e) => out!(
                "{}  unreadable: {}",
                clean(tag, 60),
                clean(first_line(&format!("{e:#}")), 200)
            ),
        }
    }
    util::say::report("releases", serde_json::json!(listed));
    Ok(releases.is_empty())
}

/// A release and what it holds per os/arch.
fn show(r: &Release) {
    out!(
        "{}  {}{}",
        clean(&r.tag_name, 60),
        clean(r.published_at.as_deref().unwrap_or("(unpublished)"), 40),
        if r.prerelease { "  pre-release" } else { "" }
    );
    for os in Os::ALL {
        for arch in Arch::ALL {
            let line = match assets::select(r, os, arch) {
                Ok(sel) => format!("complete, {} to download", human_bytes(sel.total_size())),
                Err(e) => match assets::missing(r, os, arch) {
                    Some(missing) => format!("missing: {}", missing.join(", ")),
                    None => format!("unusable: {}", clean(first_line(&e.to_string()), 160)),
                },
            };
            out!("    {os:<5} {arch:<5}  {line}");
        }
    }
}

/// A release for `--json`: tag, dates, and per os/arch set complete or not
/// with its size.
fn summary(r: &Release) -> serde_json::Value {
    let mut sets = Vec::new();
    for os in Os::ALL {
        for arch in Arch::ALL {
            let sel = assets::select(r, os, arch).ok();
            sets.push(serde_json::json!({
                "os": os.as_str(),
                "arch": arch.as_str(),
                "complete": sel.is_some(),
                "bytes": sel.map(|s| s.total_size()),
            }));
        }
    }
    serde_json::json!({
        "tag": clean(&r.tag_name, 100),
        "published_at": r.published_at.as_deref().map(|p| clean(p, 40)),
        "prerelease": r.prerelease,
        "sets": sets,
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
