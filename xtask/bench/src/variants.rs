//! The rows that name the real limits and the variants of our run (issues
//! 11 and 12): our decoder alone, `dd conv=fsync` of the bytes a run makes
//! durable, the full run on tmpfs and on XFS (reflinks) and ext4 loop
//! mounts, more connections and the aria2c chain under the cap, and the
//! pack round (`pack` against `tar c | pigz -c`, parallel against serial
//! decoding of what `pack` made).

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::measure::{self, fresh_dir, new_log, Sample};
use super::report::Round;
use super::steps::{asset_names, asset_url, old_tail, resources, Ctx};
use mgzip::ParallelGzDecoder;
use testkit::find_tool;
use util::io::Chain;

/// `bench --decode [--threads N] FILES…`: our gzip decoder alone, the
/// files read in order as one stream, the output thrown away. N = 0 keeps
/// it on one thread; the default is one worker per core.
pub fn decode_child(args: &[String]) -> Result<()> {
    let mut threads = util::threads(0);
    let mut files = Vec::new();
    let mut plain_flate2 = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--flate2" {
            plain_flate2 = true;
        } else if a == "--threads" {
            threads = it
                .next()
                .and_then(|n| n.parse().ok())
                .context("--threads needs a number")?;
        } else {
            let f = File::open(a).with_context(|| format!("open {a}"))?;
            files.push(BufReader::with_capacity(1 << 20, f));
        }
    }
    if plain_flate2 {
        let mut dec = flate2::read::MultiGzDecoder::new(Chain::new(files));
        let n = drain(&mut dec)?;
        eprintln!("decoded {n} bytes with flate2's MultiGzDecoder");
        return Ok(());
    }
    let mut dec = ParallelGzDecoder::with_threads(Chain::new(files), threads);
    let n = drain(&mut dec)?;
    let s = dec.stats();
    eprintln!(
        "decoded {n} bytes: {} members in parallel, {} serially",
        s.parallel_members, s.serial_members
    );
    Ok(())
}

/// Reads to the end in 1 MiB reads, as the unpacker does.
fn drain(r: &mut dyn io::Read) -> Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut n = 0u64;
    loop {
        match r.read(&mut buf).context("decode")? {
            0 => return Ok(n),
            k => n += k as u64,
        }
    }
}

fn decode(
    ctx: &Ctx,
    what: &str,
    files: &[PathBuf],
    threads: Option<usize>,
    log: &Path,
) -> Result<Sample> {
    let mut c = Command::new(&ctx.bench_exe);
    c.arg("--decode");
    if let Some(t) = threads {
        c.args(["--threads", &t.to_string()]);
    }
    c.args(files);
    measure::run(what, &mut c, log)
}

/// Our decoder alone on the release's (pigz-made) parts.
pub fn limit_decode(ctx: &Ctx, r: &mut Round, i: usize) -> Result<()> {
    let log = ctx.runs.join(format!("decode-{i}.log"));
    new_log(&log)?;
    let s = decode(ctx, "our decoder alone", &ctx.img.part_paths(), None, &log)?;
    r.add("limit_decode", s);
    Ok(())
}

/// `dd if=/dev/zero conv=fsync` of `bytes` into `dir`: how fast this disk
/// makes that many bytes durable.
pub fn limit_durable(ctx: &Ctx, r: &mut Round, i: usize, bytes: u64) -> Result<()> {
    let dir = ctx.runs.join(format!("dd-{i}"));
    fresh_dir(&dir)?;
    let log = dir.with_extension("log");
    new_log(&log)?;
    let count = bytes.div_ceil(4 << 20);
    let mut c = Command::new("dd");
    c.arg("if=/dev/zero")
        .arg(format!("of={}", dir.join("dd.bin").display()))
        .args(["bs=4M", &format!("count={count}"), "conv=fsync"]);
    let s = measure::run("dd conv=fsync", &mut c, &log)?;
    r.add("limit_durable", s);
    fs::remove_dir_all(&dir).ok();
    Ok(())
}

