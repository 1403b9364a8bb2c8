//! The command line: `flags` (one table that gives the help text and the
//! parsing), `env` (the environment, read once), and here the parsing into
//! a [`Task`] with the typed arguments of each step. Usage errors are
//! [`Usage`] (exit code 2).

mod env;
pub mod flags;
mod pack;
mod upload;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::github::assets::{Arch, Os};
use crate::github::release::check_tag;
use crate::steps::bench::BenchArgs;
use crate::steps::cache::CacheCmd;
use crate::steps::convert::ConvertArgs;
use crate::steps::opts::{self, Opts};
use crate::steps::pack::PackArgs;
use crate::steps::upload::UploadArgs;
use crate::steps::verify::Depth;
use flags::{resources_help, Flag, BENCH_HELP, FLAGS, STEPS, TOP_HELP};

/// An error in how the command was called: exit code 2, one line.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// What to do, fully parsed.
pub enum Task {
    /// Print this text and exit 0.
    Help(String),
    Resources(Box<Opts>, Step),
    Bench(BenchArgs),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Run,
    Download,
    Merge,
    /// `--from DIR`: parts already on disk, no release.
    Decompress(Option<PathBuf>),
    Convert(ConvertArgs),
    Verify(Depth),
    List,
    Mirror {
        arches: Vec<Arch>,
        oses: Vec<Os>,
    },
    Pack(PackArgs),
    Upload(UploadArgs),
    Cache(CacheCmd),
}

/// Parses the whole command line (without the program name).
pub fn parse(args: Vec<OsString>) -> Result<Task> {
    let mut args = pico_args::Arguments::from_vec(args);
    let task = args.subcommand().map_err(|e| usage(e.to_string()))?;
    match task.as_deref() {
        None | Some("help") | Some("-h") | Some("--help") => Ok(Task::Help(TOP_HELP.into())),
        Some("resources") => resources(args.finish()),
        Some("bench") => bench(args),
        Some(other) => Err(usage(format!(
            "unknown task `{}`; try `cargo xtask --help`",
            crate::util::text::clean(other, 40)
        ))),
    }
}

fn bench(mut args: pico_args::Arguments) -> Result<Task> {
    if args.contains(["-h", "--help"]) {
        return Ok(Task::Help(BENCH_HELP.into()));
    }
    let size = args
        .opt_value_from_str::<_, String>("--size")
        .map_err(|e| usage(format!("--size: {e}")))?
        .unwrap_or_else(|| "small".into());
    let keep = args.contains("--keep");
    let serve = args.contains("--serve");
    leftover(args.finish(), None)?;
    Ok(Task::Bench(BenchArgs { size, keep, serve }))
}

fn is_value_flag(word: &str) -> bool {
    FLAGS
        .iter()
        .any(|f| f.value.is_some() && (f.long == word || f.short == Some(word)))
}

/// Takes the step out of `args`: the first word that is neither a flag nor
/// a flag's value, so flags may come before or after it.
fn take_step(args: &mut Vec<OsString>) -> Option<String> {
    let mut i = 0;
    while i < args.len() {
        let word = args[i].to_string_lossy();
        if word == "--" {
            return None;
        }
        if is_value_flag(&word) {
            i += 2;
        } else if word.starts_with('-') && word.len() > 1 {
            i += 1;
        } else {
            return Some(args.remove(i).to_string_lossy().into_owned());
        }
    }
    None
}

/// Splits `--flag=value` into `--flag value` (the form argparse, gh and
/// cargo also take), keeping non-UTF-8 values intact.
fn split_eq(args: Vec<OsString>) -> Result<Vec<OsString>> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::with_capacity(args.len());
    let mut after_dashes = false;
    for word in args {
        let bytes = word.as_bytes();
        let eq = bytes.iter().position(|&b| b == b'=');
        match eq {
            Some(i) if !after_dashes && bytes.starts_with(b"-") => {
                let name = String::from_utf8_lossy(&bytes[..i]).into_owned();
                let value = bytes[i + 1..].to_vec();
                if is_value_flag(&name) {
                    if value.is_empty() {
                        return Err(usage(format!("{} is empty", flag_long(&name))));
                    }
                    out.push(OsString::from(name));
                    out.push(OsString::from_vec(value));
                } else if FLAGS.iter().any(|f| f.long == name) {
                    return Err(usage(format!("{name} takes no value")));
                } else {
                    out.push(word);
                }
            }
            _ => {
                after_dashes |= bytes == b"--";
                out.push(word);
            }
        }
    }
    Ok(out)
}

