//! A release and the assets of our os/arch in it (`Plan`), looked up online
//! or left behind by an earlier `download`; the working directory that
//! holds its downloads; the pieces the disk commands share (what to
//! download, the sums, the unpacker call).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use super::store::Store;
use super::Session;
use archive::unpack;
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
use util::text::Shown;

/// A release and the assets of our os/arch in it.
pub(crate) struct Plan {
    pub(crate) release: Release,
    pub(crate) json: String,
    pub(crate) sel: Selection,
    /// `.downloads/<tag>/` in the output directory: the release JSON for
    /// the offline commands, and the staged files of an install.
    pub(crate) work: PathBuf,
    /// Where the assets are: the cache entry, or `work`.
    pub(crate) store: Store,
}

/// Which assets of a plan a command fetches, in download order: kernel,
/// client, the sums, then the disk parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Pick {
    pub(crate) kernel: bool,
    pub(crate) client: bool,
    pub(crate) sums: bool,
    pub(crate) parts: bool,
}

impl Pick {
    pub(crate) const ALL: Pick = Pick {
        kernel: true,
        client: true,
        sums: true,
        parts: true,
    };

    /// How many small assets come before the parts.
    pub(crate) fn small(&self) -> usize {
        [self.kernel, self.client, self.sums]
            .iter()
            .filter(|b| **b)
            .count()
    }
}

impl Session {
    /// Looks the release up (in the cache first, where it can answer) and
    /// picks our assets.
    pub(crate) fn plan_online(&mut self) -> Result<()> {
        let http = self.http(self.opts.connections);
        let cache = self.open_cache()?;
        let resolved = self.resolve(&http, cache.as_ref())?;
        if let Some(note) = &resolved.note {
            note!("{note}");
        }
        self.plan = Some(self.plan_from(resolved.release, resolved.json, cache)?);
        Ok(())
    }

    /// The plan an earlier `download` left behind (no network).
    pub(crate) fn plan_offline(&mut self) -> Result<()> {
        let root = layout::downloads_root(&self.opts.output);
        let tag = if self.opts.version == "latest" {
            last_tag(&root)?
        } else {
            self.opts.version.clone()
        };
        check_tag(&tag).with_context(|| format!("{} is damaged", root.join(LAST_TAG).display()))?;
        let work = self.opts.work_dir(&tag);
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
        let cache = self.open_cache()?;
        self.plan = Some(self.plan_from(release, json, cache)?);
        Ok(())
    }

    fn plan_from(&self, release: Release, json: String, cache: Option<Cache>) -> Result<Plan> {
        check_tag(&release.tag_name).with_context(|| {
            format!(
                "the release's tag `{}` is unusable",
                Shown(&release.tag_name)
            )
        })?;
        let sel = assets::select(&release, self.opts.os, self.opts.arch)?;
        let work = self.opts.work_dir(&release.tag_name);
        let store = match cache {
            Some(cache) => self.cached_store(cache, &json, &release.tag_name, &sel, &work)?,
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

    /// The downloads of the plan, as `pick` says. `transient_disk`: the disk
    /// parts are deleted once the image is checked (the full run without
    /// `--keep-downloads`, when they are not in the cache).
    pub(super) fn wanted(&self, transient_disk: bool, pick: Pick) -> Result<Vec<Wanted>> {
        let plan = self.plan();
        let source = self.opts.source();
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
                    sha256: a.sha256()?,
                    dest: plan.asset_path(&a.name),
                    // Kept in the cache; deleted from the working directory.
                    transient: transient_disk && is_part && !plan.store.is_cache(),
                })
            })
            .collect::<Result<Vec<Wanted>>>()?;
        if self.opts.offline {
            plan.all_here(&want)?;
        }
        Ok(want)
    }

    /// Before the plan's files are fetched: a word on a set the
    /// documentation does not call stable and on digests this tool cannot
    /// check; `--force` clears the working directory (and the plan's assets
    /// in the cache); the release JSON is recorded for the offline commands.
    pub(crate) fn prepare_work(&self) -> Result<()> {
        self.warn_support();
        let plan = self.plan();
        plan.note_unchecked_digests();
        if self.opts.force && plan.store.is_cache() {
            for a in plan.sel.all() {
                fetch::forget(&plan.store.dir.join(&a.name));
            }
        }
        if self.opts.force && fs::symlink_metadata(&plan.work).is_ok() {
            // Removes a link itself, never what it points at.
            fs::remove_dir_all(&plan.work)
                .or_else(|_| fs::remove_file(&plan.work))
                .with_context(|| format!("cannot clear {}", plan.work.display()))?;
        }
        fsutil::ensure_own_dir(&plan.work)?;
        write_small(&plan.work.join(RELEASE_JSON), plan.json.as_bytes())?;
        write_small(
            &layout::downloads_root(&self.opts.output).join(LAST_TAG),
            plan.release.tag_name.as_bytes(),
        )
    }

    fn warn_support(&self) {
        let (os, arch) = (self.opts.os, self.opts.arch);
        let s = support(os, arch);
        if !s.stable || !s.gem5 {
            warning!(
                "{os}/{arch} is {} in the documentation ({})",
                if s.gem5 {
                    "experimental"
                } else {
                    "without gem5 support"
                },
                s.summary()
            );
        }
    }
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

