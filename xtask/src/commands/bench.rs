//! `cargo xtask bench`: runs the benchmark crate (`xtask/bench`, not part
//! of the shipping binary) in release mode through cargo, handing it this
//! binary to time.

use std::path::Path;

use anyhow::{Context, Result};

/// The arguments of `cargo xtask bench`, passed on to the benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BenchArgs {
    pub(crate) size: String,
    pub(crate) keep: bool,
    pub(crate) serve: bool,
}

impl BenchArgs {
    /// Runs the benchmark; it needs no session (it times other runs).
    pub(crate) fn run(self) -> Result<()> {
        let args = self;
        let sh = xshell::Shell::new()?;
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .context("the xtask crate lives inside the workspace")?;
        sh.change_dir(root);
        let exe = std::env::current_exe().context("cannot find the running xtask binary")?;
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut extra = vec!["--size".to_string(), args.size.clone()];
        if args.keep {
            extra.push("--keep".into());
        }
        if args.serve {
            extra.push("--serve".into());
        }
        xshell::cmd!(
            sh,
            "{cargo} run --quiet --package bench --release -- --xtask {exe} {extra...}"
        )
        .run()
        .context("the benchmark failed")?;
        Ok(())
    }
}
