//! `cargo xtask resources`: every step, fused. The user's files are looked
//! at first; what is already the release's (recorded, or adopted from a
//! directory the tool did not make) is kept; only the rest is made: the
//! disk archive streams from the downloads (or the cache) into the
//! unpacker, the raw image in the same pass or from the qcow2 in place.
//! The staged files are checked before anything is installed.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::adopt::{self, Kept, Verdict};
use super::guard::{self, State};
use super::image::{fetch_assets, make_image, on_disk, to_download};
use super::plan::{
    disk_sources, note_unchecked_digests, open_work, plan_online, prepare_work, source_of,
    warn_support, Pick, Plan,
};
use super::verify;
use super::Opts;
use fetch::{self, Http};
use github::support::support;
use install::layout::{self, CLIENT, KERNEL, LAST_TAG, NAMES, QCOW2, RAW};
use install::manifest::{self, FileEntry, Manifest};
use install::swap::{install, Move};
use qcow2::convert_file;
use util::fmt::{hex, human_bytes};
use util::fs as fsutil;
use util::text::Shown;

/// What stands at each installed name.
type States = Vec<(String, State)>;

/// `cargo xtask resources`: everything, fused.
pub fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    let lock = open_work(opts)?;
    let (m, states) = look(opts)?;
    // A whole set that still matches its manifest needs no network for a
    // pinned tag, and one API call (or none, from the cache) for `latest`.
    if let Some(m) = up_to_date(opts, m.as_ref(), &states, None) {
        say_up_to_date(opts, m, started);
        lock.remove();
        return Ok(());
    }
    let plan = plan_online(opts, &Http::new(&opts.http(opts.connections)))?;
    if let Some(m) = up_to_date(opts, m.as_ref(), &states, Some(&plan)) {
        say_up_to_date(opts, m, started);
        lock.remove();
        plan.store.finish();
        return Ok(());
    }
    install_plan(opts, plan, m, &states, lock, started)
}

/// The manifest (a damaged one is set aside: the files are then compared
/// with the release instead) and what stands at each installed name; the
/// user's changes are refused before anything is fetched.
fn look(opts: &Opts) -> Result<(Option<Manifest>, States)> {
    let out = &opts.output;
    let mut m = guard::load_manifest_or_compare(opts);
    let states = guard::inspect_all(out, m.as_ref(), &NAMES);
    if !opts.force {
        // With --no-raw, the raw image is not the run's business.
        let relevant: Vec<(String, State)> = states
            .iter()
            .filter(|(n, _)| !(opts.no_raw && n == RAW))
            .filter(|(_, s)| matches!(s, State::Changed(_)))
            .cloned()
            .collect();
        guard::refuse_users(out, &relevant)?;
    }
    if let Some(mm) = m.as_mut() {
        if guard::record_touched(out, mm, &states)? {
            manifest::store(out, mm)?;
        }
    }
    Ok((m, states))
}

/// The installed manifest, when it already is what was asked for: whole,
/// unchanged, of the requested set (and of `plan`'s tag, once known).
fn up_to_date<'a>(
    opts: &Opts,
    m: Option<&'a Manifest>,
    states: &[(String, State)],
    plan: Option<&Plan>,
) -> Option<&'a Manifest> {
    let m = m?;
    let intact = m
        .names()
        .all(|n| states.iter().any(|(s, st)| s == n && st.is_intact()));
    let ok = !opts.force
        && intact
        && m.complete()
        && (opts.no_raw || m.entry(RAW).is_some())
        && m.matches_request(
            &opts.repo,
            opts.os.as_str(),
            opts.arch.as_str(),
            &opts.version,
        )
        && match plan {
            None => opts.version != "latest",
            Some(p) => m.tag == p.release.tag_name,
        };
    ok.then_some(m)
}

