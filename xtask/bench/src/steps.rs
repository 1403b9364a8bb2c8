//! The timed steps of one benchmark repetition: our pipeline (and its no-op
//! re-run), the old pipeline's stages, each tool's limit, and the converter
//! pair. Each adds its samples to a `Round`; output directories are removed
//! afterwards unless `--keep`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::image::Image;
use super::measure::{self, fresh_dir, new_log, Sample, Tools};
use super::report::Round;
use super::{REPO, TAG};

/// Everything a timed step needs.
pub struct Ctx<'a> {
    pub tools: &'a Tools,
    pub img: &'a Image,
    pub api: String,
    pub runs: PathBuf,
    pub exe: PathBuf,
    /// This benchmark binary, run again as `--decode` for the decoder rows.
    pub bench_exe: PathBuf,
    pub keep: bool,
    /// `--jobs` of our runs (the default unless a row says otherwise).
    pub jobs: usize,
}

pub fn asset_url(ctx: &Ctx, name: &str) -> String {
    format!("{}/{REPO}/releases/download/{TAG}/{name}", ctx.api)
}

/// All asset names in upstream's order: kernel, client, parts, sums.
pub fn asset_names(ctx: &Ctx) -> Vec<String> {
    ctx.img.assets().into_iter().map(|a| a.name).collect()
}

/// `xtask resources --output DIR` against the served release, with `extra`.
pub fn resources(ctx: &Ctx, dir: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(&ctx.exe);
    c.arg("resources")
        .arg("--output")
        .arg(dir)
        .args(["--github-api", &ctx.api, "--version", TAG])
        .args(extra);
    c
}

fn finish_dir(ctx: &Ctx, dir: &Path) -> Result<()> {
    if !ctx.keep {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    Ok(())
}

/// Our full pipeline into a fresh directory, then (if `rerun`) again as a no-op.
pub fn ours(ctx: &Ctx, r: &mut Round, i: usize, rerun: bool) -> Result<()> {
    let dir = ctx.runs.join(format!("{}-ours-{i}", slug(&r.name)));
    let jobs = ctx.jobs.to_string();
    fresh_dir(&dir)?;
    let log = dir.with_extension("log");
    new_log(&log)?;
    let cmd = || resources(ctx, &dir, &["--jobs", &jobs]);
    let s = measure::run("`xtask resources`", &mut cmd(), &log)?;
    r.add("ours", s);
    // The pipeline reports its two big phases itself; no RSS for those.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    for (key, marker) in [
        ("ours_fused", "unpacked and checked against"),
        // Only when the raw image could not be written in the same pass.
        ("ours_convert", ": converted in "),
    ] {
        if let Some(secs) = reported_secs(&text, marker) {
            r.add(
                key,
                Sample {
                    secs,
                    maxrss_kib: 0,
                },
            );
        }
    }
    if rerun {
        let s = measure::run("`xtask resources` (re-run)", &mut cmd(), &log)?;
        r.add("rerun", s);
    }
    finish_dir(ctx, &dir)
}

/// The `… in 1.2 s` figure of the last log line containing `marker`.
fn reported_secs(log: &str, marker: &str) -> Option<f64> {
    let line = log.lines().rev().find(|l| l.contains(marker))?;
    let rest = line.rsplit_once(" in ")?.1;
    rest.trim().strip_suffix('s')?.trim().parse().ok()
}

/// Upstream's steps with standard tools: sequential curl, cat | gunzip | tar,
/// qemu-img convert. Each stage is a row; their sum is `old_total`.
pub fn old(ctx: &Ctx, r: &mut Round, i: usize) -> Result<()> {
    let t = ctx.tools;
    let (Some(gunzip), Some(bash), Some(_)) = (&t.gunzip, &t.bash, &t.tar) else {
        return Ok(());
    };
    let dir = ctx.runs.join(format!("{}-old-{i}", slug(&r.name)));
    fresh_dir(&dir)?;
    let log = dir.with_extension("log");
    new_log(&log)?;
    let mut stages = Vec::new();

    let parts: Vec<PathBuf> = if let Some(curl) = &t.curl {
        let mut dl = Vec::new();
        for name in asset_names(ctx) {
            let mut c = Command::new(curl);
            c.args(["-sS", "-f", "-L", "-o"])
                .arg(dir.join(&name))
                .arg(asset_url(ctx, &name));
            dl.push(measure::run(&format!("curl {name}"), &mut c, &log)?);
        }
        let s = measure::sum(&dl);
        r.add("old_download", s);
        stages.push(s);
        ctx.img.stamp.parts.iter().map(|p| dir.join(p)).collect()
    } else {
        ctx.img.part_paths()
    };

    let [unpacked, converted, synced] = old_tail(ctx, gunzip, bash, &dir, &parts, &log)?;
    r.add("old_decompress", unpacked);
    r.add("old_convert", converted);
    r.add("old_sync", synced);
    stages.extend([unpacked, converted, synced]);

    r.add("old_total", measure::sum(&stages));
    finish_dir(ctx, &dir)
}

