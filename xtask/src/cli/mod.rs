//! The command line: `flags` (the one declaration of every flag), `help`
//! (the help texts built from it), `args` (the parser under them, on
//! pico-args), `common` and `env` (the shared options and the environment,
//! read once), and here the top level and each step's typed arguments
//! ([`Task`]). Usage errors are [`Usage`] (exit code 2).

mod args;
mod common;
mod env;
pub mod exit;
pub mod flags;
pub mod help;
mod pack;
mod upload;

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;

pub use args::Usage;
pub(crate) use args::{usage, Given};

use crate::commands::bench::BenchArgs;
use crate::commands::cache::CacheCmd;
use crate::commands::convert::ConvertArgs;
use crate::commands::decompress::DecompressArgs;
use crate::commands::download::DownloadArgs;
use crate::commands::list::ListArgs;
use crate::commands::maintain::from::DecompressFromArgs;
use crate::commands::mirror::MirrorArgs;
use crate::commands::run::RunArgs;
use crate::commands::session::{Depth, Opts};
use crate::commands::verify::{Expect, VerifyArgs};
use crate::commands::Parsed;
use flags::{Cmd, Flag};
use github::assets::{Arch, Os};
use util::text::clean;

/// What to do, fully parsed.
pub(crate) enum Task {
    /// Print this text and exit 0.
    Help(String),
    /// A command of `cargo xtask resources` (`Cmd::Run`: the full run), its
    /// options and its typed arguments, ready to run.
    Resources(Box<Opts>, Cmd, Box<dyn Parsed>),
    Bench(BenchArgs),
}

/// Parses the whole command line (without the program name).
pub(crate) fn parse(words: Vec<OsString>) -> Result<Task> {
    let mut words = words.into_iter();
    let first = words.next().map(|w| w.to_string_lossy().into_owned());
    let rest: Vec<OsString> = words.collect();
    match first.as_deref() {
        None | Some("help" | "-h" | "--help") => Ok(Task::Help(help::TOP_HELP.into())),
        Some("-V" | "--version") if rest.is_empty() => Ok(Task::Help(format!(
            "xtask {}\n",
            env!("CARGO_PKG_VERSION")
        ))),
        Some(flag @ ("-V" | "--version")) => Err(usage(format!(
            "{flag} takes nothing after it; for a release tag: `cargo xtask resources --version TAG`"
        ))),
        Some("resources") => resources(rest),
        Some("bench") => bench(pico_args::Arguments::from_vec(rest)),
        Some(other) => {
            let (what, names): (_, &[&str]) = if other.starts_with('-') {
                ("flag", &["--help", "--version"])
            } else {
                ("task", &["resources", "bench"])
            };
            Err(usage(format!(
                "unknown {what} `{}`{}; try `cargo xtask --help`",
                clean(other, 40),
                args::suggest(other, names).unwrap_or_default()
            )))
        }
    }
}

fn bench(mut args: pico_args::Arguments) -> Result<Task> {
    if args.contains(["-h", "--help"]) {
        return Ok(Task::Help(help::BENCH_HELP.into()));
    }
    let size = args
        .opt_value_from_str::<_, String>("--size")
        .map_err(|e| usage(format!("--size: {e}")))?
        .unwrap_or_else(|| "small".into());
    let keep = args.contains("--keep");
    let serve = args.contains("--serve");
    if let Some(first) = args.finish().first() {
        return Err(usage(format!(
            "unexpected argument `{}` for bench; see `cargo xtask bench --help`",
            clean(&first.to_string_lossy(), 60)
        )));
    }
    Ok(Task::Bench(BenchArgs { size, keep, serve }))
}

fn resources(words: Vec<OsString>) -> Result<Task> {
    let mut g = match args::parse(words)? {
        args::Line::Help(cmd) => return Ok(Task::Help(help::step_help(cmd))),
        args::Line::Given(g) => g,
    };
    let opts = common::opts(&g)?;
    let command = command(&mut g)?;
    g.finish()?;
    Ok(Task::Resources(Box::new(opts), g.cmd, command))
}

/// The command `g` names, with its typed arguments, its words taken: the
/// one place that maps a step to the command that runs it.
fn command(g: &mut Given) -> Result<Box<dyn Parsed>> {
    Ok(match g.cmd {
        Cmd::Run => Box::new(RunArgs),
        Cmd::Download => Box::new(DownloadArgs),
        Cmd::Decompress => match decompress_from(g)? {
            None => Box::new(DecompressArgs),
            Some(from) => Box::new(DecompressFromArgs { from }),
        },
        Cmd::Convert => Box::new(convert(g)?),
        Cmd::Verify => Box::new(verify(g)?),
        Cmd::List => Box::new(ListArgs),
        Cmd::Mirror => Box::new(MirrorArgs {
            arches: all_or_one(g, &flags::ARCH, &Arch::ALL, Arch::parse, Arch::Amd64)?,
            oses: all_or_one(g, &flags::OS_VERSION, &Os::ALL, Os::parse, Os::Focal)?,
        }),
        Cmd::Pack => Box::new(pack::pack_args(g)?),
        Cmd::Upload => Box::new(upload::upload_args(g)?),
        Cmd::Cache => Box::new(cache_cmd(g)?),
    })
}

