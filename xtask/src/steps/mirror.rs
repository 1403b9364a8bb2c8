//! `mirror`: copies a release's JSON and the assets of one or every os/arch
//! set, each checked against its digest, into `DIR/<tag>/`, and names the
//! newest mirrored tag in `DIR/latest`. Labs and CI then read from DIR (or
//! from DIR served over HTTP) with `--source`.

use std::fs;

use anyhow::{bail, Context, Result};

use super::Opts;
use fetch::Http;
use fetch::{self, Wanted};
use github::assets::{self, Arch, Os};
use github::release::{check_tag, Asset};
use util::fmt::human_bytes;
use util::fs as fsutil;
use util::fs::write_small;
use util::lock;

pub fn run(opts: &Opts, arches: &[Arch], oses: &[Os]) -> Result<()> {
    let out = &opts.output;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let what = out.display().to_string();
    let how = lock::How {
        kind: lock::Kind::Exclusive,
        what: &what,
        wait: opts.wait,
        own: false,
    };
    let lock = lock::lock(out, &how)?;
    let http = Http::new(&opts.http(opts.connections));
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

    let mut names: Vec<Asset> = Vec::new();
    let single = arches.len() == 1 && oses.len() == 1;
    for &os in oses {
        for &arch in arches {
            match assets::select(release, os, arch) {
                Ok(sel) => {
                    // Sets share assets (the client is per arch only).
                    for a in sel.all() {
                        if !names.iter().any(|n| n.name == a.name) {
                            names.push(a.clone());
                        }
                    }
                }
                Err(e) if single => return Err(e),
                Err(e) => note!(
                    "skipping {os}/{arch}: {}",
                    util::text::clean(e.to_string().lines().next().unwrap_or(""), 200)
                ),
            }
        }
    }
    if names.is_empty() {
        bail!("release {tag} has no complete os/arch set to mirror");
    }
    let wanted: Vec<Wanted> = names
        .iter()
        .map(|a| {
            Ok(Wanted {
                name: a.name.clone(),
                from: source.asset_origin(tag, a)?,
                size: a.size,
                sha256: fetch::parse_digest(a.digest.as_deref(), &a.name)?,
                dest: dir.join(&a.name),
                transient: false,
            })
        })
        .collect::<Result<_>>()?;
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
    lock.remove();
    out!(
        "Mirrored {tag} into {}; use it with `cargo xtask resources --source {}`",
        dir.display(),
        fs::canonicalize(out)
            .with_context(|| format!("cannot resolve {}", out.display()))?
            .display()
    );
    Ok(())
}