fn install_plan(
    opts: &Opts,
    mut plan: Plan,
    m: Option<Manifest>,
    states: &[(String, State)],
    lock: util::lock::Lock,
    started: Instant,
) -> Result<()> {
    warn_support(opts);
    note_unchecked_digests(&plan);
    prepare_work(opts, &plan)?;
    let verdicts = stock(opts, &mut plan, m.as_ref(), states)?;
    let made = match make(opts, &mut plan, &verdicts) {
        Ok(made) => made,
        Err(e) if fetch::Error::find(&e).is_some_and(|f| f.mismatched_asset().is_some()) => {
            // The release may have changed since the cache stored it.
            plan.store.forget_release();
            return Err(e);
        }
        Err(e) => return Err(e.context(left_what(&plan, m.as_ref()))),
    };
    let installed = install_set(opts, &plan, m.as_ref(), &verdicts, made)?;
    out!("Checking the installed set:");
    // Quick: every byte was hashed on the way in; re-reading GiBs proves nothing new.
    verify::check_installed(&opts.output, &installed, verify::Depth::Quick)
        .context("the installed set failed verification")?;
    if !opts.keep_downloads {
        fs::remove_dir_all(&plan.work)
            .with_context(|| format!("cannot remove {}", plan.work.display()))?;
        let _ = fs::remove_file(layout::downloads_root(&opts.output).join(LAST_TAG));
        lock.remove();
    }
    plan.store.finish();
    print_summary(opts, &installed, &verdicts, started);
    Ok(())
}

/// What each installed name gets: kept, adopted, made; the user's files
/// that differ refused. The release's digests and sums are fetched (they
/// are small) only when the manifest alone cannot tell.
fn stock(
    opts: &Opts,
    plan: &mut Plan,
    m: Option<&Manifest>,
    states: &[(String, State)],
) -> Result<Vec<(&'static str, Verdict)>> {
    let reference = if adopt::all_recorded(opts, plan, m, states) {
        None
    } else {
        Some(adopt::reference(opts, plan)?)
    };
    let plan = &*plan;
    let mut verdicts = adopt::take_stock(opts, plan, m, states, reference.as_ref())?;
    adopt::refuse_users(opts, &mut verdicts)?;
    for (name, v) in &verdicts {
        if let Verdict::Keep(Kept::Adopted, _) = v {
            say!(
                "  adopted  {name:<18} it already is release {}'s",
                plan.release.tag_name
            );
        }
    }
    Ok(verdicts)
}

/// A file made by this run, staged, with its manifest entry.
struct Made {
    name: &'static str,
    how: Move,
    entry: FileEntry,
}

fn verdict<'a>(verdicts: &'a [(&str, Verdict)], name: &str) -> &'a Verdict {
    &verdicts
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a verdict per name")
        .1
}

/// Downloads, unpacks and converts what the verdicts say to make.
fn make(opts: &Opts, plan: &mut Plan, verdicts: &[(&str, Verdict)]) -> Result<Vec<Made>> {
    let is_make = |n: &str| matches!(verdict(verdicts, n), Verdict::Make);
    let pick = Pick {
        kernel: is_make(KERNEL),
        client: is_make(CLIENT),
        sums: is_make(QCOW2),
        parts: is_make(QCOW2),
    };
    let names: Vec<&str> = NAMES.iter().copied().filter(|n| is_make(n)).collect();
    if !names.is_empty() {
        say!(
            "Getting {} of {} {}/{} into {} ({})",
            names.join(", "),
            plan.release.tag_name,
            opts.os,
            opts.arch,
            opts.output.display(),
            to_download(plan, pick)
        );
    }
    let staged_qcow2 = plan.work.join(QCOW2);
    let staged_raw = plan.work.join(RAW);
    let raw_in_pass = is_make(RAW).then_some(staged_raw.as_path());
    let mut made = Vec::new();
    let mut in_pass = false;
    if pick.parts {
        let u = make_image(opts, plan, pick, &staged_qcow2, raw_in_pass)?;
        in_pass = u.raw.is_some();
        if let Some(stats) = u.raw {
            say!(
                "  {RAW}: converted in the same pass ({} data)",
                human_bytes(stats.data_bytes)
            );
        }
        let entry = guard::entry(QCOW2, &u.path, Some(hex(&u.sha256)), disk_sources(plan))?;
        made.push(Made {
            name: QCOW2,
            how: Move::Rename(staged_qcow2.clone()),
            entry,
        });
    } else {
        fetch_assets(opts, plan, pick)?;
    }
    for (name, asset) in [(KERNEL, &plan.sel.kernel), (CLIENT, &plan.sel.client)] {
        if is_make(name) {
            let path = plan.asset_path(&asset.name);
            let sha = hex(&fsutil::sha256_file(&path)?);
            let entry = guard::entry(name, &path, Some(sha), vec![source_of(asset)])?;
            made.push(Made {
                name,
                how: Move::Copy(path),
                entry,
            });
        }
    }
    if is_make(RAW) {
        let from = if pick.parts {
            staged_qcow2
        } else {
            opts.output.join(QCOW2)
        };
        made.push(make_raw(opts, plan, &from, &staged_raw, in_pass)?);
    }
    Ok(made)
}

