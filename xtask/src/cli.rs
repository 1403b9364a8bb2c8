//! The command line: one table of flags that gives the help text, the
//! parsing and the typed arguments of each step, and the environment read
//! once into [`Opts`]. Usage errors are [`Usage`] (exit code 2).

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::convert::ConvertArgs;
use crate::opts::{self, Arch, Opts, Os, Token};
use crate::progress::Style;
use crate::verify::Depth;

/// An error in how the command was called: exit code 2, one line.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
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
    Decompress,
    Convert(ConvertArgs),
    Verify(Depth),
    List,
    Mirror { arches: Vec<Arch>, oses: Vec<Os> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BenchArgs {
    pub size: String,
    pub keep: bool,
    pub serve: bool,
}

/// One flag: its names, its value's placeholder (None: a switch), its help,
/// and the steps that take it (empty: every step).
pub struct Flag {
    pub long: &'static str,
    pub short: Option<&'static str>,
    pub value: Option<&'static str>,
    pub help: &'static str,
    pub steps: &'static [&'static str],
}

const ALL: &[&str] = &[];

/// Every flag of `cargo xtask resources`. The short forms are those of
/// upstream's `artifacts.py`, so existing scripts keep working.
pub const FLAGS: &[Flag] = &[
    Flag {
        long: "--version",
        short: Some("-v"),
        value: Some("TAG"),
        help: "release tag, or `latest` (default: latest)",
        steps: ALL,
    },
    Flag {
        long: "--arch",
        short: Some("-a"),
        value: Some("ARCH"),
        help: "amd64 | arm64 (default: amd64; mirror also takes `all`)",
        steps: ALL,
    },
    Flag {
        long: "--os-version",
        short: Some("-l"),
        value: Some("OS"),
        help: "focal | jammy (default: focal; mirror also takes `all`)",
        steps: ALL,
    },
    Flag {
        long: "--output",
        short: Some("-o"),
        value: Some("DIR"),
        help: "where resources go (default: $RESOURCES, else the repository's resources/)",
        steps: ALL,
    },
    Flag {
        long: "--repo",
        short: None,
        value: Some("OWNER/NAME"),
        help: "GitHub repository (default: vhive-serverless/vSwarm-u)",
        steps: ALL,
    },
    Flag {
        long: "--github-api",
        short: None,
        value: Some("URL"),
        help: "API base (default: $GITHUB_API_URL, else https://api.github.com)",
        steps: ALL,
    },
    Flag {
        long: "--jobs",
        short: None,
        value: Some("N"),
        help: "parallel connections, 1 to 16 (default: 4)",
        steps: ALL,
    },
    Flag {
        long: "--keep-downloads",
        short: None,
        value: None,
        help: "keep the downloaded parts after the disk image is checked",
        steps: ALL,
    },
    Flag {
        long: "--force",
        short: None,
        value: None,
        help: "download and check everything again, replacing installed files even if changed",
        steps: ALL,
    },
    Flag {
        long: "--source",
        short: None,
        value: Some("DIR|URL"),
        help: "read releases from a mirror made by `mirror` (default: $VSWARM_RESOURCES_SOURCE)",
        steps: ALL,
    },
    Flag {
        long: "--with-qemu-img",
        short: None,
        value: None,
        help: "use `qemu-img convert -O raw` instead of the built-in converter",
        steps: &["convert"],
    },
    Flag {
        long: "--no-sparse-detect",
        short: None,
        value: None,
        help: "do not look for zero blocks inside allocated clusters (faster, larger output)",
        steps: &["convert"],
    },
    Flag {
        long: "--deep",
        short: None,
        value: None,
        help: "also compare disk-image.img's content with the qcow2's guest content",
        steps: &["verify"],
    },
    Flag {
        long: "--quick",
        short: None,
        value: None,
        help: "compare sizes and modification times with the manifest only",
        steps: &["verify"],
    },
];

/// The steps, in help order, with their one-line summary.
pub const STEPS: &[(&str, &str)] = &[
    (
        "download",
        "fetch kernel, client, disk-image parts and sums",
    ),
    (
        "merge",
        "join the downloaded disk-image parts into one archive",
    ),
    (
        "decompress",
        "unpack the archive into disk-image.qcow2 and check it against the sums",
    ),
    (
        "convert",
        "write the raw disk-image.img that gem5 reads from disk-image.qcow2",
    ),
    ("verify", "check the installed files"),
    (
        "list",
        "list the repository's releases and what each contains",
    ),
    (
        "mirror",
        "copy a release's assets into a directory others can use as --source",
    ),
];

