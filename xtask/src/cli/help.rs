//! The help texts: `cargo xtask`'s and `bench`'s, the environment, and each
//! step's `--help`, built from the step and flag declarations in `flags`
//! (only that step's flags, with its defaults).

use super::flags::{Cmd, Flag, FLAGS, STEPS};

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
