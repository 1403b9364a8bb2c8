//! The flags of `upload`: the release (by `--version`, `--release-id` or
//! `RELEASE_ID`), `--as`, `--create`/`--draft`, `--clobber`, and its FILES.

use anyhow::Result;

use super::flags::{AS, CLOBBER, CREATE, DRAFT, RELEASE_ID, VERSION};
use super::{env, free_path, usage, Given};
use crate::commands::maintain::upload::{asset_name_fault, Target, UploadArgs};

/// The flags and FILES of `upload`. The release is named by
/// `--release-id`, else `RELEASE_ID`, else `--version` (with both an id and
/// a tag, the id's release must carry the tag); there is no default.
pub(super) fn upload_args(g: &mut Given) -> Result<UploadArgs> {
    let version = g.text(&VERSION)?;
    if version.as_deref() == Some("latest") {
        return Err(usage(
            "upload needs a tag, not `latest`: --version TAG, or --release-id ID",
        ));
    }
    let id = match g.text(&RELEASE_ID)? {
        Some(v) => {
            let id = env::parse_release_id(&v).ok_or_else(|| {
                usage(format!(
                    "invalid --release-id `{}`: expected the release's id, a positive number \
                     (the `id` GitHub gives a release)",
                    util::text::clean(&v, 40)
                ))
            })?;
            Some((id, "--release-id"))
        }
        None => env::release_id()?.map(|id| (id, "RELEASE_ID")),
    };
    let create = g.on(&CREATE);
    let draft = g.on(&DRAFT);
    if draft && !create {
        return Err(usage("--draft only applies with --create"));
    }
    let target = match (id, version) {
        (Some((id, from)), _) if create => {
            return Err(usage(format!(
                "--create makes a new release, but {from} names release {id}; drop --create{}",
                if from == "RELEASE_ID" {
                    " or unset RELEASE_ID"
                } else {
                    ""
                }
            )))
        }
        (Some((id, from)), tag) => Target::Id { id, from, tag },
        (None, Some(tag)) => Target::Tag(tag),
        (None, None) => {
            return Err(usage(
                "upload needs the release: --version TAG, or --release-id ID (or RELEASE_ID \
                 in the environment)",
            ))
        }
    };
    let clobber = g.on(&CLOBBER);
    let name = g.text(&AS)?;
    if let Some(fault) = name.as_deref().and_then(asset_name_fault) {
        return Err(usage(format!("--as: {fault}")));
    }
    let mut files = Vec::new();
    while let Some(f) = free_path(g)? {
        files.push(f);
    }
    if files.is_empty() {
        return Err(usage("upload needs the FILES to upload"));
    }
    if name.is_some() && files.len() != 1 {
        return Err(usage(format!(
            "--as names one asset: give exactly one FILE with it, not {}",
            files.len()
        )));
    }
    Ok(UploadArgs {
        files,
        name,
        target,
        create,
        draft,
        clobber,
    })
}
