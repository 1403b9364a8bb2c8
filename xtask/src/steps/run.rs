//! `cargo xtask resources`: every step, fused. The user's files are looked
//! at first; the disk archive streams from the downloads into the unpacker
//! while later parts still arrive; bad parts are fetched once more; the
//! staged set is converted and checked whole, and only then installed.

use std::fs;
use std::io;
use std::path::Path;
use std::time::Instant;

use anyhow::{anyhow, Context, Result};

use super::guard;
use super::plan::{
    disk_readers, disk_sources, expected_sha, note_unchecked_digests, open_work, plan_online,
    prepare_work, report_unpacked, source_of, unpack_disk, wanted, warn_support, BadSums, Plan,
};
use super::verify;
use super::Opts;
use crate::fetch::{self, http::Http, Downloads};
use crate::github::assets::Selection;
use crate::github::support::support;
use crate::install::layout::{self, CLIENT, KERNEL, LAST_TAG, NAMES, QCOW2, RAW};
use crate::install::manifest::{self, Manifest};
use crate::install::swap::{install, Move};
use crate::qcow2::convert::convert_file;
use crate::unpack::{self, BadContent};
use crate::util::fmt::{hex, human_bytes};
use crate::util::fs as fsutil;
use crate::util::io::Chain;
use crate::util::text::Shown;

/// `cargo xtask resources`: everything, fused.
pub fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    let lock = open_work(opts)?;
    let out = &opts.output;

    // The user's files first: nothing is fetched while one is in the way.
    let mut m = guard::load_manifest(opts)?;
    let states = guard::inspect_all(out, m.as_ref(), &NAMES);
    if !opts.force {
        guard::refuse_users(out, &states)?;
    }
    if let Some(mm) = m.as_mut() {
        if guard::record_touched(out, mm, &states)? {
            manifest::store(out, mm)?;
        }
    }
    let intact = states.iter().all(|(_, s)| s.is_intact());
    // A whole set that still matches its manifest needs no network for a
    // pinned tag, and one API call for `latest`.
    let installed = m.clone().filter(|m| {
        !opts.force
            && intact
            && m.complete()
            && m.matches_request(
                &opts.repo,
                opts.os.as_str(),
                opts.arch.as_str(),
                &opts.version,
            )
    });
    if let Some(m) = installed.as_ref().filter(|_| opts.version != "latest") {
        println!("{}", up_to_date(m, out, started));
        lock.remove();
        return Ok(());
    }
    let http = Http::new(&opts.http(opts.connections));
    let plan = plan_online(opts, &http)?;
    if let Some(m) = installed.filter(|m| m.tag == plan.release.tag_name) {
        println!("{}", up_to_date(&m, out, started));
        lock.remove();
        return Ok(());
    }
    drop(http);
    warn_support(opts);
    note_unchecked_digests(&plan);
    prepare_work(opts, &plan)?;
    eprintln!(
        "Getting {} {}/{} ({} to download) into {}",
        plan.release.tag_name,
        opts.os,
        opts.arch,
        human_bytes(plan.sel.total_size()),
        out.display()
    );

    let staged_qcow2 = plan.work.join(QCOW2);
    let staged_raw = plan.work.join(RAW);
    let unpacked = match staged_image(&plan, &staged_qcow2) {
        // An interrupted run already unpacked and checked the image (and
        // may have deleted the parts): only the small assets are needed.
        Some(u) => {
            eprintln!("  {QCOW2}: already unpacked and checked by an interrupted run");
            let mut small = wanted(&plan, opts, !opts.keep_downloads)?;
            small.truncate(Selection::SMALL);
            let http = Http::new(&opts.http(opts.connections));
            fetch::start(http, small, opts.connections, "download", opts.progress)?.finish_all()?;
            u
        }
        None => fetch_with_one_retry(opts, &plan, &staged_qcow2, &staged_raw)?,
    };
    match unpacked.raw {
        Some(stats) => eprintln!(
            "  {RAW}: converted in the same pass ({} data)",
            human_bytes(stats.data_bytes)
        ),
        None => {
            let t = Instant::now();
            convert_file(&staged_qcow2, &staged_raw, true, opts.progress)?;
            eprintln!("  {RAW}: converted in {:.1} s", t.elapsed().as_secs_f64());
        }
    }

    // The staged set is checked whole before anything installed is touched.
    let new = build(opts, &plan, &unpacked)?;
    let staged = [
        (KERNEL, plan.work.join(&plan.sel.kernel.name)),
        (CLIENT, plan.work.join(&plan.sel.client.name)),
        (QCOW2, staged_qcow2.clone()),
        (RAW, staged_raw.clone()),
    ];
    if let Err(e) = verify::check_staged(&new, &staged) {
        // Small assets without a digest are fetched again next time rather
        // than reused: the fault may have been the transfer's.
        for a in [&plan.sel.kernel, &plan.sel.client] {
            if fetch::parse_digest(a.digest.as_deref(), &a.name)
                .ok()
                .flatten()
                .is_none()
            {
                forget_download(&plan.work.join(&a.name));
            }
        }
        return Err(e.context(format!(
            "release {} failed the checks before installing; the installed files were left as \
             they were",
            plan.release.tag_name
        )));
    }
    // The user may have changed a file while this ran.
    if !opts.force {
        let now = guard::inspect_all(out, m.as_ref(), &NAMES);
        guard::refuse_users(out, &now)?;
    }
    let [(_, kernel), (_, client), ..] = staged;
    let installed = install(
        out,
        m.as_ref(),
        new,
        vec![
            (KERNEL, Move::Link(kernel)),
            (CLIENT, Move::Link(client)),
            (QCOW2, Move::Rename(staged_qcow2)),
            (RAW, Move::Rename(staged_raw)),
        ],
    )?;
    println!("Checking the installed set:");
    // Quick: every byte was hashed on the way in; re-reading GiBs proves nothing new.
    verify::check_installed(out, &installed, verify::Depth::Quick)
        .context("the installed set failed verification")?;
    if !opts.keep_downloads {
        fs::remove_dir_all(&plan.work)
            .with_context(|| format!("cannot remove {}", plan.work.display()))?;
        let _ = fs::remove_file(layout::downloads_root(&opts.output).join(LAST_TAG));
        lock.remove();
    }
    print_summary(opts, &installed, started);
    Ok(())
}

