//! Making the disk image in one pass: the disk parts stream from the
//! downloads into the unpacker while later parts still arrive (the raw image
//! written in the same pass when asked for); parts whose content turns out
//! bad are fetched once more when a fetch can be the cause; an image that an
//! interrupted run already unpacked and checked is reused.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Result};

use super::plan::{
    disk_readers, expected_sha, report_unpacked, unpack_disk, wanted, BadSums, Pick, Plan,
};
use super::Opts;
use crate::fetch::{self, http::Http, Downloads};
use crate::unpack::{self, BadContent};
use crate::util::fs as fsutil;
use crate::util::io::Chain;

/// The image of `plan` unpacked into `dest` (and with `raw`, the raw image
/// beside it), with the assets `pick` names fetched along (at least the
/// sums and the parts).
pub(super) fn make_image(
    opts: &Opts,
    plan: &mut Plan,
    pick: Pick,
    dest: &Path,
    raw: Option<&Path>,
) -> Result<unpack::Unpacked> {
    if let Some(u) = staged_image(plan, dest) {
        // An interrupted run already unpacked and checked the image (and
        // may have deleted the parts): only the small assets are needed.
        eprintln!(
            "  {}: already unpacked and checked by an interrupted run",
            crate::install::layout::QCOW2
        );
        let small = Pick {
            sums: false,
            parts: false,
            ..pick
        };
        fetch_small(opts, plan, small)?;
        return Ok(u);
    }
    fetch_with_one_retry(opts, plan, pick, dest, raw)
}

/// Fetches (or re-checks, where they are there) the assets `pick` names.
pub(super) fn fetch_small(opts: &Opts, plan: &Plan, pick: Pick) -> Result<()> {
    if pick.small() == 0 && !pick.parts {
        return Ok(());
    }
    let want = wanted(plan, opts, false, pick)?;
    let http = Http::new(&opts.http(opts.connections));
    fetch::start(http, want, opts.connections, "download", opts.progress)?.finish_all()
}

/// Downloads and unpacks; when the archive's content turns out bad in parts
/// the release gives no digest for (upstream's older assets), those parts
/// are deleted and fetched once more before giving up, so one bad transfer
/// neither fails the run nor poisons the next.
fn fetch_with_one_retry(
    opts: &Opts,
    plan: &mut Plan,
    pick: Pick,
    dest: &Path,
    raw: Option<&Path>,
) -> Result<unpack::Unpacked> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut wanted = wanted(plan, opts, !opts.keep_downloads, pick)?;
        let to_download: u64 = wanted
            .iter()
            .filter(|j| !fsutil::is_regular(&j.dest))
            .map(|j| j.size)
            .sum();
        let http = Http::new(&opts.http(opts.connections));
        let dl = fetch::start(
            http,
            std::mem::take(&mut wanted),
            opts.connections,
            "download",
            opts.progress,
        )?;
        let started = Instant::now();
        match fused(plan, &dl, pick, dest, raw, to_download) {
            Ok(u) => {
                dl.wait()?;
                report_unpacked(plan, &u, started);
                if !opts.keep_downloads {
                    // The image is checked: parts outside the cache only take
                    // space the raw image needs.
                    for a in &plan.sel.disk {
                        let _ = fs::remove_file(plan.work.join(&a.name));
                    }
                }
                return Ok(u);
            }
            Err(e) => {
                dl.abort("stopped after an error");
                let _ = dl.wait();
                let mut bad = culprits(plan, &e);
                // A digest mismatch already deleted its file.
                bad.extend(fetch::digest_mismatch(&e));
                if bad.is_empty() {
                    return Err(e);
                }
                // Readers of a shared cache entry wait while it is mended.
                plan.store.exclusive(opts.wait)?;
                for name in &bad {
                    fetch::forget(&plan.asset_path(name));
                }
                if tries >= 2 {
                    return Err(e.context(format!(
                        "fetched {} twice and the content was bad both times; the release itself \
                         is damaged, choose another --version",
                        bad.join(", ")
                    )));
                }
                eprintln!(
                    "  {}; {} deleted, fetching again",
                    crate::util::text::clean(&format!("{e:#}"), 400),
                    bad.join(", ")
                );
            }
        }
    }
}

