//! A release and the assets of our os/arch in it (`Plan`), looked up online
//! or left behind by an earlier `download`; the working directory that
//! holds its downloads; the pieces the disk steps share (what to download,
//! the sums, the unpacker call).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::store::{self, Store};
use super::Opts;
use archive::unpack;
use fetch::Http;
use fetch::{self, AssetReader, Downloads, Wanted};
use github::assets::{self, Selection};
use github::cache::Cache;
use github::release::{check_tag, Asset, Release};
use github::support::support;
use install::layout::{self, LAST_TAG, MAX_JSON, QCOW2, RELEASE_JSON};
use install::manifest::SourceAsset;
use util::fmt::human_bytes;
use util::fs as fsutil;
use util::fs::write_small;
use util::lock::{self, Lock};
use util::text::Shown;

/// A release and the assets of our os/arch in it.
pub struct Plan {
    pub release: Release,
    pub json: String,
    pub sel: Selection,
    /// `.downloads/<tag>/` in the output directory: the release JSON for
    /// the offline steps, and the staged files of an install.
    pub work: PathBuf,
    /// Where the assets are: the cache entry, or `work`.
    pub store: Store,
}

impl Plan {
    /// Where asset `name` is read from and downloaded to: the working
    /// directory when an earlier `--no-cache` run left it there, else the store.
    pub fn asset_path(&self, name: &str) -> PathBuf {
        let in_work = self.work.join(name);
        if fsutil::is_regular(&in_work) {
            in_work
        } else {
            self.store.dir.join(name)
        }
    }
}

/// Makes the output directory and the working directory root (a link at
/// `.downloads` is junk and is replaced, a file of the user's there is
/// refused), and takes the lock: another run on the same output directory
/// is waited for (`--no-wait`: an error).
pub(super) fn open_work(opts: &Opts) -> Result<Lock> {
    if opts.output.exists() && !opts.output.is_dir() {
        anyhow::bail!(
            "--output {} is a file, not a directory; name a directory",
            opts.output.display()
        );
    }
    fs::create_dir_all(&opts.output)
        .with_context(|| format!("cannot create {}", opts.output.display()))?;
    let root = layout::downloads_root(&opts.output);
    let what = opts.output.display().to_string();
    let how = lock::How {
        kind: lock::Kind::Exclusive,
        what: &what,
        wait: opts.wait,
        own: true,
    };
    lock::lock(&root, &how)
}

/// Looks the release up (in the cache first, where it can answer) and
/// picks our assets.
pub(super) fn plan_online(opts: &Opts, http: &Http) -> Result<Plan> {
    let cache = store::open_cache(opts)?;
    let resolved = store::resolve(opts, http, cache.as_ref())?;
    if let Some(note) = &resolved.note {
        note!("{note}");
    }
    plan_from(opts, resolved.release, resolved.json, cache)
}

fn plan_from(opts: &Opts, release: Release, json: String, cache: Option<Cache>) -> Result<Plan> {
    check_tag(&release.tag_name).with_context(|| {
        format!(
            "the release's tag `{}` is unusable",
            Shown(&release.tag_name)
        )
    })?;
    let sel = assets::select(&release, opts.os, opts.arch)?;
    let work = opts.work_dir(&release.tag_name);
    let store = match cache {
        Some(cache) => Store::cached(opts, cache, &json, &release.tag_name, &sel, &work)?,
        None => Store::work(&work),
    };
    Ok(Plan {
        release,
        json,
        sel,
        work,
        store,
    })
}

/// The plan an earlier `download` left behind (no network).
pub(super) fn plan_offline(opts: &Opts) -> Result<Plan> {
    let root = layout::downloads_root(&opts.output);
    let tag = if opts.version == "latest" {
        last_tag(&root)?
    } else {
        opts.version.clone()
    };
    check_tag(&tag).with_context(|| format!("{} is damaged", root.join(LAST_TAG).display()))?;
    let work = opts.work_dir(&tag);
    // A link planted at the working directory is junk, never followed.
    fsutil::own_dir(&work)?;
    let path = work.join(RELEASE_JSON);
    let json = fsutil::read_small(&path, MAX_JSON).map_err(|_| {
        anyhow!(
            "release {tag} has not been downloaded to {}; run `cargo xtask resources download --version {tag}` first",
            work.display()
        )
    })?;
    let release: Release = serde_json::from_str(&json)
        .with_context(|| format!("{} is damaged; run the download again", path.display()))?;
    plan_from(opts, release, json, store::open_cache(opts)?)
}

