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
use archive::unpack;
use fetch::{self, Downloads, Http};
use util::fmt::human_bytes;
use util::fs as fsutil;
use util::io::Chain;
use util::text::Shown;

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
        say!(
            "  {}: already unpacked and checked by an interrupted run",
            install::layout::QCOW2
        );
        let small = Pick {
            sums: false,
            parts: false,
            ..pick
        };
        fetch_assets(opts, plan, small)?;
        return Ok(u);
    }
    fetch_with_one_retry(opts, plan, pick, dest, raw)
}

/// Of the assets `pick` names: (bytes already here, whole or in partial
/// files; bytes in all), so a header says what is left to download.
pub(super) fn on_disk(plan: &Plan, pick: Pick) -> (u64, u64) {
    let sel = &plan.sel;
    let small = [
        (pick.kernel, &sel.kernel),
        (pick.client, &sel.client),
        (pick.sums, &sel.sums),
    ];
    let small = small.into_iter().filter(|(p, _)| *p).map(|(_, a)| a);
    let parts = sel.disk.iter().filter(|_| pick.parts);
    small.chain(parts).fold((0, 0), |(have, all), a| {
        let here = fetch::downloaded(&plan.asset_path(&a.name), a.size);
        (have + here, all + a.size)
    })
}

/// `N to download`, and what is already here when something is.
pub(super) fn to_download(plan: &Plan, pick: Pick) -> String {
    let (have, all) = on_disk(plan, pick);
    let left = human_bytes(all.saturating_sub(have));
    match have {
        0 => format!("{left} to download"),
        _ if have >= all => "nothing to download".into(),
        _ => format!("{left} to download, {} already here", human_bytes(have)),
    }
}

/// Fetches (or re-checks, where they are there) the assets `pick` names.
/// An asset that fails its digest (a bad transfer, a cache entry whose bytes
/// changed) is deleted and fetched once more.
pub(super) fn fetch_assets(opts: &Opts, plan: &mut Plan, pick: Pick) -> Result<()> {
    if pick.small() == 0 && !pick.parts {
        return Ok(());
    }
    let mut tries = 0;
    loop {
        tries += 1;
        let want = wanted(plan, opts, false, pick)?;
        let http = Http::new(&opts.http(opts.connections));
        let r =
            fetch::start(http, want, opts.connections, "downloaded", opts.progress)?.finish_all();
        match r {
            Err(e) if tries == 1 && mismatched(&e).is_some() => {
                say!(
                    "  {}; fetching it again",
                    util::text::clean(&format!("{e:#}"), 400)
                );
                // Readers of a shared cache entry wait while it is mended.
                plan.store.exclusive(opts.wait)?;
            }
            r => return r,
        }
    }
}

/// Downloads and unpacks; when the archive's content turns out bad in parts
/// a fetch can be at fault for (no digest, or a failed one), those parts are
/// deleted and fetched once more before giving up, so one bad transfer
/// neither fails the run nor poisons the next. A part that matched its
/// digest is as published: fetching it again cannot help.
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
        let wanted = wanted(plan, opts, !opts.keep_downloads, pick)?;
        let to_download: u64 = wanted
            .iter()
            .filter(|j| !fsutil::is_regular(&j.dest))
            .map(|j| j.size)
            .sum();
        let http = Http::new(&opts.http(opts.connections));
        let dl = fetch::start(http, wanted, opts.connections, "downloaded", opts.progress)?;
        let started = Instant::now();
        let e = match fused(plan, &dl, pick, dest, raw, to_download) {
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
            Err(e) => e,
        };
        // The content is judged only once the part it was read from has
        // had its digest checked.
        let content = matches!(
            archive::Error::find(&e),
            Some(archive::Error::BadContent { .. } | archive::Error::Unsupported(_))
        );
        let settled = if content {
            settle(plan, &dl, pick)
        } else {
            Settled::Unknown
        };
        dl.abort("stopped after an error");
        let _ = dl.wait();
        let as_published = matches!(settled, Settled::AsPublished);
        // A part that failed its digest is the cause; what it decoded into is not.
        let e = match settled {
            Settled::Mismatch(m) => m,
            _ => e,
        };
        let mut bad = culprits(plan, &e);
        // A digest mismatch already deleted its file.
        bad.extend(mismatched(&e));
        if bad.is_empty() {
            return Err(if as_published { published(e) } else { e });
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
        say!(
            "  {}; {} deleted, fetching again",
            util::text::clean(&format!("{e:#}"), 400),
            bad.join(", ")
        );
    }
}

