//! The third hostile review's maintainer-side findings (issue 15), one test
//! per promise: the upload URL is parsed once and sent to as checked, a file
//! that changed while it was sent does not stay published, a set `pack` was
//! killed in the middle of is never uploaded, a 32-bit ELF is no amd64
//! kernel, `decompress --from` gives advice that fits it, and `--part-size`
//! is read as `split -b` reads it.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use common::*;
use testkit::{
    fake_elf, make_qcow2, pack_disk, upstream_assets, Compression, Fault, ReleaseSpec, Server,
    TempDir,
};

const TOKEN: &str = "ghp_review3token0123456789";
const GZ: &str = "disk-image-focal-amd64.qcow2.tar.gz";
const SUMS: &str = "disk-image-focal-amd64.qcow2.sums";

/// A qemu-made image with data in it, in `dir`.
fn image(dir: &Path) -> PathBuf {
    let img = dir.join("src.qcow2");
    make_qcow2(&img, 32, 4).unwrap();
    img
}

/// `pack IMG` into `out` with `extra` flags.
fn pack(img: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "resources",
        "pack",
        img.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    xtask(&args, &[])
}

/// `fake_elf(arch)` made 32-bit (ELFCLASS32), the machine field unchanged:
/// what an x32 build looks like to a check of the machine alone.
fn elf32(arch: &str) -> Vec<u8> {
    let mut e = fake_elf(arch);
    e[4] = 1;
    e
}

/// `fake_elf(arch)` made big-endian, the machine field still reading right.
fn elf_big_endian(arch: &str) -> Vec<u8> {
    let mut e = fake_elf(arch);
    e[5] = 2;
    e.swap(18, 19);
    e
}

#[test]
fn a_32_bit_or_big_endian_elf_is_no_amd64_kernel_for_pack() {
    let t = TempDir::new("r3-elf-pack");
    let img = image(t.path());
    let out = t.path().join("out");
    for (what, bytes, says) in [
        ("32-bit", elf32("amd64"), "32-bit"),
        ("big-endian", elf_big_endian("amd64"), "big-endian"),
    ] {
        let k = t.path().join(format!("vmlinux-{what}"));
        fs::write(&k, bytes).unwrap();
        let run = pack(&img, &out, &["--kernel", k.to_str().unwrap()]);
        run.failed();
        assert!(
            run.stderr.contains(says) && run.stderr.contains(k.to_str().unwrap()),
            "{what}: {}",
            run.stderr
        );
        assert!(
            !out.exists() || files_in(&out).is_empty(),
            "{what}: wrote something"
        );
        let c = t.path().join(format!("client-{what}"));
        fs::copy(&k, &c).unwrap();
        pack(&img, &out, &["--client", c.to_str().unwrap()]).failed();
    }
    // The 64-bit little-endian build still passes.
    let k = t.path().join("vmlinux");
    fs::write(&k, fake_elf("amd64")).unwrap();
    pack(&img, &out, &["--kernel", k.to_str().unwrap()]).ok();
}

#[test]
fn a_32_bit_elf_is_no_amd64_kernel_for_verify_or_install() {
    let t = TempDir::new("r3-elf-verify");
    let fx = t.path().join("fx");
    fs::create_dir_all(&fx).unwrap();
    let img = image(&fx);
    let disk = pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, &fx).unwrap();
    let good = ReleaseSpec::new("v1", upstream_assets("focal", "amd64", &disk));
    let mut bad = ReleaseSpec::new("v2", upstream_assets("focal", "amd64", &disk));
    bad.assets[0] = testkit::AssetSpec::bytes("vmlinux-focal-amd64", elf32("amd64"));
    let server = Server::start(REPO, vec![bad, good]);
    let api = server.api_url();
    let out = t.path().join("res");
    resources(None, &out, &api, &["--version", "v1"], &[]).ok();

    // A release whose kernel is 32-bit is not installed.
    let before = snapshot(&out);
    let run = resources(None, &out, &api, &["--version", "v2"], &[]);
    run.failed();
    assert!(run.stderr.contains("32-bit"), "{}", run.stderr);
    assert!(snapshot(&out) == before, "the installed set changed");

    // verify: the same size, so only the ELF check can tell.
    let kernel = out.join("kernel");
    let pristine = fs::read(&kernel).unwrap();
    fs::write(&kernel, elf32("amd64")).unwrap();
    let run = resources(Some("verify"), &out, &api, &[], &[]);
    run.failed();
    assert!(run.all().contains("32-bit"), "{}", run.all());
    fs::write(&kernel, &pristine).unwrap();
    resources(Some("verify"), &out, &api, &[], &[]).ok();
}

