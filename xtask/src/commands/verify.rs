//! `cargo xtask resources verify`: the installed set checked against
//! `manifest.json` and what each file must be (the session's set checks),
//! one line per file; with `--version`, `--arch`, `--os-version` or
//! `--repo`, the set must also be that one.

use std::path::Path;

use anyhow::{bail, Result};

use super::session::{Depth, Session};
use super::Command;
use github::assets::{Arch, Os};
use install::manifest::{self, Manifest};
use util::text::Shown;

/// The set `verify` was told to find (None: any), from `--version`
/// (`latest`: any tag, as verify asks no server), `--arch`, `--os-version`
/// and `--repo`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Expect {
    pub(crate) tag: Option<String>,
    pub(crate) arch: Option<Arch>,
    pub(crate) os: Option<Os>,
    pub(crate) repo: Option<String>,
}

/// The arguments of `cargo xtask resources verify`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct VerifyArgs {
    pub(crate) depth: Depth,
    pub(crate) expect: Expect,
}

impl Command for VerifyArgs {
    fn run(self, s: &mut Session) -> Result<()> {
        let out = s.out();
        let m = manifest::require(out).map_err(|e| {
            anyhow::anyhow!("{e:#}; run `cargo xtask resources` to install the resources")
        })?;
        out!(
            "{} {}/{} from {} in {}",
            Shown(&m.tag),
            Shown(&m.os),
            Shown(&m.arch),
            Shown(&m.repo),
            out.display()
        );
        check_expected(&m, &self.expect, out)?;
        if m.pending.is_some() {
            bail!(
                "an install into {} was interrupted, so the files are a mix of two sets; run \
             `cargo xtask resources` again to finish it",
                out.display()
            );
        }
        s.check_installed(&m, self.depth)
    }
}

/// The installed set is the one asked for: else each difference is named.
fn check_expected(m: &Manifest, want: &Expect, out: &Path) -> Result<()> {
    let mut differs = Vec::new();
    let mut again = Vec::new();
    let mut compare = |flag: &str, asked: Option<&str>, installed: &str| {
        if let Some(asked) = asked.filter(|a| *a != installed) {
            differs.push(format!(
                "{flag} {} is installed, not {}",
                Shown(installed),
                Shown(asked)
            ));
            again.push(format!("{flag} {asked}"));
        }
    };
    compare("--version", want.tag.as_deref(), &m.tag);
    compare("--arch", want.arch.map(Arch::as_str), &m.arch);
    compare("--os-version", want.os.map(Os::as_str), &m.os);
    compare("--repo", want.repo.as_deref(), &m.repo);
    if differs.is_empty() {
        return Ok(());
    }
    bail!(
        "{} holds another set than the one asked for: {}; `cargo xtask resources {} --output {}` \
         installs that one",
        out.display(),
        differs.join("; "),
        again.join(" "),
        out.display()
    )
}
