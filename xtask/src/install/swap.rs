//! Putting files in place: only ever by `rename` from a fresh temporary
//! name, and a whole set with its install recorded as pending in the
//! manifest first, so that a run killed midway still knows the files are
//! the tool's; the final manifest is written last.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::manifest::{self, Manifest};
use crate::util::fs as fsutil;

/// Puts `src` under `dest` (a hard link where possible, else a copy), through
/// a fresh temporary name so `dest` is never partial and no link is followed.
pub fn install_link(src: &Path, dest: &Path) -> Result<()> {
    let tmp = fsutil::partial_path(dest);
    fsutil::clear_non_regular(&tmp).with_context(|| format!("cannot clear {}", tmp.display()))?;
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_err() {
        let mut from =
            fsutil::open_regular(src).with_context(|| format!("cannot open {}", src.display()))?;
        let mut to = fsutil::create_fresh(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        io::copy(&mut from, &mut to)
            .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
        to.sync_all()?;
    }
    fsutil::rename_durable(&tmp, dest)
}

/// How a staged file reaches its final name.
pub enum Move {
    /// Kept in the working directory too (kernel, client).
    Link(PathBuf),
    Rename(PathBuf),
}

/// Installs `moves` into `out` as the files of `new`, recording the install
/// as pending in the manifest first, so that a run killed midway still knows
/// the files are the tool's; the final manifest is written last.
pub fn install(
    out: &Path,
    old: Option<&Manifest>,
    new: Manifest,
    moves: Vec<(&str, Move)>,
) -> Result<Manifest> {
    let mut cur = match old {
        Some(m) => m.clone(),
        None => Manifest::for_set(&new.repo, &new.tag, &new.os, &new.arch),
    };
    cur.pending = Some(Box::new(new.clone()));
    manifest::store(out, &cur)?;
    let mut moved = Vec::new();
    for (name, m) in moves {
        let dest = out.join(name);
        match m {
            Move::Link(src) => install_link(&src, &dest)?,
            Move::Rename(src) => fsutil::rename_durable(&src, &dest)?,
        }
        moved.push(name);
    }
    // Only what was moved in gets its new time: an entry carried over keeps
    // the one it had, so a change the user made to that file still shows.
    let done = new.with_installed_times(out, &moved)?;
    manifest::store(out, &done)?;
    Ok(done)
}