#[test]
fn part_size_takes_what_split_takes_and_refuses_the_rest() {
    let t = TempDir::new("r3-part-size");
    let img = image(t.path());
    let out = t.path().join("out");
    // `split -b 1Mb` is an error, not 1,000,000 bytes; so is ours.
    for bad in ["1Mb", "1mb", "1Kb", "1g", "0", "3 "] {
        let run = pack(&img, &out, &["--part-size", bad]);
        assert_eq!(run.code, 2, "{bad}: {}", run.all());
        assert!(run.stderr.contains("--part-size"), "{bad}: {}", run.stderr);
        assert!(!out.exists() || files_in(&out).is_empty());
    }
    // What split takes gives the part size split would cut.
    for (good, size) in [("1MB", 1_000_000u64), ("1MiB", 1 << 20), ("M", 1 << 20)] {
        pack(&img, &out, &["--part-size", good, "--force"]).ok();
        let first = fs::metadata(out.join(format!("{GZ}.aa"))).unwrap().len();
        assert_eq!(first, size, "{good}");
    }
}

/// `upload --version TAG FILES… EXTRA…` with a token.
fn upload(server: &Server, tag: &str, files: &[PathBuf], extra: &[&str]) -> Run {
    let api = server.api_url();
    let mut args = vec![
        "resources",
        "upload",
        "--version",
        tag,
        "--github-api",
        &api,
    ];
    args.extend_from_slice(extra);
    let files: Vec<&str> = files.iter().map(|f| f.to_str().unwrap()).collect();
    args.extend(files);
    xtask(&args, &[("GH_TOKEN", TOKEN)])
}

/// A listener on another loopback host that counts the connections and
/// bytes it gets until `stop` sends it the word STOP.
struct Bystander {
    addr: std::net::SocketAddr,
    thread: JoinHandle<(usize, usize)>,
}

impl Bystander {
    fn start(ip: &str) -> Bystander {
        let l = TcpListener::bind(format!("{ip}:0")).expect("bind a second loopback host");
        let addr = l.local_addr().unwrap();
        let thread = std::thread::spawn(move || {
            let (mut conns, mut bytes) = (0, 0);
            for s in l.incoming() {
                let mut s = s.unwrap();
                let mut buf = vec![0u8; 1 << 16];
                let n = s.read(&mut buf).unwrap_or(0);
                if &buf[..n] == b"STOP" {
                    break;
                }
                conns += 1;
                bytes += n;
                // Dropped unanswered: the client sees a cut connection.
            }
            (conns, bytes)
        });
        Bystander { addr, thread }
    }

    /// (connections, bytes) it received.
    fn stop(self) -> (usize, usize) {
        TcpStream::connect(self.addr)
            .unwrap()
            .write_all(b"STOP")
            .unwrap();
        self.thread.join().unwrap()
    }
}

