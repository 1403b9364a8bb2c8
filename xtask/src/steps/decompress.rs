//! `cargo xtask resources decompress`: unpacks the downloaded disk image
//! (the merged archive if `merge` made one, else the parts read in order,
//! their digests checked) into the working directory, then installs it
//! unless another set is installed.

use std::io;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::guard::{
    entry, guard_names, load_manifest, other_set, refuse_pending, same_set_manifest,
};
use super::plan::{
    disk_readers, disk_sources, open_work, plan_offline, report_unpacked, unpack_disk, wanted,
};
use super::Opts;
use crate::fetch::{self, http::Http};
use crate::install::layout::QCOW2;
use crate::install::swap::{install, Move};
use crate::util::fmt::hex;
use crate::util::fs as fsutil;
use crate::util::io::Chain;
use crate::util::text::Shown;

/// `cargo xtask resources decompress`: from the merged archive if `merge`
/// made one, else from the parts read in order (their digests checked). The
/// image is unpacked into the working directory, then installed unless
/// another set is.
pub fn run(opts: &Opts) -> Result<()> {
    let _lock = open_work(opts)?;
    let m = load_manifest(opts)?;
    let plan = plan_offline(opts)?;
    let other = other_set(opts, &plan, m.as_ref());
    if other.is_none() {
        refuse_pending(opts, m.as_ref())?;
        guard_names(opts, m.as_ref(), &[QCOW2])?;
    }
    let staged = plan.work.join(QCOW2);
    let merged = plan.work.join(&plan.sel.disk_archive);
    let started = Instant::now();
    let out = if plan.sel.disk.len() > 1 && fsutil::is_regular(&merged) {
        let f = fsutil::open_regular(&merged)
            .with_context(|| format!("cannot open {}", merged.display()))?;
        unpack_disk(
            &plan,
            io::BufReader::with_capacity(1 << 20, f),
            &staged,
            None,
            0,
        )?
    } else {
        let missing: Vec<&str> = plan
            .sel
            .all()
            .filter(|a| !fsutil::is_regular(&plan.work.join(&a.name)))
            .map(|a| a.name.as_str())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} not downloaded yet ({}); run `cargo xtask resources download --version {}` first",
                missing.join(", "),
                plan.work.display(),
                plan.release.tag_name
            );
        }
        // All present: the engine only re-reads and checks them.
        let http = Http::new(&opts.http(1));
        let dl = fetch::start(http, wanted(&plan, opts, false)?, 1, "check", opts.progress)?;
        let readers = disk_readers(&plan, &dl);
        match unpack_disk(&plan, Chain::new(readers), &staged, None, 0) {
            Ok(out) => {
                dl.wait()?;
                out
            }
            Err(e) => {
                dl.abort("unpack failed");
                let _ = dl.wait();
                return Err(e);
            }
        }
    };
    report_unpacked(&plan, &out, started);
    if let Some(o) = other {
        eprintln!(
            "note: {} {}/{} stays installed whole in {}; the image stays in the working directory",
            Shown(&o.tag),
            Shown(&o.os),
            Shown(&o.arch),
            opts.output.display()
        );
        println!("{} is ready", staged.display());
        return Ok(());
    }
    let mut new = same_set_manifest(opts, &plan, m.as_ref());
    new.set_entry(entry(
        QCOW2,
        &staged,
        Some(hex(&out.sha256)),
        disk_sources(&plan),
    )?);
    install(
        &opts.output,
        m.as_ref(),
        new,
        vec![(QCOW2, Move::Rename(staged))],
    )?;
    println!("{} is ready", opts.output.join(QCOW2).display());
    Ok(())
}