/// The old pipeline after the download: `cat parts | gunzip | tar x`,
/// `qemu-img convert -O raw`, `sync`, in `dir`.
pub fn old_tail(
    ctx: &Ctx,
    gunzip: &Path,
    bash: &Path,
    dir: &Path,
    parts: &[PathBuf],
    log: &Path,
) -> Result<[Sample; 3]> {
    let mut c = Command::new(bash);
    c.arg("-c")
        .arg(format!(
            "set -o pipefail; cat \"$@\" | {} -dc | tar xf - -C \"$DEST\"",
            gunzip.display()
        ))
        .arg("bash")
        .args(parts)
        .env("DEST", dir);
    let unpacked = measure::run("cat | gunzip | tar x", &mut c, log)?;
    let mut c = Command::new(&ctx.tools.qemu_img);
    c.args(["convert", "-O", "raw"])
        .arg(dir.join("temp/disk-image.qcow2"))
        .arg(dir.join("disk-image.img"));
    let converted = measure::run("qemu-img convert -O raw", &mut c, log)?;
    // Ours fsyncs what it installs; without this the old pipeline's time
    // would leave its last GiBs of writes still in the page cache.
    let mut c = Command::new("sync");
    c.arg(dir.join("temp/disk-image.qcow2"))
        .arg(dir.join("disk-image.img"));
    let synced = measure::run("sync", &mut c, log)?;
    Ok([unpacked, converted, synced])
}

/// Each tool alone on the cached files: what the stages could reach at best.
pub fn limits(ctx: &Ctx, r: &mut Round, i: usize) -> Result<()> {
    let t = ctx.tools;
    let log = ctx.runs.join(format!("limits-{i}.log"));
    new_log(&log)?;
    if let Some(curl) = &t.curl {
        let mut c = Command::new(curl);
        c.args(["-sS", "-f", "-L"]);
        for p in &ctx.img.stamp.parts {
            c.args(["-o", "/dev/null"]).arg(asset_url(ctx, p));
        }
        let s = measure::run("curl parts > /dev/null", &mut c, &log)?;
        r.add("limit_curl", s);
    }
    if let (Some(gunzip), Some(bash)) = (&t.gunzip, &t.bash) {
        let mut c = Command::new(bash);
        c.arg("-c")
            .arg(format!(
                "set -o pipefail; cat \"$@\" | {} -dc > /dev/null",
                gunzip.display()
            ))
            .arg("bash")
            .args(ctx.img.part_paths());
        let s = measure::run("cat parts | gunzip > /dev/null", &mut c, &log)?;
        r.add("limit_gunzip", s);
    }
    if let Some(sha) = &t.sha256sum {
        let mut c = Command::new(sha);
        c.arg(ctx.img.qcow2());
        let s = measure::run("sha256sum", &mut c, &log)?;
        r.add("limit_sha256", s);
    }
    Ok(())
}

/// Our converter vs qemu-img on the cached qcow2, alternating who goes first.
pub fn convert_pair(ctx: &Ctx, r: &mut Round, i: usize) -> Result<()> {
    let dir = ctx.runs.join(format!("convert-{i}"));
    fresh_dir(&dir)?;
    let log = dir.with_extension("log");
    new_log(&log)?;
    let qcow2 = ctx.img.qcow2();
    let run_ours = |r: &mut Round| -> Result<Sample> {
        let out = dir.join("ours.img");
        let mut c = Command::new(&ctx.exe);
        c.args(["resources", "convert"])
            .arg(&qcow2)
            .arg(&out)
            .arg("--output")
            .arg(&dir);
        let s = measure::run("`xtask resources convert`", &mut c, &log)?;
        r.add("convert_ours", s);
        std::fs::remove_file(&out).ok();
        Ok(s)
    };
    let run_qemu = |r: &mut Round| -> Result<Sample> {
        let out = dir.join("qemu.img");
        let mut c = Command::new(&ctx.tools.qemu_img);
        c.args(["convert", "-O", "raw"]).arg(&qcow2).arg(&out);
        let s = measure::run("qemu-img convert -O raw", &mut c, &log)?;
        r.add("convert_qemu", s);
        // Ours fsyncs its output before the rename; qemu-img leaves it in
        // the page cache. The sum is the like-for-like figure.
        let mut c = Command::new("sync");
        c.arg(&out);
        let synced = measure::run("sync", &mut c, &log)?;
        r.add("convert_qemu_sync", measure::sum(&[s, synced]));
        std::fs::remove_file(&out).ok();
        Ok(s)
    };
    if i.is_multiple_of(2) {
        run_qemu(r)?;
        run_ours(r)?;
    } else {
        run_ours(r)?;
        run_qemu(r)?;
    }
    finish_dir(ctx, &dir)
}

/// A round's name as a short directory prefix.
fn slug(name: &str) -> &'static str {
    if name.starts_with("capped") {
        "capped"
    } else {
        "plain"
    }
}
