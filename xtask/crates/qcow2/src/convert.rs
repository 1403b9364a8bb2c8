//! qcow2 → raw, sparse, written under a temporary name and renamed when
//! complete; the data shared with the qcow2 by reflink where the file
//! system allows, copied by the engine in `copy` otherwise.

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::clone::copy_image_cloning;
use super::copy::copy_image;
use super::Image;
use util::fs::{self as fsutil, TempFile};
use util::progress::{Progress, Style};
use util::Cloner;

/// What a conversion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvertStats {
    /// The guest size: the raw image's length.
    pub virtual_size: u64,
    /// Guest bytes actually written (allocated, not all-zero).
    pub data_bytes: u64,
}

/// Converts `input` (qcow2) into the raw image `output`, sparse, showing
/// progress in `style`; `output` is replaced only once the new image is
/// complete and synced.
pub fn convert_file(
    input: &Path,
    output: &Path,
    sparse_detect: bool,
    style: Style,
) -> Result<ConvertStats> {
    let img = Image::open(input)?;
    let vsize = img.virtual_size();
    let total = img.allocated_bytes()?;
    let dir = match output.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))?;
    fsutil::ensure_space(&dir, total, "the raw image")?;
    let mut tmp = TempFile::create(output)?;
    tmp.file()
        .set_len(vsize)
        .with_context(|| format!("{}: cannot set the size", tmp.path().display()))?;
    let progress = Progress::new("convert", total, 0, style);
    let out: &File = tmp.file();
    // On one file system with reflinks the data is shared, not copied.
    let data_bytes = match Cloner::probe(img.source(), out) {
        Some(c) => copy_image_cloning(&img, out, &c, sparse_detect, &|n| progress.add(n)),
        None => copy_image(&img, out, sparse_detect, &|n| progress.add(n)),
    }
    .with_context(|| format!("cannot write {}", output.display()))?;
    progress.finish();
    tmp.commit()?;
    Ok(ConvertStats {
        virtual_size: vsize,
        data_bytes,
    })
}
