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

use super::session::{source_of, staged_entry, Depth, Kept, Pick, Session, State, States, Verdict};
use super::Command;
use github::support::support;
use install::layout::{self, CLIENT, KERNEL, LAST_TAG, NAMES, QCOW2, RAW};
use install::manifest::{FileEntry, Manifest};
use install::swap::Move;
use qcow2::convert_file;
use util::fmt::{hex, human_bytes};
use util::fs as fsutil;
use util::text::Shown;

/// `cargo xtask resources` with no step named: the full run.
#[derive(Debug)]
pub(crate) struct RunArgs;

impl Command for RunArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        let started = Instant::now();
        s.open()?;
        let states = look(s)?;
        // A whole set that still matches its manifest needs no network for a
        // pinned tag, and one API call (or none, from the cache) for `latest`.
        if up_to_date(s, &states, None) {
            say_up_to_date(s, started);
            s.unlock();
            return Ok(());
        }
        s.plan_online()?;
        if up_to_date(s, &states, Some(&s.plan().release.tag_name)) {
            say_up_to_date(s, started);
            s.unlock();
            s.finish_plan();
            return Ok(());
        }
        install_plan(s, &states, started)
    }
}

/// The manifest (a damaged one is set aside: the files are then compared
/// with the release instead) and what stands at each installed name; the
/// user's changes are refused before anything is fetched.
fn look(s: &mut Session) -> Result<States> {
    s.load_manifest_or_compare();
    let states = s.inspect_all(&NAMES);
    // With --no-raw, the raw image is not the run's business.
    let no_raw = s.opts().no_raw;
    let relevant: States = states
        .iter()
        .filter(|(n, _)| !(no_raw && n == RAW))
        .cloned()
        .collect();
    s.refuse_changed(&relevant)?;
    s.record_touched(&states)?;
    Ok(states)
}

/// Whether the installed manifest already is what was asked for: whole,
/// unchanged, of the requested set (and of the plan's `tag`, once known).
fn up_to_date(s: &Session, states: &[(String, State)], tag: Option<&str>) -> bool {
    let (o, Some(m)) = (s.opts(), s.installed()) else {
        return false;
    };
    let intact = m
        .names()
        .all(|n| states.iter().any(|(s, st)| s == n && st.is_intact()));
    !o.force
        && intact
        && m.complete()
        && (o.no_raw || m.entry(RAW).is_some())
        && m.matches_request(&o.repo, o.os.as_str(), o.arch.as_str(), &o.version)
        && match tag {
            None => o.version != "latest",
            Some(t) => m.tag == t,
        }
}

fn install_plan(s: &mut Session, states: &[(String, State)], started: Instant) -> Result<()> {
    s.prepare_work()?;
    let verdicts = stock(s, states)?;
    let made = match make(s, &verdicts) {
        Ok(made) => made,
        Err(e) if fetch::Error::find(&e).is_some_and(|f| f.mismatched_asset().is_some()) => {
            // The release may have changed since the cache stored it.
            s.plan().store.forget_release();
            return Err(e);
        }
        Err(e) => return Err(e.context(left_what(s))),
    };
    let installed = install_set(s, &verdicts, made)?;
    out!("Checking the installed set:");
    // Quick: every byte was hashed on the way in; re-reading GiBs proves nothing new.
    s.check_installed(&installed, Depth::Quick)
        .context("the installed set failed verification")?;
    if !s.opts().keep_downloads {
        let work = &s.plan().work;
        fs::remove_dir_all(work).with_context(|| format!("cannot remove {}", work.display()))?;
        let _ = fs::remove_file(layout::downloads_root(s.out()).join(LAST_TAG));
        s.unlock();
    }
    s.finish_plan();
    print_summary(s, &installed, &verdicts, started);
    Ok(())
}

