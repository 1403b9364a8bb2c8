//! The `resources` steps that move data from the release to the output
//! directory: `download`, `decompress`, and the full run, which fuses them
//! (the disk archive streams from the downloads into the unpacker while later
//! parts still arrive), converts, checks the staged set whole, and only then
//! installs it. Every step asks `guard` before it replaces an installed file.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::assets::{self, Selection};
use crate::download::{self, AssetReader, Downloads, Job};
use crate::fsutil::{self, human_bytes};
use crate::guard;
use crate::http::Http;
use crate::manifest::{self, FileEntry, Manifest};
use crate::opts::Opts;
use crate::release::{self, Release};
use crate::source::Source;
use crate::text::Shown;
use crate::unpack::BadContent;
use crate::{convert, unpack, verify};

pub const KERNEL: &str = "kernel";
pub const CLIENT: &str = "client";
pub const QCOW2: &str = "disk-image.qcow2";
pub const RAW: &str = "disk-image.img";
/// In the working directory: the release JSON a download used, so the later
/// steps need no network.
const RELEASE_JSON: &str = "release.json";
/// In `.downloads/`: the tag of the last download, for `--version latest`.
const LAST_TAG: &str = "last-tag";
/// Release JSON documents are small.
const MAX_JSON: u64 = 32 << 20;

/// A release and the assets of our os/arch in it.
pub struct Plan {
    pub release: Release,
    pub json: String,
    pub sel: Selection,
    pub work: PathBuf,
}

fn downloads_root(opts: &Opts) -> PathBuf {
    opts.output.join(".downloads")
}

/// Makes the output directory and the working directory root (a link at
/// `.downloads` is junk and is replaced), and takes the lock.
pub(crate) fn open_work(opts: &Opts) -> Result<fsutil::Lock> {
    fs::create_dir_all(&opts.output)
        .with_context(|| format!("cannot create {}", opts.output.display()))?;
    let root = downloads_root(opts);
    fsutil::ensure_own_dir(&root)?;
    fsutil::lock(&root)
}

/// Looks the release up and picks our assets.
fn plan_online(opts: &Opts, http: &Http) -> Result<Plan> {
    let resolved = Source::from_opts(opts).resolve(http, opts)?;
    if let Some(note) = &resolved.note {
        eprintln!("note: {note}");
    }
    plan_from(opts, resolved.release, resolved.json)
}

fn plan_from(opts: &Opts, release: Release, json: String) -> Result<Plan> {
    crate::opts::check_tag(&release.tag_name).with_context(|| {
        format!(
            "the release's tag `{}` is unusable",
            Shown(&release.tag_name)
        )
    })?;
    let sel = assets::select(&release, opts.os, opts.arch)?;
    let work = opts.work_dir(&release.tag_name);
    Ok(Plan {
        release,
        json,
        sel,
        work,
    })
}

/// The plan an earlier `download` left behind (no network).
pub(crate) fn plan_offline(opts: &Opts) -> Result<Plan> {
    let root = downloads_root(opts);
    let tag = if opts.version == "latest" {
        fsutil::read_small(&root.join(LAST_TAG), 256)
            .map(|s| s.trim().to_string())
            .map_err(|_| {
                anyhow!(
                    "nothing downloaded in {} yet; run `cargo xtask resources download` first",
                    root.display()
                )
            })?
    } else {
        opts.version.clone()
    };
    crate::opts::check_tag(&tag)
        .with_context(|| format!("{} is damaged", root.join(LAST_TAG).display()))?;
    let work = opts.work_dir(&tag);
    let path = work.join(RELEASE_JSON);
    let json = fsutil::read_small(&path, MAX_JSON).map_err(|_| {
        anyhow!(
            "release {tag} has not been downloaded to {}; run `cargo xtask resources download --version {tag}` first",
            work.display()
        )
    })?;
    let release: Release = serde_json::from_str(&json)
        .with_context(|| format!("{} is damaged; run the download again", path.display()))?;
    plan_from(opts, release, json)
}

/// The downloads of a plan. `transient_disk`: the disk parts are deleted once
/// the image is checked (the full run without `--keep-downloads`).
fn jobs(plan: &Plan, opts: &Opts, transient_disk: bool) -> Result<Vec<Job>> {
    let source = Source::from_opts(opts);
    plan.sel
        .all()
        .map(|a| {
            Ok(Job {
                name: a.name.clone(),
                from: source.asset_origin(&plan.release.tag_name, a)?,
                size: a.size,
                sha256: download::parse_digest(a.digest.as_deref(), &a.name)?,
                dest: plan.work.join(&a.name),
                transient: transient_disk && plan.sel.disk.iter().any(|d| d.name == a.name),
            })
        })
        .collect()
}

