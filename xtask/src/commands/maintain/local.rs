//! A set of release assets on disk, as `pack` writes it or a CI artifact
//! holds it: which names belong to a disk's set (in any compression, split
//! or not), and the set of one prefix in a directory, listed as assets.
//! Shared by the maintainers' commands; it is no command itself.

use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use github::assets::{self, split_suffix_index};
use github::release::{Asset, Release};

/// GitHub refuses release assets of 2 GiB or more.
pub(crate) const MAX_PART: u64 = (2 << 30) - 1;

/// Whether `name` is one `pack` (or upstream's `split`) writes for the disk
/// `base`: `{base}.tar`, `{base}.tar.{gz,xz,zst}`, or either followed by a
/// split suffix.
pub(crate) fn is_archive_name(name: &str, base: &str) -> bool {
    let Some(rest) = name.strip_prefix(base).and_then(|r| r.strip_prefix(".tar")) else {
        return false;
    };
    let rest = ["gz", "xz", "zst"]
        .iter()
        .find_map(|ext| {
            rest.strip_prefix('.')
                .and_then(|r| r.strip_prefix(ext))
                .filter(|r| r.is_empty() || r.starts_with('.'))
        })
        .unwrap_or(rest);
    match rest.strip_prefix('.') {
        None => rest.is_empty(),
        Some(suffix) => split_suffix_index(suffix).is_some(),
    }
}

/// The disk parts and sums of the set `base` in `dir` (what `pack` wrote
/// there, or a CI artifact's `disk-image.qcow2.*`); a part missing from the
/// sequence is an error that says `fix`, and so is a set without its sums.
pub(crate) fn local_set_of(dir: &Path, base: &str, fix: &str) -> Result<(assets::Disk, Asset)> {
    set_in(dir, &dir_files(dir)?, base, "", fix)
}

/// The set of `base` among `files`, listed from `dir`.
pub(crate) fn set_in(
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
pub(crate) fn dir_files(dir: &Path) -> Result<Vec<Asset>> {
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

#[cfg(test)]
mod tests {
    use super::is_archive_name;

    #[test]
    fn only_the_names_pack_writes_belong_to_a_set() {
        let base = "disk-image-focal-amd64.qcow2";
        for yes in [
            ".tar",
            ".tar.gz",
            ".tar.xz",
            ".tar.zst",
            ".tar.gz.aa",
            ".tar.gz.yz",
            ".tar.xz.ab",
            ".tar.aa",
            ".tar.zst.zaaa",
        ] {
            assert!(is_archive_name(&format!("{base}{yes}"), base), "{yes}");
        }
        for no in [
            ".tar.gz.backup",
            ".tarball-notes.txt",
            ".tar.orig.qcow2",
            ".tar.gzz",
            ".tar.gz.zz",
            ".tar.gz.",
            ".tar.gz.AA",
            ".tar.bz2",
            ".sums",
            "",
        ] {
            assert!(!is_archive_name(&format!("{base}{no}"), base), "{no}");
        }
    }
}
