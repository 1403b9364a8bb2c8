//! The benchmark `cargo xtask bench` runs (through cargo, in release mode):
//! times our `resources` pipeline against the old one
//! built from standard tools (curl, cat | pigz | tar, qemu-img) and against
//! each tool's limit, on a synthetic release served from `testkit::Server` on
//! loopback, plainly and with a per-connection bandwidth cap. Medians, MB/s
//! and peak RSS go to a table and to JSON under `target/bench/`. Nothing here
//! passes or fails: it measures.
//!
//! Submodules: `image` builds and caches the release, `measure` runs one timed
//! child, `report` prints and saves the results, `steps` and `variants` are
//! the timed steps.

mod cache;
mod image;
mod measure;
mod report;
mod rows;
mod steps;
mod variants;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde_json::json;

use measure::{fresh_dir, Tools};
use report::Bytes;
use steps::{convert_pair, limits, old, ours, Ctx};
use testkit::{Fault, ReleaseSpec, Server};
use util::fmt::human_bytes;

const REPO: &str = "vhive-serverless/vSwarm-u";
const TAG: &str = "v0.0.0-bench";
/// Per-connection cap of the second round: what parallel connections buy.
const CAP_BYTES_PER_SEC: u64 = 20_000_000;
/// Overrides where the cache, runs and JSON go (default: `<target>/bench`).
const DIR_ENV: &str = "VSWARM_BENCH_DIR";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Size {
    /// Hidden: for the smoke test.
    Tiny,
    Small,
    Large,
}