/// Says which assets carry a digest of another algorithm: it is not checked.
fn note_unchecked_digests(plan: &Plan) {
    for a in plan.sel.all() {
        if let Some(d) = &a.digest {
            if !d.starts_with("sha256:") {
                eprintln!(
                    "note: asset {} has a digest `{}` of an algorithm this tool does not \
                     check; its size and the image's sums are still checked",
                    Shown(&a.name),
                    crate::text::clean(d, 40)
                );
            }
        }
    }
}

fn warn_support(opts: &Opts) {
    let s = release::support(opts.os, opts.arch);
    if !s.stable || !s.gem5 {
        eprintln!(
            "warning: {}/{} is {} in the documentation ({})",
            opts.os,
            opts.arch,
            if s.gem5 {
                "experimental"
            } else {
                "without gem5 support"
            },
            s.describe()
        );
    }
}

/// Prepares the working directory of a plan: `--force` clears it, the
/// release JSON is recorded for the offline steps.
fn prepare_work(opts: &Opts, plan: &Plan) -> Result<()> {
    if opts.force && fs::symlink_metadata(&plan.work).is_ok() {
        // Removes a link itself, never what it points at.
        fs::remove_dir_all(&plan.work)
            .or_else(|_| fs::remove_file(&plan.work))
            .with_context(|| format!("cannot clear {}", plan.work.display()))?;
    }
    fsutil::ensure_own_dir(&plan.work)?;
    write_small(&plan.work.join(RELEASE_JSON), plan.json.as_bytes())?;
    write_small(
        &downloads_root(opts).join(LAST_TAG),
        plan.release.tag_name.as_bytes(),
    )
}

pub fn write_small(path: &Path, data: &[u8]) -> Result<()> {
    let mut t = fsutil::TempFile::create(path)?;
    io::Write::write_all(t.file(), data)
        .with_context(|| format!("cannot write {}", t.path().display()))?;
    t.commit()
}

/// Puts `src` under `dest` (a hard link where possible, else a copy), through
/// a fresh temporary name so `dest` is never partial and no link is followed.
fn install_link(src: &Path, dest: &Path) -> Result<()> {
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
enum Move {
    /// Kept in the working directory too (kernel, client).
    Link(PathBuf),
    Rename(PathBuf),
}

/// Installs `moves` into `out` as the files of `new`, recording the install
/// as pending in the manifest first, so that a run killed midway still knows
/// the files are the tool's; the final manifest is written last.
fn install(
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
    for (name, m) in moves {
        let dest = out.join(name);
        match m {
            Move::Link(src) => install_link(&src, &dest)?,
            Move::Rename(src) => fsutil::rename_durable(&src, &dest)?,
        }
    }
    let done = new.with_installed_times(out)?;
    manifest::store(out, &done)?;
    Ok(done)
}

/// The manifest to extend with files of `plan`'s set: the installed one if
/// it is that set, else a new one.
fn same_set_manifest(opts: &Opts, plan: &Plan, m: Option<&Manifest>) -> Manifest {
    match m {
        Some(m) if is_plan_set(opts, plan, m) => {
            let mut n = m.clone();
            n.pending = None;
            n
        }
        _ => Manifest::for_set(
            &opts.repo,
            &plan.release.tag_name,
            opts.os.as_str(),
            opts.arch.as_str(),
        ),
    }
}

fn is_plan_set(opts: &Opts, plan: &Plan, m: &Manifest) -> bool {
    m.same_set(&opts.repo, opts.os.as_str(), opts.arch.as_str()) && m.tag == plan.release.tag_name
}

/// The manifest of an installed set other than `plan`'s: the single steps
/// leave such a set whole rather than mix two releases in one directory.
fn other_set<'a>(opts: &Opts, plan: &Plan, m: Option<&'a Manifest>) -> Option<&'a Manifest> {
    m.filter(|m| !m.files.is_empty() && !is_plan_set(opts, plan, m))
}

/// The manifest, for a step that is about to replace files: a damaged one
/// means nothing can be told about the files, so only `--force` goes on.
fn load_manifest(opts: &Opts) -> Result<Option<Manifest>> {
    match manifest::load(&opts.output) {
        Ok(m) => Ok(m),
        Err(_) if opts.force => Ok(None),
        Err(e) => Err(e.context(
            "cannot tell which installed files are the tool's; move them away, or run with --force",
        )),
    }
}

