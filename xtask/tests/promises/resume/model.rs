//! The install logic as a state machine, tested by model: seeded random
//! sequences of steps (a run of tag A or B, with or without `--force`, a
//! kill at a random point, a user's edit or `touch` of an installed file, a
//! server fault, links planted at working names, `verify`), with the
//! invariants checked after every step:
//!
//! - every final name holds A's content, B's content, or the user's own;
//! - a user's edit survives every step but `--force`;
//! - `verify` passes exactly when the manifest says a set is installed (and
//!   no installed file was edited since);
//! - no file outside the output directory changes;
//! - a clean run (no fault, no kill) succeeds exactly when no user's file is
//!   in the way, and then installs the set asked for.
//!
//! `cargo test` runs a few short sequences with a fixed seed. For more:
//! `VSWARM_MODEL_SEQUENCES=50 VSWARM_MODEL_STEPS=40 VSWARM_MODEL_SEED=7 cargo test -p xtask --test promises model`.

use crate::common::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use testkit::{
    fake_elf, make_qcow2, pack_disk, sha256_file_hex, sha256_hex, upstream_assets, AssetSpec,
    Compression, DigestMode, DiskFixture, Fault, ReleaseSpec, Server, TempDir, SCRUB_ENV,
};

const NAMES: [&str; 4] = ["kernel", "client", "disk-image.qcow2", "disk-image.img"];

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// xorshift64*: reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One release's expected content, per installed name.
struct Set {
    tag: &'static str,
    hashes: BTreeMap<&'static str, String>,
    spec: ReleaseSpec,
}

fn make_set(fx: &Path, tag: &'static str, data_mib: u64, digests: bool) -> Set {
    let dir = fx.join(tag);
    fs::create_dir_all(&dir).unwrap();
    let img = dir.join("src.qcow2");
    make_qcow2(&img, 24, data_mib).unwrap();
    let d: DiskFixture =
        pack_disk(&img, "focal", "amd64", 512 << 10, Compression::Gzip, &dir).unwrap();
    let raw = dir.join("raw.img");
    let st = Command::new("qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(&d.qcow2)
        .arg(&raw)
        .status()
        .unwrap();
    assert!(st.success());
    let mut assets = upstream_assets("focal", "amd64", &d);
    // Make each set's kernel and client its own.
    for a in assets.iter_mut().take(2) {
        if let testkit::Body::Bytes(b) = &a.body {
            let mut v = b.as_ref().clone();
            let mark = format!("{tag}-{}", a.name);
            v[4096 - 64..4096 - 64 + mark.len()].copy_from_slice(mark.as_bytes());
            a.body = testkit::Body::Bytes(std::sync::Arc::new(v));
        }
    }
    if !digests {
        for a in assets.iter_mut() {
            a.digest = DigestMode::Missing;
        }
    }
    let body = |a: &AssetSpec| match &a.body {
        testkit::Body::Bytes(b) => sha256_hex(b),
        testkit::Body::File(p) => sha256_file_hex(p).unwrap(),
    };
    let mut hashes = BTreeMap::new();
    hashes.insert("kernel", body(&assets[0]));
    hashes.insert("client", body(&assets[1]));
    hashes.insert("disk-image.qcow2", d.sha256_hex.clone());
    hashes.insert("disk-image.img", sha256_file_hex(&raw).unwrap());
    Set {
        tag,
        hashes,
        spec: ReleaseSpec::new(tag, assets),
    }
}

#[derive(Debug, Clone, Copy)]
enum Step {
    Run {
        set: usize,
        latest: bool,
        force: bool,
    },
    Kill {
        set: usize,
        delay_ms: u64,
    },
    Edit {
        name: usize,
    },
    Touch {
        name: usize,
    },
    /// The user does as the refusal says: moves their file away.
    MoveAway {
        name: usize,
    },
    Fault {
        set: usize,
        kind: u64,
    },
    Plant,
    Verify,
}

fn pick(rng: &mut Rng) -> Step {
    let set = rng.below(2) as usize;
    match rng.below(14) {
        12 | 13 => Step::MoveAway {
            name: rng.below(4) as usize,
        },
        0..=2 => Step::Run {
            set,
            latest: set == 1 && rng.below(2) == 0,
            force: false,
        },
        3 => Step::Run {
            set,
            latest: false,
            force: true,
        },
        4 | 5 => Step::Kill {
            set,
            delay_ms: rng.below(900),
        },
        6 | 7 => Step::Edit {
            name: rng.below(4) as usize,
        },
        8 => Step::Touch {
            name: rng.below(4) as usize,
        },
        9 | 10 => Step::Fault {
            set,
            kind: rng.below(4),
        },
        11 => Step::Plant,
        _ => Step::Verify,
    }
}

struct World {
    out: TempDir,
    neighbour: TempDir,
    server: Server,
    sets: Vec<Set>,
    /// The user's own content at a name, as the model knows it.
    user: BTreeMap<&'static str, String>,
    /// Names whose installed file the user moved away (until a run puts
    /// them back).
    removed: std::collections::BTreeSet<&'static str>,
    log: Vec<String>,
}

fn file_hash(p: &Path) -> Option<String> {
    fs::symlink_metadata(p)
        .ok()
        .filter(|m| m.file_type().is_file())?;
    sha256_file_hex(p).ok()
}

fn neighbour_state(dir: &Path) -> Vec<(String, Option<String>)> {
    let mut v: Vec<(String, Option<String>)> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                file_hash(&e.path()),
            )
        })
        .collect();
    v.sort();
    v
}

