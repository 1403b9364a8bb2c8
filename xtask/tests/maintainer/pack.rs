//! What `pack` writes is what upstream's readers and our own read back: old
//! readers (gzip, pigz, xz, zstd, tar, sha256sum) on its output, the kernel
//! and client checks, `--part-size` read as `split -b` reads it, a killed or
//! refused `pack` leaves nothing `upload` publishes and keeps an existing
//! set, and `decompress --from` joins only a set of parts, with advice that fits.

use crate::common::*;
use crate::fixtures::{
    artifact_set, file_names, files, image, pack, shown, upload_refused, visible, GZ, SUMS,
};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use testkit::{fake_elf, pack_disk, upstream_assets, Compression, ReleaseSpec, Server, TempDir};

/// Extracts `cat parts | DECODER | tar x` in `dir` and runs `sha256sum -c`.
fn old_reader(dir: &Path, archive: &str, decoder: &str) {
    let script =
        format!("set -e; cat {archive}.* | {decoder} | tar x; sha256sum -c {SUMS}; rm -r temp");
    let out = Command::new("sh")
        .arg("-c")
        .arg(&script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("temp/disk-image.qcow2: OK"));
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

/// `decompress --from FROM` into a fresh output; it must fail.
fn from_fails(t: &TempDir, from: &Path, what: &str) -> String {
    let out = t.path().join(format!("out-{what}"));
    let args = ["--from", from.to_str().unwrap()];
    let run = resources(Some("decompress"), &out, "http://127.0.0.1:9", &args, &[]);
    run.failed();
    assert!(!out.join("disk-image.qcow2").exists(), "{what}");
    run.stderr.clone()
}

#[test]
fn old_readers_read_what_pack_writes() {
    let t = TempDir::new("mt-old");
    let img = image(t.path());
    let gz = t.path().join("gz");
    pack(&img, &gz, &["--part-size", "700K"]).ok();
    old_reader(&gz, GZ, "gzip -dc");
    if have("pigz") {
        old_reader(&gz, GZ, "pigz -dc");
    } else {
        eprintln!("pigz not installed: its reading is not checked");
    }
    // Python's tarfile over gzip, as a Python downloader reads it.
    if have("python3") {
        let script = format!(
            "set -e; cat {GZ}.* > whole.tgz; python3 -c \"import tarfile; \
             tarfile.open('whole.tgz', 'r:gz').extractall('.')\"; sha256sum -c {SUMS}; \
             rm -r temp whole.tgz"
        );
        let st = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(&gz)
            .status()
            .unwrap();
        assert!(st.success(), "{script}");
    }
    let xz = t.path().join("xz");
    pack(&img, &xz, &["--compression", "xz", "--level", "1"]).ok();
    old_reader(&xz, "disk-image-focal-amd64.qcow2.tar.xz", "xz -dc");
    if have("zstd") {
        let zst = t.path().join("zst");
        pack(&img, &zst, &["--compression", "zst"]).ok();
        old_reader(&zst, "disk-image-focal-amd64.qcow2.tar.zst", "zstd -dc");
    }
    // The sums line is upstream's: hex, two spaces, the member.
    let line = fs::read_to_string(gz.join(SUMS)).unwrap();
    let sha = testkit::sha256_file_hex(&img).unwrap();
    assert_eq!(line, format!("{sha}  temp/disk-image.qcow2\n"));
}

#[test]
fn pack_refuses_bad_input_and_keeps_an_existing_set() {
    let t = TempDir::new("mt-pack");
    let img = image(t.path());
    let out = t.path().join("out");

    // Not a qcow2: named, nothing written.
    let junk = t.path().join("junk.qcow2");
    fs::write(&junk, vec![0x42; 10_000]).unwrap();
    let run = pack(&junk, &out, &[]);
    run.failed();
    assert!(
        run.stderr.contains("junk.qcow2") && run.stderr.contains("not a qcow2"),
        "{}",
        run.stderr
    );
    assert!(!out.exists() || files(&out).is_empty());

    // A truncated qcow2: its tables point outside the file.
    let cut = t.path().join("cut.qcow2");
    let bytes = fs::read(&img).unwrap();
    fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();
    let run = pack(&cut, &out, &[]);
    run.failed();
    assert!(run.stderr.contains("cut.qcow2"), "{}", run.stderr);
    assert!(!out.exists() || files(&out).is_empty());

    // Tables QEMU would refuse to open (refcount table, snapshot table).
    for (at, value) in [(56usize, &[0xff; 4][..]), (60, &[0xff; 4][..])] {
        let odd = t.path().join(format!("odd{at}.qcow2"));
        let mut b = fs::read(&img).unwrap();
        b[at..at + 4].copy_from_slice(value);
        fs::write(&odd, &b).unwrap();
        let run = pack(&odd, &out, &[]);
        run.failed();
        assert!(
            run.stderr.contains("QEMU would not open it"),
            "{}",
            run.stderr
        );
    }

    // A kernel of the wrong architecture.
    let arm = t.path().join("vmlinux-arm");
    fs::write(&arm, fake_elf("arm64")).unwrap();
    let run = pack(&img, &out, &["--kernel", arm.to_str().unwrap()]);
    run.failed();
    assert!(run.stderr.contains("wrong architecture"), "{}", run.stderr);

    // Usage errors exit 2.
    for bad in [
        &["--part-size", "2G"][..],
        &["--part-size", "12Q"],
        &["--compression", "bz2"],
        &["--compression", "xz", "--level", "10"],
    ] {
        assert_eq!(pack(&img, &out, bad).code, 2, "{bad:?}");
    }

    // An existing set is kept without --force...
    pack(&img, &out, &["--part-size", "1M"]).ok();
    let first: Vec<(PathBuf, Vec<u8>)> = files(&out)
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let run = pack(&img, &out, &["--compression", "zst"]);
    run.failed();
    assert!(run.stderr.contains("--force"), "{}", run.stderr);
    for (p, b) in &first {
        assert_eq!(&fs::read(p).unwrap(), b);
    }
    assert_eq!(files(&out).len(), first.len());

    // ...and replaced whole with it: no gzip part is left beside the zstd one.
    pack(&img, &out, &["--compression", "zst", "--force"]).ok();
    let now = file_names(&files(&out));
    assert_eq!(
        now,
        vec![
            SUMS.to_string(),
            "disk-image-focal-amd64.qcow2.tar.zst.aa".to_string()
        ]
    );
    // No temporary is left behind anywhere.
    assert!(fs::read_dir(&out)
        .unwrap()
        .flatten()
        .all(|e| !e.file_name().to_string_lossy().starts_with('.')));
}

#[test]
fn pack_force_removes_only_the_old_set_and_checks_first() {
    let t = TempDir::new("mt-force");
    let img = image(t.path());
    let out = t.path().join("out");
    pack(&img, &out, &["--part-size", "1M"]).ok();
    // The user's own files that merely share the prefix stay.
    let mine = [
        format!("{GZ}.backup"),
        "disk-image-focal-amd64.qcow2.tarball-notes.txt".to_string(),
    ];
    for m in &mine {
        fs::write(out.join(m), b"mine").unwrap();
    }
    pack(&img, &out, &["--force", "--part-size", "2M"]).ok();
    for m in &mine {
        assert_eq!(fs::read(out.join(m)).unwrap(), b"mine", "{m}");
    }

    // DISK inside the set being replaced: refused, nothing removed.
    let inside = out.join(format!("{GZ}.ab"));
    fs::copy(&img, &inside).unwrap();
    let before = file_names(&files(&out));
    let run = pack(&inside, &out, &["--force"]);
    run.failed();
    assert!(run.stderr.contains("move it elsewhere"), "{}", run.stderr);
    assert_eq!(file_names(&files(&out)), before);
    fs::remove_file(&inside).unwrap();

    // Something in the old set that cannot be removed: refused before any
    // file is touched, so the old set stays whole.
    let blocker = out.join(format!("{GZ}.zaaa"));
    fs::create_dir(&blocker).unwrap();
    let snapshot: Vec<(PathBuf, Vec<u8>)> = files(&out)
        .into_iter()
        .map(|p| (p.clone(), fs::read(&p).unwrap()))
        .collect();
    let run = pack(&img, &out, &["--force", "--compression", "zst"]);
    run.failed();
    assert!(run.stderr.contains("is a directory"), "{}", run.stderr);
    for (p, b) in &snapshot {
        assert_eq!(&fs::read(p).unwrap(), b, "{}", p.display());
    }
    assert_eq!(files(&out).len(), snapshot.len());
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

#[test]
fn decompress_from_a_directory_of_parts() {
    let t = TempDir::new("mt-from");
    let img = image(t.path());
    let parts = t.path().join("parts");
    pack(&img, &parts, &["--part-size", "1M"]).ok();
    let out = t.path().join("res");
    let from = ["--from", parts.to_str().unwrap()];

    resources(Some("decompress"), &out, "http://127.0.0.1:9", &from, &[]).ok();
    assert_eq!(
        fs::read(out.join("disk-image.qcow2")).unwrap(),
        fs::read(&img).unwrap()
    );
    // Again: nothing to do.
    let run = resources(Some("decompress"), &out, "http://127.0.0.1:9", &from, &[]);
    run.ok();
    assert!(run.stdout.contains("already holds"), "{}", run.stdout);

    // A damaged part: refused, and nothing is left under the final name.
    let out2 = t.path().join("res2");
    let part = parts.join(format!("{GZ}.ab"));
    let mut b = fs::read(&part).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    fs::write(&part, &b).unwrap();
    let run = resources(Some("decompress"), &out2, "http://127.0.0.1:9", &from, &[]);
    run.failed();
    assert!(!out2.join("disk-image.qcow2").exists());

    // No sums: said.
    fs::remove_file(parts.join(SUMS)).unwrap();
    let run = resources(Some("decompress"), &out2, "http://127.0.0.1:9", &from, &[]);
    run.failed();
    assert!(run.stderr.contains(SUMS), "{}", run.stderr);
}

#[test]
fn decompress_from_never_joins_an_installed_set() {
    let t = TempDir::new("mt-from-set");
    let img = image(t.path());
    let parts = t.path().join("parts");
    pack(&img, &parts, &[]).ok();
    let out = t.path().join("res");
    fs::create_dir_all(&out).unwrap();
    let manifest = r#"{"format":1,"repo":"o/r","tag":"v1","arch":"amd64","os":"focal","installed_at":"2024-01-01T00:00:00Z","files":[{"name":"kernel","size":1,"sha256":null,"modified_ns":0,"sources":[]}]}"#;
    fs::write(out.join("manifest.json"), manifest).unwrap();
    for extra in [&[][..], &["--force"]] {
        let mut args = vec!["--from", parts.to_str().unwrap()];
        args.extend_from_slice(extra);
        let run = resources(Some("decompress"), &out, "http://127.0.0.1:9", &args, &[]);
        run.failed();
        assert!(run.stderr.contains("another --output"), "{}", run.stderr);
        assert!(!out.join("disk-image.qcow2").exists());
    }
    assert_eq!(
        fs::read_to_string(out.join("manifest.json")).unwrap(),
        manifest
    );
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

#[test]
fn decompress_from_a_prefix_names_the_prefix_and_what_it_looked_for() {
    let t = TempDir::new("wf-prefix");
    let empty = t.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let prefix = empty.join("disk-image.qcow2");
    let e = from_fails(&t, &prefix, "none");
    let shown = prefix.to_str().unwrap();
    assert!(e.contains(shown) && e.contains("looked for"), "{e}");
    assert!(e.contains("disk-image.qcow2.tar.gz.aa") && e.contains("disk-image.qcow2.sums"));

    let nosums = t.path().join("nosums");
    artifact_set(&nosums, &["aa", "ab"], false);
    let prefix = nosums.join("disk-image.qcow2");
    let e = from_fails(&t, &prefix, "nosums");
    assert!(e.contains(prefix.to_str().unwrap()), "{e}");
    assert!(e.contains("holds no disk-image.qcow2.sums"), "{e}");

    let gap = t.path().join("gap");
    artifact_set(&gap, &["aa", "ab", "ac"], true);
    fs::remove_file(gap.join("disk-image.qcow2.tar.gz.ab")).unwrap();
    let e = from_fails(&t, &gap.join("disk-image.qcow2"), "gap");
    assert!(e.contains("disk-image.qcow2.tar.gz.ab is missing"), "{e}");

    let e = from_fails(&t, &t.path().join("nowhere/disk-image.qcow2"), "nodir");
    assert!(e.contains("is not a directory"), "{e}");

    // A directory of two un-renamed sets: which one is not guessed.
    let two = t.path().join("two");
    artifact_set(&two, &["aa"], true);
    fs::write(two.join("disk.qcow2.tar.gz.aa"), b"x").unwrap();
    fs::write(two.join("disk.qcow2.sums"), b"x").unwrap();
    let e = from_fails(&t, &two, "two");
    assert!(
        e.contains("disk-image.qcow2, disk.qcow2") && e.contains("prefix"),
        "{e}"
    );
}