/// Environment variables the tool reads, for the help text.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "GH_TOKEN, GITHUB_TOKEN",
        "token sent to the API host only (lifts the rate limit); GH_TOKEN first, as gh",
    ),
    ("RESOURCES", "default output directory"),
    ("GITHUB_API_URL", "default API base"),
    ("HTTPS_PROXY, NO_PROXY", "proxy settings"),
    ("VSWARM_RESOURCES_SOURCE", "default --source"),
    (
        "VSWARM_HTTP_TIMEOUT",
        "seconds a connection may stay silent before a retry (default 30, at most 3600)",
    ),
    (
        "CI, NO_COLOR",
        "plain progress lines (CI set or stderr not a terminal); no colour",
    ),
];

const TOP_HELP: &str = "\
cargo xtask — developer tasks for vSwarm-u

USAGE:
    cargo xtask <TASK> [ARGS]

TASKS:
    resources    get the kernel, disk image and test client (see `cargo xtask resources --help`)
    bench        time `resources` against the old tool pipeline (see `cargo xtask bench --help`)

OPTIONS:
    -h, --help   print this help
";

const BENCH_HELP: &str = "\
cargo xtask bench — time `resources` against the old pipeline and the tools' limits

USAGE:
    cargo xtask bench [--size small|large] [--keep] [--serve]

Builds a synthetic release like upstream's (qemu-img qcow2, tar | pigz | split; cached
in target/bench/cache-<size>/), serves it on loopback, and times, alternating: our full
pipeline; the old steps (curl, cat | pigz -dc | tar x, qemu-img convert -O raw); each
tool alone; our converter vs qemu-img; a no-op re-run. Then again with every connection
capped at 20 MB/s. Prints medians, MB/s and peak RSS, and writes
target/bench/<size>-<unix time>.json and <size>-latest.json. Needs qemu-img; curl and
pigz are used when present.

FLAGS:
    --size SIZE   small: 2 GiB virtual / 150 MiB data, 5 runs (default)
                  large: 16 GiB virtual / 1.5 GiB data, 3 runs (needs ~8 GiB free)
    --keep        keep each run's output directory under target/bench/runs-*/
    --serve       only serve the synthetic release on loopback until interrupted, for
                  timing single commands by hand (prints the --github-api URL)
    -h, --help    print this help
";

/// What each step does, for its own `--help`.
fn step_text(step: &str) -> &'static str {
    match step {
        "download" => {
            "\
Fetches the release's kernel and test client (installed as `kernel` and `client` in the
output directory once their digests check) and the disk-image parts and sums (kept in
the hidden working directory `.downloads/<tag>/`). Partial files are resumed."
        }
        "merge" => {
            "\
Joins the downloaded disk-image parts, in split-suffix order, into one archive in the
working directory (`.downloads/<tag>/disk-image-<os>-<arch>.qcow2.tar.gz`). Run
`download` first. The full pipeline does not need this step."
        }
        "decompress" => {
            "\
Unpacks the downloaded disk image (merged archive, or the parts read in order) into
`disk-image.qcow2` in the output directory and checks its sha256 against the release's
`.sums`. Run `download` first."
        }
        "convert" => {
            "\
Converts a qcow2 image to the raw, sparse image gem5 reads.
INPUT defaults to <output>/disk-image.qcow2, OUTPUT to <output>/disk-image.img.
INPUT and OUTPUT must be different files."
        }
        "verify" => {
            "\
Checks the files in the output directory against manifest.json: kernel and client are
ELF files of the right architecture, disk-image.qcow2 matches the release's sums,
disk-image.img has the qcow2's virtual size. One line per file; exit 0 when all hold."
        }
        "list" => {
            "\
Lists the repository's releases, newest first, with what each contains for every
os/arch, then the documentation's support table."
        }
        "mirror" => {
            "\
Stores a release's JSON and the assets of one os/arch set (or `--arch all`,
`--os-version all` for every set), each checked against its digest, as
MIRROR_DIR/<tag>/release.json + asset files, and MIRROR_DIR/latest naming the tag.
Other machines then run `cargo xtask resources --source MIRROR_DIR` (or serve
MIRROR_DIR with any static web server and pass its URL)."
        }
        _ => "",
    }
}

fn flag_lines(step: Option<&str>) -> String {
    let mut out = String::new();
    for f in FLAGS {
        let applies = match step {
            None => f.steps.is_empty(),
            Some(s) => f.steps.is_empty() || f.steps.contains(&s),
        };
        if !applies {
            continue;
        }
        let names = match f.short {
            Some(s) => format!("{s}, {}", f.long),
            None => format!("    {}", f.long),
        };
        let left = match f.value {
            Some(v) => format!("{names} {v}"),
            None => names,
        };
        out.push_str(&format!("    {left:<26} {}\n", f.help));
    }
    out.push_str(&format!("    {:<26} {}\n", "-h, --help", "print help"));
    out
}

