//! `mirror`: copies a release's JSON and the assets of one or every os/arch
//! set, each checked against its digest, into `DIR/<tag>/`, and names the
//! newest mirrored tag in `DIR/latest`. Labs and CI then read from DIR (or
//! from DIR served over HTTP) with `--source`.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use super::session::Session;
use super::Command;
use fetch::{self, Wanted};
use github::assets::{self, Arch, Os};
use github::release::{check_tag, Asset, Release};
use github::source::Source;
use util::fmt::human_bytes;
use util::fs as fsutil;
use util::fs::write_small;

/// The arguments of `cargo xtask resources mirror`: the sets to copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MirrorArgs {
    pub(crate) arches: Vec<Arch>,
    pub(crate) oses: Vec<Os>,
}

impl Command for MirrorArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        let out = s.out().to_path_buf();
        fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
        s.lock_output()?;
        let opts = s.opts();
        let http = s.http(opts.connections);
        let source = opts.source();
        let resolved = source.resolve(&http, &opts.repo, &opts.version)?;
        if let Some(note) = &resolved.note {
            note!("{note}");
        }
        let release = &resolved.release;
        let tag = &release.tag_name;
        check_tag(tag)?;
        let dir = out.join(tag);
        fsutil::ensure_own_dir(&dir)?;
        let wanted = wanted(&source, release, &self.sets(), &dir)?;
        let total: u64 = wanted.iter().map(|j| j.size).sum();
        say!(
            "Mirroring {tag} ({} assets, {}) from {} into {}",
            wanted.len(),
            human_bytes(total),
            source.name(&opts.repo, &opts.api),
            dir.display()
        );
        fetch::start(http, wanted, opts.connections, "mirror", opts.progress)?.finish_all()?;
        write_small(&dir.join("release.json"), resolved.json.as_bytes())?;
        let latest = out.join("latest");
        if opts.version == "latest" || !latest.exists() {
            write_small(&latest, format!("{tag}\n").as_bytes())?;
        }
        let tag = tag.clone();
        s.unlock();
        said_mirrored(&tag, &dir, &out)
    }
}

impl MirrorArgs {
    /// The os/arch sets asked for, every pair.
    fn sets(&self) -> Vec<(Os, Arch)> {
        self.oses
            .iter()
            .flat_map(|&os| self.arches.iter().map(move |&arch| (os, arch)))
            .collect()
    }
}

/// The assets of `sets` in `release` (each once: sets share the client),
/// to be fetched into `dir`. A set the release lacks is skipped with a
/// note, unless it is the only one asked for.
fn wanted(
    source: &Source,
    release: &Release,
    sets: &[(Os, Arch)],
    dir: &Path,
) -> Result<Vec<Wanted>> {
    let tag = &release.tag_name;
    let mut names: Vec<Asset> = Vec::new();
    for &(os, arch) in sets {
        match assets::select(release, os, arch) {
            Ok(sel) => {
                // Sets share assets (the client is per arch only).
                for a in sel.all() {
                    if !names.iter().any(|n| n.name == a.name) {
                        names.push(a.clone());
                    }
                }
            }
            Err(e) if sets.len() == 1 => return Err(e),
            Err(e) => note!(
                "skipping {os}/{arch}: {}",
                util::text::clean(e.to_string().lines().next().unwrap_or(""), 200)
            ),
        }
    }
    if names.is_empty() {
        bail!("release {tag} has no complete os/arch set to mirror");
    }
    names
        .iter()
        .map(|a| {
            Ok(Wanted {
                name: a.name.clone(),
                from: source.asset_origin(tag, a)?,
                size: a.size,
                sha256: a.sha256()?,
                dest: dir.join(&a.name),
                transient: false,
            })
        })
        .collect()
}

fn said_mirrored(tag: &str, dir: &Path, out: &Path) -> Result<()> {
    out!(
        "Mirrored {tag} into {}; use it with `cargo xtask resources --source {}`",
        dir.display(),
        fs::canonicalize(out)
            .with_context(|| format!("cannot resolve {}", out.display()))?
            .display()
    );
    Ok(())
}