impl Size {
    pub fn parse(s: &str) -> Result<Size> {
        match s {
            "tiny" => Ok(Size::Tiny),
            "small" => Ok(Size::Small),
            "large" => Ok(Size::Large),
            _ => bail!("invalid --size `{s}`: expected small or large"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Size::Tiny => "tiny",
            Size::Small => "small",
            Size::Large => "large",
        }
    }

    fn params(self) -> Params {
        const MIB: u64 = 1 << 20;
        match self {
            Size::Tiny => Params {
                virtual_bytes: 64 * MIB,
                data_bytes: 4 * MIB,
                part_size: MIB,
                reps: 1,
                capped_reps: 1,
            },
            // Part sizes as upstream's release script splits them.
            Size::Small => Params {
                virtual_bytes: 2048 * MIB,
                data_bytes: 150 * MIB,
                part_size: 50 * MIB,
                reps: 5,
                capped_reps: 2,
            },
            Size::Large => Params {
                virtual_bytes: 16384 * MIB,
                data_bytes: 1536 * MIB,
                part_size: 500 * MIB,
                reps: 3,
                capped_reps: 1,
            },
        }
    }
}

/// The shape of one benchmark size.
pub struct Params {
    pub virtual_bytes: u64,
    pub data_bytes: u64,
    pub part_size: u64,
    pub reps: usize,
    pub capped_reps: usize,
}

pub struct Args {
    pub size: Size,
    /// Keep the per-run output directories.
    pub keep: bool,
    /// The xtask binary to time.
    pub exe: PathBuf,
}

/// `bench --xtask PATH [--size small|large] [--keep] [--serve]`, as
/// `cargo xtask bench` calls it.
fn main() -> std::process::ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--decode") {
        return match variants::decode_child(&args[1..]) {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::ExitCode::from(1)
            }
        };
    }
    let mut take = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        args.remove(i);
        (i < args.len()).then(|| args.remove(i))
    };
    let exe = take("--xtask").map(PathBuf::from);
    let size = take("--size").unwrap_or_else(|| "small".into());
    let keep = args.iter().any(|a| a == "--keep");
    let serve = args.iter().any(|a| a == "--serve");
    let size = match (Size::parse(&size), exe) {
        (Ok(s), Some(exe)) => (s, exe),
        (Err(e), _) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::from(2);
        }
        (_, None) => {
            eprintln!("error: --xtask PATH is missing; run this through `cargo xtask bench`");
            return std::process::ExitCode::from(2);
        }
    };
    let r = if serve {
        serve_release(size.0, &size.1)
    } else {
        run(Args {
            size: size.0,
            keep,
            exe: size.1,
        })
    };
    match r {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

/// Serves the size's release until the process is interrupted.
fn serve_release(size: Size, exe: &Path) -> Result<()> {
    let p = size.params();
    let tools = Tools::detect()?;
    let root = bench_dir(exe)?;
    let img = image::get(&root.join(format!("cache-{}", size.name())), &p, &tools)?;
    let server = Server::start(REPO, vec![ReleaseSpec::new(TAG, img.assets())]);
    println!(
        "serving {TAG} ({}) until interrupted; try:\n  cargo xtask resources --github-api {} --version {TAG} --output DIR",
        size.name(),
        server.api_url()
    );
    loop {
        std::thread::park();
    }
}

fn run(args: Args) -> Result<()> {
    let p = args.size.params();
    let tools = Tools::detect()?;
    let exe = args.exe.clone();
    let root = bench_dir(&exe)?;
    let img = image::get(
        &root.join(format!("cache-{}", args.size.name())),
        &p,
        &tools,
    )?;
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let runs = root.join(format!("runs-{}-{unix}", args.size.name()));
    fresh_dir(&runs)?;

    eprintln!("bench: serving the release on loopback (hashing assets first)");
    let server = Server::start(REPO, vec![ReleaseSpec::new(TAG, img.assets())]);
    let ctx = Ctx {
        tools: &tools,
        img: &img,
        api: server.api_url(),
        runs: runs.clone(),
        exe,
        bench_exe: std::env::current_exe().context("find the bench binary")?,
        keep: args.keep,
        jobs: fetch::DEFAULT_CONNECTIONS,
    };
    let durable = img.stamp.qcow2_bytes + img.stamp.data_bytes;
    let mut notes = notes(&tools);

    let mut plain = rows::plain(&tools, p.reps);
    let shm = Path::new("/dev/shm");
    let shm_ok = shm.is_dir()
        && util::fs::available_space(shm).unwrap_or(0) > durable + img.stamp.archive_bytes * 2;
    if !shm_ok {
        plain.note("ours_tmpfs", "skipped: /dev/shm is missing or too small");
    }
    let mount_bytes = (durable + img.stamp.archive_bytes) * 3 / 2 + (512 << 20);
    let mut mounts = Vec::new();
    for (kind, key) in [("ext4", "ours_ext4"), ("xfs", "ours_xfs")] {
        match variants::LoopMount::make(&runs, kind, mount_bytes) {
            Ok(m) => mounts.push((key, m)),
            Err(e) => plain.note(key, &format!("skipped: {e:#}")),
        }
    }
    plain.note("convert_qemu", "ratio: ours convert ÷ this");
    plain.note("convert_qemu_sync", "like for like: ours fsyncs its output");
    rows::skip_missing(&mut plain, &tools);
    if tools.sha256sum.is_none() {
        plain.note("limit_sha256", "skipped: sha256sum not found in PATH");
    }

    for i in 0..p.reps {
        eprintln!("bench: loopback run {}/{}", i + 1, p.reps);
        // Alternate who goes first so drift (thermal, page cache) hits both.
        if i.is_multiple_of(2) {
            ours(&ctx, &mut plain, i, true)?;
            old(&ctx, &mut plain, i)?;
        } else {
            old(&ctx, &mut plain, i)?;
            ours(&ctx, &mut plain, i, true)?;
        }
        limits(&ctx, &mut plain, i)?;
        convert_pair(&ctx, &mut plain, i)?;
        variants::limit_decode(&ctx, &mut plain, i)?;
        variants::limit_durable(&ctx, &mut plain, i, durable)?;
        if shm_ok {
            let dir = shm.join(format!("vswarm-bench-{}", std::process::id()));
            variants::ours_in(&ctx, &mut plain, "ours_tmpfs", &dir, &[])?;
        }
        for (key, m) in &mounts {
            variants::ours_in(&ctx, &mut plain, key, &m.dir.join("out"), &[])?;
        }
    }
    drop(mounts);

    let mut cached = cache::round(p.reps);
    let xfs = variants::LoopMount::make(&runs, "xfs", mount_bytes * 2);
    for i in 0..p.reps {
        eprintln!("bench: cache and adoption run {}/{}", i + 1, p.reps);
        cache::rep(
            &ctx,
            &server,
            &mut cached,
            &runs.join(format!("cache-{i}")),
            false,
        )?;
        if let Ok(m) = &xfs {
            cache::rep(&ctx, &server, &mut cached, &m.dir, true)?;
        }
    }
    if let Err(e) = &xfs {
        for key in ["cache_fill_xfs", "cache_second_xfs"] {
            cached.note(key, &format!("skipped: {e:#}"));
        }
    }
    drop(xfs);

    server.add_fault(Fault::RateCap {
        bytes_per_sec: CAP_BYTES_PER_SEC,
    });
    let mut capped = rows::capped(&tools, p.capped_reps, CAP_BYTES_PER_SEC);
    for i in 0..p.capped_reps {
        eprintln!("bench: capped run {}/{}", i + 1, p.capped_reps);
        if i.is_multiple_of(2) {
            ours(&ctx, &mut capped, i, false)?;
            old(&ctx, &mut capped, i)?;
        } else {
            old(&ctx, &mut capped, i)?;
            ours(&ctx, &mut capped, i, false)?;
        }
        for (key, jobs) in [("ours_j4", "4"), ("ours_j8", "8")] {
            let dir = runs.join(format!("capped-{key}-{i}"));
            variants::ours_in(&ctx, &mut capped, key, &dir, &["--jobs", jobs])?;
        }
        variants::aria2_chain(&ctx, &mut capped, i)?;
    }
    server.clear_faults();
    drop(server);

    let mut pack = rows::pack(&tools, p.reps);
    for i in 0..p.reps {
        eprintln!("bench: pack run {}/{}", i + 1, p.reps);
        variants::pack_round(&ctx, &mut pack, i, p.part_size)?;
    }

    let bytes = Bytes {
        archive: img.stamp.archive_bytes,
        data: img.stamp.data_bytes,
        qcow2: img.stamp.qcow2_bytes,
    };
    let plain_derived = rows::derived(&plain);
    let capped_derived = rows::derived(&capped);
    let pack_derived = Vec::new();
    let cached_derived = Vec::new();
    notes.push(format!(
        "image: {} virtual, {} guest data ({} system files from /usr/lib, /usr/share, rest random), \
         qcow2 {}, archive {} in {} parts of {}",
        human_bytes(p.virtual_bytes),
        human_bytes(p.data_bytes),
        human_bytes(img.stamp.system_bytes),
        human_bytes(img.stamp.qcow2_bytes),
        human_bytes(img.stamp.archive_bytes),
        img.stamp.parts.len(),
        human_bytes(p.part_size),
    ));

    println!(
        "bench {}: ours = `xtask resources` ({} connections), old = upstream's steps with standard tools",
        args.size.name(),
        ctx.jobs
    );
    for n in &notes {
        println!("note: {n}");
    }
    print!("{}", report::render(&plain, &bytes, &plain_derived));
    print!("{}", report::render(&cached, &bytes, &cached_derived));
    print!("{}", report::render(&capped, &bytes, &capped_derived));
    print!("{}", report::render(&pack, &bytes, &pack_derived));
    println!(
        "\nMB/s = 10^6 B/s over the archive (downloads, decompression, full runs), the guest \
         data (convert) or the qcow2 (sha256sum); ratio = ours ÷ that row \
         (<1: ours faster); peak RSS = largest process of the run"
    );

    let doc = json!({
        "size": args.size.name(),
        "unix_time": unix,
        "git_commit": git_commit(),
        "params": {
            "virtual_bytes": p.virtual_bytes,
            "data_bytes": p.data_bytes,
            "part_size": p.part_size,
            "archive_bytes": img.stamp.archive_bytes,
            "qcow2_bytes": img.stamp.qcow2_bytes,
            "parts": img.stamp.parts.len(),
            "cap_bytes_per_sec": CAP_BYTES_PER_SEC,
        },
        "notes": notes,
        "rounds": [
            report::round_json(&plain, &bytes, &plain_derived),
            report::round_json(&cached, &bytes, &cached_derived),
            report::round_json(&capped, &bytes, &capped_derived),
            report::round_json(&pack, &bytes, &pack_derived),
        ],
    });
    let path = report::save(&root, args.size.name(), unix, &doc)?;
    println!("results: {}", path.display());

    if args.keep {
        println!("kept the runs' directories in {}", runs.display());
    } else {
        std::fs::remove_dir_all(&runs).with_context(|| format!("remove {}", runs.display()))?;
    }
    Ok(())
}

/// `$VSWARM_BENCH_DIR`, else `<target>/bench` next to the running binary
/// (`target/release/xtask` → `target/bench`).
fn bench_dir(exe: &Path) -> Result<PathBuf> {
    if let Some(d) = std::env::var_os(DIR_ENV) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(d).join("bench"));
    }
    let target = exe.parent().and_then(Path::parent).with_context(|| {
        format!(
            "cannot place target/bench next to {}; set {DIR_ENV}",
            exe.display()
        )
    })?;
    Ok(target.join("bench"))
}

fn notes(tools: &Tools) -> Vec<String> {
    let mut n = vec![
        "all runs are warm-cache: the release files sit in the page cache (caches are not \
         dropped, which would need root)"
            .to_string(),
        "the server runs in the bench process and shares the CPUs with the child being timed"
            .to_string(),
    ];
    if tools.gunzip_name == "gzip" {
        n.push("pigz not found: the old pipeline and the limit use gzip".into());
    }
    if tools.curl.is_none() {
        n.push("curl not found in PATH: download rows skipped; the old pipeline reads the parts from the cache".into());
    }
    n
}

/// The checkout's commit, for comparing results across commits.
fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