/// Our full run into `dir` (made fresh) with `extra` flags; removed after.
pub fn ours_in(ctx: &Ctx, r: &mut Round, key: &str, dir: &Path, extra: &[&str]) -> Result<()> {
    fresh_dir(dir)?;
    let log = dir.with_extension("log");
    new_log(&log)?;
    let mut c = resources(ctx, dir, extra);
    let s = measure::run(&format!("`xtask resources` ({key})"), &mut c, &log)?;
    r.add(key, s);
    if key == "ours_xfs" || key == "ours_ext4" {
        let du = Command::new("du")
            .args(["-k", "--apparent-size"])
            .arg(dir.join("disk-image.img"))
            .output();
        let used = Command::new("df")
            .arg("-k")
            .arg("--output=used")
            .arg(dir)
            .output();
        if let (Ok(du), Ok(used)) = (du, used) {
            r.note(
                key,
                &format!(
                    "raw apparent {} KiB; file system used {} KiB after the run",
                    String::from_utf8_lossy(&du.stdout)
                        .split_whitespace()
                        .next()
                        .unwrap_or("?"),
                    String::from_utf8_lossy(&used.stdout)
                        .lines()
                        .nth(1)
                        .unwrap_or("?")
                        .trim()
                ),
            );
        }
    }
    fs::remove_dir_all(dir).ok();
    // Beside the output (on tmpfs: outside the runs directory).
    if !ctx.keep {
        fs::remove_file(&log).ok();
    }
    Ok(())
}

/// A loop-mounted file system the bench makes itself (root only); unmounted
/// and removed on drop.
pub struct LoopMount {
    pub dir: PathBuf,
    image: PathBuf,
}