/// The help of `cargo xtask resources [STEP]`, built from the tables.
pub fn resources_help(step: Option<&str>) -> String {
    match step {
        None => {
            let mut s = String::from(
                "cargo xtask resources — download, unpack, convert and verify the vSwarm-u resources\n\n\
                 USAGE:\n    cargo xtask resources [STEP] [FLAGS]\n\nSTEPS:\n",
            );
            s.push_str(&format!(
                "    {:<12} every step: download, merge+decompress (fused), convert, verify\n",
                "(none)"
            ));
            for (name, what) in STEPS {
                s.push_str(&format!("    {name:<12} {what}\n"));
            }
            s.push_str("\nFLAGS (also `--flag=value`; every step answers `--help`):\n");
            s.push_str(&flag_lines(None));
            s.push_str("\nENVIRONMENT:\n");
            for (k, v) in ENVIRONMENT {
                s.push_str(&format!("    {k:<24} {v}\n"));
            }
            s
        }
        Some(step) => {
            let args = if step == "convert" {
                " [INPUT [OUTPUT]]"
            } else {
                ""
            };
            format!(
                "cargo xtask resources {step}{args} [FLAGS]\n\n{}\n\nFLAGS:\n{}",
                step_text(step),
                flag_lines(Some(step))
            )
        }
    }
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
            crate::text::clean(other, 40)
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
            return Err(usage(format!(
                "unknown step `{}`: expected download, merge, decompress, convert, verify, list or mirror",
                crate::text::clean(s, 40)
            )));
        }
    }
    let mut args = pico_args::Arguments::from_vec(rest);
    if args.contains(["-h", "--help"]) {
        return Ok(Task::Help(resources_help(step.as_deref())));
    }
    let step_name = step.as_deref().unwrap_or("");
    let mut p = Parsed { args: &mut args };

    let version = p.value("--version")?.unwrap_or_else(|| "latest".into());
    opts::check_tag(&version).map_err(|e| usage(e.to_string()))?;
    let arch_s = p.value("--arch")?;
    let os_s = p.value("--os-version")?;
    let output = match p.path("--output")? {
        Some(p) => p,
        None => opts::default_output(),
    };
    let repo = p
        .value("--repo")?
        .unwrap_or_else(|| opts::DEFAULT_REPO.into());
    opts::check_repo(&repo).map_err(|e| usage(e.to_string()))?;
    let api = match p.value("--github-api")? {
        Some(a) => a,
        None => opts::default_api(),
    };
    if !(api.starts_with("https://") || api.starts_with("http://")) {
        return Err(usage(format!(
            "invalid --github-api `{}`: expected an http(s) URL",
            crate::text::clean(&api, 100)
        )));
    }
    let connections = match p.value("--jobs")? {
        Some(j) => match j.parse::<usize>() {
            Ok(n) if (1..=opts::MAX_CONNECTIONS).contains(&n) => n,
            _ => {
                return Err(usage(format!(
                    "invalid --jobs `{}`: expected 1 to {}",
                    crate::text::clean(&j, 40),
                    opts::MAX_CONNECTIONS
                )))
            }
        },
        None => opts::DEFAULT_CONNECTIONS,
    };
    let source = match p.value("--source")? {
        Some(s) => Some(s),
        None => std::env::var("VSWARM_RESOURCES_SOURCE")
            .ok()
            .filter(|s| !s.is_empty()),
    };
    let keep_downloads = p.switch("--keep-downloads")?;
    let force = p.switch("--force")?;

    // Step-specific flags; a flag of another step is named as such.
    let typed = match step_name {
        "" => Step::Run,
        "download" => Step::Download,
        "merge" => Step::Merge,
        "decompress" => Step::Decompress,
        "list" => Step::List,
        "convert" => {
            let with_qemu_img = p.switch("--with-qemu-img")?;
            let sparse_detect = !p.switch("--no-sparse-detect")?;
            let input = free_path(p.args)?;
            let output = free_path(p.args)?;
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
        token: token_from_env()?,
        proxy: ureq::Proxy::try_from_env(),
        http_timeout: http_timeout_from_env()?,
        progress: Style::from_env(),
    };
    Ok(Task::Resources(Box::new(opts), typed))
}

/// Takes flags out of the argument list, refusing a flag given twice and an
/// empty value.
struct Parsed<'a> {
    args: &'a mut pico_args::Arguments,
}

fn flag(long: &str) -> &'static Flag {
    FLAGS
        .iter()
        .find(|f| f.long == long)
        .expect("flag is in the table")
}