impl World {
    fn args(&self, set: usize, latest: bool, force: bool) -> Vec<String> {
        let mut a = vec![
            "resources".to_string(),
            "--output".into(),
            self.out.path().display().to_string(),
            "--github-api".into(),
            self.server.api_url(),
            "--version".into(),
            if latest {
                "latest".into()
            } else {
                self.sets[set].tag.to_string()
            },
        ];
        if force {
            a.push("--force".into());
        }
        a
    }

    fn run(&self, args: &[String]) -> Run {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        xtask(&refs, &[])
    }

    fn fail(&self, why: String) -> ! {
        panic!(
            "model invariant broken: {why}\nsteps so far:\n  {}",
            self.log.join("\n  ")
        )
    }

    /// The names whose user content is still expected (the model's view).
    fn live_edits(&self) -> Vec<&'static str> {
        self.user.keys().copied().collect()
    }

    fn manifest(&self) -> Option<serde_json::Value> {
        let text = fs::read_to_string(self.out.path().join("manifest.json")).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The manifest says a whole set is installed.
    fn says_installed(&self) -> Option<String> {
        let m = self.manifest()?;
        if m.get("pending").is_some_and(|p| !p.is_null()) {
            return None;
        }
        let files = m["files"].as_array()?;
        let listed = NAMES.iter().all(|n| files.iter().any(|f| f["name"] == *n));
        listed.then(|| m["tag"].as_str().unwrap_or("").to_string())
    }

    fn check(&mut self, neighbour_before: &[(String, Option<String>)]) {
        let out = self.out.path().to_path_buf();
        // 1 and 2: each name holds A's, B's or the user's content; the
        // user's content is still there.
        for name in NAMES {
            let have = file_hash(&out.join(name));
            if let Some(mine) = self.user.get(name) {
                if have.as_ref() != Some(mine) {
                    self.fail(format!("the user's {name} was replaced or removed"));
                }
                continue;
            }
            if let Some(h) = have {
                if !self.sets.iter().any(|s| s.hashes[name] == h) {
                    self.fail(format!("{name} holds content that is neither A's nor B's"));
                }
            }
        }
        // 3: verify passes exactly when the manifest says a set is installed
        // and nothing installed was edited since; and then every file is
        // that set's.
        let installed = self.says_installed();
        self.removed.retain(|n| !out.join(n).exists());
        if installed.is_some() {
            for n in NAMES {
                if !self.removed.contains(n) && !out.join(n).exists() {
                    self.fail(format!("the manifest says installed but {n} is gone"));
                }
            }
        }
        let v = self.run(&[
            "resources".into(),
            "verify".into(),
            "--output".into(),
            out.display().to_string(),
        ]);
        let expect = installed.is_some() && self.user.is_empty() && self.removed.is_empty();
        if (v.code == 0) != expect {
            self.fail(format!(
                "verify exited {} but the manifest says installed={installed:?} with user edits {:?}\n{}",
                v.code,
                self.live_edits(),
                v.all()
            ));
        }
        if let (Some(tag), true) = (&installed, expect) {
            let set = self.sets.iter().find(|s| s.tag == tag).unwrap();
            for name in NAMES {
                if file_hash(&out.join(name)).as_ref() != Some(&set.hashes[name]) {
                    self.fail(format!("the manifest says {tag} but {name} is not {tag}'s"));
                }
            }
        }
        // 4: nothing outside the output directory changed.
        if neighbour_state(self.neighbour.path()) != neighbour_before {
            self.fail("a file outside the output directory changed".into());
        }
    }

    fn step(&mut self, s: Step, rng: &mut Rng) {
        self.log.push(format!("{s:?}"));
        let out = self.out.path().to_path_buf();
        match s {
            Step::Run { set, latest, force } => {
                let r = self.run(&self.args(set, latest, force));
                let want = self.sets[set].tag;
                if force {
                    if r.code != 0 {
                        self.fail(format!("a clean --force run failed:\n{}", r.all()));
                    }
                    self.user.clear();
                } else if self.user.is_empty() {
                    // A raw image whose time changed while its qcow2 is gone
                    // cannot be told from one gem5 wrote to: refusing is right.
                    let unverifiable = r.stderr.contains("disk-image.img cannot be checked");
                    if r.code != 0 && !unverifiable {
                        self.fail(format!("a clean run failed:\n{}", r.all()));
                    }
                    if unverifiable {
                        return;
                    }
                } else if r.code == 0 {
                    self.fail(format!(
                        "a run succeeded with the user's {:?} in the way:\n{}",
                        self.live_edits(),
                        r.all()
                    ));
                } else {
                    for n in self.live_edits() {
                        if !r.stderr.contains(n) {
                            self.fail(format!("the refusal does not name {n}:\n{}", r.stderr));
                        }
                    }
                    return;
                }
                if self.says_installed().as_deref() != Some(want) {
                    self.fail(format!(
                        "after a clean run of {want} the manifest says otherwise"
                    ));
                }
            }
            Step::Kill { set, delay_ms } => {
                self.server.add_fault(Fault::RateCap {
                    bytes_per_sec: 2_000_000,
                });
                let args = self.args(set, false, rng.below(4) == 0);
                let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
                cmd.args(&args).stdout(Stdio::null()).stderr(Stdio::null());
                for k in SCRUB_ENV {
                    cmd.env_remove(k);
                }
                cmd.env("CI", "1").env("VSWARM_HTTP_TIMEOUT", "5");
                let mut child = cmd.spawn().unwrap();
                // Where the kill lands is the point: no state is awaited.
                std::thread::sleep(Duration::from_millis(delay_ms));
                let _ = child.kill();
                let _ = child.wait();
                self.server.clear_faults();
                if args.iter().any(|a| a == "--force") {
                    // A forced run may have replaced some of the user's files.
                    let gone: Vec<&str> = self
                        .user
                        .iter()
                        .filter(|(n, h)| file_hash(&out.join(n)).as_ref() != Some(*h))
                        .map(|(n, _)| *n)
                        .collect();
                    for n in gone {
                        self.user.remove(n);
                    }
                }
            }
            Step::Edit { name } => {
                let name = NAMES[name];
                let p = out.join(name);
                use std::os::unix::fs::FileExt;
                let f = fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&p)
                    .unwrap();
                let mark = format!("user edit {}", rng.next());
                f.write_all_at(mark.as_bytes(), 512 + rng.below(2048))
                    .unwrap();
                drop(f);
                self.user.insert(name, sha256_file_hex(&p).unwrap());
            }
            Step::MoveAway { name } => {
                let name = NAMES[name];
                self.user.remove(name);
                if fs::rename(out.join(name), self.neighbour.path().join("moved-away")).is_ok() {
                    let _ = fs::remove_file(self.neighbour.path().join("moved-away"));
                    self.removed.insert(name);
                }
            }
            Step::Touch { name } => {
                let p = out.join(NAMES[name]);
                if let Ok(f) = fs::File::options().write(true).open(&p) {
                    let t = std::time::SystemTime::now() + Duration::from_secs(rng.below(100) + 1);
                    f.set_modified(t).unwrap();
                }
            }
            Step::Fault { set, kind } => {
                let tag = self.sets[set].tag;
                let part = format!(
                    "disk-image-focal-amd64.qcow2.tar.gz.a{}",
                    ['a', 'b'][rng.below(2) as usize]
                );
                match kind {
                    0 => self.server.add_fault(Fault::Status {
                        asset: part,
                        status: 500,
                        times: 1,
                    }),
                    1 => self.server.add_fault(Fault::CutAfter {
                        asset: part,
                        bytes: 1000,
                        times: 1,
                    }),
                    2 => self.server.add_fault(Fault::Garbage {
                        asset: part,
                        times: 1,
                    }),
                    _ => {
                        // A release whose kernel is not an ELF at all.
                        let mut specs: Vec<ReleaseSpec> =
                            self.sets.iter().rev().map(|s| s.spec.clone()).collect();
                        let i = specs.iter().position(|s| s.tag == tag).unwrap();
                        specs[i].assets[0] =
                            AssetSpec::bytes("vmlinux-focal-amd64", vec![b'#'; 5000]);
                        self.server.set_releases(specs);
                    }
                }
                let r = self.run(&self.args(set, false, false));
                self.server.clear_faults();
                self.server
                    .set_releases(self.sets.iter().rev().map(|s| s.spec.clone()).collect());
                // The user's files are looked at before any fault can strike.
                if !self.user.is_empty() {
                    if r.code == 0 {
                        self.fail(format!(
                            "a run succeeded over the user's files:\n{}",
                            r.all()
                        ));
                    }
                    for n in self.live_edits() {
                        if !r.stderr.contains(n) {
                            self.fail(format!("the refusal does not name {n}:\n{}", r.stderr));
                        }
                    }
                }
            }
            Step::Plant => {
                let victim = self.neighbour.path().join("victim");
                let ghost = self.neighbour.path().join("ghost");
                let dl = out.join(".downloads");
                let _ = fs::create_dir_all(dl.join("v1"));
                let _ = fs::create_dir_all(dl.join("v2"));
                let spots = [
                    out.join(".manifest.json.partial"),
                    dl.join("v1/.vmlinux-focal-amd64.partial"),
                    dl.join("v2/.disk-image.img.partial"),
                    dl.join("v2/.disk-image.qcow2.partial"),
                    dl.join("v1/.disk-image-focal-amd64.qcow2.tar.gz.aa.partial"),
                    dl.join("last-tag"),
                ];
                let spot = &spots[rng.below(spots.len() as u64) as usize];
                let _ = fs::remove_file(spot);
                let _ = symlink(&victim, spot);
                let lock = dl.join(".lock");
                if !lock.exists() {
                    let _ = fs::remove_file(&lock);
                    let _ = symlink(&ghost, &lock);
                }
            }
            Step::Verify => {}
        }
    }
}

