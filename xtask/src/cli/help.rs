//! The help texts: `cargo xtask`'s and `bench`'s, what each step is and
//! does, the environment, and each step's `--help` built from them and
//! from the flag declarations (only that step's flags, with its defaults).

use super::flags::{Cmd, Flag, FLAGS};

/// What a step is: its arguments after the flags, its one-line summary and
/// the text of its `--help`.
pub struct StepDoc {
    pub cmd: Cmd,
    pub args: &'static str,
    pub summary: &'static str,
    pub text: &'static str,
}

/// The steps, in help order (the full run is described by the top help).
pub const STEPS: &[StepDoc] = &[
    StepDoc {
        cmd: Cmd::Download,
        args: "",
        summary: "fetch kernel, client, disk-image parts and sums",
        text: "\
Fetches the release's kernel and test client (installed as `kernel` and `client` in the
output directory once their digests check) and the disk-image parts and sums (kept in
the download cache, or with --no-cache in the hidden working directory
`.downloads/<tag>/`). Partial files are resumed.",
    },
    StepDoc {
        cmd: Cmd::Decompress,
        args: "",
        summary: "unpack the archive into disk-image.qcow2 and check it against the sums",
        text: "\
Unpacks the downloaded disk image (the parts read in order, their digests checked) into
`disk-image.qcow2` in the output directory and checks its sha256 against the release's
`.sums`. Run `download` first (with the same --repo, --github-api, --source, --no-cache).
With --from DIR, unpacks the parts and sums already in DIR instead (what `pack` wrote,
a CI artifact, another machine's copy): no network, no release needed. Parts are
found by their names (disk-image-<os>-<arch>.qcow2.tar.<gz|xz|zst>[.aa, .ab, ...]),
else DIR's one set of other names (a CI artifact's disk-image.qcow2.tar.gz.aa, ...).
With --from PREFIX, as `artifacts.sh decompress-split PREFIX` takes it, unpacks
PREFIX.tar.gz.aa, .ab, ... (or .tar.xz.*, .tar.zst.*, one PREFIX.tar.gz ...) checked
against PREFIX.sums, whatever the prefix is named (disktmp/disk-image.qcow2).",
    },
    StepDoc {
        cmd: Cmd::Convert,
        args: " [INPUT [OUTPUT]]",
        summary: "write the raw disk-image.img that gem5 reads from disk-image.qcow2",
        text: "\
Converts a qcow2 image to the raw, sparse image gem5 reads.
INPUT defaults to <output>/disk-image.qcow2, OUTPUT to <output>/disk-image.img.
INPUT and OUTPUT must be different files.",
    },
    StepDoc {
        cmd: Cmd::Verify,
        args: "",
        summary: "check the installed files (and with --version/--arch/--os-version, the set)",
        text: "\
Checks the files in the output directory against manifest.json: kernel and client are
ELF files of the right architecture, disk-image.qcow2 matches the release's sums,
disk-image.img has the qcow2's virtual size. One line per file; exit 0 when all hold.
With --version, --arch, --os-version or --repo, the installed set must also be that one
(read from the manifest); a difference is named and fails.",
    },
    StepDoc {
        cmd: Cmd::List,
        args: "",
        summary: "list the repository's (or a mirror's) releases and what each contains",
        text: "\
Lists the repository's releases, newest first, with what each contains for every
os/arch, then the documentation's support table. With --source DIR, the releases a
mirror directory holds; a mirror on a web server (--source URL) has no index, so only
the release its `latest` names is listed.",
    },
    StepDoc {
        cmd: Cmd::Mirror,
        args: "",
        summary: "copy a release's assets into a directory others can use as --source",
        text: "\
Stores a release's JSON and the assets of one os/arch set (or `--arch all`,
`--os-version all` for every set), each checked against its digest, as
MIRROR_DIR/<tag>/release.json + asset files, and MIRROR_DIR/latest naming the tag.
Other machines then run `cargo xtask resources --source MIRROR_DIR` (or serve
MIRROR_DIR with any static web server and pass its URL).",
    },
    StepDoc {
        cmd: Cmd::Cache,
        args: " list|path|prune",
        summary: "the download cache: `cache list`, `cache prune`, `cache path`",
        text: "\
The download cache keeps what runs downloaded (release JSON, kernel, client, disk parts,
exactly as published and checked), so another checkout, another CI job on this machine,
or switching back to a tag installs with no download. It lives in $VSWARM_CACHE_DIR,
else $XDG_CACHE_HOME/vswarm-u, else ~/.cache/vswarm-u.
    cache list     each cached release, its size and when it was last used
    cache path     print where the cache is
    cache prune    remove the least recently used releases beyond --keep N (default 3)
                   and then beyond --max-size SIZE (default 20G); a release another run
                   is using is left alone