impl Parsed<'_> {
    fn value(&mut self, long: &str) -> Result<Option<String>> {
        let f = flag(long);
        let v = self
            .take(f, |a, k| a.opt_value_from_str::<_, String>(k))?
            .map(|s| s.trim().to_string());
        if v.as_deref() == Some("") {
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
            return Err(usage(format!("{long} is empty: expected a directory")));
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
        let on = self.args.contains(f.long);
        if on && self.args.contains(f.long) {
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

fn free_path(args: &mut pico_args::Arguments) -> Result<Option<PathBuf>> {
    let p: Option<OsString> = args
        .opt_free_from_os_str(|s| Ok::<_, String>(s.to_os_string()))
        .map_err(|e| usage(e.to_string()))?;
    match p {
        Some(p) if p.to_string_lossy().starts_with('-') => {
            Err(unknown_flag(&p.to_string_lossy(), Some("convert")))
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
    usage(format!("unknown flag `{}`", crate::text::clean(word, 60)))
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
            crate::text::clean(&s, 60)
        )));
    }
    Ok(())
}

/// `GH_TOKEN`, else `GITHUB_TOKEN` (gh's order); empty values count as unset.
/// A value that cannot be an HTTP header is an error naming the variable.
fn token_from_env() -> Result<Option<Token>> {
    for var in ["GH_TOKEN", "GITHUB_TOKEN"] {
        let Some(raw) = std::env::var_os(var) else {
            continue;
        };
        let Some(t) = raw.to_str().map(str::trim) else {
            return Err(usage(format!(
                "{var} is not valid UTF-8, so it cannot be a GitHub token; fix or unset it"
            )));
        };
        if t.is_empty() {
            continue;
        }
        if !t.bytes().all(|b| (0x21..0x7f).contains(&b)) {
            return Err(usage(format!(
                "{var} holds characters a token cannot have (spaces, control characters or \
                 non-ASCII), so it cannot be sent as a header; fix or unset it"
            )));
        }
        crate::text::register_secret(t);
        return Ok(Some(Token::new(t.to_string(), var)));
    }
    Ok(None)
}

/// `VSWARM_HTTP_TIMEOUT`: seconds, finite, from 0.1 to an hour.
fn http_timeout_from_env() -> Result<Duration> {
    const VAR: &str = "VSWARM_HTTP_TIMEOUT";
    let Some(raw) = std::env::var_os(VAR) else {
        return Ok(Duration::from_secs(30));
    };
    let s = raw.to_string_lossy();
    let s = s.trim();
    if s.is_empty() {
        return Ok(Duration::from_secs(30));
    }
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.1..=3600.0).contains(&v) => Ok(Duration::from_secs_f64(v)),
        _ => Err(usage(format!(
            "{VAR}=`{}` is not a number of seconds from 0.1 to 3600",
            crate::text::clean(s, 40)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_words(words: &[&str]) -> Result<Task> {
        parse(words.iter().map(OsString::from).collect())
    }

    fn err(words: &[&str]) -> String {
        match parse_words(words) {
            Ok(_) => panic!("{words:?} parsed"),
            Err(e) => {
                assert!(e.downcast_ref::<Usage>().is_some(), "{words:?}: {e}");
                e.to_string()
            }
        }
    }

    #[test]
    fn eq_form_short_forms_and_step_anywhere() {
        let Task::Resources(o, step) = parse_words(&[
            "resources",
            "-v",
            "v1.2",
            "--arch=arm64",
            "-o",
            "/tmp/x",
            "download",
            "-l",
            "jammy",
        ])
        .unwrap() else {
            panic!("not resources")
        };
        assert_eq!(step, Step::Download);
        assert_eq!(o.version, "v1.2");
        assert_eq!(o.arch, Arch::Arm64);
        assert_eq!(o.os, Os::Jammy);
        assert_eq!(o.output, PathBuf::from("/tmp/x"));
    }

    #[test]
    fn twice_empty_and_foreign_flags() {
        assert!(err(&["resources", "--arch", "amd64", "--arch", "arm64"]).contains("given twice"));
        assert!(err(&["resources", "--force", "--force"]).contains("given twice"));
        assert!(err(&["resources", "--output", ""]).contains("--output is empty"));
        assert!(err(&["resources", "--output="]).contains("--output is empty"));
        assert!(err(&["resources", "--source", ""]).contains("--source is empty"));
        assert!(err(&["resources", "download", "--deep"]).contains("flag of `verify`"));
        assert!(err(&["resources", "--jobs", "17"]).contains("invalid --jobs"));
    }

    #[test]
    fn help_lists_every_flag() {
        let h = resources_help(None);
        for f in FLAGS.iter().filter(|f| f.steps.is_empty()) {
            assert!(h.contains(f.long), "{}", f.long);
        }
        assert!(resources_help(Some("convert")).contains("--with-qemu-img"));
        assert!(!resources_help(Some("download")).contains("--deep"));
    }
}
