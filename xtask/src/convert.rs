//! convert (stub, being written)
use crate::opts::Opts;
use anyhow::Result;
use std::path::PathBuf;
pub fn run(
    _opts: &Opts,
    _input: Option<PathBuf>,
    _output: Option<PathBuf>,
    _with_qemu_img: bool,
    _sparse_detect: bool,
) -> Result<()> {
    anyhow::bail!("convert: not yet implemented")
}
