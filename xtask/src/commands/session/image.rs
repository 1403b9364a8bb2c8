//! Making the disk image in one pass: the disk parts stream from the
//! downloads into the unpacker while later parts still arrive (the raw image
//! written in the same pass when asked for); parts whose content turns out
//! bad are fetched once more when a fetch can be the cause; an image that an
//! interrupted run already unpacked and checked is reused.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, bail, Result};

use super::plan::{BadSums, Pick, Plan};
use super::Session;
use archive::unpack;
use fetch::{self, Downloads, Wanted};
use github::release::Asset;
use install::layout::QCOW2;
use util::fmt::{hex, human_bytes};
use util::fs as fsutil;
use util::io::Chain;
use util::text::Shown;

impl Session {
    /// The image of the plan unpacked into `dest` (and with `raw`, the raw
    /// image beside it), with the assets `pick` names fetched along (at
    /// least the sums and the parts).
    pub(crate) fn make_image(
        &mut self,
        pick: Pick,
        dest: &Path,
        raw: Option<&Path>,
    ) -> Result<unpack::Unpacked> {
        if let Some(u) = self.plan().staged_image(dest) {
            // An interrupted run already unpacked and checked the image (and
            // may have deleted the parts): only the small assets are needed.
            say!("  {QCOW2}: already unpacked and checked by an interrupted run");
            let small = Pick {
                sums: false,
                parts: false,
                ..pick
            };
            self.fetch_assets(small)?;
            return Ok(u);
        }
        self.fetch_with_one_retry(pick, dest, raw)
    }

    /// The image unpacked into `dest` from the parts an earlier `download`
    /// left (no network): each is read through the engine, which checks its
    /// size and digest as it goes.
    pub(crate) fn unpack_downloaded(&self, dest: &Path) -> Result<unpack::Unpacked> {
        let plan = self.plan();
        let missing: Vec<&str> = plan
            .sel
            .all()
            .filter(|a| !fsutil::is_regular(&plan.asset_path(&a.name)))
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
        let want = self.wanted(false, Pick::ALL)?;
        let dl = fetch::start(self.http(1), want, 1, "check", self.opts.progress)?;
        let readers = plan.disk_readers(&dl, Pick::ALL);
        match plan.unpack_disk(Chain::new(readers), dest, None, 0) {
            Ok(out) => {
                dl.wait()?;
                Ok(out)
            }
            Err(e) => {
                dl.abort("unpack failed");
                let _ = dl.wait();
                Err(e)
            }
        }
    }

    /// Fetches (or re-checks, where they are there) the assets `pick` names.
    /// An asset that fails its digest (a bad transfer, a cache entry whose
    /// bytes changed) is deleted and fetched once more.
    pub(crate) fn fetch_assets(&mut self, pick: Pick) -> Result<()> {
        if pick.small() == 0 && !pick.parts {
            return Ok(());
        }
        let mut tries = 0;
        loop {
            tries += 1;
            let r = self.start(self.wanted(false, pick)?)?.finish_all();
            match r {
                Err(e) if tries == 1 && mismatched(&e).is_some() => {
                    say!(
                        "  {}; fetching it again",
                        util::text::clean(&format!("{e:#}"), 400)
                    );
                    self.mend()?;
                }
                r => return r,
            }
        }
    }

    /// Starts `want` on `--jobs` connections.
    fn start(&self, want: Vec<Wanted>) -> Result<Downloads> {
        let n = self.opts.connections;
        fetch::start(self.http(n), want, n, "downloaded", self.opts.progress)
    }

    /// Takes the plan's cache entry for writing, to fetch again what turned
    /// out bad: readers of a shared entry wait while it is mended.
    fn mend(&mut self) -> Result<()> {
        let wait = self.opts.wait;
        self.plan_mut().store.exclusive(wait)
    }