/// The raw image, converted now unless the pass already wrote it.
fn make_raw(opts: &Opts, plan: &Plan, qcow2: &Path, raw: &Path, in_pass: bool) -> Result<Made> {
    if !in_pass {
        let t = Instant::now();
        convert_file(qcow2, raw, true, opts.progress)?;
        say!("  {RAW}: converted in {:.1} s", t.elapsed().as_secs_f64());
    }
    let entry = guard::entry(RAW, raw, None, disk_sources(plan))?;
    Ok(Made {
        name: RAW,
        how: Move::Rename(raw.to_path_buf()),
        entry,
    })
}

/// Checks the staged files, then installs them with the kept and adopted
/// ones as one set; the manifest is written last.
fn install_set(
    opts: &Opts,
    plan: &Plan,
    m: Option<&Manifest>,
    verdicts: &[(&str, Verdict)],
    made: Vec<Made>,
) -> Result<Manifest> {
    let out = &opts.output;
    let mut new = match m {
        Some(m) if guard::is_plan_set(opts, plan, m) && m.pending.is_none() => {
            let mut n = m.clone();
            n.installed_at = util::time::rfc3339_now();
            n
        }
        _ => Manifest::for_set(
            &opts.repo,
            &plan.release.tag_name,
            opts.os.as_str(),
            opts.arch.as_str(),
        ),
    };
    let mut moves = Vec::new();
    for (name, v) in verdicts {
        match v {
            Verdict::Keep(_, e) => new.set_entry(e.clone()),
            Verdict::Leave => new.files.retain(|f| f.name != *name),
            Verdict::Drop => {
                new.files.retain(|f| f.name != *name);
                moves.push((*name, Move::Remove));
            }
            Verdict::Make | Verdict::Users(_) => {}
        }
    }
    new.no_raw = !matches!(verdict(verdicts, RAW), Verdict::Keep(..) | Verdict::Make);
    let mut staged = Vec::new();
    for f in made {
        staged.push((f.name, staged_path(&f.how)));
        new.set_entry(f.entry);
        moves.push((f.name, f.how));
    }
    let qcow2 = staged
        .iter()
        .find(|(n, _)| *n == QCOW2)
        .map_or_else(|| out.join(QCOW2), |(_, p)| p.clone());
    if let Err(e) = verify::check_staged(&new, &staged, &qcow2) {
        forget_undigested(plan);
        return Err(e.context(format!(
            "release {} failed the checks before installing; {}",
            plan.release.tag_name,
            left_what(plan, m)
        )));
    }
    recheck(opts, m, &new, verdicts)?;
    install(out, m, new, moves)
}

fn staged_path(how: &Move) -> PathBuf {
    match how {
        Move::Copy(p) | Move::Rename(p) => p.clone(),
        Move::Remove => PathBuf::new(),
    }
}

/// What a failed run left, said plainly: the installed files as they
/// were (or nothing installed), and the downloads a re-run resumes from.
fn left_what(plan: &Plan, m: Option<&Manifest>) -> String {
    let kept = match m.filter(|m| !m.files.is_empty()) {
        Some(_) => "the installed files were left as they were",
        None => "nothing was installed",
    };
    let (have, _) = on_disk(plan, Pick::ALL);
    if have == 0 {
        return kept.into();
    }
    let place = if plan.store.is_cache() {
        format!("the download cache ({})", plan.store.dir.display())
    } else {
        plan.store.dir.display().to_string()
    };
    format!(
        "{kept}; the {} downloaded so far stays in {place}, and a re-run resumes from it",
        human_bytes(have)
    )
}