/// What each installed name gets: kept, adopted, made; the user's files
/// that differ refused. The release's digests and sums are fetched (they
/// are small) only when the manifest alone cannot tell.
fn stock(s: &mut Session, states: &[(String, State)]) -> Result<Vec<(&'static str, Verdict)>> {
    let reference = if s.all_recorded(states) {
        None
    } else {
        Some(s.reference()?)
    };
    let mut verdicts = s.take_stock(states, reference.as_ref())?;
    s.settle_users(&mut verdicts)?;
    for (name, v) in &verdicts {
        if let Verdict::Keep(Kept::Adopted, _) = v {
            say!(
                "  adopted  {name:<18} it already is release {}'s",
                s.plan().release.tag_name
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
fn make(s: &mut Session, verdicts: &[(&str, Verdict)]) -> Result<Vec<Made>> {
    let is_make = |n: &str| matches!(verdict(verdicts, n), Verdict::Make);
    let pick = Pick {
        kernel: is_make(KERNEL),
        client: is_make(CLIENT),
        sums: is_make(QCOW2),
        parts: is_make(QCOW2),
    };
    say_getting(s, verdicts, pick);
    let staged_qcow2 = s.plan().work.join(QCOW2);
    let staged_raw = s.plan().work.join(RAW);
    let mut made = Vec::new();
    let mut in_pass = false;
    if pick.parts {
        let raw_in_pass = is_make(RAW).then_some(staged_raw.as_path());
        let u = s.make_image(pick, &staged_qcow2, raw_in_pass)?;
        in_pass = u.raw.is_some();
        if let Some(stats) = u.raw {
            say!(
                "  {RAW}: converted in the same pass ({} data)",
                human_bytes(stats.data_bytes)
            );
        }
        let sha = Some(hex(&u.sha256));
        let entry = staged_entry(QCOW2, &u.path, sha, s.plan().disk_sources())?;
        made.push(Made {
            name: QCOW2,
            how: Move::Rename(staged_qcow2.clone()),
            entry,
        });
    } else {
        s.fetch_assets(pick)?;
    }
    let plan = s.plan();
    for (name, asset) in [(KERNEL, &plan.sel.kernel), (CLIENT, &plan.sel.client)] {
        if is_make(name) {
            let path = plan.asset_path(&asset.name);
            let sha = hex(&fsutil::sha256_file(&path)?);
            let entry = staged_entry(name, &path, Some(sha), vec![source_of(asset)])?;
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
            s.out().join(QCOW2)
        };
        made.push(make_raw(s, &from, &staged_raw, in_pass)?);
    }
    Ok(made)
}

/// `Getting kernel, … of <tag> <os>/<arch> into <out> (N to download)`.
fn say_getting(s: &Session, verdicts: &[(&str, Verdict)], pick: Pick) {
    let names: Vec<&str> = NAMES
        .iter()
        .copied()
        .filter(|n| matches!(verdict(verdicts, n), Verdict::Make))
        .collect();
    if !names.is_empty() {
        let (o, plan) = (s.opts(), s.plan());
        say!(
            "Getting {} of {} {}/{} into {} ({})",
            names.join(", "),
            plan.release.tag_name,
            o.os,
            o.arch,
            o.output.display(),
            plan.to_download(pick)
        );
    }
}

/// The raw image, converted now unless the pass already wrote it.
fn make_raw(s: &Session, qcow2: &Path, raw: &Path, in_pass: bool) -> Result<Made> {
    if !in_pass {
        let t = Instant::now();
        convert_file(qcow2, raw, true, s.opts().progress)?;
        say!("  {RAW}: converted in {:.1} s", t.elapsed().as_secs_f64());
    }
    let entry = staged_entry(RAW, raw, None, s.plan().disk_sources())?;
    Ok(Made {
        name: RAW,
        how: Move::Rename(raw.to_path_buf()),
        entry,
    })
}

/// Checks the staged files, then installs them with the kept and adopted
/// ones as one set; the manifest is written last.
fn install_set(s: &mut Session, verdicts: &[(&str, Verdict)], made: Vec<Made>) -> Result<Manifest> {
    let mut new = match s.installed() {
        Some(m) if s.is_plan_set(m) && m.pending.is_none() => {
            let mut n = m.clone();
            n.installed_at = util::time::rfc3339_now();
            n
        }
        _ => s.new_manifest(),
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
        .map_or_else(|| s.out().join(QCOW2), |(_, p)| p.clone());
    if let Err(e) = s.check_staged(&new, &staged, &qcow2) {
        forget_undigested(s);
        return Err(e.context(format!(
            "release {} failed the checks before installing; {}",
            s.plan().release.tag_name,
            left_what(s)
        )));
    }
    s.recheck(&new, verdicts)?;
    s.install(new, moves)
}

fn staged_path(how: &Move) -> PathBuf {
    match how {
        Move::Copy(p) | Move::Rename(p) => p.clone(),
        Move::Remove => PathBuf::new(),
    }
}

/// What a failed run left, said plainly: the installed files as they
/// were (or nothing installed), and the downloads a re-run resumes from.
fn left_what(s: &Session) -> String {
    let kept = match s.installed().filter(|m| !m.files.is_empty()) {
        Some(_) => "the installed files were left as they were",
        None => "nothing was installed",
    };
    let plan = s.plan();
    let (have, _) = plan.on_disk(Pick::ALL);
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
fn forget_undigested(s: &Session) {
    let plan = s.plan();
    for a in [&plan.sel.kernel, &plan.sel.client] {
        if a.sha256().ok().flatten().is_none() {
            fetch::forget(&plan.asset_path(&a.name));
        }
    }
}

/// Says the set is up to date (and reports it, every file kept).
fn say_up_to_date(s: &Session, started: Instant) {
    let m = s.installed().expect("an installed set is up to date");
    out!(
        "Up to date: {} {}/{} in {} (checked in {:.2} s; --force downloads again)",
        Shown(&m.tag),
        Shown(&m.os),
        Shown(&m.arch),
        s.out().display(),
        started.elapsed().as_secs_f64()
    );
    util::say::report("up_to_date", serde_json::json!(true));
    report_set(s.out(), m, |_| "kept");
}

fn print_summary(s: &Session, m: &Manifest, verdicts: &[(&str, Verdict)], started: Instant) {
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
            s.out().join(&f.name).display()
        );
    }
    if m.no_raw {
        out!("  {RAW:<18} not made (--no-raw; gem5 needs it, QEMU does not)");
    }
    let o = s.opts();
    out!("Support: {}", support(o.os, o.arch).summary());
    report_set(s.out(), m, |f| origin(f, verdicts));
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
fn report_set(out: &Path, m: &Manifest, origin: impl Fn(&FileEntry) -> &'static str) {
    use serde_json::json;
    util::say::report(
        "release",
        json!({ "repo": m.repo, "tag": m.tag, "os": m.os, "arch": m.arch }),
    );
    util::say::report("output", json!(out));
    let files: Vec<_> = m
        .files
        .iter()
        .map(|f| {
            json!({
                "name": f.name,
                "size": f.size,
                "sha256": f.sha256,
                "path": out.join(&f.name),
                "source": origin(f),
            })
        })
        .collect();
    util::say::report("files", json!(files));
    util::say::report("no_raw", json!(m.no_raw));
}
