//! `cargo xtask resources upload (--version TAG | --release-id ID) FILES…`:
//! files made release assets through the REST API, as upstream's
//! `upload_assets.py` and `artifacts.sh upload [FILE NAME]`,
//! `upload-files-in-dir` did (the release by tag or by id, one file under
//! another name with `--as`). Re-running a cut upload completes it: what is
//! already there with the same content is skipped, and what a failed
//! upload left behind is removed first.

use std::collections::hash_map::{Entry, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};

use super::local::{is_archive_name, local_set_of, MAX_PART};
use crate::commands::session::Session;
use crate::commands::Command;
use fetch::{backoff, Http};
use github::assets::check_name;
use github::assets::{disk_base, sums_name, Arch, Os};
use github::release::{Asset, Release};
use github::upload::{
    create_release, delete_asset, find_release, release_by_id, upload_asset, Sent, UploadUrl,
};
use util::fmt::{hex, human_bytes};
use util::fs as fsutil;
use util::io::HashedExact;
use util::progress::Progress;
use util::text::Shown;

/// Tries per asset; a cut upload leaves nothing that the next try cannot
/// clean up.
const TRIES: u32 = 3;

/// The release the files go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `--version TAG`.
    Tag(String),
    /// `--release-id ID`, or `RELEASE_ID` (`from` says which, for messages);
    /// `tag`: `--version` as well, which must be that release's tag.
    Id {
        id: u64,
        from: &'static str,
        tag: Option<String>,
    },
}

/// The arguments of `cargo xtask resources upload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UploadArgs {
    pub(crate) files: Vec<PathBuf>,
    /// `--as NAME`: the asset name of the one file.
    pub(crate) name: Option<String>,
    pub(crate) target: Target,
    pub(crate) create: bool,
    pub(crate) draft: bool,
    pub(crate) clobber: bool,
}

/// A file to upload.
struct Local {
    path: PathBuf,
    name: String,
    size: u64,
    sha256: Option<[u8; 32]>,
}

impl Command for UploadArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        let (args, opts) = (self, s.opts());
        let repo = &opts.repo;
        if opts.token.is_none() {
            bail!(
                "upload needs a token: set GH_TOKEN (or GITHUB_TOKEN) to one that may write \
             releases of {repo} (`contents: write`)"
            );
        }
        let mut locals = Vec::with_capacity(args.files.len());
        for path in &args.files {
            let local = local_file(path, args.name.as_deref())?;
            if locals.iter().any(|l: &Local| l.name == local.name) {
                bail!(
                    "two FILES are named {}: a release holds one asset of a name",
                    local.name
                );
            }
            locals.push(local);
        }
        check_disk_sets(&locals)?;

        let mut http = s.http(1);
        let mut release = find_target(&http, repo, &args)?;
        let tag = Shown(&release.tag_name).to_string();
        let upload_url = release
            .upload_url
            .as_deref()
            .ok_or_else(|| anyhow!("release {tag} has no upload_url in the API's answer"))?;
        let upload_url = UploadUrl::parse(upload_url)?;
        http.trust_uploads(upload_url.base())
            .map_err(|e| anyhow!(e))?;

        let total: u64 = locals.iter().map(|l| l.size).sum();
        let progress = Progress::new("upload", total, 0, opts.progress);
        let (mut sent, mut kept) = (0usize, 0usize);
        let result = (|| -> Result<()> {
            for local in &mut locals {
                if upload_one(
                    &http,
                    repo,
                    &args,
                    &upload_url,
                    &mut release,
                    local,
                    &progress,
                )? {
                    sent += 1;
                } else {
                    kept += 1;
                }
            }
            Ok(())
        })();
        progress.finish();
        result?;
        out!(
            "{repo} {tag}{}: {sent} uploaded, {kept} already there",
            if release.draft { " (draft)" } else { "" }
        );
        util::say::report(
            "release",
            serde_json::json!({ "repo": repo, "tag": tag, "id": release.id, "draft": release.draft }),
        );
        util::say::report("uploaded", serde_json::json!(sent));
        util::say::report("already_there", serde_json::json!(kept));
        Ok(())
    }
}