/// Refuses (unless `--force`) to replace any of `names` that is the user's.
fn guard_names(opts: &Opts, m: Option<&Manifest>, names: &[&str]) -> Result<()> {
    if opts.force {
        return Ok(());
    }
    let states = guard::inspect_all(&opts.output, m, names);
    guard::refuse_users(&opts.output, &states)
}

fn entry(
    name: &str,
    path: &Path,
    sha: Option<String>,
    sources: Vec<manifest::Source>,
) -> Result<FileEntry> {
    let (size, _) = manifest::modified_ns(path)?;
    Ok(FileEntry {
        name: name.into(),
        size,
        sha256: sha,
        modified_ns: 0,
        sources,
    })
}

/// `cargo xtask resources download`
pub fn download(opts: &Opts) -> Result<()> {
    let _lock = open_work(opts)?;
    let m = load_manifest(opts)?;
    let http = Http::new(&opts.http(opts.connections));
    let plan = plan_online(opts, &http)?;
    let other = other_set(opts, &plan, m.as_ref()).is_some();
    if !other {
        guard_names(opts, m.as_ref(), &[KERNEL, CLIENT])?;
    }
    warn_support(opts);
    note_unchecked_digests(&plan);
    prepare_work(opts, &plan)?;
    eprintln!(
        "Downloading {} {}/{} ({}) into {}",
        plan.release.tag_name,
        opts.os,
        opts.arch,
        human_bytes(plan.sel.total_size()),
        plan.work.display()
    );
    let dl = download::start(
        http,
        jobs(&plan, opts, false)?,
        opts.connections,
        "download",
        opts.progress,
    )?;
    dl.finish_all()?;
    if let Some(m) = other_set(opts, &plan, m.as_ref()) {
        println!(
            "Downloaded {tag} into {work}. {} {}/{} stays installed whole in {out}, so the new \
             kernel and client stay in {work}; `cargo xtask resources --version {tag}` switches \
             the whole set.",
            m.tag,
            m.os,
            m.arch,
            tag = plan.release.tag_name,
            work = plan.work.display(),
            out = opts.output.display(),
        );
        return Ok(());
    }
    let kernel = plan.work.join(&plan.sel.kernel.name);
    let client = plan.work.join(&plan.sel.client.name);
    let mut new = same_set_manifest(opts, &plan, m.as_ref());
    new.set_entry(entry(
        KERNEL,
        &kernel,
        Some(fsutil::hex(&manifest::sha256_file(&kernel)?)),
        vec![(&plan.sel.kernel).into()],
    )?);
    new.set_entry(entry(
        CLIENT,
        &client,
        Some(fsutil::hex(&manifest::sha256_file(&client)?)),
        vec![(&plan.sel.client).into()],
    )?);
    install(
        &opts.output,
        m.as_ref(),
        new,
        vec![(KERNEL, Move::Link(kernel)), (CLIENT, Move::Link(client))],
    )?;
    println!(
        "Downloaded {}: {} and {} installed in {}; disk image parts and sums in {}",
        plan.release.tag_name,
        KERNEL,
        CLIENT,
        opts.output.display(),
        plan.work.display()
    );
    Ok(())
}

/// Reads several readers one after another.
pub struct Chain<R> {
    parts: std::collections::VecDeque<R>,
}

impl<R: Read> Chain<R> {
    pub fn new(parts: Vec<R>) -> Self {
        Chain {
            parts: parts.into(),
        }
    }
}

impl<R: Read> Read for Chain<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(r) = self.parts.front_mut() {
            match r.read(buf)? {
                0 if !buf.is_empty() => {
                    self.parts.pop_front();
                }
                n => return Ok(n),
            }
        }
        Ok(0)
    }
}

/// The release's checksum file could not be read or parsed: it is at fault.
#[derive(Debug)]
struct BadSums(String);

impl std::fmt::Display for BadSums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadSums {}

/// The sha256 the release's sums file gives for the qcow2. Upstream's line
/// names `temp/disk-image.qcow2`; a renamed set may name ours.
fn expected_sha(plan: &Plan) -> Result<[u8; 32]> {
    let path = plan.work.join(&plan.sel.sums.name);
    let text = fsutil::read_small(&path, assets::MAX_SUMS)
        .with_context(|| format!("cannot read the checksum file {}", path.display()))?;
    let bad = |e: anyhow::Error| anyhow::Error::new(BadSums(format!("{e:#}")));
    let entries = unpack::parse_sums(&text, &plan.sel.sums.name).map_err(bad)?;
    let ours = crate::assets::disk_base_of(&plan.sel.disk_archive);
    unpack::expected_sha256(&entries, QCOW2, &plan.sel.sums.name)
        .or_else(|e| unpack::expected_sha256(&entries, &ours, &plan.sel.sums.name).map_err(|_| e))
        .map_err(bad)
}