impl LoopMount {
    /// `kind` is `xfs` (made with reflink=1) or `ext4`. Err says why not.
    pub fn make(root: &Path, kind: &str, bytes: u64) -> Result<LoopMount> {
        let mkfs = find_tool(&format!("mkfs.{kind}"))
            .with_context(|| format!("mkfs.{kind} not found (install xfsprogs / e2fsprogs)"))?;
        let image = root.join(format!("{kind}.fs"));
        let dir = root.join(format!("{kind}-mnt"));
        let _ = Command::new("umount").arg(&dir).output();
        fresh_dir(&dir)?;
        let f = File::create(&image).with_context(|| format!("create {}", image.display()))?;
        f.set_len(bytes)?;
        drop(f);
        let mut c = Command::new(mkfs);
        if kind == "xfs" {
            c.args(["-q", "-f", "-m", "reflink=1"]);
        } else {
            c.args(["-q", "-F"]);
        }
        let out = c.arg(&image).output()?;
        if !out.status.success() {
            bail!(
                "mkfs.{kind} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let out = Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(&dir)
            .output()?;
        if !out.status.success() {
            let _ = fs::remove_file(&image);
            bail!(
                "mount refused ({}); run the bench as root for this row",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(LoopMount { dir, image })
    }
}

impl Drop for LoopMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).output();
        let _ = fs::remove_file(&self.image);
        let _ = fs::remove_dir(&self.dir);
    }
}

/// The multi-connection tool chain: aria2c -x16 -s16 for every asset, then
/// cat | pigz -dc | tar x, qemu-img convert -O raw, sync.
pub fn aria2_chain(ctx: &Ctx, r: &mut Round, i: usize) -> Result<()> {
    let (Some(aria2c), Some(gunzip), Some(bash)) =
        (find_tool("aria2c"), &ctx.tools.gunzip, &ctx.tools.bash)
    else {
        return Ok(());
    };
    let dir = ctx.runs.join(format!("aria2-{i}"));
    fresh_dir(&dir)?;
    let log = dir.with_extension("log");
    new_log(&log)?;
    let list = dir.join("urls.txt");
    let urls: Vec<String> = asset_names(ctx).iter().map(|n| asset_url(ctx, n)).collect();
    fs::write(&list, urls.join("\n") + "\n")?;
    let mut c = Command::new(aria2c);
    c.args([
        "-q",
        "-x16",
        "-s16",
        "-k1M",
        "-j1",
        "--file-allocation=none",
        "--allow-overwrite=true",
        "--auto-file-renaming=false",
    ])
    .arg("-d")
    .arg(&dir)
    .arg("-i")
    .arg(&list);
    let dl = measure::run("aria2c", &mut c, &log)?;
    let parts: Vec<PathBuf> = ctx.img.stamp.parts.iter().map(|p| dir.join(p)).collect();
    let [un, cv, sy] = old_tail(ctx, gunzip, bash, &dir, &parts, &log)?;
    r.add("aria2_chain", measure::sum(&[dl, un, cv, sy]));
    if !ctx.keep {
        fs::remove_dir_all(&dir).ok();
    }
    Ok(())
}

/// One repetition of the pack round: `pack` and `tar c | pigz -c` on the
/// cached qcow2 (alternating who goes first), then our decoder on the
/// `pack`-made archive with every core and with one thread.
pub fn pack_round(ctx: &Ctx, r: &mut Round, i: usize, part_size: u64) -> Result<()> {
    let dir = ctx.runs.join(format!("pack-{i}"));
    fresh_dir(&dir)?;
    let log = dir.with_extension("log");
    new_log(&log)?;
    let qcow2 = ctx.img.qcow2();
    let ours_dir = dir.join("ours");
    let run_ours = |r: &mut Round| -> Result<()> {
        let mut c = Command::new(&ctx.exe);
        c.args(["resources", "pack"])
            .arg(&qcow2)
            .arg("--output")
            .arg(&ours_dir)
            .args(["--part-size", &part_size.to_string(), "--force"]);
        r.add(
            "pack_ours",
            measure::run("`xtask resources pack`", &mut c, &log)?,
        );
        Ok(())
    };
    let run_old = |r: &mut Round| -> Result<()> {
        let (Some(gunzip), Some(bash)) = (&ctx.tools.gunzip, &ctx.tools.bash) else {
            return Ok(());
        };
        let mut c = Command::new(bash);
        c.arg("-c")
            .arg(format!(
                "set -o pipefail; tar cf - -C \"$SRC\" temp/disk-image.qcow2 | {} -c > \"$OUT\"",
                gunzip.display()
            ))
            .env("SRC", &ctx.img.pack)
            .env("OUT", dir.join("old.tar.gz"));
        r.add("pack_old", measure::run("tar c | pigz -c", &mut c, &log)?);
        fs::remove_file(dir.join("old.tar.gz")).ok();
        Ok(())
    };
    if i.is_multiple_of(2) {
        run_ours(r)?;
        run_old(r)?;
    } else {
        run_old(r)?;
        run_ours(r)?;
    }
    let mut parts: Vec<PathBuf> = fs::read_dir(&ours_dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".tar.gz."))
        .collect();
    parts.sort();
    let par = decode(ctx, "decode pack archive", &parts, None, &log)?;
    r.add("decode_pack_par", par);
    let ser = decode(
        ctx,
        "decode pack archive, one thread",
        &parts,
        Some(0),
        &log,
    )?;
    r.add("decode_pack_serial", ser);
    if i == 0 {
        let size: u64 = parts
            .iter()
            .filter_map(|p| fs::metadata(p).ok())
            .map(|m| m.len())
            .sum();
        r.note(
            "pack_ours",
            &format!(
                "{} parts, {size} bytes (the pigz-made archive: {})",
                parts.len(),
                ctx.img.stamp.archive_bytes
            ),
        );
    }
    fs::remove_dir_all(&dir).ok();
    Ok(())
}
