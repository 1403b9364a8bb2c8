//! The flag table and the help text built from it: one list of every
//! flag (names, value, help, the steps that take it), of the steps, and of
//! the environment variables.

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
/// In a flag's `steps`: the full run (no step named).
pub const RUN: &str = "resources";

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
        help: "parallel connections, 1 to 16 (default: 16)",
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
        long: "--no-cache",
        short: None,
        value: None,
        help: "neither read nor fill the download cache (see `cache path`)",
        steps: &[RUN, "download", "decompress", "merge"],
    },
    Flag {
        long: "--offline",
        short: None,
        value: None,
        help: "no network: releases and assets from the cache only (latest: the newest cached)",
        steps: &[RUN, "download"],
    },
    Flag {
        long: "--no-raw",
        short: None,
        value: None,
        help: "do not make disk-image.img (QEMU reads the qcow2; gem5 needs the raw image)",
        steps: &[RUN],
    },
    Flag {
        long: "--no-wait",
        short: None,
        value: None,
        help: "fail at once when another run holds the output directory or cache entry",
        steps: ALL,
    },
    Flag {
        long: "--json",
        short: None,
        value: None,
        help: "print one JSON document on stdout at the end (schema 1); messages stay on stderr",
        steps: ALL,
    },
    Flag {
        long: "--quiet",
        short: Some("-q"),
        value: None,
        help: "only errors on stderr; nothing on stdout but --json's document",
        steps: ALL,
    },
    Flag {
        long: "--keep",
        short: None,
        value: Some("N"),
        help: "cache prune: keep the N most recently used releases (default: 3)",
        steps: &["cache"],
    },
    Flag {
        long: "--max-size",
        short: None,
        value: Some("SIZE"),
        help: "cache prune: then remove the least recently used until at most SIZE (default: 20G)",
        steps: &["cache"],
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
    Flag {
        long: "--from",
        short: None,
        value: Some("DIR|PREFIX"),
        help: "unpack the parts and sums in DIR, or at PREFIX (DIR/disk-image.qcow2), no network",
        steps: &["decompress"],
    },
    Flag {
        long: "--compression",
        short: None,
        value: Some("gz|xz|zst"),
        help: "archive compression (default: gz)",
        steps: &["pack"],
    },
    Flag {
        long: "--part-size",
        short: None,
        value: Some("SIZE"),
        help: "bytes per part, with K, M or G (binary, as split -b; default: 500M, below 2G)",
        steps: &["pack"],
    },
    Flag {
        long: "--level",
        short: None,
        value: Some("N"),
        help: "compression level: gz 1-12 (default 6), xz 0-9 (6), zst 1-19 (3)",
        steps: &["pack"],
    },
    Flag {
        long: "--kernel",
        short: None,
        value: Some("FILE"),
        help: "also ship FILE as vmlinux-<os>-<arch> (an ELF of --arch)",
        steps: &["pack"],
    },
    Flag {
        long: "--client",
        short: None,
        value: Some("FILE"),
        help: "also ship FILE as test-client-<arch> (an ELF of --arch)",
        steps: &["pack"],
    },
    Flag {
        long: "--release-id",
        short: None,
        value: Some("ID"),
        help: "the release by its numeric API id instead of --version (default: $RELEASE_ID)",
        steps: &["upload"],
    },
    Flag {
        long: "--as",
        short: None,
        value: Some("NAME"),
        help: "upload the one FILE under the asset name NAME",
        steps: &["upload"],
    },
    Flag {
        long: "--create",
        short: None,
        value: None,
        help: "create the release if the tag has none (a published pre-release)",
        steps: &["upload"],
    },
    Flag {
        long: "--draft",
        short: None,
        value: None,
        help: "with --create: create it as a draft (hidden until published)",
        steps: &["upload"],
    },
    Flag {
        long: "--clobber",
        short: None,
        value: None,
        help: "replace a same-named asset whose content differs",
        steps: &["upload"],
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
    (
        "cache",
        "the download cache: `cache list`, `cache prune`, `cache path`",
    ),
    (
        "pack",
        "make a qcow2 into release assets: tar, compressed on every core, split, sums",
    ),
    (
        "upload",
        "upload files as assets of a release (needs GH_TOKEN or GITHUB_TOKEN)",
    ),
];

/// Environment variables the tool reads, for the help text.
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "GH_TOKEN, GITHUB_TOKEN",
        "token sent to the API and its uploads host only (lifts the rate limit; upload \
         needs one with contents: write); GH_TOKEN first, as gh",
    ),
    ("RESOURCES", "default output directory"),
    ("GITHUB_API_URL", "default API base"),
    ("HTTPS_PROXY, NO_PROXY", "proxy settings"),
    ("VSWARM_RESOURCES_SOURCE", "default --source"),
    (
        "RELEASE_ID",
        "upload: the release's id, as upstream's artifacts.sh reads it (--release-id wins)",
    ),
    (
        "VSWARM_CACHE_DIR",
        "the download cache (default: $XDG_CACHE_HOME/vswarm-u, else ~/.cache/vswarm-u)",
    ),
    (
        "VSWARM_HTTP_TIMEOUT",
        "seconds a connection may stay silent before a retry (default 30, at most 3600)",
    ),
    (
        "CI, NO_COLOR",
        "plain progress lines (CI set or stderr not a terminal); no colour",
    ),
];

