//! merge (stub)
use crate::opts::Opts;
use anyhow::Result;
pub fn run(_opts: &Opts) -> Result<()> {
    anyhow::bail!("merge: not yet implemented")
}
