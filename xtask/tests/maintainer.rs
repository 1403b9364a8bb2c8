//! The maintainer side (issue 12): `pack` a qemu-made image, `upload` it to
//! the loopback GitHub, get it back with `resources`; interrupted and
//! repeated uploads; old readers (gzip, pigz, xz, zstd, tar, sha256sum) on
//! what `pack` writes; `decompress --from`; and the refusals of each.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use testkit::{fake_elf, make_qcow2, Fault, ReleaseSpec, Server, TempDir};

const TOKEN: &str = "ghp_testtoken0123456789";
const GZ: &str = "disk-image-focal-amd64.qcow2.tar.gz";
const SUMS: &str = "disk-image-focal-amd64.qcow2.sums";

/// A qemu-made image with patterns, random bytes, zeros and a hole.
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

/// Kernel and client ELF files beside the image, for `--kernel`/`--client`.
fn elves(dir: &Path) -> (PathBuf, PathBuf) {
    let k = dir.join("vmlinux");
    let c = dir.join("client");
    fs::write(&k, fake_elf("amd64")).unwrap();
    let mut client = fake_elf("amd64");
    client.extend_from_slice(b"client");
    fs::write(&c, client).unwrap();
    (k, c)
}

fn upload(server: &Server, tag: &str, files: &[PathBuf], extra: &[&str]) -> Run {
    let mut args = vec![
        "resources".to_string(),
        "upload".into(),
        "--version".into(),
        tag.into(),
        "--github-api".into(),
        server.api_url(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(files.iter().map(|f| f.to_str().unwrap().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    xtask(&args, &[("GH_TOKEN", TOKEN)])
}

/// The files in `dir`, sorted, as paths.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

fn names(v: &[(String, String, Vec<u8>)]) -> Vec<String> {
    let mut n: Vec<String> = v.iter().map(|(n, _, _)| n.clone()).collect();
    n.sort();
    n
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    let mut n: Vec<String> = paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

fn qemu_raw(img: &Path, out: &Path) -> Vec<u8> {
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "qcow2", "-O", "raw"])
        .arg(img)
        .arg(out)
        .status()
        .unwrap();
    assert!(st.success());
    fs::read(out).unwrap()
}

#[test]
fn round_trip_pack_upload_resources_gives_the_same_images() {
    let t = TempDir::new("mt-round");
    let img = image(t.path());
    let (k, c) = elves(t.path());
    let assets = t.path().join("assets");
    pack(
        &img,
        &assets,
        &[
            "--part-size",
            "1M",
            "--kernel",
            k.to_str().unwrap(),
            "--client",
            c.to_str().unwrap(),
        ],
    )
    .ok();
    let made = files(&assets);
    assert!(
        made.iter()
            .any(|p| p.to_string_lossy().ends_with(&format!("{GZ}.ab"))),
        "more than one part: {made:?}"
    );

    let server = Server::start(REPO, vec![]);
    let run = upload(&server, "v9.0", &made, &["--create"]);
    run.ok();
    assert!(
        run.stdout.contains(&format!("{} uploaded", made.len())),
        "{}",
        run.stdout
    );
    let held = server.assets_of("v9.0");
    assert_eq!(names(&held), file_names(&made));
    for (name, state, bytes) in &held {
        assert_eq!(state, "uploaded");
        assert_eq!(bytes, &fs::read(assets.join(name)).unwrap(), "{name}");
    }
    assert_eq!(server.is_draft("v9.0"), Some(false));
    // The token went to the API and the uploads host, never to storage.
    for r in server.requests() {
        if r.host == "assets" {
            assert!(r.header("authorization").is_none(), "{r:?}");
        }
    }

    let out = t.path().join("resources");
    resources(None, &out, &server.api_url(), &["--version", "v9.0"], &[]).ok();
    assert_eq!(
        fs::read(out.join("disk-image.qcow2")).unwrap(),
        fs::read(&img).unwrap(),
        "qcow2 byte-identical"
    );
    let want_raw = qemu_raw(&img, &t.path().join("qemu.raw"));
    assert_eq!(fs::read(out.join("disk-image.img")).unwrap(), want_raw);
    assert_eq!(fs::read(out.join("kernel")).unwrap(), fs::read(&k).unwrap());
    assert_eq!(fs::read(out.join("client")).unwrap(), fs::read(&c).unwrap());
}

#[test]
fn interrupted_upload_completes_on_rerun_without_duplicates() {
    let t = TempDir::new("mt-cut");
    let img = image(t.path());
    let assets = t.path().join("assets");
    pack(&img, &assets, &["--part-size", "1M"]).ok();
    let made = files(&assets);
    let server = Server::start(REPO, vec![ReleaseSpec::new("v2", vec![])]);

    // Every try of the first asset is cut: the run gives up, and says how to go on.
    server.add_fault(Fault::UploadCut {
        after_bytes: 4096,
        times: 3,
    });
    let run = upload(&server, "v2", &made, &[]);
    run.failed();
    assert!(
        run.stderr.contains("run the same command again"),
        "{}",
        run.stderr
    );
    let left = server.assets_of("v2");
    assert!(left.iter().all(|(_, s, _)| s == "starter"), "{left:?}");

    // One cut and one 502 along the way: retried inside the run.
    server.add_fault(Fault::UploadStatus {
        status: 502,
        times: 1,
    });
    let run = upload(&server, "v2", &made, &[]);
    run.ok();
    let held = server.assets_of("v2");
    assert_eq!(names(&held), file_names(&made), "one asset per file");
    for (name, state, bytes) in &held {
        assert_eq!(state, "uploaded", "{name}");
        assert_eq!(bytes, &fs::read(assets.join(name)).unwrap(), "{name}");
    }

    // A third run sends nothing.
    let before = server
        .requests()
        .iter()
        .filter(|r| r.host == "uploads")
        .count();
    let run = upload(&server, "v2", &made, &[]);
    run.ok();
    assert!(run.stdout.contains("0 uploaded"), "{}", run.stdout);
    let after = server
        .requests()
        .iter()
        .filter(|r| r.host == "uploads")
        .count();
    assert_eq!(before, after);
}

#[test]
fn other_content_under_the_same_name_needs_clobber() {
    let t = TempDir::new("mt-clobber");
    let f = t.path().join("notes.txt");
    fs::write(&f, b"first").unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v3", vec![])]);
    upload(&server, "v3", std::slice::from_ref(&f), &[]).ok();

    fs::write(&f, b"second, longer").unwrap();
    let run = upload(&server, "v3", std::slice::from_ref(&f), &[]);
    run.failed();
    assert!(
        run.stderr.contains("notes.txt") && run.stderr.contains("--clobber"),
        "{}",
        run.stderr
    );
    assert_eq!(server.assets_of("v3")[0].2, b"first");

    upload(&server, "v3", std::slice::from_ref(&f), &["--clobber"]).ok();
    let held = server.assets_of("v3");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].2, b"second, longer");
}

#[test]
fn upload_refusals_say_what_to_do() {
    let t = TempDir::new("mt-refuse");
    let f = t.path().join("a.bin");
    fs::write(&f, b"x").unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v4", vec![])]);
    let api = server.api_url();

    // No token.
    let run = xtask(
        &[
            "resources",
            "upload",
            "--version",
            "v4",
            "--github-api",
            &api,
            f.to_str().unwrap(),
        ],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("GH_TOKEN"), "{}", run.stderr);

    // No release for the tag, no --create.
    let run = upload(&server, "v5", std::slice::from_ref(&f), &[]);
    run.failed();
    assert!(run.stderr.contains("--create"), "{}", run.stderr);

    // A token that may not write.
    server.add_fault(Fault::ApiStatus {
        status: 403,
        times: 1,
    });
    let run = upload(&server, "v4", std::slice::from_ref(&f), &[]);
    run.failed();
    assert!(run.stderr.contains("contents: write"), "{}", run.stderr);
    assert!(!run.all().contains(TOKEN), "token printed");

    // A name GitHub would change.
    let odd = t.path().join("a b.bin");
    fs::write(&odd, b"x").unwrap();
    let run = upload(&server, "v4", std::slice::from_ref(&odd), &[]);
    run.failed();
    assert!(run.stderr.contains("rename"), "{}", run.stderr);

    // Usage: no --version, or --draft without --create.
    let run = xtask(&["resources", "upload", f.to_str().unwrap()], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    let run = upload(&server, "v4", std::slice::from_ref(&f), &["--draft"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(server.assets_of("v4").is_empty());
}

#[test]
fn upload_url_on_a_foreign_host_gets_no_token() {
    let t = TempDir::new("mt-foreign");
    let f = t.path().join("a.bin");
    fs::write(&f, b"x").unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v6", vec![])]);
    let mut v: serde_json::Value =
        serde_json::from_str(&server.release_json("v6").unwrap()).unwrap();
    v["upload_url"] = "http://example.invalid/repos/x/y/releases/1/assets{?name,label}".into();
    server.set_release_json("v6", &v.to_string());
    let run = upload(&server, "v6", std::slice::from_ref(&f), &[]);
    run.failed();
    assert!(
        run.stderr.contains("refusing to send the token"),
        "{}",
        run.stderr
    );
}

#[test]
fn drafts_are_created_and_found_again() {
    let t = TempDir::new("mt-draft");
    let f = t.path().join("a.bin");
    fs::write(&f, b"draft asset").unwrap();
    let server = Server::start(REPO, vec![]);
    upload(
        &server,
        "v7",
        std::slice::from_ref(&f),
        &["--create", "--draft"],
    )
    .ok();
    assert_eq!(server.is_draft("v7"), Some(true));
    // The tag route hides drafts; the second run finds it in the list.
    let run = upload(&server, "v7", std::slice::from_ref(&f), &[]);
    run.ok();
    assert!(run.stdout.contains("1 already there"), "{}", run.stdout);
    assert_eq!(server.assets_of("v7").len(), 1);
}

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
fn an_upload_in_progress_elsewhere_is_not_deleted() {
    let t = TempDir::new("mt-open");
    let f = t.path().join("a.bin");
    fs::write(&f, b"ours").unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v8", vec![])]);
    let mut v: serde_json::Value =
        serde_json::from_str(&server.release_json("v8").unwrap()).unwrap();
    v["assets"] = serde_json::json!([{"id": 4242, "name": "a.bin", "size": 99, "state": "open",
        "digest": null, "browser_download_url": "http://127.0.0.1:9/a.bin"}]);
    server.set_release_json("v8", &v.to_string());
    let run = upload(&server, "v8", std::slice::from_ref(&f), &[]);
    run.failed();
    assert!(
        run.stderr.contains("state open") && run.stderr.contains("--clobber"),
        "{}",
        run.stderr
    );
    assert!(!server.requests().iter().any(|r| r.method == "DELETE"));
    // With --clobber it is replaced; the asset the JSON named is gone already
    // (the fake never held it), which counts as deleted.
    upload(&server, "v8", std::slice::from_ref(&f), &["--clobber"]).ok();
    assert_eq!(server.assets_of("v8").len(), 1);
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