/// The assets to throw away after a content failure: the part holding the
/// fault and those after it, among the ones that could hold it. A part
/// whose digest was checked cannot (it got its final name only then); a part
/// without a digest, or one still partial, can. The fault may show some way
/// after the bytes that hold it, so the parts up to 64 MiB before count too,
/// and a fault seen only at the end (a CRC) puts every such part in doubt.
fn culprits(plan: &Plan, e: &anyhow::Error) -> Vec<String> {
    let suspect = |a: &crate::github::release::Asset| {
        let has_digest = fetch::parse_digest(a.digest.as_deref(), &a.name)
            .ok()
            .flatten()
            .is_some();
        !(has_digest && fsutil::is_regular(&plan.asset_path(&a.name)))
    };
    if e.is::<BadSums>() {
        return suspect(&plan.sel.sums)
            .then(|| plan.sel.sums.name.clone())
            .into_iter()
            .collect();
    }
    let Some(bad) = e.downcast_ref::<BadContent>() else {
        return Vec::new();
    };
    let parts = &plan.sel.disk;
    let total: u64 = parts.iter().map(|p| p.size).sum();
    // Near the end of the input the fault is most likely a trailer check
    // (a gzip CRC): it may lie anywhere before.
    let placed = bad.at.filter(|at| at.saturating_add(192 << 20) < total);
    let first = match placed {
        None => 0,
        Some(at) => {
            // A decoder notices a fault up to a member and what the
            // parallel decoder reads ahead (128 MiB) after the bytes that
            // hold it.
            let at = at.saturating_sub(192 << 20);
            let mut end = 0u64;
            parts
                .iter()
                .position(|p| {
                    end += p.size;
                    at < end
                })
                .unwrap_or(parts.len().saturating_sub(1))
        }
    };
    let mut out: Vec<String> = parts[first..]
        .iter()
        .filter(|p| suspect(p))
        .map(|p| p.name.clone())
        .collect();
    if placed.is_none() && suspect(&plan.sel.sums) {
        out.push(plan.sel.sums.name.clone());
    }
    out
}

/// The staged image of an interrupted run, if it is there and matches the
/// sums (the sums file stays in the working directory until the end).
fn staged_image(plan: &Plan, staged: &Path) -> Option<unpack::Unpacked> {
    if !fsutil::is_regular(staged) || !fsutil::is_regular(&plan.asset_path(&plan.sel.sums.name)) {
        return None;
    }
    let expected = expected_sha(plan).ok()?;
    let got = fsutil::sha256_file(staged).ok()?;
    if got != expected {
        let _ = fs::remove_file(staged);
        return None;
    }
    Some(unpack::Unpacked {
        path: staged.to_path_buf(),
        size: fs::metadata(staged).ok()?.len(),
        sha256: got,
        member: String::new(),
        raw: None,
    })
}

/// Download and unpack in one pass: the small assets are checked on their
/// own threads while this thread feeds the disk parts, in order, to the
/// unpacker as they arrive.
fn fused(
    plan: &Plan,
    dl: &Downloads,
    pick: Pick,
    dest: &Path,
    raw: Option<&Path>,
    to_download: u64,
) -> Result<unpack::Unpacked> {
    std::thread::scope(|s| {
        let small: Vec<_> = (0..pick.small())
            .map(|i| {
                let mut r = dl.reader(i);
                s.spawn(move || io::copy(&mut r, &mut io::sink()).map(|_| ()))
            })
            .collect();
        let mut failed = None;
        // The sums file comes first in the download order; the unpacker needs it.
        for h in small {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    failed.get_or_insert_with(|| anyhow::Error::new(e));
                }
                Err(_) => {
                    failed.get_or_insert_with(|| anyhow!("a download check thread panicked"));
                }
            }
            if failed.is_some() {
                dl.abort("stopped after an error");
                break;
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let parts = disk_readers(plan, dl, pick);
        unpack_disk(plan, Chain::new(parts), dest, raw, to_download)
    })
}