/// The release `args` names: by tag (created with `--create` if missing),
/// or by id (whose tag must be `--version`'s if that is given too).
fn find_target(http: &Http, repo: &str, args: &UploadArgs) -> Result<Release> {
    let (id, from, tag) = match &args.target {
        Target::Id { id, from, tag } => (*id, *from, tag),
        Target::Tag(tag) => {
            return match find_release(http, repo, tag)? {
                Some(r) => Ok(r),
                None if args.create => {
                    let r = create_release(http, repo, tag, args.draft)?;
                    say!(
                        "created release {tag} in {repo} ({})",
                        if args.draft {
                            "a draft: publish it on GitHub when it is complete"
                        } else {
                            "a pre-release"
                        }
                    );
                    Ok(r)
                }
                None => bail!(
                    "{repo} has no release tagged {tag}; pass --create to make one (a \
                     pre-release), or check --version"
                ),
            };
        }
    };
    let Some(r) = release_by_id(http, repo, id)? else {
        bail!(
            "{repo} has no release with id {id} (the API answered 404); check {from}: it must \
             be the `id` of a release of {repo} (what softprops/action-gh-release outputs as \
             `id`), and the token must be one that sees the repository"
        );
    };
    if let Some(tag) = tag.as_deref().filter(|t| *t != r.tag_name) {
        bail!(
            "{from} {id} is release {} of {repo}, not --version {tag}; give the id and the tag \
             of one release, or only one of them. Nothing was uploaded",
            Shown(&r.tag_name)
        );
    }
    Ok(r)
}

/// The release looked at again (what did a failed try leave?): by id where
/// the API gave one, else by tag.
fn look_again(http: &Http, repo: &str, release: &Release) -> Result<Option<Release>> {
    match release.id {
        Some(id) => release_by_id(http, repo, id),
        None => find_release(http, repo, &release.tag_name),
    }
}

/// Uploads `local` unless the release holds it already; true if it sent it.
/// Only `upload_url`, vetted when the run began, is ever sent to.
fn upload_one(
    http: &Http,
    repo: &str,
    args: &UploadArgs,
    upload_url: &UploadUrl,
    release: &mut Release,
    local: &mut Local,
    progress: &Progress,
) -> Result<bool> {
    let mut last = String::new();
    for attempt in 1..=TRIES {
        if attempt > 1 {
            std::thread::sleep(backoff(attempt - 1));
            // What did the failed try leave? Look again.
            *release = look_again(http, repo, release)?.ok_or_else(|| {
                anyhow!(
                    "release {} disappeared during the upload",
                    Shown(&release.tag_name)
                )
            })?;
        }
        if already_there(http, repo, args, release, local)? {
            progress.item_done(&local.name, "already there, same size and digest");
            progress.add(local.size);
            return Ok(false);
        }
        match send_once(http, repo, upload_url, release, local, progress)? {
            Tried::Done => return Ok(true),
            Tried::Again(why) => last = why,
        }
        progress.say(&format!(
            "  {}: {last}; {}",
            local.name,
            if attempt < TRIES {
                "trying again"
            } else {
                "giving up"
            }
        ));
    }
    bail!(
        "{} could not be uploaded after {TRIES} tries ({last}); run the same command again to \
         resume",
        local.path.display()
    )
}

/// True if the release holds `local` already; otherwise an asset of its
/// name that is junk (a `starter`), or that `--clobber` replaces, is
/// deleted, and anything else of that name is an error.
fn already_there(
    http: &Http,
    repo: &str,
    args: &UploadArgs,
    release: &mut Release,
    local: &mut Local,
) -> Result<bool> {
    let Some(there) = release
        .assets
        .iter()
        .find(|a| a.name == local.name)
        .cloned()
    else {
        return Ok(false);
    };
    match there.state.as_deref() {
        None | Some("uploaded") => match same_content(&there, local)? {
            Ok(()) => return Ok(true),
            Err(why) if !args.clobber => bail!(
                "the release already has an asset named {} with other content ({why}); \
                 pass --clobber to replace it",
                local.name
            ),
            Err(_) => {}
        },
        // What a cut upload leaves: always junk.
        Some("starter") => {}
        Some(other) if !args.clobber => bail!(
            "the release's asset {} is in state {} (an upload in progress elsewhere?); \
             wait and run again, or pass --clobber to replace it",
            local.name,
            Shown(other)
        ),
        Some(_) => {}
    }
    let id = there
        .id
        .ok_or_else(|| anyhow!("the API gives no id for asset {}", Shown(&there.name)))?;
    delete_asset(http, repo, id, &there.name)?;
    release.assets.retain(|a| a.name != local.name);
    Ok(false)
}

/// How one try of [`send_once`] ended, when it did not fail for good.
enum Tried {
    Done,
    /// Worth another try: the reason.
    Again(String),
}