#[test]
fn upload_never_sends_a_body_to_a_host_the_check_did_not_see() {
    let t = TempDir::new("r3-upload-url");
    let f = t.path().join("secret-draft.bin");
    fs::write(&f, vec![0x5a; 200_000]).unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    let other = Bystander::start("127.0.0.3");
    let json = server.release_json("v1").unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let good = v["upload_url"].as_str().unwrap().to_string();
    let path = good.strip_prefix(&server.api_url()).unwrap();
    let api_host = server
        .api_url()
        .strip_prefix("http://")
        .unwrap()
        .to_string();
    // Each reads as the API's host to one parser and as another to the next.
    let hostile = [
        format!("http://{}{{@{api_host}{path}", other.addr),
        format!("http://{}@{api_host}{path}", other.addr),
        format!(
            "http://{api_host}{}",
            path.replace("{?name,label}", "#{?name,label}")
        ),
        format!(
            "http://{api_host}{}",
            path.replace("/assets{", "/{x}/assets{")
        ),
        format!("http://{api_host}{}", path.replace("{?name,label}", "")),
        format!(
            "http://{api_host}{}",
            path.replace("{?name,label}", "{?name,label}/x")
        ),
        format!("http://{api_host}/a b{path}"),
    ];
    for url in &hostile {
        v["upload_url"] = url.as_str().into();
        server.set_release_json("v1", &v.to_string());
        let run = upload(&server, "v1", std::slice::from_ref(&f), &[]);
        run.failed();
        assert!(run.stderr.contains("upload_url"), "{url}: {}", run.stderr);
        assert!(!run.all().contains(TOKEN));
    }
    let (conns, bytes) = other.stop();
    assert_eq!((conns, bytes), (0, 0), "the other host was sent to");
    assert!(
        !server.requests().iter().any(|r| r.host == "uploads"),
        "a body went to the uploads route"
    );
    // GitHub's own form still works, and the asset lands under its name.
    v["upload_url"] = good.as_str().into();
    server.set_release_json("v1", &v.to_string());
    upload(&server, "v1", std::slice::from_ref(&f), &[]).ok();
    let held = server.assets_of("v1");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, "secret-draft.bin");
}

#[test]
fn a_file_changed_while_uploaded_is_taken_down_and_a_plain_rerun_sends_it() {
    let t = TempDir::new("r3-changed");
    let f = t.path().join("disk.bin");
    // Larger than the socket buffers: the client is still sending when held.
    let first = noise(8 << 20, 1);
    fs::write(&f, &first).unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    server.add_fault(Fault::UploadHold {
        after_bytes: 1 << 20,
        times: 1,
    });
    let run = std::thread::scope(|s| {
        let sending = s.spawn(|| upload(&server, "v1", std::slice::from_ref(&f), &[]));
        assert!(
            server.wait_upload_held(std::time::Duration::from_secs(60)),
            "the upload never reached the server"
        );
        // The same length, other bytes from 4 MiB on: a torn upload.
        let file = fs::OpenOptions::new().write(true).open(&f).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&file, &noise(1 << 20, 2), 4 << 20).unwrap();
        drop(file);
        server.release_uploads();
        sending.join().unwrap()
    });
    run.failed();
    // The server did take a whole body: only the tool could have removed it.
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.host == "uploads" && r.status == 201),
        "the held upload did not complete"
    );
    assert!(server.assets_of("v1").is_empty(), "the torn asset stayed");
    assert!(
        run.stderr.contains("changed while it was uploaded")
            && run.stderr.contains(f.to_str().unwrap())
            && run.stderr.contains("deleted"),
        "{}",
        run.stderr
    );
    // The file is stable now: the plain re-run sends it, no --clobber.
    let run = upload(&server, "v1", std::slice::from_ref(&f), &[]);
    run.ok();
    let held = server.assets_of("v1");
    assert_eq!(held.len(), 1);
    assert_eq!(
        (held[0].1.as_str(), &held[0].2),
        ("uploaded", &fs::read(&f).unwrap())
    );
}

