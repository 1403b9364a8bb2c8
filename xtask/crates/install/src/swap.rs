//! Putting files in place: only ever by `rename` from a fresh temporary
//! name, and a whole set with its install recorded as pending in the
//! manifest first, so that a run killed midway still knows the files are
//! the tool's; the final manifest is written last.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::manifest::{self, Manifest};
use util::fs as fsutil;

/// Puts a copy of `src` under `dest`, through a fresh temporary name so
/// `dest` is never partial and no link is followed. Never a hard link: the
/// user, QEMU and gem5 write to installed files, and that must not change
/// the cache. (`io::copy` between files is `copy_file_range`, which shares
/// the blocks where the file system has reflinks.)
pub(crate) fn install_copy(src: &Path, dest: &Path) -> Result<()> {
    let tmp = fsutil::partial_path(dest);
    let mut from =
        fsutil::open_regular(src).with_context(|| format!("cannot open {}", src.display()))?;
    let mut to =
        fsutil::create_fresh(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    io::copy(&mut from, &mut to)
        .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
    to.sync_all()
        .with_context(|| format!("cannot sync {}", tmp.display()))?;
    fsutil::rename_durable(&tmp, dest)
}

/// How a staged file reaches its final name.
pub enum Move {
    /// A copy of a file that stays where it is (kernel and client, from the
    /// cache or the working directory).
    Copy(PathBuf),
    /// Renamed from this path (on the same file system).
    Rename(PathBuf),
    /// The installed file is removed (the raw image of a replaced qcow2,
    /// with `--no-raw`).
    Remove,
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
            Move::Copy(src) => install_copy(&src, &dest)?,
            Move::Rename(src) => fsutil::rename_durable(&src, &dest)?,
            Move::Remove => {
                fsutil::clear_non_regular(&dest)?;
                match fs::remove_file(&dest) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(e).with_context(|| format!("cannot remove {}", dest.display()))
                    }
                    _ => continue,
                }
            }
        }
        moved.push(name);
    }
    // Only what was moved in gets its new time: an entry carried over keeps
    // the one it had, so a change the user made to that file still shows.
    let done = new.with_installed_times(out, &moved)?;
    manifest::store(out, &done)?;
    Ok(done)
}