/// Sends `local` once and checks what GitHub made of it. An asset that does
/// not hold what was sent is deleted before anything else happens.
fn send_once(
    http: &Http,
    repo: &str,
    upload_url: &UploadUrl,
    release: &mut Release,
    local: &mut Local,
    progress: &Progress,
) -> Result<Tried> {
    let url = upload_url.for_name(&local.name)?;
    let mut file = fsutil::open_input(&local.path)
        .with_context(|| format!("cannot open {}", local.path.display()))?;
    let before = file
        .metadata()
        .with_context(|| format!("cannot read {}", local.path.display()))?;
    // Exactly the Content-Length, hashed as it is sent; the uploads
    // wrapper reports progress.
    let mut hashed = HashedExact::new(&mut file, local.size, &|_| {});
    let (name, size) = (local.name.clone(), local.size);
    let outcome = upload_asset(http, &url, repo, &name, &mut hashed, size, &|n| {
        progress.advance(&name, size, n)
    });
    let after = std::fs::metadata(&local.path).ok();
    let changed = hashed.ended_early()
        || before.len() != size
        || after
            .is_none_or(|a| a.len() != before.len() || a.modified().ok() != before.modified().ok());
    if changed {
        return Err(changed_while_sent(http, repo, release, local, outcome));
    }
    let asset = match outcome? {
        Sent::Done(asset) => asset,
        Sent::Retry(m) => return Ok(Tried::Again(m)),
    };
    let (_, sha) = hashed.finish();
    local.sha256.get_or_insert(sha);
    let why = match same_content(&asset, local)? {
        Ok(()) => {
            progress.item_done(&local.name, &format!("uploaded ({})", human_bytes(size)));
            release.assets.push(asset);
            return Ok(Tried::Done);
        }
        Err(why) => why,
    };
    // It arrived damaged: take it down and try again.
    let Some(id) = asset.id else {
        bail!(
            "{}: GitHub holds other bytes than were sent ({why}) and its answer gives no asset \
             id to remove it by; delete the asset on GitHub, then run again",
            local.name
        );
    };
    delete_asset(http, repo, id, &asset.name)?;
    Ok(Tried::Again(format!(
        "GitHub holds other bytes than were sent ({why})"
    )))
}

/// The error for a file that changed while it was sent. What GitHub kept
/// of that send is not the file, so it is deleted first (the name was free
/// when the send began, so an asset under it now is this send's): a plain
/// re-run then sends the file afresh.
fn changed_while_sent(
    http: &Http,
    repo: &str,
    release: &Release,
    local: &Local,
    outcome: Result<Sent>,
) -> anyhow::Error {
    let path = local.path.display();
    let kept = match outcome {
        Ok(Sent::Done(asset)) => Ok(Some(asset)),
        // A cut connection or a 5xx: GitHub may hold something under the name.
        Ok(Sent::Retry(_)) => look_again(http, repo, release)
            .map(|r| r.and_then(|r| r.assets.into_iter().find(|a| a.name == local.name))),
        // Refused: nothing of this send was kept.
        Err(_) => Ok(None),
    };
    let removed = kept.and_then(|asset| match asset {
        None => Ok(false),
        Some(a) => {
            let id =
                a.id.ok_or_else(|| anyhow!("the API gives no id for asset {}", Shown(&a.name)))?;
            delete_asset(http, repo, id, &a.name).map(|()| true)
        }
    });
    let advice = "make sure nothing writes to it, then run the same command again";
    match removed {
        Ok(true) => anyhow!(
            "{path} changed while it was uploaded; the asset {} that arrived was deleted from \
             the release; {advice}",
            local.name
        ),
        Ok(false) => {
            anyhow!("{path} changed while it was uploaded; the release kept none of it; {advice}")
        }
        Err(e) => anyhow!(
            "{path} changed while it was uploaded, and what arrived could not be removed \
             ({e:#}); delete the asset {} on GitHub (or pass --clobber), then {advice}",
            local.name
        ),
    }
}

/// Whether the asset holds the file's bytes: same size, and the digest
/// GitHub computed matches ours. Ok(Err(why)) when it does not.
fn same_content(there: &Asset, local: &mut Local) -> Result<Result<(), String>> {
    if there.size != local.size {
        return Ok(Err(format!(
            "{} bytes there, {} here",
            there.size, local.size
        )));
    }
    let Some(digest) = there.digest.as_deref() else {
        return Ok(Err(
            "same size, but GitHub gives no digest to compare (an asset from before 2025)".into(),
        ));
    };
    if local.sha256.is_none() {
        local.sha256 = Some(fsutil::sha256_file_input(&local.path)?);
    }
    let ours = local.sha256.expect("just set");
    // Parsed as GitHub's `sha256:<hex>`; another algorithm never matches.
    if !matches!(there.sha256(), Ok(Some(d)) if d == ours) {
        return Ok(Err(format!(
            "digest {} there, sha256:{} here",
            Shown(digest),
            hex(&ours)
        )));
    }
    Ok(Ok(()))
}

