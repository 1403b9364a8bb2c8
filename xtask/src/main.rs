//! `cargo xtask`: parses flags and dispatches to the stage modules of the
//! library. Usage errors exit with 2, failures of a step with 1.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use xtask::opts::{self, Arch, Opts, Os};
use xtask::{bench, convert, merge, mirror, pipeline, release, verify};

const HELP: &str = "\
cargo xtask — developer tasks for vSwarm-u

USAGE:
    cargo xtask <TASK> [ARGS]

TASKS:
    resources    get the kernel, disk image and test client (see `cargo xtask resources --help`)
    bench        time `resources` against the old tool pipeline (see `cargo xtask bench --help`)

OPTIONS:
    -h, --help   print this help
";

const RESOURCES_HELP: &str = "\
cargo xtask resources — download, unpack, convert and verify the vSwarm-u resources

USAGE:
    cargo xtask resources [STEP] [FLAGS]

STEPS:
    (none)       every step: download, merge+decompress (fused), convert, verify
    download     fetch kernel, client, disk-image parts and sums
    merge        join the downloaded disk-image parts into one archive
    decompress   unpack the archive into disk-image.qcow2 and check it against the sums
    convert      write the raw disk-image.img that gem5 reads from disk-image.qcow2
    verify       check the installed files
    list         list the repository's releases and what each contains
    mirror       copy a release's assets into a directory others can use as --source

FLAGS:
    --version TAG        release tag, or `latest` (default: latest)
    --arch ARCH          amd64 | arm64 (default: amd64)
    --os-version OS      focal | jammy (default: focal)
    --output DIR         where resources go (default: $RESOURCES, else the repository's resources/)
    --repo OWNER/NAME    GitHub repository (default: vhive-serverless/vSwarm-u)
    --github-api URL     API base (default: $GITHUB_API_URL, else https://api.github.com)
    --jobs N             parallel connections (default: 4)
    --keep-downloads     keep the downloaded parts after the disk image is checked
    --force              download and check everything again
    --source DIR|URL     read releases from a mirror made by `mirror` instead of GitHub
                         (default: $VSWARM_RESOURCES_SOURCE)
    -h, --help           print help (also after a step: `cargo xtask resources download --help`)

ENVIRONMENT:
    GITHUB_TOKEN, GH_TOKEN   token sent to the API host only (lifts the rate limit)
    RESOURCES                default output directory
    GITHUB_API_URL           default API base
    HTTPS_PROXY, NO_PROXY    proxy settings
    VSWARM_RESOURCES_SOURCE  default --source
    VSWARM_HTTP_TIMEOUT      seconds a connection may stay silent before a retry (default 30)
";

const DOWNLOAD_HELP: &str = "\
cargo xtask resources download [FLAGS]

Fetches the release's kernel and test client (installed as `kernel` and `client` in the
output directory once their digests check) and the disk-image parts and sums (kept in
the hidden working directory `.downloads/<tag>/`). Partial files are resumed.

Takes the flags of `cargo xtask resources --help`.
";

const MERGE_HELP: &str = "\
cargo xtask resources merge [FLAGS]

Joins the downloaded disk-image parts, in split-suffix order, into one archive in the
working directory (`.downloads/<tag>/disk-image-<os>-<arch>.qcow2.tar.gz`). Run
`download` first. The full pipeline does not need this step.

Takes the flags of `cargo xtask resources --help`.
";

const DECOMPRESS_HELP: &str = "\
cargo xtask resources decompress [FLAGS]

Unpacks the downloaded disk image (merged archive, or the parts read in order) into
`disk-image.qcow2` in the output directory and checks its sha256 against the release's
`.sums`. Run `download` first.

Takes the flags of `cargo xtask resources --help`.
";

const CONVERT_HELP: &str = "\
cargo xtask resources convert [INPUT [OUTPUT]] [FLAGS]

Converts a qcow2 image to the raw, sparse image gem5 reads.
INPUT defaults to <output>/disk-image.qcow2, OUTPUT to <output>/disk-image.img.

FLAGS:
    --with-qemu-img      use `qemu-img convert -O raw` instead of the built-in converter
    --no-sparse-detect   do not look for zero blocks inside allocated clusters (faster,
                         larger output)
    --output DIR         output directory for the defaults
";

const VERIFY_HELP: &str = "\
cargo xtask resources verify [FLAGS]

Checks the files in the output directory against manifest.json: kernel and client are
ELF files of the right architecture, disk-image.qcow2 matches the release's sums,
disk-image.img has the qcow2's virtual size. One line per file; exit 0 when all hold.

FLAGS:
    --deep      also compare disk-image.img's content with the qcow2's guest content
    --quick     compare sizes and modification times with the manifest only
    --output DIR
";

const LIST_HELP: &str = "\
cargo xtask resources list [FLAGS]

Lists the repository's releases, newest first, with what each contains for every
os/arch, then the documentation's support table.

Takes --repo, --github-api.
";

const MIRROR_HELP: &str = "\
cargo xtask resources mirror --output MIRROR_DIR [FLAGS]

Stores a release's JSON and the assets of one os/arch set (or `--arch all`,
`--os-version all` for every set), each checked against its digest, as
MIRROR_DIR/<tag>/release.json + asset files, and MIRROR_DIR/latest naming the tag.
Other machines then run `cargo xtask resources --source MIRROR_DIR` (or serve
MIRROR_DIR with any static web server and pass its URL).

