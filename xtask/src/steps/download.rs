//! `cargo xtask resources download`: fetches the set's assets into the
//! working directory and installs kernel and client, unless another set is
//! installed (then they wait in the working directory).

use anyhow::Result;

use super::adopt::{self, Verdict};
use super::guard::{self, entry, load_manifest, other_set, refuse_pending, same_set_manifest};
use super::image::{fetch_assets, to_download};
use super::plan::Plan;
use super::plan::{
    note_unchecked_digests, open_work, plan_online, prepare_work, source_of, warn_support, Pick,
};
use super::Opts;
use fetch::Http;
use github::release::Asset;
use install::layout::{CLIENT, KERNEL};
use install::swap::{install, Move};
use util::fmt::{hex, human_bytes};
use util::fs as fsutil;
use util::text::Shown;

/// `cargo xtask resources download`
pub fn run(opts: &Opts) -> Result<()> {
    let _lock = open_work(opts)?;
    let m = load_manifest(opts)?;
    let http = Http::new(&opts.http(opts.connections));
    let mut plan = plan_online(opts, &http)?;
    let other = other_set(opts, &plan, m.as_ref()).is_some();
    let states = guard::inspect_all(&opts.output, m.as_ref(), &[KERNEL, CLIENT]);
    if !other {
        refuse_pending(opts, m.as_ref())?;
        // A file the manifest does not list is compared once downloaded.
        let changed: Vec<_> = states
            .iter()
            .filter(|(_, s)| matches!(s, guard::State::Changed(_)))
            .cloned()
            .collect();
        if !opts.force {
            guard::refuse_users(&opts.output, &changed)?;
        }
    }
    warn_support(opts);
    note_unchecked_digests(&plan);
    prepare_work(opts, &plan)?;
    say!(
        "Downloading {} {}/{} ({}; {}) into {}",
        plan.release.tag_name,
        opts.os,
        opts.arch,
        human_bytes(plan.sel.total_size()),
        to_download(&plan, Pick::ALL),
        plan.work.display()
    );
    drop(http);
    fetch_assets(opts, &mut plan, Pick::ALL)?;
    if let Some(m) = other_set(opts, &plan, m.as_ref()) {
        out!(
            "Downloaded {tag} into {work}. {} {}/{} stays installed whole in {out}, so the new \
             kernel and client stay in {work}; `cargo xtask resources --version {tag}` switches \
             the whole set.",
            Shown(&m.tag),
            Shown(&m.os),
            Shown(&m.arch),
            tag = plan.release.tag_name,
            work = plan.work.display(),
            out = opts.output.display(),
        );
        return Ok(());
    }
    // Each installed name is kept, adopted or replaced, as in the full run.
    let mut verdicts = Vec::new();
    let mut shas = Vec::new();
    for ((_, state), (name, asset)) in states.iter().zip(small(&plan)) {
        let sha = fsutil::sha256_file(&plan.asset_path(&asset.name))?;
        verdicts.push((
            name,
            adopt::one(opts, &plan, m.as_ref(), state, name, Some(sha))?,
        ));
        shas.push(sha);
    }
    adopt::refuse_users(opts, &mut verdicts)?;
    let mut new = same_set_manifest(opts, &plan, m.as_ref());
    let mut moves = Vec::new();
    for (((name, v), (_, asset)), sha) in verdicts.into_iter().zip(small(&plan)).zip(shas) {
        if let Verdict::Keep(_, e) = v {
            new.set_entry(e);
            continue;
        }
        let path = plan.asset_path(&asset.name);
        new.set_entry(entry(name, &path, Some(hex(&sha)), vec![source_of(asset)])?);
        moves.push((name, Move::Copy(path)));
    }
    let installed = install(&opts.output, m.as_ref(), new, moves)?;
    report_files(opts, &plan, &installed);
    out!(
        "Downloaded {}: {} and {} installed in {}; disk image parts and sums in {}",
        plan.release.tag_name,
        KERNEL,
        CLIENT,
        opts.output.display(),
        plan.work.display()
    );
    Ok(())
}

/// The kernel and client, with their installed names.
fn small(plan: &Plan) -> [(&'static str, &Asset); 2] {
    [(KERNEL, &plan.sel.kernel), (CLIENT, &plan.sel.client)]
}

/// Kernel and client for `--json`, with where each came from.
fn report_files(opts: &Opts, plan: &Plan, m: &install::manifest::Manifest) {
    let files: Vec<_> = small(plan)
        .iter()
        .filter_map(|(name, asset)| {
            let e = m.entry(name)?;
            let source = if fetch::fetched(&asset.name) {
                "downloaded"
            } else {
                "cached"
            };
            Some(serde_json::json!({
                "name": name, "size": e.size, "sha256": e.sha256,
                "path": opts.output.join(name), "source": source,
            }))
        })
        .collect();
    util::say::report("files", serde_json::json!(files));
}