/// A disk-image part or sums file is uploaded only from a whole set: the
/// sums beside it and the parts `aa`, `ab`, … with no gap, as `pack` leaves
/// them when it has finished. A `pack` killed while it renames leaves parts
/// without their sums; `upload DIR/*` must not publish those. The check is
/// by asset name: a file sent `--as` a set's member must be that same
/// member (same suffix) of a whole set on disk, whatever that set's prefix
/// (a CI artifact's `disk-image.qcow2.tar.gz.ab --as
/// disk-image-focal-amd64.qcow2.tar.gz.ab`).
fn check_disk_sets(locals: &[Local]) -> Result<()> {
    // (directory, the set's prefix on disk) → its part names, listed once
    let mut sets: HashMap<(PathBuf, String), Vec<String>> = HashMap::new();
    for local in locals {
        for (os, arch) in Os::ALL.into_iter().flat_map(|o| Arch::ALL.map(|a| (o, a))) {
            let base = disk_base(os, arch);
            let is_sums = local.name == sums_name(os, arch);
            if !is_sums && !is_archive_name(&local.name, &base) {
                continue;
            }
            let (dir, file_base, file_name) = member_on_disk(local, &local.name[base.len()..])?;
            let parts = match sets.entry((dir.clone(), file_base.clone())) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => e.insert(whole_set(&dir, &file_base, &local.path)?),
            };
            if !is_sums && !parts.contains(&file_name) {
                bail!(
                    "{} is not part of the disk-image set in {} ({}…); upload one set at a time, \
                     as `pack` wrote it",
                    local.path.display(),
                    dir.display(),
                    parts.first().map_or("", String::as_str)
                );
            }
        }
    }
    Ok(())
}

/// The directory, set prefix and file name of the file sent as a set's
/// `member` (`.sums`, `.tar.gz.ab`): its own name must end with `member`.
fn member_on_disk(local: &Local, member: &str) -> Result<(PathBuf, String, String)> {
    let dir = match local.path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let file_name = local
        .path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    match file_name.strip_suffix(member).filter(|b| !b.is_empty()) {
        Some(file_base) => Ok((dir, file_base.to_string(), file_name.to_string())),
        None => bail!(
            "{}: sent as {}, it must be the {member} file of a whole disk-image set on disk \
             (PREFIX{member}, beside PREFIX.sums and its other parts), and its name does not end \
             with {member}; nothing was uploaded",
            local.path.display(),
            local.name
        ),
    }
}

/// The part names of the set `base` in `dir`, if it is whole; `file` is
/// the file given that belongs to it.
fn whole_set(dir: &Path, base: &str, file: &Path) -> Result<Vec<String>> {
    let incomplete = |why: String| {
        anyhow!(
            "{}: the disk-image set beside it is incomplete ({why}); nothing was uploaded: a \
             `pack` into {} may have been interrupted, run it again (with --force) first",
            file.display(),
            dir.display()
        )
    };
    // Named first: what a killed `pack` leaves lacks the sums.
    let sums = format!("{base}.sums");
    if !fsutil::is_regular(&dir.join(&sums)) {
        return Err(incomplete(format!("no {sums} beside it")));
    }
    let ((parts, _, _), _) = local_set_of(dir, base, "the set is not whole")
        .map_err(|e| incomplete(format!("{e:#}")))?;
    Ok(parts.into_iter().map(|p| p.name).collect())
}

/// Why GitHub would not keep `name` as given, or None: it renames names
/// outside letters, digits and `. _ - +` (and a renamed asset is not found
/// again on the next run), and this tool's downloader refuses a release
/// listing a name that could not be a file name.
pub(crate) fn asset_name_fault(name: &str) -> Option<String> {
    let kept = !name.starts_with('.')
        && !name.ends_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'));
    if !kept {
        return Some(format!(
            "GitHub would rename an asset named {}: use letters, digits and . _ - +, not \
             starting or ending with a dot",
            Shown(name)
        ));
    }
    check_name(name).err().map(|_| {
        format!(
            "an asset named {} (with `..`, or longer than 255 bytes) would make the release \
             unreadable to downloaders",
            Shown(name)
        )
    })
}

/// A file given on the command line, checked before anything is sent;
/// `as_name`: the asset name `--as` gives it (checked when parsed).
fn local_file(path: &Path, as_name: Option<&str>) -> Result<Local> {
    let f: File =
        fsutil::open_input(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = f
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    let name = match as_name {
        Some(n) => n.to_string(),
        None => path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| {
                anyhow!(
                    "{}: the file name is not UTF-8; pass --as NAME",
                    path.display()
                )
            })?
            .to_string(),
    };
    if let Some(fault) = asset_name_fault(&name) {
        bail!(
            "{}: {fault}; rename the file first, or pass --as NAME",
            path.display()
        );
    }
    if size == 0 {
        bail!(
            "{} is empty; GitHub does not take empty assets",
            path.display()
        );
    }
    if size > MAX_PART {
        bail!(
            "{} is {}; GitHub refuses assets of 2 GiB or more: pack it with a smaller --part-size",
            path.display(),
            human_bytes(size)
        );
    }
    Ok(Local {
        path: path.to_path_buf(),
        name,
        size,
        sha256: None,
    })
}