/// The tag the last `download` recorded in `root`. A link there is junk;
/// a directory of the user's is refused.
fn last_tag(root: &Path) -> Result<String> {
    let path = root.join(LAST_TAG);
    match fs::symlink_metadata(&path) {
        Ok(m) if m.is_file() => {
            return fsutil::read_small(&path, 256).map(|s| s.trim().to_string());
        }
        Ok(m) if m.file_type().is_symlink() => {
            let _ = fs::remove_file(&path);
        }
        Ok(m) => return Err(fsutil::in_the_way(&path, m.file_type(), "file")),
        Err(_) => {}
    }
    Err(anyhow!(
        "nothing downloaded in {} yet; run `cargo xtask resources download` first",
        root.display()
    ))
}

/// Which assets of a plan a step fetches, in download order: kernel,
/// client, the sums, then the disk parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pick {
    pub kernel: bool,
    pub client: bool,
    pub sums: bool,
    pub parts: bool,
}

impl Pick {
    pub const ALL: Pick = Pick {
        kernel: true,
        client: true,
        sums: true,
        parts: true,
    };

    /// How many small assets come before the parts.
    pub fn small(&self) -> usize {
        [self.kernel, self.client, self.sums]
            .iter()
            .filter(|b| **b)
            .count()
    }
}

/// The downloads of a plan, as `pick` says. `transient_disk`: the disk parts
/// are deleted once the image is checked (the full run without
/// `--keep-downloads`, when they are not in the cache).
pub(super) fn wanted(
    plan: &Plan,
    opts: &Opts,
    transient_disk: bool,
    pick: Pick,
) -> Result<Vec<Wanted>> {
    let source = opts.source();
    let sel = &plan.sel;
    let small = [
        (pick.kernel, &sel.kernel),
        (pick.client, &sel.client),
        (pick.sums, &sel.sums),
    ];
    let small = small
        .into_iter()
        .filter(|(p, _)| *p)
        .map(|(_, a)| (a, false));
    let parts = sel.disk.iter().filter(|_| pick.parts).map(|a| (a, true));
    let want = small
        .chain(parts)
        .map(|(a, is_part)| {
            Ok(Wanted {
                name: a.name.clone(),
                from: source.asset_origin(&plan.release.tag_name, a)?,
                size: a.size,
                sha256: fetch::parse_digest(a.digest.as_deref(), &a.name)?,
                dest: plan.asset_path(&a.name),
                // Kept in the cache; deleted from the working directory.
                transient: transient_disk && is_part && !plan.store.is_cache(),
            })
        })
        .collect::<Result<Vec<Wanted>>>()?;
    if opts.offline {
        // No network: everything must be there already.
        let absent: Vec<&str> = want
            .iter()
            .filter(|w| !fetch::is_fetched(&w.dest, w.size, w.sha256, false))
            .map(|w| w.name.as_str())
            .collect();
        if !absent.is_empty() {
            bail!(
                "--offline: {} of release {} not in the cache {}; run once without --offline",
                absent.join(", "),
                plan.release.tag_name,
                plan.store.dir.display()
            );
        }
    }
    Ok(want)
}

/// Says which assets carry a digest of another algorithm: it is not checked.
pub(super) fn note_unchecked_digests(plan: &Plan) {
    for a in plan.sel.all() {
        if let Some(d) = &a.digest {
            if !d.starts_with("sha256:") {
                note!(
                    "asset {} has a digest `{}` of an algorithm this tool does not \
                     check; its size and the image's sums are still checked",
                    Shown(&a.name),
                    util::text::clean(d, 40)
                );
            }
        }
    }
}

pub(super) fn warn_support(opts: &Opts) {
    let s = support(opts.os, opts.arch);
    if !s.stable || !s.gem5 {
        warning!(
            "{}/{} is {} in the documentation ({})",
            opts.os,
            opts.arch,
            if s.gem5 {
                "experimental"
            } else {
                "without gem5 support"
            },
            s.summary()
        );
    }
}