fn resources(rest: Vec<OsString>) -> Result<Task> {
    let mut rest = split_eq(rest)?;
    let step = take_step(&mut rest);
    if let Some(s) = &step {
        if !STEPS.iter().any(|(name, _)| name == s) {
            let names: Vec<&str> = STEPS.iter().map(|(n, _)| *n).collect();
            return Err(usage(format!(
                "unknown step `{}`: expected one of {}",
                crate::util::text::clean(s, 40),
                names.join(", ")
            )));
        }
    }
    let mut args = pico_args::Arguments::from_vec(rest);
    if args.contains(["-h", "--help"]) {
        return Ok(Task::Help(resources_help(step.as_deref())));
    }
    let step_name = step.as_deref().unwrap_or("");
    let mut p = Parsed { args: &mut args };

    let version_given = p.value("--version")?;
    let version = version_given.clone().unwrap_or_else(|| "latest".into());
    check_tag(&version).map_err(|e| usage(e.to_string()))?;
    let arch_s = p.value("--arch")?;
    let os_s = p.value("--os-version")?;
    let output = match p.path("--output")? {
        Some(p) => p,
        // Assets are not resources: they go where the maintainer is.
        None if step_name == "pack" => PathBuf::from("."),
        None => env::default_output()?,
    };
    let repo = p
        .value("--repo")?
        .unwrap_or_else(|| opts::DEFAULT_REPO.into());
    check_repo(&repo).map_err(|e| usage(e.to_string()))?;
    let api = match p.value("--github-api")? {
        Some(a) => a,
        None => env::default_api()?,
    };
    crate::fetch::url::check_url(&api, "--github-api").map_err(usage)?;
    let connections = match p.value("--jobs")? {
        Some(j) => match j.parse::<usize>() {
            Ok(n) if (1..=opts::MAX_CONNECTIONS).contains(&n) => n,
            _ => {
                return Err(usage(format!(
                    "invalid --jobs `{}`: expected 1 to {}",
                    crate::util::text::clean(&j, 40),
                    opts::MAX_CONNECTIONS
                )))
            }
        },
        None => opts::DEFAULT_CONNECTIONS,
    };
    let source = match p.value("--source")? {
        Some(s) => Some(s),
        None => env::default_source()?,
    };
    let keep_downloads = p.switch("--keep-downloads")?;
    let force = p.switch("--force")?;
    let wait = !p.switch("--no-wait")?;
    let json = p.switch("--json")?;
    let quiet = p.switch("--quiet")?;
    let takes = |long: &str| {
        flag(long)
            .steps
            .contains(&step.as_deref().unwrap_or(flags::RUN))
    };
    let no_cache = takes("--no-cache") && p.switch("--no-cache")?;
    let offline = takes("--offline") && p.switch("--offline")?;
    let no_raw = takes("--no-raw") && p.switch("--no-raw")?;
    if offline && no_cache {
        return Err(usage(
            "--offline reads only the cache, so it cannot go with --no-cache",
        ));
    }
    if offline && force {
        return Err(usage(
            "--offline installs from the cache, which --force would empty first; drop one of them",
        ));
    }
    if offline && source.is_some() {
        return Err(usage(
            "--offline reads only the cache; a --source mirror is read directly without it",
        ));
    }

    // Step-specific flags; a flag of another step is named as such.
    let typed = match step_name {
        "" => Step::Run,
        "download" => Step::Download,
        "merge" => Step::Merge,
        "decompress" => Step::Decompress(p.path("--from")?),
        "list" => Step::List,
        "convert" => {
            let with_qemu_img = p.switch("--with-qemu-img")?;
            let sparse_detect = !p.switch("--no-sparse-detect")?;
            let input = free_path(p.args, "convert")?;
            let output = free_path(p.args, "convert")?;
            Step::Convert(ConvertArgs {
                input,
                output,
                with_qemu_img,
                sparse_detect,
            })
        }
        "verify" => {
            let deep = p.switch("--deep")?;
            let quick = p.switch("--quick")?;
            if deep && quick {
                return Err(usage("--deep and --quick exclude each other"));
            }
            Step::Verify(if deep {
                Depth::Deep
            } else if quick {
                Depth::Quick
            } else {
                Depth::Normal
            })
        }
        "mirror" => Step::Mirror {
            arches: all_or_one(arch_s.as_deref(), &Arch::ALL, Arch::parse, Arch::Amd64)?,
            oses: all_or_one(os_s.as_deref(), &Os::ALL, Os::parse, Os::Focal)?,
        },
        "pack" => Step::Pack(pack::pack_args(&mut p)?),
        "cache" => Step::Cache(cache_cmd(&mut p)?),
        "upload" => Step::Upload(upload::upload_args(&mut p, version_given)?),
        _ => unreachable!("checked against STEPS above"),
    };
    leftover(args.finish(), step.as_deref())?;

    let arch = match (&typed, arch_s.as_deref()) {
        (Step::Mirror { .. }, _) | (_, None) => Arch::Amd64,
        (_, Some(a)) => Arch::parse(a).map_err(|e| usage(e.to_string()))?,
    };
    let os = match (&typed, os_s.as_deref()) {
        (Step::Mirror { .. }, _) | (_, None) => Os::Focal,
        (_, Some(o)) => Os::parse(o).map_err(|e| usage(e.to_string()))?,
    };
    let opts = Opts {
        version,
        arch,
        os,
        output,
        repo,
        api: api.trim_end_matches('/').to_string(),
        connections,
        keep_downloads,
        force,
        source,
        cache: if no_cache { None } else { env::cache_root() },
        offline,
        no_raw,
        wait,
        json,
        quiet,
        token: env::token()?,
        proxy: ureq::Proxy::try_from_env(),
        http_timeout: env::http_timeout()?,
        progress: env::progress_style(),
    };
    Ok(Task::Resources(Box::new(opts), typed))
}