/// The release's checksum file could not be read or parsed: it is at fault.
#[derive(Debug)]
pub(crate) struct BadSums(String);

impl std::fmt::Display for BadSums {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for BadSums {}

impl Plan {
    /// Where asset `name` is read from and downloaded to: the working
    /// directory when an earlier `--no-cache` run left it there, else the store.
    pub(crate) fn asset_path(&self, name: &str) -> PathBuf {
        let in_work = self.work.join(name);
        if fsutil::is_regular(&in_work) {
            in_work
        } else {
            self.store.dir.join(name)
        }
    }

    /// `--offline`: no network, so every download must be there already.
    fn all_here(&self, want: &[Wanted]) -> Result<()> {
        let absent: Vec<&str> = want
            .iter()
            .filter(|w| !fetch::is_fetched(&w.dest, w.size, w.sha256, false))
            .map(|w| w.name.as_str())
            .collect();
        if !absent.is_empty() {
            bail!(
                "--offline: {} of release {} not in the cache {}; run once without --offline",
                absent.join(", "),
                self.release.tag_name,
                self.store.dir.display()
            );
        }
        Ok(())
    }

    /// Says which assets carry a digest of another algorithm: it is not checked.
    fn note_unchecked_digests(&self) {
        for a in self.sel.all() {
            if let Some(d) = a.unchecked_digest() {
                note!(
                    "asset {} has a digest `{}` of an algorithm this tool does not \
                     check; its size and the image's sums are still checked",
                    Shown(&a.name),
                    util::text::clean(d, 40)
                );
            }
        }
    }

    /// The sha256 the release's sums file gives for the qcow2. Upstream's line
    /// names `temp/disk-image.qcow2`; a renamed set may name ours.
    pub(crate) fn expected_sha(&self) -> Result<[u8; 32]> {
        let path = self.asset_path(&self.sel.sums.name);
        let text = fsutil::read_small(&path, assets::MAX_SUMS)
            .with_context(|| format!("cannot read the checksum file {}", path.display()))?;
        let advice = format!(
            "the release's checksum file is damaged or incomplete: {}, or pick another --version",
            unpack::REDO
        );
        sha_from_sums(&text, &self.sel.sums.name, &self.sel.disk_archive, &advice)
            .map_err(|e| anyhow::Error::new(BadSums(format!("{e:#}"))))
    }

    /// The disk archive, for messages: its one asset, or its name and parts.
    fn disk_source_name(&self) -> String {
        match self.sel.disk.len() {
            1 => self.sel.disk[0].name.clone(),
            n => format!("{} ({n} parts)", self.sel.disk_archive),
        }
    }

    /// Unpacks the disk archive from `input` into `dest`, checking the sums.
    /// `raw`: also write the raw image there in the same pass.
    pub(crate) fn unpack_disk(
        &self,
        input: impl Read + Send,
        dest: &Path,
        raw: Option<&Path>,
        still_to_download: u64,
    ) -> Result<unpack::Unpacked> {
        let expected = self.expected_sha()?;
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
        let source = self.disk_source_name();
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
    pub(crate) fn report_unpacked(&self, out: &unpack::Unpacked, started: Instant) {
        say!(
            "  {}: {} unpacked and checked against {} in {:.1} s",
            QCOW2,
            human_bytes(out.size),
            self.sel.sums.name,
            started.elapsed().as_secs_f64()
        );
    }

    /// What the manifest records of the disk image's sources: its parts and
    /// the sums.
    pub(crate) fn disk_sources(&self) -> Vec<SourceAsset> {
        let mut v: Vec<SourceAsset> = self.sel.disk.iter().map(source_of).collect();
        v.push(source_of(&self.sel.sums));
        v
    }

    /// Readers of the disk parts, in archive order, in downloads made with `pick`.
    pub(crate) fn disk_readers(&self, dl: &Downloads, pick: Pick) -> Vec<AssetReader> {
        let first = pick.small();
        (first..first + self.sel.disk.len())
            .map(|i| dl.reader(i))
            .collect()
    }
}

/// The qcow2's sha256 in the sums file `sums_name` (text `text`) of the disk
/// archive `archive`: the line naming `disk-image.qcow2` (upstream's
/// `temp/disk-image.qcow2`), else the one naming the archive's image. An
/// error ends with `advice`, which depends on where the sums came from.
pub(crate) fn sha_from_sums(
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

/// What the manifest records of an asset a file came from.
pub(crate) fn source_of(a: &Asset) -> SourceAsset {
    SourceAsset {
        name: a.name.clone(),
        size: a.size,
        digest: a.digest.clone(),
    }
}
