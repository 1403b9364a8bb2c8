//! `merge`: joins the downloaded disk-image parts, in split-suffix order, into
//! the one archive they were cut from, for users who want the archive itself.
//! The full pipeline never writes it.

use std::io;

use anyhow::{bail, Context, Result};

use super::plan::{open_work, plan_offline};
use super::Opts;
use util::fmt::human_bytes;
use util::fs as fsutil;

pub fn run(opts: &Opts) -> Result<()> {
    let _lock = open_work(opts)?;
    let plan = plan_offline(opts)?;
    let dest = plan.work.join(&plan.sel.disk_archive);
    if plan.sel.disk.len() == 1 {
        out!(
            "{} is a single file; nothing to merge",
            plan.asset_path(&plan.sel.disk[0].name).display()
        );
        return Ok(());
    }
    // Every part must be there, complete, before anything is written.
    for part in &plan.sel.disk {
        let path = plan.asset_path(&part.name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() && m.len() == part.size => {}
            Ok(m) => bail!(
                "{} is {} bytes, the release says {}; run `cargo xtask resources download` to finish it",
                path.display(),
                m.len(),
                part.size
            ),
            Err(_) => bail!(
                "part {} is missing in {}; run `cargo xtask resources download` first",
                part.name,
                plan.work.display()
            ),
        }
    }
    let total: u64 = plan.sel.disk.iter().map(|a| a.size).sum();
    fsutil::ensure_space(&plan.work, total, "the merged archive")?;
    let mut out = fsutil::TempFile::create(&dest)?;
    for part in &plan.sel.disk {
        let path = plan.asset_path(&part.name);
        let mut f = fsutil::open_regular(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        io::copy(&mut f, out.file())
            .with_context(|| format!("cannot append {} to {}", path.display(), dest.display()))?;
    }
    out.commit()?;
    out!(
        "{} ({}, {} parts)",
        dest.display(),
        human_bytes(total),
        plan.sel.disk.len()
    );
    Ok(())
}