/// Downloads and unpacks; when the archive's content turns out bad in parts
/// a fetch can be at fault for (no digest, or a failed one), those parts are
/// deleted and fetched once more before giving up, so one bad transfer
/// neither fails the run nor poisons the next. A part that matched its
/// digest is as published: fetching it again cannot help.
fn fetch_with_one_retry(
    opts: &Opts,
    plan: &Plan,
    dest: &Path,
    raw: &Path,
) -> Result<unpack::Unpacked> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut wanted = wanted(plan, opts, !opts.keep_downloads)?;
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
        let e = match fused(plan, &dl, dest, raw, to_download) {
            Ok(u) => {
                dl.wait()?;
                report_unpacked(plan, &u, started);
                if !opts.keep_downloads {
                    // The image is checked: the parts only take space the raw image needs.
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
        let settled = if e.is::<BadContent>() || e.is::<unpack::Unsupported>() {
            settle(plan, &dl)
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
        bad.extend(fetch::digest_mismatch(&e));
        for name in &bad {
            forget_download(&plan.work.join(name));
        }
        if bad.is_empty() {
            return Err(if as_published { published(e) } else { e });
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
fn settle(plan: &Plan, dl: &Downloads) -> Settled {
    for (i, a) in plan.sel.disk.iter().enumerate() {
        if !has_digest(a) {
            return Settled::Unknown;
        }
        if fsutil::is_regular(&plan.work.join(&a.name)) {
            continue;
        }
        eprintln!(
            "  {}: finishing its download to check its digest",
            Shown(&a.name)
        );
        let mut r = dl.reader(Selection::SMALL + i);
        return match io::copy(&mut r, &mut io::sink()) {
            Ok(_) => Settled::AsPublished,
            Err(e) => {
                let e = anyhow::Error::new(e);
                match fetch::digest_mismatch(&e) {
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
    match e.downcast_ref::<BadContent>() {
        Some(bad) => anyhow!(
            "{}; every part it was read from matched the release's sha256 digest, so the \
             release itself is damaged and fetching it again will not help: choose another \
             --version",
            bad.fault()
        ),
        None => e,
    }
}

fn has_digest(a: &crate::github::release::Asset) -> bool {
    fetch::parse_digest(a.digest.as_deref(), &a.name)
        .ok()
        .flatten()
        .is_some()
}

/// Deletes a downloaded asset and its partial state.
fn forget_download(dest: &Path) {
    let partial = fsutil::partial_path(dest);
    let segs = partial.with_file_name(format!(
        "{}.segs",
        partial.file_name().unwrap_or_default().to_string_lossy()
    ));
    for p in [dest, &partial, &segs] {
        let _ = fs::remove_file(p);
    }
}

/// The assets to throw away after a content failure: the part holding the
/// fault and those after it, among the ones a fetch can be at fault for,
/// those without a digest (a part with one was checked by [`settle`], and
/// one that failed it is named by its own error). The fault may show some
/// way after the bytes that hold it, so the parts up to 192 MiB before count
/// too, and a fault seen only at the end (a CRC) puts every such part in
/// doubt. An archive that decodes into what this tool does not read
/// ([`unpack::Unsupported`]) is no transfer's fault.
fn culprits(plan: &Plan, e: &anyhow::Error) -> Vec<String> {
    let suspect = |a: &crate::github::release::Asset| !has_digest(a);
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
    if !fsutil::is_regular(staged) || !fsutil::is_regular(&plan.work.join(&plan.sel.sums.name)) {
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
    dest: &Path,
    raw: &Path,
    to_download: u64,
) -> Result<unpack::Unpacked> {
    std::thread::scope(|s| {
        let small: Vec<_> = (0..Selection::SMALL)
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
        let parts = disk_readers(plan, dl);
        unpack_disk(plan, Chain::new(parts), dest, Some(raw), to_download)
    })
}

fn up_to_date(m: &Manifest, out: &Path, started: Instant) -> String {
    format!(
        "Up to date: {} {}/{} in {} (checked in {:.2} s; --force downloads again)",
        Shown(&m.tag),
        Shown(&m.os),
        Shown(&m.arch),
        out.display(),
        started.elapsed().as_secs_f64()
    )
}

fn print_summary(opts: &Opts, m: &Manifest, started: Instant) {
    println!(
        "Installed {} {}/{} from {} in {:.1} s:",
        Shown(&m.tag),
        Shown(&m.os),
        Shown(&m.arch),
        Shown(&m.repo),
        started.elapsed().as_secs_f64()
    );
    for f in &m.files {
        println!(
            "  {:<18} {:>10}  {}",
            f.name,
            human_bytes(f.size),
            opts.output.join(&f.name).display()
        );
    }
    println!("Support: {}", support(opts.os, opts.arch).summary());
}

/// The manifest of a staged set (times are filled in after installing).
fn build(opts: &Opts, plan: &Plan, unpacked: &unpack::Unpacked) -> Result<Manifest> {
    let sel = &plan.sel;
    let work = &plan.work;
    let kernel = work.join(&sel.kernel.name);
    let client = work.join(&sel.client.name);
    let disk_sources = disk_sources(plan);
    let entry = guard::entry;
    Ok(Manifest {
        format: 1,
        repo: opts.repo.clone(),
        tag: plan.release.tag_name.clone(),
        arch: opts.arch.to_string(),
        os: opts.os.to_string(),
        installed_at: crate::util::time::rfc3339_now(),
        pending: None,
        files: vec![
            entry(
                KERNEL,
                &kernel,
                Some(hex(&fsutil::sha256_file(&kernel)?)),
                vec![source_of(&sel.kernel)],
            )?,
            entry(
                CLIENT,
                &client,
                Some(hex(&fsutil::sha256_file(&client)?)),
                vec![source_of(&sel.client)],
            )?,
            entry(
                QCOW2,
                &unpacked.path,
                Some(hex(&unpacked.sha256)),
                disk_sources.clone(),
            )?,
            entry(RAW, &work.join(RAW), None, disk_sources)?,
        ],
    })
}
