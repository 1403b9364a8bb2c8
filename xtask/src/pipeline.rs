//! pipeline (stub)
use crate::opts::Opts;
use anyhow::Result;
pub fn run(_opts: &Opts) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
pub fn download(_opts: &Opts) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
pub fn decompress(_opts: &Opts) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