fn disk_source_name(sel: &Selection) -> String {
    match sel.disk.len() {
        1 => sel.disk[0].name.clone(),
        n => format!("{} ({n} parts)", sel.disk_archive),
    }
}

/// Unpacks the disk archive from `input` into `dest`, checking the sums.
fn unpack_disk(
    plan: &Plan,
    input: impl Read + Send,
    dest: &Path,
    still_to_download: u64,
) -> Result<unpack::Unpacked> {
    let expected = expected_sha(plan)?;
    let dir = dest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut check = |qcow2_size: u64| -> Result<()> {
        // The qcow2, the raw image (at most the qcow2's data), and what
        // is still to arrive.
        fsutil::ensure_space(
            &dir,
            qcow2_size
                .saturating_mul(2)
                .saturating_add(still_to_download),
            "the disk image (qcow2 and raw) and the rest of the download",
        )
    };
    unpack::unpack_qcow2(
        input,
        &disk_source_name(&plan.sel),
        dest,
        Some(expected),
        &mut check,
    )
}

/// Said once the progress bars are gone.
fn report_unpacked(plan: &Plan, out: &unpack::Unpacked, started: Instant) {
    eprintln!(
        "  {}: {} unpacked and checked against {} in {:.1} s",
        QCOW2,
        human_bytes(out.size),
        plan.sel.sums.name,
        started.elapsed().as_secs_f64()
    );
}

/// `cargo xtask resources decompress`: from the merged archive if `merge`
/// made one, else from the parts read in order (their digests checked). The
/// image is unpacked into the working directory, then installed unless
/// another set is.
pub fn decompress(opts: &Opts) -> Result<()> {
    let _lock = open_work(opts)?;
    let m = load_manifest(opts)?;
    let plan = plan_offline(opts)?;
    let other = other_set(opts, &plan, m.as_ref());
    if other.is_none() {
        guard_names(opts, m.as_ref(), &[QCOW2])?;
    }
    let staged = plan.work.join(QCOW2);
    let merged = plan.work.join(&plan.sel.disk_archive);
    let started = Instant::now();
    let out = if plan.sel.disk.len() > 1 && fsutil::is_regular(&merged) {
        let f = fsutil::open_regular(&merged)
            .with_context(|| format!("cannot open {}", merged.display()))?;
        unpack_disk(&plan, io::BufReader::with_capacity(1 << 20, f), &staged, 0)?
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
        let dl = download::start(http, jobs(&plan, opts, false)?, 1, "check", opts.progress)?;
        let readers = disk_readers(&plan, &dl);
        match unpack_disk(&plan, Chain::new(readers), &staged, 0) {
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
            o.tag,
            o.os,
            o.arch,
            opts.output.display()
        );
        println!("{} is ready", staged.display());
        return Ok(());
    }
    let mut new = same_set_manifest(opts, &plan, m.as_ref());
    new.set_entry(entry(
        QCOW2,
        &staged,
        Some(fsutil::hex(&out.sha256)),
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

fn disk_sources(plan: &Plan) -> Vec<manifest::Source> {
    let mut v: Vec<manifest::Source> = plan.sel.disk.iter().map(Into::into).collect();
    v.push((&plan.sel.sums).into());
    v
}

/// `cargo xtask resources`: everything, fused.
pub fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    let lock = open_work(opts)?;
    let out = &opts.output;

    // The user's files first: nothing is fetched while one is in the way.
    let mut m = load_manifest(opts)?;
    let states = guard::inspect_all(out, m.as_ref(), &manifest::NAMES);
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
    let installed = m
        .clone()
        .filter(|m| !opts.force && intact && m.complete() && m.matches_request(opts));
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
            let mut small = jobs(&plan, opts, !opts.keep_downloads)?;
            small.truncate(Selection::SMALL);
            let http = Http::new(&opts.http(opts.connections));
            download::start(http, small, opts.connections, "download", opts.progress)?
                .finish_all()?;
            u
        }
        None => fetch_with_one_retry(opts, &plan, &staged_qcow2)?,
    };

    let t = Instant::now();
    convert::convert_file(&staged_qcow2, &staged_raw, true, opts.progress)?;
    eprintln!("  {RAW}: converted in {:.1} s", t.elapsed().as_secs_f64());

    // The staged set is checked whole before anything installed is touched.
    let new = manifest::build(opts, &plan, &unpacked)?;
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
            if download::parse_digest(a.digest.as_deref(), &a.name)
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
        let now = guard::inspect_all(out, m.as_ref(), &manifest::NAMES);
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
        let _ = fs::remove_file(downloads_root(opts).join(LAST_TAG));
        lock.remove();
    }
    print_summary(opts, &installed, started);
    Ok(())
}

