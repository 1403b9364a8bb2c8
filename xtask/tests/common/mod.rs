//! Shared by the integration tests: run the real `xtask` binary against a
//! loopback GitHub from `testkit`, with a clean environment.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

use testkit::{fake_elf, AssetSpec, ReleaseSpec};

pub const REPO: &str = "vhive-serverless/vSwarm-u";

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Run {
        assert_eq!(
            self.code, 0,
            "expected success\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn failed(&self) -> &Run {
        assert_ne!(
            self.code, 0,
            "expected failure\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Where a run into `out` against `api` keeps release `tag`'s assets: its
/// entry in the test's download cache.
pub fn cache_entry(out: &Path, api: &str, tag: &str) -> std::path::PathBuf {
    testkit::cache_dir_for(out)
        .join(github::cache::site_of(api))
        .join(REPO)
        .join(tag)
}

/// Whether `tool` is on PATH; says so where it is not (tests that need it
/// say they are skipped).
pub fn have(tool: &str) -> bool {
    let ok = testkit::find_tool(tool).is_some();
    if !ok {
        eprintln!("{tool} not found on PATH; skipping what needs it");
    }
    ok
}

/// Whether `qemu-img` and `qemu-io` are on PATH; says the test is skipped
/// where they are not.
pub fn have_qemu() -> bool {
    let ok = have("qemu-img") && have("qemu-io");
    if !ok {
        eprintln!("skipped: qemu-img/qemu-io not installed (apt-get install qemu-utils)");
    }
    ok
}

/// Polls (bounded) until `cond` holds; panics with `what` otherwise.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Every regular file in `dir` and its bytes, sorted by name.
pub fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

/// Runs `xtask ARGS` with a clean environment plus `envs`.
pub fn xtask(args: &[&str], envs: &[(&str, &str)]) -> Run {
    output(command(args, envs))
}

/// Starts `xtask ARGS` in the background with the environment of [`xtask`]
/// (its download cache beside the output), output discarded.
pub fn spawn(args: &[&str]) -> std::process::Child {
    spawn_with(args, &[])
}

/// [`spawn`] with `envs` added (e.g. another `VSWARM_CACHE_DIR`).
pub fn spawn_with(args: &[&str], envs: &[(&str, &str)]) -> std::process::Child {
    use std::process::Stdio;
    command(args, envs)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start xtask")
}

/// [`xtask`], killed (and the test failed) if it takes longer than `limit`:
/// for runs that could hang (a FIFO read as a file).
pub fn xtask_within(args: &[&str], envs: &[(&str, &str)], limit: std::time::Duration) -> Run {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = command(args, envs)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start xtask");
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            String::from_utf8_lossy(&v).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    let end = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for xtask") {
            break st;
        }
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("xtask {args:?} did not finish within {limit:?}; killed");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Like [`xtask`], but every write past `limit` bytes of a file fails with
/// EFBIG, as writes to a full disk fail with ENOSPC.
pub fn xtask_with_file_limit(args: &[&str], limit: u64) -> Run {
    use std::os::unix::process::CommandExt;
    let mut cmd = command(args, &[]);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            // Without this the kernel kills the process instead of failing the write.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    output(cmd)
}

fn command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.args(args);
    for k in testkit::SCRUB_ENV {
        cmd.env_remove(k);
    }
    // Plain progress lines, and a short read timeout so stall tests are quick.
    cmd.env("CI", "1").env("VSWARM_HTTP_TIMEOUT", "2");
    if let Some(out) = output_arg(args) {
        cmd.env("VSWARM_CACHE_DIR", testkit::cache_dir_for(&out));
    }
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd
}

/// The `--output`/`-o` value among `args`.
fn output_arg(args: &[&str]) -> Option<std::path::PathBuf> {
    let i = args.iter().position(|a| *a == "--output" || *a == "-o")?;
    args.get(i + 1).map(std::path::PathBuf::from)
}

fn output(mut cmd: Command) -> Run {
    let out = cmd.output().expect("run xtask");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `resources STEP --output DIR --github-api URL EXTRA…`, without the
/// flags STEP does not take.
pub fn resources(
    step: Option<&str>,
    out: &Path,
    api: &str,
    extra: &[&str],
    envs: &[(&str, &str)],
) -> Run {
    let mut args = vec!["resources"];
    if let Some(s) = step {
        args.push(s);
    }
    let out = out.to_str().unwrap().to_string();
    // Only what the step takes: a step refuses the flags of others.
    if takes(step, "--output") {
        args.extend(["--output", &out]);
    }
    // `decompress --from` reads no release: it refuses where one comes from.
    if takes(step, "--github-api") && !extra.contains(&"--from") {
        args.extend(["--github-api", api]);
    }
    args.extend_from_slice(extra);
    xtask(&args, envs)
}

/// Whether `step` (None: the full run) takes the flag `long`: its
/// `--help` lists it (each step's help is asked for once).
pub fn takes(step: Option<&str>, long: &str) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static FLAGS: Mutex<Option<HashMap<Option<String>, Vec<String>>>> = Mutex::new(None);
    let mut flags = FLAGS.lock().unwrap();
    let listed = flags
        .get_or_insert_with(HashMap::new)
        .entry(step.map(String::from))
        .or_insert_with(|| {
            let mut args = vec!["resources"];
            args.extend(step);
            args.push("--help");
            let run = xtask(&args, &[]);
            run.ok();
            let (_, section) = run.stdout.split_once("\nFLAGS").expect("a FLAGS section");
            section
                .lines()
                .skip(1)
                .take_while(|l| l.starts_with("    "))
                .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
                .map(String::from)
                .collect()
        });
    listed.iter().any(|f| f == long)
}

/// Deterministic bytes that do not compress to nothing.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407)
        | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A release with the upstream names whose disk "parts" are plain bytes: for
/// tests of the download step, which does not look inside them.
pub fn bytes_release(tag: &str, os: &str, arch: &str, parts: &[usize]) -> ReleaseSpec {
    let mut assets = vec![
        AssetSpec::bytes(&format!("vmlinux-{os}-{arch}"), fake_elf(arch)),
        AssetSpec::bytes(&format!("test-client-{arch}"), fake_elf(arch)),
    ];
    for (i, len) in parts.iter().enumerate() {
        let suffix = format!("a{}", (b'a' + i as u8) as char);
        assets.push(AssetSpec::bytes(
            &format!("disk-image-{os}-{arch}.qcow2.tar.gz.{suffix}"),
            noise(*len, i as u64 + 1),
        ));
    }
    assets.push(AssetSpec::bytes(
        &format!("disk-image-{os}-{arch}.qcow2.sums"),
        format!("{}  temp/disk-image.qcow2\n", "0".repeat(64)).into_bytes(),
    ));
    ReleaseSpec::new(tag, assets)
}

/// Files (not directories) directly in `dir`, sorted.
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A tmpfs mounted at a directory, unmounted on drop.
pub struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs with `opts` (`size=1m`) at `dir`, made if missing; None
/// (the test says it is skipped) where mounting is refused (not root, no
/// CAP_SYS_ADMIN).
pub fn tmpfs(dir: &Path, opts: &str) -> Option<Mounted> {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
        .arg(dir)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(Mounted(dir.to_path_buf())),
        _ => {
            eprintln!("skipped: cannot mount a tmpfs at {} here", dir.display());
            None
        }
    }
}