/// The names `DIR/*` expands to: the regular files not hidden.
fn shown(dir: &Path) -> Vec<String> {
    files_in(dir)
        .into_iter()
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// The files `upload DIR/*` would be given.
fn visible(dir: &Path) -> Vec<PathBuf> {
    shown(dir).into_iter().map(|n| dir.join(n)).collect()
}

/// `upload` of `files` is refused before anything is sent, saying `says`.
fn upload_refused(server: &Server, files: &[PathBuf], says: &[&str]) {
    let run = upload(server, "v1", files, &[]);
    run.failed();
    for s in says {
        assert!(
            run.stderr.contains(s),
            "{files:?}: no {s:?} in {}",
            run.stderr
        );
    }
    assert!(
        !server.requests().iter().any(|r| r.host == "uploads"),
        "{files:?}: something was sent"
    );
    assert!(server.assets_of("v1").is_empty());
}

#[test]
fn upload_refuses_a_disk_set_without_its_sums_or_with_a_part_missing() {
    let t = TempDir::new("r3-set");
    let img = image(t.path());
    let set = t.path().join("set");
    pack(&img, &set, &["--part-size", "512K"]).ok();
    let parts: Vec<String> = shown(&set).into_iter().filter(|n| n != SUMS).collect();
    assert!(parts.len() >= 3, "{parts:?}");
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    let hide = |name: &str| fs::rename(set.join(name), set.join(format!(".{name}.partial")));
    let show = |name: &str| fs::rename(set.join(format!(".{name}.partial")), set.join(name));

    // What a kill in the middle of renaming leaves: a part under its final
    // name, the rest and the sums still hidden.
    hide(SUMS).unwrap();
    for p in &parts[1..] {
        hide(p).unwrap();
    }
    upload_refused(&server, &visible(&set), &[SUMS, "pack"]);
    // Every part, but no sums yet.
    for p in &parts[1..] {
        show(p).unwrap();
    }
    upload_refused(&server, &visible(&set), &[SUMS, "pack"]);
    upload_refused(&server, &[set.join(&parts[0])], &[SUMS]);
    // The reverse: the sums, and a gap in the parts.
    show(SUMS).unwrap();
    hide(&parts[1]).unwrap();
    upload_refused(&server, &visible(&set), &[&parts[1], "pack"]);
    upload_refused(&server, &[set.join(SUMS)], &[&parts[1]]);
    show(&parts[1]).unwrap();

    // The whole set goes up.
    upload(&server, "v1", &visible(&set), &[]).ok();
    assert_eq!(server.assets_of("v1").len(), parts.len() + 1);
}

/// Runs `pack` under strace, killed (SIGKILL) on entering the `k`-th call
/// of `syscall`: what that call would have done is not done.
fn pack_killed_at(img: &Path, out: &Path, extra: &[&str], syscall: &str, k: usize) {
    let mut cmd = std::process::Command::new("strace");
    cmd.args(["-f", "-qq", "-o", "/dev/null", "-e"])
        .arg(format!("inject={syscall}:signal=KILL:when={k}"))
        .arg(env!("CARGO_BIN_EXE_xtask"))
        .args(["resources", "pack", img.to_str().unwrap(), "--output"])
        .arg(out)
        .args(extra);
    for v in testkit::SCRUB_ENV {
        cmd.env_remove(v);
    }
    let st = cmd.env("CI", "1").output().unwrap().status;
    assert!(!st.success(), "pack was not killed at {syscall} #{k}");
}

/// Whether strace can kill a child at a system call here.
fn have_strace_inject() -> bool {
    std::process::Command::new("strace")
        .args([
            "-qq",
            "-o",
            "/dev/null",
            "-e",
            "inject=renameat2:error=ENOENT",
            "true",
        ])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The state a killed `pack` left in `dir` keeps the promise: a visible
/// `…aa` has exactly its set's parts beside it, sums only stand beside a
/// whole set, and `upload DIR/*` publishes nothing of an unfinished one.
fn check_killed_state(dir: &Path, sets: &[&[String]], server: &Server, when: &str) {
    let seen = shown(dir);
    let parts: Vec<String> = seen.iter().filter(|n| *n != SUMS).cloned().collect();
    let whole = |set: &&[String]| parts == **set;
    if parts.contains(&format!("{GZ}.aa")) {
        assert!(sets.iter().any(whole), "{when}: …aa beside {parts:?}");
    }
    if seen.iter().any(|n| n == SUMS) {
        assert!(sets.iter().any(whole), "{when}: sums beside {parts:?}");
        return;
    }
    if !seen.is_empty() {
        upload_refused(server, &visible(dir), &[SUMS]);
    }
}

#[test]
fn pack_killed_at_any_point_of_its_commit_leaves_nothing_upload_publishes() {
    if !have_strace_inject() {
        eprintln!("skipped: strace cannot inject a signal here");
        return;
    }
    let t = TempDir::new("r3-kill");
    let img = image(t.path());
    let names_of =
        |dir: &Path| -> Vec<String> { files_in(dir).into_iter().filter(|n| n != SUMS).collect() };
    // The two sets, made whole once, for their names.
    let (small, large) = (t.path().join("small"), t.path().join("large"));
    pack(&img, &small, &["--part-size", "256K"]).ok();
    pack(&img, &large, &["--part-size", "512K"]).ok();
    let (old, new) = (names_of(&small), names_of(&large));
    assert!(old.len() > new.len() && new.len() >= 3, "{old:?} {new:?}");
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);

    // Into an empty directory: one renameat2 (no replace) per part, then the sums.
    for k in 1..=new.len() + 1 {
        let out = t.path().join(format!("fresh{k}"));
        pack_killed_at(&img, &out, &["--part-size", "512K"], "renameat2", k);
        check_killed_state(&out, &[&new], &server, &format!("fresh, rename {k}"));
    }
    // Replacing the smaller-part set: unlinks of the old, then renames.
    let replace = ["--part-size", "512K", "--force"];
    for (syscall, calls) in [("unlink", old.len() + 1), ("rename", new.len() + 1)] {
        for k in 1..=calls {
            let out = t.path().join(format!("{syscall}{k}"));
            pack(&img, &out, &["--part-size", "256K"]).ok();
            pack_killed_at(&img, &out, &replace, syscall, k);
            let when = format!("replacing, {syscall} {k}");
            check_killed_state(&out, &[&old, &new], &server, &when);
        }
    }
    // And a plain pack afterwards makes the set whole.
    let out = t.path().join("fresh1");
    pack(&img, &out, &["--part-size", "512K", "--force"]).ok();
    assert_eq!(names_of(&out), new);
}

#[test]
fn decompress_from_advice_fits_a_directory_not_a_release() {
    let t = TempDir::new("r3-from");
    let img = image(t.path());
    let set = t.path().join("set");
    pack(&img, &set, &["--part-size", "512K"]).ok();
    let good = fs::read_to_string(set.join(SUMS)).unwrap();
    let other_sha = "ab".repeat(32);
    let cases = [
        ("damaged", "not a checksum line\n".to_string()),
        ("no entry", format!("{other_sha}  temp/other.img\n")),
        (
            "two entries",
            format!("{good}{other_sha}  temp/disk-image.qcow2\n"),
        ),
        (
            "other digest",
            format!("{other_sha}  temp/disk-image.qcow2\n"),
        ),
    ];
    for (what, text) in cases {
        fs::write(set.join(SUMS), text).unwrap();
        let out = t.path().join(format!("out-{}", what.replace(' ', "-")));
        let from = ["--from", set.to_str().unwrap()];
        let run = resources(Some("decompress"), &out, "http://127.0.0.1:9", &from, &[]);
        run.failed();
        let e = &run.stderr;
        assert!(!e.contains("--version"), "{what}: {e}");
        assert!(!e.contains("delete the downloads"), "{what}: {e}");
        assert!(
            e.contains("`pack`") && e.contains("artifact"),
            "{what}: {e}"
        );
        assert!(e.contains(set.to_str().unwrap()), "{what}: {e}");
        assert!(!out.join("disk-image.qcow2").exists(), "{what}");
    }
    fs::write(set.join(SUMS), good).unwrap();
    let out = t.path().join("out-good");
    let from = ["--from", set.to_str().unwrap()];
    resources(Some("decompress"), &out, "http://127.0.0.1:9", &from, &[]).ok();
}