/// What checking the digests of the parts a content error was read from found.
enum Settled {
    /// Every part read has a digest, and each matched: the content is as published.
    AsPublished,
    /// A part failed its digest (its file is deleted): this error says so.
    Mismatch(anyhow::Error),
    /// A part read has no digest, or could not be finished.
    Unknown,
}

/// After a content error: the parts are read in order and each is checked
/// and renamed as its last byte is read, so only the first disk part not yet
/// under its final name can have been read unchecked. Its download is
/// finished and its digest checked, so that no part is blamed (or kept)
/// on a guess.
fn settle(plan: &Plan, dl: &Downloads, pick: Pick) -> Settled {
    for (i, a) in plan.sel.disk.iter().enumerate() {
        if !has_digest(a) {
            return Settled::Unknown;
        }
        if fsutil::is_regular(&plan.asset_path(&a.name)) {
            continue;
        }
        say!(
            "  {}: finishing its download to check its digest",
            Shown(&a.name)
        );
        let mut r = dl.reader(pick.small() + i);
        return match io::copy(&mut r, &mut io::sink()) {
            Ok(_) => Settled::AsPublished,
            Err(e) => {
                let e = anyhow::Error::new(e);
                match mismatched(&e) {
                    Some(_) => Settled::Mismatch(e),
                    None => Settled::Unknown,
                }
            }
        };
    }
    Settled::AsPublished
}

/// A content error in parts that all matched their digests: the release
/// holds it as published. A bad archive is said as it is; a corrupt one
/// without the advice to fetch again.
fn published(e: anyhow::Error) -> anyhow::Error {
    match archive::Error::find(&e) {
        // Still the archive's fault (exit code 4), now said as it is.
        Some(bad @ archive::Error::BadContent { at, .. }) => {
            anyhow::Error::new(archive::Error::BadContent {
                at: *at,
                msg: format!(
                    "{}; every part it was read from matched the release's sha256 digest, so the \
                 release itself is damaged and fetching it again will not help: choose another \
                 --version",
                    bad.fault()
                ),
            })
        }
        _ => e,
    }
}

/// The asset whose digest failed, if that is what `e` is about.
fn mismatched(e: &anyhow::Error) -> Option<String> {
    fetch::Error::find(e)
        .and_then(fetch::Error::mismatched_asset)
        .map(str::to_string)
}

fn has_digest(a: &github::release::Asset) -> bool {
    a.sha256().ok().flatten().is_some()
}

/// The assets to throw away after a content failure: the part holding the
/// fault and those after it, among the ones a fetch can be at fault for,
/// those without a digest (a part with one was checked by [`settle`], and
/// one that failed it is named by its own error). The fault may show some
/// way after the bytes that hold it, so the parts up to 192 MiB before count
/// too, and a fault seen only at the end (a CRC) puts every such part in
/// doubt. An archive that decodes into what this tool does not read
/// ([`archive::Error::Unsupported`]) is no transfer's fault.
fn culprits(plan: &Plan, e: &anyhow::Error) -> Vec<String> {
    let suspect = |a: &github::release::Asset| !has_digest(a);
    if e.is::<BadSums>() {
        return suspect(&plan.sel.sums)
            .then(|| plan.sel.sums.name.clone())
            .into_iter()
            .collect();
    }
    let Some(archive::Error::BadContent { at, .. }) = archive::Error::find(e) else {
        return Vec::new();
    };
    let parts = &plan.sel.disk;
    let total: u64 = parts.iter().map(|p| p.size).sum();
    // Near the end of the input the fault is most likely a trailer check
    // (a gzip CRC): it may lie anywhere before.
    let placed = at.filter(|at| at.saturating_add(192 << 20) < total);
    let first = match placed {
        None => 0,
        Some(at) => {
            // A decoder notices a fault up to a member and what the
            // parallel decoder reads ahead (64 MiB) after the bytes that
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
