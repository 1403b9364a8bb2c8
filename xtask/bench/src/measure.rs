//! Running one timed child: which external tools exist, spawning with a clean
//! environment and output to a log file, and reaping with `wait4` so the
//! child's peak RSS comes with its exit status (no `/usr/bin/time` needed).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use testkit::find_tool;

/// The external tools the benchmark uses; `None` = absent (rows skipped).
pub struct Tools {
    pub qemu_img: PathBuf,
    pub curl: Option<PathBuf>,
    /// `pigz` if present, else `gzip`.
    pub gunzip: Option<PathBuf>,
    pub gunzip_name: &'static str,
    pub sha256sum: Option<PathBuf>,
    pub tar: Option<PathBuf>,
    pub bash: Option<PathBuf>,
}

impl Tools {
    pub fn detect() -> Result<Tools> {
        let qemu_img = find_tool("qemu-img").context(
            "`qemu-img` not found in PATH: the benchmark builds its disk image and times the \
             old converter with it; install it (Debian/Ubuntu: `apt-get install qemu-utils`)",
        )?;
        let (gunzip, gunzip_name) = match find_tool("pigz") {
            Some(p) => (Some(p), "pigz"),
            None => (find_tool("gzip"), "gzip"),
        };
        Ok(Tools {
            qemu_img,
            curl: find_tool("curl"),
            gunzip,
            gunzip_name,
            sha256sum: find_tool("sha256sum"),
            tar: find_tool("tar"),
            bash: find_tool("bash"),
        })
    }
}

/// One timed run.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    pub secs: f64,
    /// Peak resident set of the child, or of the largest process in its tree
    /// that it waited for (Linux folds reaped descendants into the figure).
    pub maxrss_kib: u64,
}

/// Runs `cmd` to completion with stdin closed and stdout+stderr appended to
/// `log`; fails naming `what` and the log when it exits non-zero.
pub fn run(what: &str, cmd: &mut Command, log: &Path) -> Result<Sample> {
    // What the caller set (a download cache, say) stays; the rest goes.
    let set: Vec<std::ffi::OsString> = cmd
        .get_envs()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k.to_os_string())
        .collect();
    for k in testkit::SCRUB_ENV {
        if !set.iter().any(|s| s == k) {
            cmd.env_remove(k);
        }
    }
    // Plain progress lines rather than bars in the logs.
    cmd.env("CI", "1");
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open the log {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("start {what} ({:?})", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let (status, usage) = wait4(pid).with_context(|| format!("wait for {what}"))?;
    let secs = started.elapsed().as_secs_f64();
    // `child` is already reaped; dropping it does not wait again.
    drop(child);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let how = if libc::WIFEXITED(status) {
            format!("exit code {}", libc::WEXITSTATUS(status))
        } else {
            format!("signal {}", libc::WTERMSIG(status))
        };
        bail!(
            "{what} failed ({how}); its output is in {}:\n{}",
            log.display(),
            tail(log, 15)
        );
    }
    Ok(Sample {
        secs,
        // Linux reports ru_maxrss in KiB.
        maxrss_kib: usage.ru_maxrss.max(0) as u64,
    })
}

fn wait4(pid: libc::pid_t) -> std::io::Result<(libc::c_int, libc::rusage)> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; all-zero is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: pid is our own unreaped child; both pointers are valid.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            return Ok((status, usage));
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The last `n` lines of a log, for error messages.
fn tail(log: &Path, n: usize) -> String {
    let text = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Median of the samples' times, and the peak RSS over all of them.
pub fn summarize(samples: &[Sample]) -> (f64, u64) {
    let mut t: Vec<f64> = samples.iter().map(|s| s.secs).collect();
    t.sort_by(|a, b| a.total_cmp(b));
    let median = match t.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => t[n / 2],
        n => (t[n / 2 - 1] + t[n / 2]) / 2.0,
    };
    let rss = samples.iter().map(|s| s.maxrss_kib).max().unwrap_or(0);
    (median, rss)
}

/// Adds sample times stage by stage (for "old pipeline total"); RSS is the max.
pub fn sum(parts: &[Sample]) -> Sample {
    Sample {
        secs: parts.iter().map(|s| s.secs).sum(),
        maxrss_kib: parts.iter().map(|s| s.maxrss_kib).max().unwrap_or(0),
    }
}

/// A fresh empty directory (removing what an earlier run left).
pub fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

/// Creates an empty log file (truncating an old one).
pub fn new_log(path: &Path) -> Result<()> {
    File::create(path).with_context(|| format!("create {}", path.display()))?;
    Ok(())
}
