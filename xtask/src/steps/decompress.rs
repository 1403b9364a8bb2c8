//! `cargo xtask resources decompress`: unpacks the downloaded disk image
//! (the merged archive if `merge` made one, else the parts read in order,
//! their digests checked) into the working directory, then installs it
//! unless another set is installed. With `--from DIR|PREFIX`, unpacks parts
//! found on disk instead (a directory's set, or the set at a prefix as
//! `artifacts.sh decompress-split` takes it), with no release and no network.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::adopt::{self, Verdict};
use super::guard::{
    self, entry, guard_names, load_manifest, other_set, refuse_pending, same_set_manifest,
};
use super::pack::is_archive_name;
use super::plan::{
    disk_readers, disk_sources, expected_sha, open_work, plan_offline, report_unpacked,
    sha_from_sums, unpack_disk, wanted, Pick, Plan,
};
use super::Opts;
use archive::unpack;
use fetch::{self, Http};
use github::assets;
use github::release::{Asset, Release};
use install::layout::QCOW2;
use install::manifest::Manifest;
use install::swap::{install, Move};
use util::fmt::hex;
use util::fmt::human_bytes;
use util::fs as fsutil;
use util::io::Chain;
use util::text::Shown;

/// `cargo xtask resources decompress`: from the merged archive if `merge`
/// made one, else from the parts read in order (their digests checked). The
/// image is unpacked into the working directory, then installed unless
/// another set is.
pub fn run(opts: &Opts) -> Result<()> {
    let _lock = open_work(opts)?;
    let m = load_manifest(opts)?;
    let plan = plan_offline(opts)?;
    let other = other_set(opts, &plan, m.as_ref());
    if other.is_none() {
        refuse_pending(opts, m.as_ref())?;
        if adopt_image(opts, &plan, m.as_ref())? {
            return Ok(());
        }
    }
    let staged = plan.work.join(QCOW2);
    let merged = plan.work.join(&plan.sel.disk_archive);
    let started = Instant::now();
    let out = if plan.sel.disk.len() > 1 && fsutil::is_regular(&merged) {
        let f = fsutil::open_regular(&merged)
            .with_context(|| format!("cannot open {}", merged.display()))?;
        unpack_disk(
            &plan,
            io::BufReader::with_capacity(1 << 20, f),
            &staged,
            None,
            0,
        )?
    } else {
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
        let http = Http::new(&opts.http(1));
        let dl = fetch::start(
            http,
            wanted(&plan, opts, false, Pick::ALL)?,
            1,
            "check",
            opts.progress,
        )?;
        let readers = disk_readers(&plan, &dl, Pick::ALL);
        match unpack_disk(&plan, Chain::new(readers), &staged, None, 0) {
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
        note!(
            "{} {}/{} stays installed whole in {}; the image stays in the working directory",
            Shown(&o.tag),
            Shown(&o.os),
            Shown(&o.arch),
            opts.output.display()
        );
        out!("{} is ready", staged.display());
        return Ok(());
    }
    let mut new = same_set_manifest(opts, &plan, m.as_ref());
    new.set_entry(entry(
        QCOW2,
        &staged,
        Some(hex(&out.sha256)),
        disk_sources(&plan),
    )?);
    install(
        &opts.output,
        m.as_ref(),
        new,
        vec![(QCOW2, Move::Rename(staged))],
    )?;
    out!("{} is ready", opts.output.join(QCOW2).display());
    report_image(&opts.output.join(QCOW2), &out.sha256);
    Ok(())
}

/// An image at `disk-image.qcow2` that the manifest does not list is
/// compared with the sums: the release's is adopted (true: nothing to
/// unpack), another is the user's and refused unless `--force`.
fn adopt_image(opts: &Opts, plan: &Plan, m: Option<&Manifest>) -> Result<bool> {
    let state = guard::inspect(&opts.output, m, QCOW2);
    let want = match state {
        guard::State::Foreign(_) => Some(expected_sha(plan)?),
        _ => None,
    };
    let mut v = [(QCOW2, adopt::one(opts, plan, m, &state, QCOW2, want)?)];
    adopt::refuse_users(opts, &mut v)?;
    match v.into_iter().next().map(|(_, v)| v) {
        Some(Verdict::Keep(adopt::Kept::Adopted, e)) if !opts.force => {
            let mut new = same_set_manifest(opts, plan, m);
            new.set_entry(e);
            install(&opts.output, m, new, Vec::new())?;
            out!(
                "{} already is release {}'s image (adopted)",
                opts.output.join(QCOW2).display(),
                plan.release.tag_name
            );
            Ok(true)
        }
        _ => Ok(false),
    }
}

/// `decompress --from DIR|PREFIX`: the parts and sums in a directory (what
/// `pack` wrote, a CI artifact) or at a prefix (`DIR/disk-image.qcow2` for
/// `DIR/disk-image.qcow2.tar.gz.aa`…, as `artifacts.sh decompress-split`
/// takes it) unpacked into `<output>/disk-image.qcow2` and checked against
/// the sums. No release is involved, so an installed set is left alone
/// unless `--force`, and then only its disk image is replaced.
pub fn run_from(opts: &Opts, from: &Path) -> Result<()> {
    let existed = install::layout::downloads_root(&opts.output).exists();
    let r = from_set(opts, from);
    if !existed {
        // The working directory served only as the lock.
        let _ = fs::remove_dir(install::layout::downloads_root(&opts.output));
    }
    r
}

/// A set found on disk: its directory, its disk archive, its sums.
type LocalSet = (PathBuf, assets::Disk, Asset);

/// The set `--from` names: a directory's os/arch set (or its one
/// un-renamed set), else the set at a prefix.
fn find_from(opts: &Opts, from: &Path) -> Result<LocalSet> {
    let fix = "copy the missing part into that directory";
    if !fs::metadata(from).is_ok_and(|m| m.is_dir()) {
        return at_prefix(from, fix);
    }
    let files = dir_files(from)?;
    let mut base = assets::disk_base(opts.os, opts.arch);
    let mut what = format!(" for {}/{}", opts.os, opts.arch);
    let mut advice = "; give the directory `pack` wrote (or pass --os-version/--arch)";
    if !files.iter().any(|a| a.name.starts_with(&base)) {
        let others = unrenamed_bases(&files);
        match others.as_slice() {
            [one] => {
                (base, what) = (one.clone(), String::new());
                advice = "";
            }
            [] => {}
            many => bail!(
                "--from: {} holds no set for {}/{} but {} others ({}); name one by its \
                 prefix: --from {}",
                from.display(),
                opts.os,
                opts.arch,
                many.len(),
                many.join(", "),
                from.join(&many[0]).display()
            ),
        }
    }
    let found =
        set_in(from, &files, &base, &what, fix).map_err(|e| anyhow!("--from: {e:#}{advice}"))?;
    Ok((from.to_path_buf(), found.0, found.1))
}

/// The set at `prefix`: `PREFIX.tar.gz.aa`… (or another form) and
/// `PREFIX.sums` in the prefix's directory, whatever the prefix is named.
fn at_prefix(prefix: &Path, fix: &str) -> Result<LocalSet> {
    let shown = prefix.display();
    let form = "a directory, or the prefix of a set's files (DIR/disk-image.qcow2 for \
                DIR/disk-image.qcow2.tar.gz.aa, … and DIR/disk-image.qcow2.sums)";
    let base = prefix.file_name().and_then(|n| n.to_str());
    let Some(base) = base.filter(|b| assets::check_name(b).is_ok()) else {
        bail!("--from {shown}: expected {form}");
    };
    let dir = match prefix.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !fs::metadata(&dir).is_ok_and(|m| m.is_dir()) {
        bail!(
            "--from {shown}: {} is not a directory; expected {form}",
            dir.display()
        );
    }
    let files = dir_files(&dir)?;
    if !files
        .iter()
        .any(|a| a.name.starts_with(&format!("{base}.")))
    {
        // A part or the sums given for the prefix: say which prefix it has.
        let own = assets::disk_base_of(base);
        let hint = if base.starts_with(&format!("{own}.")) {
            format!(
                "; this is a file of the set {}: give that",
                dir.join(&own).display()
            )
        } else {
            format!("; expected {form}")
        };
        bail!(
            "--from {shown}: {} holds no {base}.* file: looked for the parts {base}.tar.gz.aa, \
             .ab, … (or .tar.xz.*, .tar.zst.*, or one {base}.tar.gz, .tar.xz, .tar.zst) and \
             {base}.sums{hint}",
            dir.display()
        );
    }
    let (disk, sums) = set_in(&dir, &files, base, "", fix).map_err(|e| {
        anyhow!(
            "--from {shown}: {e:#}; a set is the parts and {base}.sums, as `pack` and \
             `artifacts.sh compress-split` write them"
        )
    })?;
    Ok((dir, disk, sums))
}

/// The bases of the sets in a listing whose names carry no os/arch (a CI
/// artifact's `disk-image.qcow2.sums`, `disk-image.qcow2.tar.gz.aa`…),
/// sorted.
fn unrenamed_bases(files: &[Asset]) -> Vec<String> {
    let named: Vec<String> = assets::Os::ALL
        .into_iter()
        .flat_map(|o| assets::Arch::ALL.map(|a| assets::disk_base(o, a)))
        .collect();
    let mut bases: Vec<String> = files
        .iter()
        .filter_map(|a| {
            let base = assets::disk_base_of(&a.name);
            let of_set = a.name.strip_suffix(".sums") == Some(base.as_str())
                || is_archive_name(&a.name, &base);
            (of_set && base.ends_with(".qcow2") && !named.contains(&base)).then_some(base)
        })
        .collect();
    bases.sort();
    bases.dedup();
    bases
}

fn from_set(opts: &Opts, from: &Path) -> Result<()> {
    let (dir, disk, sums) = find_from(opts, from)?;
    let dir = dir.as_path();
    let (parts, _, archive) = disk;
    let _lock = open_work(opts)?;
    let sums_path = dir.join(&sums.name);
    let text = fsutil::read_input(&sums_path, assets::MAX_SUMS)
        .with_context(|| format!("cannot read the checksum file {}", sums_path.display()))?;
    // No release and no downloads here: the set in DIR is at fault.
    let advice = format!(
        "the sums file in {} is damaged or does not belong to these parts: re-make the set with `pack`, \
         or fetch the artifact again",
        dir.display()
    );
    let sums_shown = sums_path.display().to_string();
    let expected = sha_from_sums(&text, &sums_shown, &archive, &advice)?;
    let dest = opts.output.join(QCOW2);
    if fsutil::is_regular(&dest) && fsutil::sha256_file(&dest)? == expected {
        out!(
            "{} already holds this image (its sha256 matches {})",
            dest.display(),
            sums.name
        );
        return Ok(());
    }
    let m = load_manifest(opts)?;
    refuse_pending(opts, m.as_ref())?;
    // A set's files belong together: an image of no release is not put
    // among them, even with --force (which would leave the set unverifiable).
    if let Some(m) = m.as_ref().filter(|m| !m.files.is_empty()) {
        bail!(
            "{} holds {} {}/{} installed from {}; `decompress --from` makes a disk image of no \
             release, so it goes elsewhere: pass another --output",
            opts.output.display(),
            Shown(&m.tag),
            Shown(&m.os),
            Shown(&m.arch),
            Shown(&m.repo)
        );
    }
    guard_names(opts, m.as_ref(), &[QCOW2])?;

    let mut files = Vec::with_capacity(parts.len());
    for p in &parts {
        let path = dir.join(&p.name);
        let f =
            fsutil::open_input(&path).with_context(|| format!("cannot open {}", path.display()))?;
        files.push(io::BufReader::with_capacity(1 << 20, f));
    }
    let source = match parts.len() {
        1 => dir.join(&parts[0].name).display().to_string(),
        n => format!("{} ({n} parts)", dir.join(&archive).display()),
    };
    let out_dir = opts.output.clone();
    let mut check = |size: u64| fsutil::ensure_space(&out_dir, size, "the disk image");
    let req = unpack::Request {
        source: &source,
        dest: &dest,
        expected: Some(expected),
        size_hint: Some(parts.iter().map(|p| p.size).sum()),
        raw: None,
        mismatch_advice: Some(&format!(
            "the parts in {} do not match {} (a part is damaged, or the sums are another \
             set's): re-make the set with `pack`, or fetch the artifact again",
            dir.display(),
            sums.name
        )),
    };
    let started = Instant::now();
    let out = unpack::unpack(Chain::new(files), &req, &mut check).with_context(|| {
        format!(
            "cannot unpack the parts in {}; if they are damaged or incomplete, copy them again",
            dir.display()
        )
    })?;
    say!(
        "  {QCOW2}: {} unpacked and checked against {} in {:.1} s",
        human_bytes(out.size),
        sums.name,
        started.elapsed().as_secs_f64()
    );
    out!("{} is ready", dest.display());
    report_image(&dest, &out.sha256);
    Ok(())
}

/// The disk parts and sums of the set `base` in `dir` (what `pack` wrote
/// there, or a CI artifact's `disk-image.qcow2.*`); a part missing from the
/// sequence is an error that says `fix`, and so is a set without its sums.
pub(super) fn local_set_of(dir: &Path, base: &str, fix: &str) -> Result<(assets::Disk, Asset)> {
    set_in(dir, &dir_files(dir)?, base, "", fix)
}

/// The set of `base` among `files`, listed from `dir`.
fn set_in(
    dir: &Path,
    files: &[Asset],
    base: &str,
    what: &str,
    fix: &str,
) -> Result<(assets::Disk, Asset)> {
    let release = Release {
        id: None,
        upload_url: None,
        tag_name: dir.display().to_string(),
        name: None,
        draft: false,
        prerelease: false,
        published_at: None,
        assets: files
            .iter()
            .filter(|a| a.name.starts_with(base))
            .cloned()
            .collect(),
    };
    assets::select_set(&release, base, what, fix)
}

/// The regular files in `dir` whose names could be assets, as assets.
/// Other entries (notes, odd names, links to nowhere) are no part of a set.
fn dir_files(dir: &Path) -> Result<Vec<Asset>> {
    let mut found = Vec::new();
    let listing = fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    for e in listing {
        let e = e.with_context(|| format!("cannot list {}", dir.display()))?;
        let Ok(name) = e.file_name().into_string() else {
            continue;
        };
        if assets::check_name(&name).is_err() {
            continue;
        }
        let Ok(meta) = fs::metadata(e.path()) else {
            continue;
        };
        if meta.is_file() {
            found.push(Asset {
                id: None,
                name,
                size: meta.len(),
                browser_download_url: String::new(),
                digest: None,
                state: None,
            });
        }
    }
    Ok(found)
}

/// The unpacked image for `--json`.
fn report_image(path: &Path, sha256: &[u8; 32]) {
    let size = fs::metadata(path).map(|m| m.len()).ok();
    util::say::report(
        "files",
        serde_json::json!([{ "name": QCOW2, "path": path, "size": size, "sha256": hex(sha256) }]),
    );
}