/// Takes flags out of the argument list, refusing a flag given twice and an
/// empty value.
struct Parsed<'a> {
    args: &'a mut pico_args::Arguments,
}

/// `cache list|path|prune [--keep N] [--max-size SIZE]`.
fn cache_cmd(p: &mut Parsed) -> Result<CacheCmd> {
    let keep = match p.value("--keep")? {
        None => None,
        Some(k) => Some(k.parse::<usize>().map_err(|_| {
            usage(format!(
                "invalid --keep `{}`: expected a number of releases",
                crate::util::text::clean(&k, 40)
            ))
        })?),
    };
    let max_size = match p.value("--max-size")? {
        None => None,
        Some(s) => Some(pack::parse_size(&s).ok_or_else(|| {
            usage(format!(
                "invalid --max-size `{}`: expected bytes, or a number with K, M, G or T (20G)",
                crate::util::text::clean(&s, 40)
            ))
        })?),
    };
    let word: Option<String> = p
        .args
        .opt_free_from_str()
        .map_err(|e| usage(format!("cache: {e}")))?;
    let cmd = match word.as_deref() {
        Some("list") => CacheCmd::List,
        Some("path") => CacheCmd::Path,
        Some("prune") => CacheCmd::Prune { keep, max_size },
        Some(other) => {
            return Err(usage(format!(
                "unknown cache command `{}`: expected list, path or prune",
                crate::util::text::clean(other, 40)
            )))
        }
        None => return Err(usage("cache needs a command: list, path or prune")),
    };
    if !matches!(cmd, CacheCmd::Prune { .. }) && (keep.is_some() || max_size.is_some()) {
        return Err(usage("--keep and --max-size are flags of `cache prune`"));
    }
    Ok(cmd)
}

fn flag(long: &str) -> &'static Flag {
    FLAGS
        .iter()
        .find(|f| f.long == long)
        .expect("flag is in the table")
}

