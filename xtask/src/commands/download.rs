//! `cargo xtask resources download`: fetches the set's assets into the
//! working directory and installs kernel and client, unless another set is
//! installed (then they wait in the working directory).

use anyhow::Result;

use super::session::{source_of, staged_entry, Pick, Plan, Session, States, Verdict};
use super::Command;
use github::release::Asset;
use install::layout::{CLIENT, KERNEL};
use install::manifest::Manifest;
use install::swap::Move;
use util::fmt::{hex, human_bytes};
use util::fs as fsutil;
use util::text::Shown;

/// `cargo xtask resources download`.
#[derive(Debug)]
pub(crate) struct DownloadArgs;

impl Command for DownloadArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        s.open()?;
        s.load_manifest()?;
        s.plan_online()?;
        let states = s.inspect_all(&[KERNEL, CLIENT]);
        if s.other_set().is_none() {
            s.refuse_pending()?;
            // A file the manifest does not list is compared once downloaded.
            s.refuse_changed(&states)?;
        }
        s.prepare_work()?;
        let plan = s.plan();
        say!(
            "Downloading {} {}/{} ({}; {}) into {}",
            plan.release.tag_name,
            s.opts().os,
            s.opts().arch,
            human_bytes(plan.sel.total_size()),
            plan.to_download(Pick::ALL),
            plan.work.display()
        );
        s.fetch_assets(Pick::ALL)?;
        if let Some(m) = s.other_set() {
            say_waiting(s, m);
            return Ok(());
        }
        let installed = install_small(s, &states)?;
        report_files(s, &installed);
        out!(
            "Downloaded {}: {} and {} installed in {}; disk image parts and sums in {}",
            s.plan().release.tag_name,
            KERNEL,
            CLIENT,
            s.out().display(),
            s.plan().work.display()
        );
        Ok(())
    }
}

/// Another set stays installed: the new kernel and client wait in the
/// working directory.
fn say_waiting(s: &Session, m: &Manifest) {
    let plan = s.plan();
    out!(
        "Downloaded {tag} into {work}. {} {}/{} stays installed whole in {out}, so the new \
         kernel and client stay in {work}; `cargo xtask resources --version {tag}` switches \
         the whole set.",
        Shown(&m.tag),
        Shown(&m.os),
        Shown(&m.arch),
        tag = plan.release.tag_name,
        work = plan.work.display(),
        out = s.out().display(),
    );
}

/// Installs the kernel and client: each installed name is kept, adopted or
/// replaced, as in the full run.
fn install_small(s: &mut Session, states: &States) -> Result<Manifest> {
    let mut verdicts = Vec::new();
    let mut shas = Vec::new();
    for ((_, state), (name, asset)) in states.iter().zip(small(s.plan())) {
        let sha = fsutil::sha256_file(&s.plan().asset_path(&asset.name))?;
        verdicts.push((name, s.verdict(state, name, Some(sha))?));
        shas.push(sha);
    }
    s.settle_users(&mut verdicts)?;
    let mut new = s.same_set_manifest();
    let mut moves = Vec::new();
    for (((name, v), (_, asset)), sha) in verdicts.into_iter().zip(small(s.plan())).zip(shas) {
        if let Verdict::Keep(_, e) = v {
            new.set_entry(e);
            continue;
        }
        let path = s.plan().asset_path(&asset.name);
        new.set_entry(staged_entry(
            name,
            &path,
            Some(hex(&sha)),
            vec![source_of(asset)],
        )?);
        moves.push((name, Move::Copy(path)));
    }
    s.install(new, moves)
}

/// The kernel and client, with their installed names.
fn small(plan: &Plan) -> [(&'static str, &Asset); 2] {
    [(KERNEL, &plan.sel.kernel), (CLIENT, &plan.sel.client)]
}

/// Kernel and client for `--json`, with where each came from.
fn report_files(s: &Session, m: &Manifest) {
    let files: Vec<_> = small(s.plan())
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
                "path": s.out().join(name), "source": source,
            }))
        })
        .collect();
    util::say::report("files", serde_json::json!(files));
}