/// `decompress --from`: no release is read, so the flags that name one
/// would be ignored; they are refused instead.
fn decompress_from(g: &Given) -> Result<Option<PathBuf>> {
    let Some(from) = g.path(&flags::FROM) else {
        return Ok(None);
    };
    use flags::{GITHUB_API, NO_CACHE, REPO, SOURCE, VERSION};
    if let Some(f) = [&VERSION, &REPO, &GITHUB_API, &SOURCE, &NO_CACHE]
        .into_iter()
        .find(|f| g.on(f))
    {
        return Err(usage(format!(
            "decompress --from reads parts on disk with no release, so {} does not apply",
            f.long
        )));
    }
    Ok(Some(from))
}

fn convert(g: &mut Given) -> Result<ConvertArgs> {
    Ok(ConvertArgs {
        with_qemu_img: g.on(&flags::WITH_QEMU_IMG),
        sparse_detect: !g.on(&flags::NO_SPARSE_DETECT),
        input: free_path(g)?,
        output: free_path(g)?,
    })
}

fn verify(g: &Given) -> Result<VerifyArgs> {
    let (deep, quick) = (g.on(&flags::DEEP), g.on(&flags::QUICK));
    let depth = match (deep, quick) {
        (true, true) => return Err(usage("--deep and --quick exclude each other")),
        (true, false) => Depth::Deep,
        (false, true) => Depth::Quick,
        (false, false) => Depth::Normal,
    };
    let expect = Expect {
        tag: g.text(&flags::VERSION)?.filter(|v| v != "latest"),
        arch: common::one_of(g, &flags::ARCH, Arch::parse)?,
        os: common::one_of(g, &flags::OS_VERSION, Os::parse)?,
        repo: g.text(&flags::REPO)?,
    };
    Ok(VerifyArgs { depth, expect })
}

/// `cache list|path|prune [--keep N] [--max-size SIZE]`.
fn cache_cmd(g: &mut Given) -> Result<CacheCmd> {
    let keep = match g.text(&flags::KEEP)? {
        None => None,
        Some(k) => Some(k.parse::<usize>().map_err(|_| {
            usage(format!(
                "invalid --keep `{}`: expected a number of releases",
                clean(&k, 40)
            ))
        })?),
    };
    let max_size = match g.text(&flags::MAX_SIZE)? {
        None => None,
        Some(s) => Some(pack::parse_size(&s).ok_or_else(|| {
            usage(format!(
                "invalid --max-size `{}`: expected bytes, or a number with K, M, G or T (20G)",
                clean(&s, 40)
            ))
        })?),
    };
    let word = g.next_free().map(|w| w.to_string_lossy().into_owned());
    let cmd = match word.as_deref() {
        Some("list") => CacheCmd::List,
        Some("path") => CacheCmd::Path,
        Some("prune") => CacheCmd::Prune { keep, max_size },
        Some(other) => {
            return Err(usage(format!(
                "unknown cache command `{}`{}: expected list, path or prune",
                clean(other, 40),
                args::suggest(other, &["list", "path", "prune"]).unwrap_or_default()
            )))
        }
        None => return Err(usage("cache needs a command: list, path or prune")),
    };
    if !matches!(cmd, CacheCmd::Prune { .. }) && (keep.is_some() || max_size.is_some()) {
        return Err(usage("--keep and --max-size are flags of `cache prune`"));
    }
    Ok(cmd)
}

/// `FLAG all` → every value, `FLAG one` → that one, absent → the default.
fn all_or_one<T: Copy>(
    g: &Given,
    f: &Flag,
    all: &[T],
    parse: fn(&str) -> Result<T>,
    default: T,
) -> Result<Vec<T>> {
    match g.text(f)?.as_deref() {
        Some("all") => Ok(all.to_vec()),
        Some(one) => Ok(vec![parse(one).map_err(|e| usage(e.to_string()))?]),
        None => Ok(vec![default]),
    }
}

/// The next word as a path (a DISK, a FILE, INPUT or OUTPUT).
fn free_path(g: &mut Given) -> Result<Option<PathBuf>> {
    match g.next_free() {
        Some(p) if p.is_empty() => Err(usage("an empty path was given")),
        Some(p) => Ok(Some(PathBuf::from(p))),
        None => Ok(None),
    }
}

#[cfg(test)]
mod doc_tests;
#[cfg(test)]
mod tests;
