//! The `resources` steps that move data from the release to the output
//! directory: `download`, `decompress`, and the full run, which fuses them
//! (the disk archive streams from the downloads into the unpacker while later
//! parts still arrive), converts, installs the set at once and verifies it.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::assets::{self, Selection};
use crate::download::{self, AssetReader, Downloads, Job};
use crate::fsutil::{self, human_bytes};
use crate::http::Http;
use crate::manifest::{self, Manifest};
use crate::opts::Opts;
use crate::release::{self, Release};
use crate::source::Source;
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

/// Looks the release up on the API and picks our assets.
fn plan_online(opts: &Opts, http: &Http) -> Result<Plan> {
    let resolved = Source::from_opts(opts).resolve(http, opts)?;
    if let Some(note) = &resolved.note {
        eprintln!("note: {note}");
    }
    plan_from(opts, resolved.release, resolved.json)
}

fn plan_from(opts: &Opts, release: Release, json: String) -> Result<Plan> {
    crate::opts::check_tag(&release.tag_name)
        .with_context(|| format!("the release's tag {:?} is unusable", release.tag_name))?;
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
        fs::read_to_string(root.join(LAST_TAG))
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
    let work = opts.work_dir(&tag);
    let path = work.join(RELEASE_JSON);
    let json = fs::read_to_string(&path).map_err(|_| {
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
            let url = source.asset_url(&plan.release.tag_name, a);
            if !url.starts_with("file://") {
                crate::http::check_url(&url, &a.name)?;
            }
            Ok(Job {
                name: a.name.clone(),
                url,
                size: a.size,
                sha256: download::parse_digest(a.digest.as_deref(), &a.name)?,
                dest: plan.work.join(&a.name),
                transient: transient_disk && plan.sel.disk.iter().any(|d| d.name == a.name),
            })
        })
        .collect()
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
    if opts.force && plan.work.exists() {
        fs::remove_dir_all(&plan.work)
            .with_context(|| format!("cannot clear {}", plan.work.display()))?;
    }
    fs::create_dir_all(&plan.work)
        .with_context(|| format!("cannot create {}", plan.work.display()))?;
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
/// a temporary name so `dest` is never partial.
fn install_link(src: &Path, dest: &Path) -> Result<()> {
    let tmp = fsutil::partial_path(dest);
    let _ = fs::remove_file(&tmp);
    if fs::hard_link(src, &tmp).is_err() {
        fs::copy(src, &tmp)
            .with_context(|| format!("cannot copy {} to {}", src.display(), tmp.display()))?;
        fs::File::open(&tmp).and_then(|f| f.sync_all())?;
    }
    fsutil::rename_durable(&tmp, dest)
}

/// `cargo xtask resources download`
pub fn download(opts: &Opts) -> Result<()> {
    let _lock = fsutil::lock(&downloads_root(opts))?;
    let http = Http::new(&opts.api, opts.jobs);
    let plan = plan_online(opts, &http)?;
    warn_support(opts);
    prepare_work(opts, &plan)?;
    eprintln!(
        "Downloading {} {}/{} ({}) into {}",
        plan.release.tag_name,
        opts.os,
        opts.arch,
        human_bytes(plan.sel.total_size()),
        plan.work.display()
    );
    let dl = download::start(http, jobs(&plan, opts, false)?, opts.jobs, "download")?;
    dl.finish_all()?;
    if let Some(m) = other_set(opts, &plan) {
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
    install_link(
        &plan.work.join(&plan.sel.kernel.name),
        &opts.output.join(KERNEL),
    )?;
    install_link(
        &plan.work.join(&plan.sel.client.name),
        &opts.output.join(CLIENT),
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

/// The manifest of an installed set other than `plan`'s: the single steps
/// leave such a set whole rather than mix two releases in one directory.
fn other_set(opts: &Opts, plan: &Plan) -> Option<Manifest> {
    manifest::load(&opts.output).ok().filter(|m| {
        !(m.repo == opts.repo
            && m.tag == plan.release.tag_name
            && m.os == opts.os.as_str()
            && m.arch == opts.arch.as_str())
    })
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

/// The sha256 the release's sums file gives for the qcow2. Upstream's line
/// names `temp/disk-image.qcow2`; a renamed set may name ours.
fn expected_sha(plan: &Plan) -> Result<[u8; 32]> {
    let path = plan.work.join(&plan.sel.sums.name);
    let text = fs::read_to_string(&path)
        .with_context(|| format!("cannot read the checksum file {}", path.display()))?;
    let entries = unpack::parse_sums(&text, &plan.sel.sums.name)?;
    let ours = crate::assets::disk_base_of(&plan.sel.disk_archive);
    unpack::expected_sha256(&entries, QCOW2, &plan.sel.sums.name)
        .or_else(|e| unpack::expected_sha256(&entries, &ours, &plan.sel.sums.name).map_err(|_| e))
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
/// made one, else from the parts read in order (their digests checked).
pub fn decompress(opts: &Opts) -> Result<()> {
    let _lock = fsutil::lock(&downloads_root(opts))?;
    let plan = plan_offline(opts)?;
    // Another installed set stays whole: the image goes to the working
    // directory, where the full run picks it up when switching sets.
    let dest = match other_set(opts, &plan) {
        Some(m) => {
            eprintln!(
                "note: {} {}/{} stays installed whole in {}; unpacking into the working directory",
                m.tag,
                m.os,
                m.arch,
                opts.output.display()
            );
            plan.work.join(QCOW2)
        }
        None => opts.output.join(QCOW2),
    };
    let merged = plan.work.join(&plan.sel.disk_archive);
    if plan.sel.disk.len() > 1 && merged.is_file() {
        let f =
            fs::File::open(&merged).with_context(|| format!("cannot open {}", merged.display()))?;
        let started = Instant::now();
        let out = unpack_disk(&plan, io::BufReader::with_capacity(1 << 20, f), &dest, 0)?;
        report_unpacked(&plan, &out, started);
    } else {
        let missing: Vec<&str> = plan
            .sel
            .all()
            .filter(|a| !plan.work.join(&a.name).is_file())
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
        let http = Http::new(&opts.api, 1);
        let dl = download::start(http, jobs(&plan, opts, false)?, 1, "check")?;
        let readers = disk_readers(&plan, &dl);
        let started = Instant::now();
        match unpack_disk(&plan, Chain::new(readers), &dest, 0) {
            Ok(out) => {
                dl.wait()?;
                report_unpacked(&plan, &out, started);
            }
            Err(e) => {
                dl.abort("unpack failed");
                let _ = dl.wait();
                return Err(e);
            }
        }
    }
    println!("{} is ready", dest.display());
    Ok(())
}

/// `cargo xtask resources`: everything, fused.
pub fn run(opts: &Opts) -> Result<()> {
    let started = Instant::now();
    let lock = fsutil::lock(&downloads_root(opts))?;
    let http = Http::new(&opts.api, opts.jobs);

    // An installed set that still matches its manifest needs no network
    // for a pinned tag, and one API call for `latest`.
    let installed = manifest::load(&opts.output)
        .ok()
        .filter(|m| !opts.force && m.matches_request(opts) && m.unchanged(&opts.output));
    if let Some(m) = installed.as_ref().filter(|_| opts.version != "latest") {
        println!("{}", up_to_date(m, &opts.output, started));
        lock.remove();
        return Ok(());
    }
    let plan = plan_online(opts, &http)?;
    if let Some(m) = installed.filter(|m| m.tag == plan.release.tag_name) {
        println!("{}", up_to_date(&m, &opts.output, started));
        lock.remove();
        return Ok(());
    }
    warn_support(opts);
    prepare_work(opts, &plan)?;
    eprintln!(
        "Getting {} {}/{} ({} to download) into {}",
        plan.release.tag_name,
        opts.os,
        opts.arch,
        human_bytes(plan.sel.total_size()),
        opts.output.display()
    );

    let staged_qcow2 = plan.work.join(QCOW2);
    let staged_raw = plan.work.join(RAW);
    let mut jobs = jobs(&plan, opts, !opts.keep_downloads)?;
    let unpacked = match staged_image(&plan, &staged_qcow2) {
        // An interrupted run already unpacked and checked the image (and
        // may have deleted the parts): only the small assets are needed.
        Some(u) => {
            eprintln!("  {QCOW2}: already unpacked and checked by an interrupted run");
            jobs.truncate(Selection::SMALL);
            download::start(http, jobs, opts.jobs, "download")?.finish_all()?;
            u
        }
        None => {
            let to_download: u64 = jobs
                .iter()
                .filter(|j| !j.dest.is_file())
                .map(|j| j.size)
                .sum();
            let dl = download::start(http, jobs, opts.jobs, "download")?;
            let started = Instant::now();
            match fused(&plan, &dl, &staged_qcow2, to_download) {
                Ok(u) => {
                    dl.wait()?;
                    report_unpacked(&plan, &u, started);
                    if !opts.keep_downloads {
                        // The image is checked: the parts only take space the raw image needs.
                        for a in &plan.sel.disk {
                            let _ = fs::remove_file(plan.work.join(&a.name));
                        }
                    }
                    u
                }
                Err(e) => {
                    dl.abort("stopped after an error");
                    let _ = dl.wait();
                    return Err(e);
                }
            }
        }
    };

    let t = Instant::now();
    convert::convert_native(&staged_qcow2, &staged_raw, true)?;
    eprintln!("  {RAW}: converted in {:.1} s", t.elapsed().as_secs_f64());

    let m = install(opts, &plan, &unpacked)?;
    println!("Checking the installed set:");
    // Quick: every byte was hashed on the way in; re-reading GiBs proves nothing new.
    verify::check_installed(&opts.output, &m, verify::Depth::Quick)
        .context("the installed set failed verification")?;
    if !opts.keep_downloads {
        fs::remove_dir_all(&plan.work)
            .with_context(|| format!("cannot remove {}", plan.work.display()))?;
        let _ = fs::remove_file(downloads_root(opts).join(LAST_TAG));
        lock.remove();
    }
    print_summary(opts, &m, started);
    Ok(())
}

/// The staged image of an interrupted run, if it is there and matches the
/// sums (the sums file stays in the working directory until the end).
fn staged_image(plan: &Plan, staged: &Path) -> Option<unpack::Unpacked> {
    if !staged.is_file() || !plan.work.join(&plan.sel.sums.name).is_file() {
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
                    failed.get_or_insert_with(|| anyhow!("{e}"));
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

/// Moves the staged set into the output directory and writes the manifest
/// last. The old manifest goes first, so an interrupted switch is never
/// mistaken for a complete set.
fn install(opts: &Opts, plan: &Plan, unpacked: &unpack::Unpacked) -> Result<Manifest> {
    let out = &opts.output;
    let m = manifest::build(opts, plan, unpacked)?;
    manifest::remove(out)?;
    install_link(&plan.work.join(&plan.sel.kernel.name), &out.join(KERNEL))?;
    install_link(&plan.work.join(&plan.sel.client.name), &out.join(CLIENT))?;
    fsutil::rename_durable(&plan.work.join(QCOW2), &out.join(QCOW2))?;
    fsutil::rename_durable(&plan.work.join(RAW), &out.join(RAW))?;
    let m = m.with_installed_times(out)?;
    manifest::store(out, &m)?;
    Ok(m)
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
