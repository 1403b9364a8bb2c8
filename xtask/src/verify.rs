//! verify (stub)
use crate::opts::Opts;
use anyhow::Result;
pub fn run(_opts: &Opts, _deep: bool, _quick: bool) -> Result<()> {
    anyhow::bail!("verify: not yet implemented")
}