    /// Downloads and unpacks; when the archive's content turns out bad in
    /// parts a fetch can be at fault for (no digest, or a failed one), those
    /// parts are deleted and fetched once more before giving up, so one bad
    /// transfer neither fails the run nor poisons the next. A part that
    /// matched its digest is as published: fetching it again cannot help.
    fn fetch_with_one_retry(
        &mut self,
        pick: Pick,
        dest: &Path,
        raw: Option<&Path>,
    ) -> Result<unpack::Unpacked> {
        let mut tries = 0;
        loop {
            tries += 1;
            let (e, bad) = match self.fetch_and_unpack(pick, dest, raw)? {
                Try::Done(u) => return Ok(u),
                Try::Again(e, bad) => (e, bad),
            };
            self.mend()?;
            for name in &bad {
                fetch::forget(&self.plan().asset_path(name));
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

    /// One try of [`Session::fetch_with_one_retry`]; an error when fetching
    /// again cannot help.
    fn fetch_and_unpack(&self, pick: Pick, dest: &Path, raw: Option<&Path>) -> Result<Try> {
        let keep = self.opts.keep_downloads;
        let wanted = self.wanted(!keep, pick)?;
        let to_download: u64 = wanted
            .iter()
            .filter(|j| !fsutil::is_regular(&j.dest))
            .map(|j| j.size)
            .sum();
        let dl = self.start(wanted)?;
        let plan = self.plan();
        let started = Instant::now();
        let e = match plan.fused(&dl, pick, dest, raw, to_download) {
            Ok(u) => {
                dl.wait()?;
                plan.report_unpacked(&u, started);
                if !keep {
                    // The image is checked: parts outside the cache only take
                    // space the raw image needs.
                    for a in &plan.sel.disk {
                        let _ = fs::remove_file(plan.work.join(&a.name));
                    }
                }
                return Ok(Try::Done(u));
            }
            Err(e) => e,
        };
        // The content is judged only once the part it was read from has
        // had its digest checked.
        let settled = if matches!(
            archive::Error::find(&e),
            Some(archive::Error::BadContent { .. } | archive::Error::Unsupported(_))
        ) {
            plan.settle(&dl, pick)
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
        let mut bad = plan.culprits(&e);
        // A digest mismatch already deleted its file.
        bad.extend(mismatched(&e));
        if bad.is_empty() {
            return Err(if as_published { published(e) } else { e });
        }
        Ok(Try::Again(e, bad))
    }
}

/// How one try of download and unpack ended, when it did not fail for good.
enum Try {
    Done(unpack::Unpacked),
    /// The content was bad in assets a fetch can be at fault for: the
    /// error, and those assets, to fetch again.
    Again(anyhow::Error, Vec<String>),
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

impl Plan {
    /// Of the assets `pick` names: (bytes already here, whole or in partial
    /// files; bytes in all), so a header says what is left to download.
    pub(crate) fn on_disk(&self, pick: Pick) -> (u64, u64) {
        let sel = &self.sel;
        let small = [
            (pick.kernel, &sel.kernel),
            (pick.client, &sel.client),
            (pick.sums, &sel.sums),
        ];
        let small = small.into_iter().filter(|(p, _)| *p).map(|(_, a)| a);
        let parts = sel.disk.iter().filter(|_| pick.parts);
        small.chain(parts).fold((0, 0), |(have, all), a| {
            let here = fetch::downloaded(&self.asset_path(&a.name), a.size);
            (have + here, all + a.size)
        })
    }

    /// `N to download`, and what is already here when something is.
    pub(crate) fn to_download(&self, pick: Pick) -> String {
        let (have, all) = self.on_disk(pick);
        let left = human_bytes(all.saturating_sub(have));
        match have {
            0 => format!("{left} to download"),
            _ if have >= all => "nothing to download".into(),
            _ => format!("{left} to download, {} already here", human_bytes(have)),
        }
    }

    /// After a content error: the parts are read in order and each is
    /// checked and renamed as its last byte is read, so only the first disk
    /// part not yet under its final name can have been read unchecked. Its
    /// download is finished and its digest checked, so that no part is
    /// blamed (or kept) on a guess.
    fn settle(&self, dl: &Downloads, pick: Pick) -> Settled {
        for (i, a) in self.sel.disk.iter().enumerate() {
            if !has_digest(a) {
                return Settled::Unknown;
            }
            if fsutil::is_regular(&self.asset_path(&a.name)) {
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

    /// The assets to throw away after a content failure: the part holding
    /// the fault and those after it, among the ones a fetch can be at fault
    /// for, those without a digest (a part with one was checked by
    /// [`Plan::settle`], and one that failed it is named by its own error).
    /// The fault may show some way after the bytes that hold it, so the
    /// parts up to 192 MiB before count too, and a fault seen only at the
    /// end (a CRC) puts every such part in doubt. An archive that decodes
    /// into what this tool does not read ([`archive::Error::Unsupported`]) is no
    /// transfer's fault.
    fn culprits(&self, e: &anyhow::Error) -> Vec<String> {
        let suspect = |a: &Asset| !has_digest(a);
        if e.is::<BadSums>() {
            return suspect(&self.sel.sums)
                .then(|| self.sel.sums.name.clone())
                .into_iter()
                .collect();
        }
        let Some(archive::Error::BadContent { at, .. }) = archive::Error::find(e) else {
            return Vec::new();
        };
        let parts = &self.sel.disk;
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
        if placed.is_none() && suspect(&self.sel.sums) {
            out.push(self.sel.sums.name.clone());
        }
        out
    }

    /// The staged image of an interrupted run, if it is there and matches
    /// the sums (the sums file stays in the working directory until the end).
    fn staged_image(&self, staged: &Path) -> Option<unpack::Unpacked> {
        if !fsutil::is_regular(staged) || !fsutil::is_regular(&self.asset_path(&self.sel.sums.name))
        {
            return None;
        }
        let expected = self.expected_sha().ok()?;
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

    /// Download and unpack in one pass: the small assets are checked on
    /// their own threads while this thread feeds the disk parts, in order,
    /// to the unpacker as they arrive.
    fn fused(
        &self,
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
            let parts = self.disk_readers(dl, pick);
            self.unpack_disk(Chain::new(parts), dest, raw, to_download)
        })
    }
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

fn has_digest(a: &Asset) -> bool {
    a.sha256().ok().flatten().is_some()
}

/// The unpacked image for `--json`.
pub(crate) fn report_image(path: &Path, sha256: &[u8; 32]) {
    let size = fs::metadata(path).map(|m| m.len()).ok();
    util::say::report(
        "files",
        serde_json::json!([{ "name": QCOW2, "path": path, "size": size, "sha256": hex(sha256) }]),
    );
}
