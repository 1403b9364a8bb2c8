//! `mirror`: copies a release's JSON and the assets of one or every os/arch
//! set, each checked against its digest, into `DIR/<tag>/`, and names the
//! newest mirrored tag in `DIR/latest`. Labs and CI then read from DIR (or
//! from DIR served over HTTP) with `--source`.

use std::fs;

use anyhow::{bail, Context, Result};

use crate::assets;
use crate::download::{self, Job};
use crate::fsutil::{self, human_bytes};
use crate::http::Http;
use crate::opts::{Arch, Opts, Os};
use crate::pipeline::write_small;
use crate::source::Source;

pub fn run(opts: &Opts, arches: &[Arch], oses: &[Os]) -> Result<()> {
    let out = &opts.output;
    fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let lock = fsutil::lock(out)?;
    let http = Http::new(&opts.http(opts.connections));
    let source = Source::from_opts(opts);
    let resolved = source.resolve(&http, opts)?;
    if let Some(note) = &resolved.note {
        eprintln!("note: {note}");
    }
    let release = &resolved.release;
    let tag = &release.tag_name;
    crate::opts::check_tag(tag)?;
    let dir = out.join(tag);
    fsutil::ensure_own_dir(&dir)?;

    let mut names: Vec<crate::release::Asset> = Vec::new();
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
                Err(e) => eprintln!(
                    "note: skipping {os}/{arch}: {}",
                    crate::text::clean(e.to_string().lines().next().unwrap_or(""), 200)
                ),
            }
        }
    }
    if names.is_empty() {
        bail!("release {tag} has no complete os/arch set to mirror");
    }
    let jobs: Vec<Job> = names
        .iter()
        .map(|a| {
            Ok(Job {
                name: a.name.clone(),
                from: source.asset_origin(tag, a)?,
                size: a.size,
                sha256: download::parse_digest(a.digest.as_deref(), &a.name)?,
                dest: dir.join(&a.name),
                transient: false,
            })
        })
        .collect::<Result<_>>()?;
    let total: u64 = jobs.iter().map(|j| j.size).sum();
    eprintln!(
        "Mirroring {tag} ({} assets, {}) from {} into {}",
        jobs.len(),
        human_bytes(total),
        source.describe(opts),
        dir.display()
    );
    download::start(http, jobs, opts.connections, "mirror", opts.progress)?.finish_all()?;
    write_small(&dir.join("release.json"), resolved.json.as_bytes())?;
    let latest = out.join("latest");
    if opts.version == "latest" || !latest.exists() {
        write_small(&latest, format!("{tag}\n").as_bytes())?;
    }
    lock.remove();
    println!(
        "Mirrored {tag} into {}; use it with `cargo xtask resources --source {}`",
        dir.display(),
        fs::canonicalize(out)
            .with_context(|| format!("cannot resolve {}", out.display()))?
            .display()
    );
    Ok(())
}