/// Prepares the working directory of a plan: `--force` clears it (and the
/// plan's assets in the cache), the release JSON is recorded for the
/// offline steps.
pub(super) fn prepare_work(opts: &Opts, plan: &Plan) -> Result<()> {
    if opts.force && plan.store.is_cache() {
        for a in plan.sel.all() {
            fetch::forget(&plan.store.dir.join(&a.name));
        }
    }
    if opts.force && fs::symlink_metadata(&plan.work).is_ok() {
        // Removes a link itself, never what it points at.
        fs::remove_dir_all(&plan.work)
            .or_else(|_| fs::remove_file(&plan.work))
            .with_context(|| format!("cannot clear {}", plan.work.display()))?;
    }
    fsutil::ensure_own_dir(&plan.work)?;
    write_small(&plan.work.join(RELEASE_JSON), plan.json.as_bytes())?;
    write_small(
        &layout::downloads_root(&opts.output).join(LAST_TAG),
        plan.release.tag_name.as_bytes(),
    )
}

/// The release's checksum file could not be read or parsed: it is at fault.
#[derive(Debug)]
pub struct BadSums(String);

impl std::fmt::Display for BadSums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadSums {}

/// The sha256 the release's sums file gives for the qcow2. Upstream's line
/// names `temp/disk-image.qcow2`; a renamed set may name ours.
pub(super) fn expected_sha(plan: &Plan) -> Result<[u8; 32]> {
    let path = plan.asset_path(&plan.sel.sums.name);
    let text = fsutil::read_small(&path, assets::MAX_SUMS)
        .with_context(|| format!("cannot read the checksum file {}", path.display()))?;
    let advice = format!(
        "the release's checksum file is damaged or incomplete: {}, or pick another --version",
        unpack::REDO
    );
    sha_from_sums(&text, &plan.sel.sums.name, &plan.sel.disk_archive, &advice)
        .map_err(|e| anyhow::Error::new(BadSums(format!("{e:#}"))))
}

/// The qcow2's sha256 in the sums file `sums_name` (text `text`) of the disk
/// archive `archive`: the line naming `disk-image.qcow2` (upstream's
/// `temp/disk-image.qcow2`), else the one naming the archive's image. An
/// error ends with `advice`, which depends on where the sums came from.
pub(super) fn sha_from_sums(
    text: &str,
    sums_name: &str,
    archive: &str,
    advice: &str,
) -> Result<[u8; 32]> {
    let entries = unpack::parse_sums(text, sums_name).map_err(|e| anyhow!("{e:#}; {advice}"))?;
    unpack::expected_sha256(&entries, QCOW2, sums_name)
        .or_else(|e| {
            unpack::expected_sha256(&entries, &assets::disk_base_of(archive), sums_name)
                .map_err(|_| e)
        })
        .map_err(|e| anyhow!("{e:#}; {advice}"))
}

pub(super) fn disk_source_name(sel: &Selection) -> String {
    match sel.disk.len() {
        1 => sel.disk[0].name.clone(),
        n => format!("{} ({n} parts)", sel.disk_archive),
    }
}

/// Unpacks the disk archive from `input` into `dest`, checking the sums.
/// `raw`: also write the raw image there in the same pass.
pub(super) fn unpack_disk(
    plan: &Plan,
    input: impl Read + Send,
    dest: &Path,
    raw: Option<&Path>,
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
    let source = disk_source_name(&plan.sel);
    let req = unpack::Request {
        source: &source,
        dest,
        expected: Some(expected),
        size_hint: None,
        raw,
        mismatch_advice: None,
    };
    unpack::unpack(input, &req, &mut check)
}

/// Said once the progress bars are gone.
pub(super) fn report_unpacked(plan: &Plan, out: &unpack::Unpacked, started: Instant) {
    say!(
        "  {}: {} unpacked and checked against {} in {:.1} s",
        QCOW2,
        human_bytes(out.size),
        plan.sel.sums.name,
        started.elapsed().as_secs_f64()
    );
}

/// What the manifest records of an asset a file came from.
pub(super) fn source_of(a: &Asset) -> SourceAsset {
    SourceAsset {
        name: a.name.clone(),
        size: a.size,
        digest: a.digest.clone(),
    }
}

pub(super) fn disk_sources(plan: &Plan) -> Vec<SourceAsset> {
    let mut v: Vec<SourceAsset> = plan.sel.disk.iter().map(source_of).collect();
    v.push(source_of(&plan.sel.sums));
    v
}

/// Readers of the disk parts, in archive order, in downloads made with `pick`.
pub(super) fn disk_readers(plan: &Plan, dl: &Downloads, pick: Pick) -> Vec<AssetReader> {
    let first = pick.small();
    (first..first + plan.sel.disk.len())
        .map(|i| dl.reader(i))
        .collect()
}