/// Small assets without a digest are fetched again next time rather than
/// reused: the fault may have been the transfer's.
fn forget_undigested(plan: &Plan) {
    for a in [&plan.sel.kernel, &plan.sel.client] {
        if a.sha256().ok().flatten().is_none() {
            fetch::forget(&plan.asset_path(&a.name));
        }
    }
}

/// The user may have changed a file while this ran: a file to be replaced
/// must still be absent or the tool's, a kept one still as recorded.
fn recheck(
    opts: &Opts,
    m: Option<&Manifest>,
    new: &Manifest,
    verdicts: &[(&str, Verdict)],
) -> Result<()> {
    if opts.force {
        return Ok(());
    }
    let out = &opts.output;
    let mut now = Vec::new();
    for (name, v) in verdicts {
        let s = match v {
            Verdict::Keep(..) => guard::inspect(out, Some(new), name),
            Verdict::Make | Verdict::Drop => guard::inspect(out, m, name),
            Verdict::Leave | Verdict::Users(_) => continue,
        };
        now.push((name.to_string(), s));
    }
    guard::refuse_users(out, &now)
}

/// Says the set is up to date (and reports it, every file kept).
fn say_up_to_date(opts: &Opts, m: &Manifest, started: Instant) {
    out!("{}", up_to_date_line(m, &opts.output, started));
    util::say::report("up_to_date", serde_json::json!(true));
    report_set(opts, m, |_| "kept");
}

fn up_to_date_line(m: &Manifest, out: &Path, started: Instant) -> String {
    format!(
        "Up to date: {} {}/{} in {} (checked in {:.2} s; --force downloads again)",
        Shown(&m.tag),
        Shown(&m.os),
        Shown(&m.arch),
        out.display(),
        started.elapsed().as_secs_f64()
    )
}

fn print_summary(opts: &Opts, m: &Manifest, verdicts: &[(&str, Verdict)], started: Instant) {
    out!(
        "Installed {} {}/{} from {} in {:.1} s:",
        Shown(&m.tag),
        Shown(&m.os),
        Shown(&m.arch),
        Shown(&m.repo),
        started.elapsed().as_secs_f64()
    );
    for f in &m.files {
        let how = origin(f, verdicts);
        out!(
            "  {:<18} {:>10}  {:<8} {}",
            f.name,
            human_bytes(f.size),
            how,
            opts.output.join(&f.name).display()
        );
    }
    if m.no_raw {
        out!("  {RAW:<18} not made (--no-raw; gem5 needs it, QEMU does not)");
    }
    out!("Support: {}", support(opts.os, opts.arch).summary());
    report_set(opts, m, |f| origin(f, verdicts));
}

/// Where an installed file came from this run: `kept`, `adopted`, or, for
/// a file made, `downloaded` (bytes of its assets came over the network)
/// or `cached` (all of them from the cache); a raw image made from a qcow2
/// that was kept is `converted`.
fn origin(f: &FileEntry, verdicts: &[(&str, Verdict)]) -> &'static str {
    match verdict(verdicts, &f.name) {
        Verdict::Keep(Kept::Recorded, _) => "kept",
        Verdict::Keep(Kept::Adopted, _) => "adopted",
        _ if f.name == RAW && !matches!(verdict(verdicts, QCOW2), Verdict::Make) => "converted",
        _ if f.sources.iter().any(|s| fetch::fetched(&s.name)) => "downloaded",
        _ => "cached",
    }
}

/// The set for `--json`: the release, and per file its name, size,
/// sha256, path and origin.
fn report_set(opts: &Opts, m: &Manifest, origin: impl Fn(&FileEntry) -> &'static str) {
    use serde_json::json;
    util::say::report(
        "release",
        json!({ "repo": m.repo, "tag": m.tag, "os": m.os, "arch": m.arch }),
    );
    util::say::report("output", json!(opts.output));
    let files: Vec<_> = m
        .files
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "size": f.size,
                "sha256": f.sha256,
                "path": opts.output.join(&f.name),
                "source": origin(f),
            })
        })
        .collect();
    util::say::report("files", json!(files));
    util::say::report("no_raw", json!(m.no_raw));
}