impl Parsed<'_> {
    fn value(&mut self, long: &str) -> Result<Option<String>> {
        Ok(self.value_as_given(long)?.map(|s| s.trim().to_string()))
    }

    /// [`Parsed::value`] with its blanks kept, for a value read as another
    /// tool reads it (`--part-size` as `split -b`).
    fn value_as_given(&mut self, long: &str) -> Result<Option<String>> {
        let f = flag(long);
        let v = self.take(f, |a, k| a.opt_value_from_str::<_, String>(k))?;
        if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
            return Err(usage(format!(
                "{long} is empty: expected {}",
                f.value.unwrap_or("a value")
            )));
        }
        Ok(v)
    }

    fn path(&mut self, long: &str) -> Result<Option<PathBuf>> {
        let f = flag(long);
        let v = self.take(f, |a, k| {
            a.opt_value_from_os_str::<_, PathBuf, String>(k, |s| Ok(PathBuf::from(s)))
        })?;
        if v.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
            return Err(usage(format!(
                "{long} is empty: expected {}",
                f.value.unwrap_or("a path")
            )));
        }
        Ok(v)
    }

    fn take<T>(
        &mut self,
        f: &Flag,
        get: impl Fn(&mut pico_args::Arguments, pico_args::Keys) -> Result<Option<T>, pico_args::Error>,
    ) -> Result<Option<T>> {
        let keys = || -> pico_args::Keys {
            match f.short {
                Some(s) => [s, f.long].into(),
                None => f.long.into(),
            }
        };
        let first = get(self.args, keys()).map_err(|e| usage(format!("{}: {e}", f.long)))?;
        if first.is_some()
            && get(self.args, keys())
                .map_err(|e| usage(format!("{}: {e}", f.long)))?
                .is_some()
        {
            return Err(usage(format!("{} is given twice", f.long)));
        }
        Ok(first)
    }

    fn switch(&mut self, long: &str) -> Result<bool> {
        let f = flag(long);
        let keys = || -> pico_args::Keys {
            match f.short {
                Some(s) => [s, f.long].into(),
                None => f.long.into(),
            }
        };
        let on = self.args.contains(keys());
        if on && self.args.contains(keys()) {
            return Err(usage(format!("{long} is given twice")));
        }
        Ok(on)
    }
}

/// `FLAG all` → every value, `FLAG one` → that one, absent → the default.
fn all_or_one<T: Copy>(
    v: Option<&str>,
    all: &[T],
    parse: fn(&str) -> Result<T>,
    default: T,
) -> Result<Vec<T>> {
    match v {
        Some("all") => Ok(all.to_vec()),
        Some(one) => Ok(vec![parse(one).map_err(|e| usage(e.to_string()))?]),
        None => Ok(vec![default]),
    }
}

fn free_path(args: &mut pico_args::Arguments, step: &str) -> Result<Option<PathBuf>> {
    let p: Option<OsString> = args
        .opt_free_from_os_str(|s| Ok::<_, String>(s.to_os_string()))
        .map_err(|e| usage(e.to_string()))?;
    match p {
        Some(p) if p.to_string_lossy().starts_with('-') => {
            Err(unknown_flag(&p.to_string_lossy(), Some(step)))
        }
        Some(p) if p.is_empty() => Err(usage("an empty path was given")),
        Some(p) => Ok(Some(PathBuf::from(p))),
        None => Ok(None),
    }
}

/// The long name of a flag given by either name.
fn flag_long(name: &str) -> &str {
    FLAGS
        .iter()
        .find(|f| f.long == name || f.short == Some(name))
        .map_or(name, |f| f.long)
}

fn unknown_flag(word: &str, step: Option<&str>) -> anyhow::Error {
    let name = word.split('=').next().unwrap_or(word);
    if let Some(f) = FLAGS
        .iter()
        .find(|f| f.long == name || f.short == Some(name))
    {
        if let Some(owner) = f.steps.first() {
            return usage(format!(
                "{} is a flag of `{owner}`, not of `{}`",
                f.long,
                step.unwrap_or("resources")
            ));
        }
        if f.value.is_some() {
            return usage(format!("{} needs a value", f.long));
        }
        return usage(format!("{} takes no value", f.long));
    }
    usage(format!(
        "unknown flag `{}`",
        crate::util::text::clean(word, 60)
    ))
}

/// Anything left over is a flag we do not know: say which, exit 2.
fn leftover(rest: Vec<OsString>, step: Option<&str>) -> Result<()> {
    if let Some(first) = rest.first() {
        let s = first.to_string_lossy();
        if s.starts_with('-') {
            return Err(unknown_flag(&s, step));
        }
        return Err(usage(format!(
            "unexpected argument `{}`",
            crate::util::text::clean(&s, 60)
        )));
    }
    Ok(())
}

pub fn check_repo(repo: &str) -> Result<()> {
    let part_ok = |p: &str| {
        !p.is_empty()
            && p != "."
            && p != ".."
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if part_ok(owner) && part_ok(name) => Ok(()),
        _ => bail!(
            "invalid --repo `{}`: expected OWNER/NAME",
            crate::util::text::clean(repo, 100)
        ),
    }
}

#[cfg(test)]
mod tests;