Takes --version, --arch, --os-version, --repo, --github-api, --jobs, --source.
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

/// An error in how the command was called: exit code 2, one line.
struct Usage(String);

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(Usage(msg)) = err.downcast_ref::<Usage>() {
                eprintln!("error: {msg}");
                eprintln!("Run `cargo xtask resources --help` for usage.");
                return ExitCode::from(2);
            }
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

fn run(args: Vec<OsString>) -> Result<()> {
    let mut args = pico_args::Arguments::from_vec(args);
    let task = args.subcommand().map_err(|e| usage(e.to_string()))?;
    match task.as_deref() {
        None | Some("help") => {
            print!("{HELP}");
            Ok(())
        }
        Some("-h") | Some("--help") => {
            print!("{HELP}");
            Ok(())
        }
        Some("resources") => resources(args),
        Some("bench") => bench(args),
        Some(other) => Err(usage(format!(
            "unknown task `{other}`; try `cargo xtask --help`"
        ))),
    }
}

fn bench(mut args: pico_args::Arguments) -> Result<()> {
    if args.contains(["-h", "--help"]) {
        print!("{BENCH_HELP}");
        return Ok(());
    }
    let size = args
        .opt_value_from_str::<_, String>("--size")
        .map_err(|e| usage(format!("--size: {e}")))?
        .unwrap_or_else(|| "small".into());
    let size = bench::Size::parse(&size).map_err(|e| usage(e.to_string()))?;
    let keep = args.contains("--keep");
    let serve = args.contains("--serve");
    finish(args)?;
    if serve {
        return bench::serve(size);
    }
    bench::run(bench::Args { size, keep })
}

/// Flags that take a value: the word after them is not the step.
const VALUE_FLAGS: [&str; 8] = [
    "--version",
    "--arch",
    "--os-version",
    "--output",
    "--repo",
    "--github-api",
    "--jobs",
    "--source",
];

/// Takes the step out of `args`: the first word that is neither a flag nor
/// a flag's value, so flags may come before or after it.
fn take_step(args: &mut Vec<OsString>) -> Option<String> {
    let mut i = 0;
    while i < args.len() {
        let word = args[i].to_string_lossy();
        if VALUE_FLAGS.contains(&word.as_ref()) {
            i += 2;
        } else if word.starts_with('-') {
            i += 1;
        } else {
            return Some(args.remove(i).to_string_lossy().into_owned());
        }
    }
    None
}

fn resources(args: pico_args::Arguments) -> Result<()> {
    let mut rest = args.finish();
    let step = take_step(&mut rest);
    let mut args = pico_args::Arguments::from_vec(rest);
    if args.contains(["-h", "--help"]) {
        print!(
            "{}",
            match step.as_deref() {
                None => RESOURCES_HELP,
                Some("download") => DOWNLOAD_HELP,
                Some("merge") => MERGE_HELP,
                Some("decompress") => DECOMPRESS_HELP,
                Some("convert") => CONVERT_HELP,
                Some("verify") => VERIFY_HELP,
                Some("list") => LIST_HELP,
                Some("mirror") => MIRROR_HELP,
                Some(other) => return Err(usage(format!("unknown step `{other}`"))),
            }
        );
        return Ok(());
    }

    // `mirror` alone takes `all` for --arch and --os-version.
    let (mut arches, mut oses) = (None, None);
    if step.as_deref() == Some("mirror") {
        arches = take_all(&mut args, "--arch", &Arch::ALL, Arch::parse)?;
        oses = take_all(&mut args, "--os-version", &Os::ALL, Os::parse)?;
    }
    let opts = parse_opts(&mut args)?;
    match step.as_deref() {
        None => {
            finish(args)?;
            pipeline::run(&opts)
        }
        Some("download") => {
            finish(args)?;
            pipeline::download(&opts)
        }
        Some("merge") => {
            finish(args)?;
            merge::run(&opts)
        }
        Some("decompress") => {
            finish(args)?;
            pipeline::decompress(&opts)
        }
        Some("convert") => {
            let with_qemu_img = args.contains("--with-qemu-img");
            let no_sparse_detect = args.contains("--no-sparse-detect");
            let input = free_path(&mut args)?;
            let output = free_path(&mut args)?;
            finish(args)?;
            convert::run(&opts, input, output, with_qemu_img, !no_sparse_detect)
        }
        Some("verify") => {
            let deep = args.contains("--deep");
            let quick = args.contains("--quick");
            if deep && quick {
                return Err(usage("--deep and --quick exclude each other"));
            }
            finish(args)?;
            verify::run(&opts, deep, quick)
        }
        Some("list") => {
            finish(args)?;
            release::list(&opts)
        }
        Some("mirror") => {
            finish(args)?;
            let arches = arches.unwrap_or_else(|| vec![opts.arch]);
            let oses = oses.unwrap_or_else(|| vec![opts.os]);
            mirror::run(&opts, &arches, &oses)
        }
        Some(other) => Err(usage(format!(
            "unknown step `{other}`: expected download, merge, decompress, convert, verify, list or mirror"
        ))),
    }
}

