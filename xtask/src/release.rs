//! release (stub)
use crate::opts::Opts;
use anyhow::Result;
pub fn list(_opts: &Opts) -> Result<()> {
    anyhow::bail!("not yet implemented")
}