After every run the default policy (3 releases, 20 GiB) is applied.",
    },
    StepDoc {
        cmd: Cmd::Pack,
        args: " DISK",
        summary: "make a qcow2 into release assets: tar, compressed on every core, split, sums",
        text: "\
Packs DISK, a qcow2, into the assets of a release in the output directory (default:
the current directory): disk-image-<os>-<arch>.qcow2.tar.gz.aa, .ab, ... (a tar with the
one member temp/disk-image.qcow2, compressed, split with split's suffixes), the .sums
file naming temp/disk-image.qcow2, and with --kernel/--client their copies. Old readers
(`cat parts | pigz -dc | tar x`, `sha256sum -c`, artifacts.py) read them unchanged; this
tool decodes them on every core. DISK must be a qcow2 that `convert` reads. An existing
set in the output directory is replaced only with --force (its old parts are removed).
Prints each asset and its size.",
    },
    StepDoc {
        cmd: Cmd::Upload,
        args: " (--version TAG | --release-id ID) FILES... [--as NAME]",
        summary: "upload files as assets of a release (needs GH_TOKEN or GITHUB_TOKEN)",
        text: "\
Uploads FILES as assets of the release tagged --version in --repo, or of the release
whose API id is --release-id (else $RELEASE_ID, as upstream's artifacts.sh; with
--version too, the id's release must carry that tag). With --as NAME, the one FILE
is uploaded as NAME (gh's FILE#LABEL sets a label, not a name: `#` is not used).
An asset already there with the same size and digest is skipped, so re-running a cut
upload completes it; a same-named asset with other content is an error unless --clobber.
Without a release for the tag, --create makes one (a published pre-release; with
--draft, a draft). The token comes from GH_TOKEN, else GITHUB_TOKEN, and needs
`contents: write` on the repository.",
    },
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
    (
        "SSL_CERT_FILE, SSL_CERT_DIR",
        "CA certificates to trust (PEM file; hashed directory), as curl and openssl read them",
    ),
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
    -h, --help      print this help
    -V, --version   print the tool's version
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

/// The flags `cmd` takes, one line each, with `cmd`'s own help and default.
fn flag_lines(cmd: Cmd) -> String {
    FLAGS
        .iter()
        .filter(|f| f.takes(cmd))
        .map(|f| format!("    {:<27} {}\n", left_column(f), help_line(f, cmd)))
        .collect()
}

fn left_column(f: &Flag) -> String {
    let names = match f.short {
        Some(s) => format!("{s}, {}", f.long),
        None => format!("    {}", f.long),
    };
    match f.value {
        Some(v) => format!("{names} {v}"),
        None => names,
    }
}

fn help_line(f: &Flag, cmd: Cmd) -> String {
    match f.default_at(cmd) {
        "" => f.help_at(cmd).to_string(),
        d => format!("{} (default: {d})", f.help_at(cmd)),
    }
}

/// The `--help` of `cargo xtask resources [STEP]`.
pub fn step_help(cmd: Cmd) -> String {
    let Some(doc) = STEPS.iter().find(|d| d.cmd == cmd) else {
        return run_help();
    };
    format!(
        "cargo xtask resources {}{} [FLAGS]\n\n{}\n\nFLAGS (also `--flag=value`):\n{}",
        cmd.name(),
        doc.args,
        doc.text,
        flag_lines(cmd)
    )
}

fn run_help() -> String {
    let mut s = String::from(
        "cargo xtask resources — download, unpack, convert and verify the vSwarm-u resources\n\n\
         USAGE:\n    cargo xtask resources [STEP] [FLAGS]\n\nSTEPS:\n",
    );
    s.push_str(&format!(
        "    {:<12} every step: download and decompress (fused), convert, verify\n",
        "(none)"
    ));
    for d in STEPS {
        s.push_str(&format!("    {:<12} {}\n", d.cmd.name(), d.summary));
    }
    s.push_str(
        "\nFLAGS of the full run (also `--flag=value`; each step takes its own, see \
         `cargo xtask resources STEP --help`):\n",
    );
    s.push_str(&flag_lines(Cmd::Run));
    s.push_str("\nENVIRONMENT:\n");
    for (k, v) in ENVIRONMENT {
        s.push_str(&format!("    {k:<24} {v}\n"));
    }
    s
}