fn parse_opts(args: &mut pico_args::Arguments) -> Result<Opts> {
    let flag = |args: &mut pico_args::Arguments, name: &'static str| -> Result<Option<String>> {
        args.opt_value_from_str::<_, String>(name)
            .map_err(|e| usage(format!("{name}: {e}")))
    };
    let version = flag(args, "--version")?.unwrap_or_else(|| "latest".into());
    opts::check_tag(&version).map_err(|e| usage(e.to_string()))?;
    let arch = match flag(args, "--arch")? {
        Some(a) => Arch::parse(&a).map_err(|e| usage(e.to_string()))?,
        None => Arch::Amd64,
    };
    let os = match flag(args, "--os-version")? {
        Some(o) => Os::parse(&o).map_err(|e| usage(e.to_string()))?,
        None => Os::Focal,
    };
    let output = match args
        .opt_value_from_os_str::<_, PathBuf, String>("--output", |s| Ok(PathBuf::from(s)))
        .map_err(|e| usage(format!("--output: {e}")))?
    {
        Some(p) => p,
        None => opts::default_output(),
    };
    let repo = flag(args, "--repo")?.unwrap_or_else(|| opts::DEFAULT_REPO.into());
    opts::check_repo(&repo).map_err(|e| usage(e.to_string()))?;
    let api = flag(args, "--github-api")?.unwrap_or_else(opts::default_api);
    if !(api.starts_with("https://") || api.starts_with("http://")) {
        return Err(usage(format!(
            "invalid --github-api `{api}`: expected an http(s) URL"
        )));
    }
    let jobs = match flag(args, "--jobs")? {
        Some(j) => match j.parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => n,
            _ => return Err(usage(format!("invalid --jobs `{j}`: expected 1 to 64"))),
        },
        None => 4,
    };
    let source = flag(args, "--source")?.or_else(|| {
        std::env::var("VSWARM_RESOURCES_SOURCE")
            .ok()
            .filter(|s| !s.is_empty())
    });
    let keep_downloads = args.contains("--keep-downloads");
    let force = args.contains("--force");
    Ok(Opts {
        version,
        arch,
        os,
        output,
        repo,
        api: api.trim_end_matches('/').to_string(),
        jobs,
        keep_downloads,
        force,
        source,
    })
}

/// `FLAG all` → every value, `FLAG one` → that one, absent → None.
fn take_all<T: Copy>(
    args: &mut pico_args::Arguments,
    flag: &'static str,
    all: &[T],
    parse: fn(&str) -> Result<T>,
) -> Result<Option<Vec<T>>> {
    let v: Option<String> = args
        .opt_value_from_str(flag)
        .map_err(|e| usage(format!("{flag}: {e}")))?;
    match v.as_deref() {
        Some("all") => Ok(Some(all.to_vec())),
        Some(one) => Ok(Some(vec![parse(one).map_err(|e| usage(e.to_string()))?])),
        None => Ok(None),
    }
}

fn free_path(args: &mut pico_args::Arguments) -> Result<Option<PathBuf>> {
    let p: Option<OsString> = args
        .opt_free_from_os_str(|s| Ok::<_, String>(s.to_os_string()))
        .map_err(|e| usage(e.to_string()))?;
    match p {
        Some(p) if p.to_string_lossy().starts_with('-') => {
            Err(usage(format!("unknown flag `{}`", p.to_string_lossy())))
        }
        Some(p) => Ok(Some(PathBuf::from(p))),
        None => Ok(None),
    }
}

/// Anything left over is a flag we do not know: say which, exit 2.
fn finish(args: pico_args::Arguments) -> Result<()> {
    let rest = args.finish();
    if let Some(first) = rest.first() {
        let s = first.to_string_lossy();
        if s.starts_with('-') {
            return Err(usage(format!("unknown flag `{s}`")));
        }
        return Err(usage(format!("unexpected argument `{s}`")));
    }
    Ok(())
}
