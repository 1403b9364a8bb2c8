//! convert (stub, being written)
use crate::opts::Opts;
use anyhow::Result;
use std::path::{Path, PathBuf};
pub fn run(
    _opts: &Opts,
    _input: Option<PathBuf>,
    _output: Option<PathBuf>,
    _with_qemu_img: bool,
    _sparse_detect: bool,
) -> Result<()> {
    anyhow::bail!("convert: not yet implemented")
}
pub struct ConvertStats {
    pub virtual_size: u64,
    pub data_bytes: u64,
}
pub fn convert_native(_input: &Path, _output: &Path, _sparse_detect: bool) -> Result<ConvertStats> {
    anyhow::bail!("stub")
}