/// Downloads and unpacks; when the archive's content turns out bad in parts
/// the release gives no digest for (upstream's older assets), those parts
/// are deleted and fetched once more before giving up, so one bad transfer
/// neither fails the run nor poisons the next.
fn fetch_with_one_retry(opts: &Opts, plan: &Plan, dest: &Path) -> Result<unpack::Unpacked> {
    let mut tries = 0;
    loop {
        tries += 1;
        let mut jobs = jobs(plan, opts, !opts.keep_downloads)?;
        let to_download: u64 = jobs
            .iter()
            .filter(|j| !fsutil::is_regular(&j.dest))
            .map(|j| j.size)
            .sum();
        let http = Http::new(&opts.http(opts.connections));
        let dl = download::start(
            http,
            std::mem::take(&mut jobs),
            opts.connections,
            "download",
            opts.progress,
        )?;
        let started = Instant::now();
        match fused(plan, &dl, dest, to_download) {
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
            Err(e) => {
                dl.abort("stopped after an error");
                let _ = dl.wait();
                let mut bad = culprits(plan, &e);
                // A digest mismatch already deleted its file.
                bad.extend(download::digest_mismatch(&e));
                for name in &bad {
                    forget_download(&plan.work.join(name));
                }
                if bad.is_empty() {
                    return Err(e);
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
                    crate::text::clean(&format!("{e:#}"), 400),
                    bad.join(", ")
                );
            }
        }
    }
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
/// fault and those after it, among the ones that could hold it. A part
/// whose digest was checked cannot (it got its final name only then); a part
/// without a digest, or one still partial, can. The fault may show a little
/// after the bytes that hold it, so the part a megabyte before counts too.
fn culprits(plan: &Plan, e: &anyhow::Error) -> Vec<String> {
    let suspect = |a: &crate::release::Asset| {
        let has_digest = download::parse_digest(a.digest.as_deref(), &a.name)
            .ok()
            .flatten()
            .is_some();
        !(has_digest && fsutil::is_regular(&plan.work.join(&a.name)))
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
    let first = match bad.at {
        None => 0,
        Some(at) => {
            let at = at.saturating_sub(1 << 20);
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
    if bad.at.is_none() && suspect(&plan.sel.sums) {
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
    let got = manifest::sha256_file(staged).ok()?;
    if got != expected {
        let _ = fs::remove_file(staged);
        return None;
    }
    Some(unpack::Unpacked {
        path: staged.to_path_buf(),
        size: fs::metadata(staged).ok()?.len(),
        sha256: got,
        member: String::new(),
    })
}

/// Download and unpack in one pass: the small assets are checked on their
/// own threads while this thread feeds the disk parts, in order, to the
/// unpacker as they arrive.
fn fused(plan: &Plan, dl: &Downloads, dest: &Path, to_download: u64) -> Result<unpack::Unpacked> {
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
        unpack_disk(plan, Chain::new(parts), dest, to_download)
    })
}

/// Readers of the disk parts, in archive order.
fn disk_readers(plan: &Plan, dl: &Downloads) -> Vec<AssetReader> {
    (Selection::SMALL..Selection::SMALL + plan.sel.disk.len())
        .map(|i| dl.reader(i))
        .collect()
}

fn up_to_date(m: &Manifest, out: &Path, started: Instant) -> String {
    format!(
        "Up to date: {} {}/{} in {} (checked in {:.2} s; --force downloads again)",
        m.tag,
        m.os,
        m.arch,
        out.display(),
        started.elapsed().as_secs_f64()
    )
}

fn print_summary(opts: &Opts, m: &Manifest, started: Instant) {
    println!(
        "Installed {} {}/{} from {} in {:.1} s:",
        m.tag,
        m.os,
        m.arch,
        m.repo,
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
    println!(
        "Support: {}",
        release::support(opts.os, opts.arch).describe()
    );
}