#[test]
fn install_state_machine_keeps_its_invariants() {
    if Command::new("qemu-img").arg("--version").output().is_err() {
        eprintln!("skipped: qemu-img is not installed");
        return;
    }
    let seed = env_num("VSWARM_MODEL_SEED", 1);
    let sequences = env_num("VSWARM_MODEL_SEQUENCES", 3);
    let steps = env_num("VSWARM_MODEL_STEPS", 10);
    let fx = TempDir::new("model-fx");
    // A keeps its digests; B has none, as upstream's older assets.
    let a = make_set(fx.path(), "v1", 2, true);
    let b = make_set(fx.path(), "v2", 3, false);
    let _ = fake_elf("amd64");
    let mut total = 0;
    for seq in 0..sequences {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (seq + 1));
        let server = Server::start(REPO, vec![b.spec.clone(), a.spec.clone()]);
        let neighbour = TempDir::new("model-neighbour");
        fs::write(neighbour.path().join("victim"), b"outside").unwrap();
        let mut w = World {
            out: TempDir::new("model-out"),
            neighbour,
            server,
            sets: vec![
                Set {
                    tag: a.tag,
                    hashes: a.hashes.clone(),
                    spec: a.spec.clone(),
                },
                Set {
                    tag: b.tag,
                    hashes: b.hashes.clone(),
                    spec: b.spec.clone(),
                },
            ],
            user: BTreeMap::new(),
            removed: Default::default(),
            log: vec![format!("seed {seed}, sequence {seq}")],
        };
        let before = neighbour_state(w.neighbour.path());
        for _ in 0..steps {
            let s = pick(&mut rng);
            w.step(s, &mut rng);
            w.check(&before);
            total += 1;
        }
    }
    eprintln!("model: {sequences} sequences, {total} steps, seed {seed}: invariants held");
    let _: PathBuf = fx.path().to_path_buf();
}
