//! Where things live in the output directory: the installed names (the
//! only names a manifest may speak for) and the hidden working directory.

use std::path::{Path, PathBuf};

/// The kernel's name in the output directory.
pub const KERNEL: &str = "kernel";
/// The test client's name.
pub const CLIENT: &str = "client";
/// The qcow2 disk image's name.
pub const QCOW2: &str = "disk-image.qcow2";
/// The raw disk image's name.
pub const RAW: &str = "disk-image.img";
/// In the working directory: the release JSON a download used, so the later
/// steps need no network.
pub const RELEASE_JSON: &str = "release.json";
/// In `.downloads/`: the tag of the last download, for `--version latest`.
pub const LAST_TAG: &str = "last-tag";
/// Release JSON documents are small.
pub const MAX_JSON: u64 = 32 << 20;
/// The only names a manifest may speak for: an entry naming anything else
/// (another file, an absolute path) is ignored, so a manifest can never make
/// the tool read or replace a file outside the set.
pub const NAMES: [&str; 4] = [KERNEL, CLIENT, QCOW2, RAW];

/// The root of the working directories, `.downloads/`.
pub fn downloads_root(out: &Path) -> PathBuf {
    out.join(".downloads")
}

/// Hidden working directory for one release's downloads.
pub fn work_dir(out: &Path, tag: &str) -> PathBuf {
    downloads_root(out).join(tag)
}