pub const TOP_HELP: &str = "\
cargo xtask — developer tasks for vSwarm-u

USAGE:
    cargo xtask <TASK> [ARGS]

TASKS:
    resources    get the kernel, disk image and test client (see `cargo xtask resources --help`)
    bench        time `resources` against the old tool pipeline (see `cargo xtask bench --help`)

OPTIONS:
    -h, --help   print this help
";

pub const BENCH_HELP: &str = "\
cargo xtask bench — time `resources` against the old pipeline and the tools' limits

USAGE:
    cargo xtask bench [--size small|large] [--keep] [--serve]

Builds a synthetic release like upstream's (qemu-img qcow2, tar | pigz | split; cached
in target/bench/cache-<size>/), serves it on loopback, and times, alternating: our full
pipeline; the old steps (curl, cat | pigz -dc | tar x, qemu-img convert -O raw, sync);
each tool alone, our decoder alone and dd conv=fsync of the bytes a run makes durable;
our run on tmpfs and on ext4 and XFS (reflink) loop mounts (as root); our converter vs
qemu-img; a no-op re-run. Then again with every connection capped at 20 MB/s (with 16,
8 and 4 connections, and the aria2c -x16 chain), and a pack round (pack vs tar c | pigz -c,
its archive decoded on every core and on one thread). Prints medians, MB/s and peak
RSS, and writes target/bench/<size>-<unix time>.json and <size>-latest.json. Needs
qemu-img; curl, pigz, aria2c and mkfs.xfs are used when present.

FLAGS:
    --size SIZE   small: 2 GiB virtual / 150 MiB data, 5 runs, ~4 min (default)
                  large: 16 GiB virtual / 1.5 GiB data, 3 runs, ~15 min (needs ~15 GiB free)
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
`.sums`. Run `download` first.
With --from DIR, unpacks the parts and sums already in DIR instead (what `pack` wrote,
a CI artifact, another machine's copy): no network, no release needed. Parts are
found by their names (disk-image-<os>-<arch>.qcow2.tar.<gz|xz|zst>[.aa, .ab, ...]),
else DIR's one set of other names (a CI artifact's disk-image.qcow2.tar.gz.aa, ...).
With --from PREFIX, as `artifacts.sh decompress-split PREFIX` takes it, unpacks
PREFIX.tar.gz.aa, .ab, ... (or .tar.xz.*, .tar.zst.*, one PREFIX.tar.gz ...) checked
against PREFIX.sums, whatever the prefix is named (disktmp/disk-image.qcow2)."
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
        "pack" => {
            "\
Packs DISK, a qcow2, into the assets of a release in the output directory (default:
the current directory): disk-image-<os>-<arch>.qcow2.tar.gz.aa, .ab, ... (a tar with the
one member temp/disk-image.qcow2, compressed, split with split's suffixes), the .sums
file naming temp/disk-image.qcow2, and with --kernel/--client their copies. Old readers
(`cat parts | pigz -dc | tar x`, `sha256sum -c`, artifacts.py) read them unchanged; this
tool decodes them on every core. DISK must be a qcow2 that `convert` reads. An existing
set in the output directory is replaced only with --force (its old parts are removed).
Prints each asset and its size."
        }
        "cache" => {
            "\
The download cache keeps what runs downloaded (release JSON, kernel, client, disk parts,
exactly as published and checked), so another checkout, another CI job on this machine,
or switching back to a tag installs with no download. It lives in $VSWARM_CACHE_DIR,
else $XDG_CACHE_HOME/vswarm-u, else ~/.cache/vswarm-u.
    cache list     each cached release, its size and when it was last used
    cache path     print where the cache is
    cache prune    remove the least recently used releases beyond --keep N (default 3)
                   and then beyond --max-size SIZE (default 20G); a release another run
                   is using is left alone
After every run the default policy (3 releases, 20 GiB) is applied."
        }
        "upload" => {
            "\
Uploads FILES as assets of the release tagged --version in --repo, or of the release
whose API id is --release-id (else $RELEASE_ID, as upstream's artifacts.sh; with
--version too, the id's release must carry that tag). With --as NAME, the one FILE
is uploaded as NAME (gh's FILE#LABEL sets a label, not a name: `#` is not used).
An asset already there with the same size and digest is skipped, so re-running a cut
upload completes it; a same-named asset with other content is an error unless --clobber.
Without a release for the tag, --create makes one (a published pre-release; with
--draft, a draft). The token comes from GH_TOKEN, else GITHUB_TOKEN, and needs
`contents: write` on the repository."
        }
        _ => "",
    }
}

fn flag_lines(step: Option<&str>) -> String {
    let mut out = String::new();
    for f in FLAGS {
        let applies = match step {
            None => f.steps.is_empty() || f.steps.contains(&RUN),
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
            let args = match step {
                "convert" => " [INPUT [OUTPUT]]",
                "pack" => " DISK",
                "upload" => " (--version TAG | --release-id ID) FILES... [--as NAME]",
                "cache" => " list|path|prune",
                _ => "",
            };
            format!(
                "cargo xtask resources {step}{args} [FLAGS]\n\n{}\n\nFLAGS:\n{}",
                step_text(step),
                flag_lines(Some(step))
            )
        }
    }
}
