//! The commands of `cargo xtask resources`, one module each, and the
//! [`Session`] they run over. A command is the type of its parsed arguments
//! with a [`Command::run`] (as rust-analyzer's xtask does it); it asks the
//! session for the options, the lock, the installed set and the release
//! plan, and imports no other command. The maintainers' commands (`pack`,
//! `upload`, `decompress --from`) are grouped under `maintain`; `bench` is a
//! developer's.

pub(crate) mod bench;
pub(crate) mod cache;
pub(crate) mod convert;
pub(crate) mod decompress;
pub(crate) mod download;
pub(crate) mod list;
pub(crate) mod maintain;
pub(crate) mod mirror;
pub(crate) mod run;
pub(crate) mod session;
pub(crate) mod verify;

use std::any::Any;
use std::fmt::Debug;

use anyhow::Result;

use session::{Opts, Session};

/// A command of `cargo xtask resources`: its parsed arguments, run over one
/// session.
pub(crate) trait Command: Any + Debug {
    fn run(self, s: &mut Session) -> Result<()>;
}

/// A parsed command of any kind, as the command line hands it over.
pub(crate) trait Parsed: Any + Debug {
    fn run_boxed(self: Box<Self>, s: &mut Session) -> Result<()>;
}

impl<C: Command> Parsed for C {
    fn run_boxed(self: Box<Self>, s: &mut Session) -> Result<()> {
        (*self).run(s)
    }
}

/// Runs `cmd` with `opts` over a new session, which is closed (its locks
/// let go, the cache entry it used marked and the cache trimmed) before
/// this returns.
pub(crate) fn run(opts: Opts, cmd: Box<dyn Parsed>) -> Result<()> {
    let mut s = Session::new(opts);
    cmd.run_boxed(&mut s)
}
