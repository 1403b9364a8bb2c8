//! `cargo xtask resources download`: fetches the set's assets into the
//! working directory and installs kernel and client, unless another set is
//! installed (then they wait in the working directory).

use anyhow::Result;

use super::guard::{
    entry, guard_names, load_manifest, other_set, refuse_pending, same_set_manifest,
};
use super::plan::{
    note_unchecked_digests, open_work, plan_online, prepare_work, source_of, wanted, warn_support,
    Pick,
};
use super::Opts;
use crate::fetch::{self, http::Http};
use crate::install::layout::{CLIENT, KERNEL};
use crate::install::swap::{install, Move};
use crate::util::fmt::{hex, human_bytes};
use crate::util::fs as fsutil;
use crate::util::text::Shown;

/// `cargo xtask resources download`
pub fn run(opts: &Opts) -> Result<()> {
    let _lock = open_work(opts)?;
    let m = load_manifest(opts)?;
    let http = Http::new(&opts.http(opts.connections));
    let plan = plan_online(opts, &http)?;
    let other = other_set(opts, &plan, m.as_ref()).is_some();
    if !other {
        refuse_pending(opts, m.as_ref())?;
        guard_names(opts, m.as_ref(), &[KERNEL, CLIENT])?;
    }
    warn_support(opts);
    note_unchecked_digests(&plan);
    prepare_work(opts, &plan)?;
    eprintln!(
        "Downloading {} {}/{} ({}) into {}",
        plan.release.tag_name,
        opts.os,
        opts.arch,
        human_bytes(plan.sel.total_size()),
        plan.work.display()
    );
    let dl = fetch::start(
        http,
        wanted(&plan, opts, false, Pick::ALL)?,
        opts.connections,
        "download",
        opts.progress,
    )?;
    dl.finish_all()?;
    if let Some(m) = other_set(opts, &plan, m.as_ref()) {
        println!(
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
    let kernel = plan.asset_path(&plan.sel.kernel.name);
    let client = plan.asset_path(&plan.sel.client.name);
    let mut new = same_set_manifest(opts, &plan, m.as_ref());
    new.set_entry(entry(
        KERNEL,
        &kernel,
        Some(hex(&fsutil::sha256_file(&kernel)?)),
        vec![source_of(&plan.sel.kernel)],
    )?);
    new.set_entry(entry(
        CLIENT,
        &client,
        Some(hex(&fsutil::sha256_file(&client)?)),
        vec![source_of(&plan.sel.client)],
    )?);
    install(
        &opts.output,
        m.as_ref(),
        new,
        vec![(KERNEL, Move::Copy(kernel)), (CLIENT, Move::Copy(client))],
    )?;
    println!(
        "Downloaded {}: {} and {} installed in {}; disk image parts and sums in {}",
        plan.release.tag_name,
        KERNEL,
        CLIENT,
        opts.output.display(),
        plan.work.display()
    );
    Ok(())
}
