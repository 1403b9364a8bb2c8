//! `upload` publishes exactly the set asked for to the release asked for,
//! and sends the token and the bytes only where it checked: the round trip
//! pack → upload → resources, interrupted and repeated uploads, drafts,
//! other content under a name, release ids and `--as`, and the refusals.

use crate::common::*;
use crate::fixtures::{
    artifact_set, file_names, files, held_names, image, pack, qemu_raw, shown, upload,
    upload_refused, visible, GZ, SUMS, TOKEN,
};
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use testkit::{fake_elf, Fault, ReleaseSpec, Server, TempDir};

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

fn names(v: &[(String, String, Vec<u8>)]) -> Vec<String> {
    let mut n: Vec<String> = v.iter().map(|(n, _, _)| n.clone()).collect();
    n.sort();
    n
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

/// The id the fake GitHub gave release `tag`.
fn id_of(server: &Server, tag: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(&server.release_json(tag).unwrap()).unwrap();
    v["id"].as_u64().unwrap().to_string()
}

// ---- refusals ----

fn upload_with(server: &Server, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let api = server.api_url();
    let mut all = vec!["resources", "upload", "--github-api", api.as_str()];
    all.extend_from_slice(args);
    let mut env = vec![("GH_TOKEN", TOKEN)];
    env.extend_from_slice(envs);
    xtask(&all, &env)
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
fn release_id_is_a_positive_number_from_the_flag_or_else_the_environment() {
    let t = TempDir::new("wf-id");
    let f = t.path().join("a.bin");
    fs::write(&f, b"bytes").unwrap();
    let f = f.to_str().unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    for (args, env, names) in [
        (vec![f], vec![("RELEASE_ID", "abc")], "RELEASE_ID"),
        (vec![f], vec![("RELEASE_ID", "0")], "RELEASE_ID"),
        (vec![f], vec![("RELEASE_ID", "-5")], "RELEASE_ID"),
        (vec!["--release-id", "12a", f], vec![], "--release-id"),
        (vec!["--release-id", "0", f], vec![], "--release-id"),
    ] {
        let run = upload_with(&server, &args, &env);
        assert_eq!(run.code, 2, "{args:?} {env:?}: {}", run.stderr);
        assert!(run.stderr.contains(names), "{}", run.stderr);
    }
    assert_eq!(server.request_count(), 0, "a usage error sends nothing");

    // An empty RELEASE_ID counts as unset; --release-id wins over the variable.
    let id = id_of(&server, "v1");
    upload_with(&server, &["--version", "v1", f], &[("RELEASE_ID", "")]).ok();
    let run = upload_with(&server, &["--release-id", &id, f], &[("RELEASE_ID", "777")]);
    run.ok();
    assert!(run.stdout.contains("1 already there"), "{}", run.stdout);
    assert_eq!(held_names(&server, "v1"), ["a.bin"]);
}

#[test]
fn an_unknown_release_id_is_named_with_the_repo_and_nothing_is_sent() {
    let t = TempDir::new("wf-id404");
    let f = t.path().join("a.bin");
    fs::write(&f, b"bytes").unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    let run = upload_with(&server, &[f.to_str().unwrap()], &[("RELEASE_ID", "987654")]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    for needle in ["987654", REPO, "check RELEASE_ID"] {
        assert!(run.stderr.contains(needle), "{needle}: {}", run.stderr);
    }
    assert!(server.assets_of("v1").is_empty());
    assert!(!server.requests().iter().any(|r| r.method == "POST"));
}

#[test]
fn an_id_and_a_tag_must_name_one_release_and_create_takes_no_id() {
    let t = TempDir::new("wf-idtag");
    let f = t.path().join("a.bin");
    fs::write(&f, b"bytes").unwrap();
    let f = f.to_str().unwrap();
    let server = Server::start(
        REPO,
        vec![
            ReleaseSpec::new("v2", vec![]),
            ReleaseSpec::new("v1", vec![]),
        ],
    );
    let id2 = id_of(&server, "v2");
    let run = upload_with(&server, &["--version", "v1", f], &[("RELEASE_ID", &id2)]);
    run.failed();
    assert!(
        run.stderr.contains("not --version v1") && run.stderr.contains("v2"),
        "{}",
        run.stderr
    );
    assert!(server.assets_of("v1").is_empty() && server.assets_of("v2").is_empty());
    // The same release by both: fine.
    upload_with(&server, &["--version", "v2", "--release-id", &id2, f], &[]).ok();
    assert_eq!(held_names(&server, "v2"), ["a.bin"]);

    let run = upload_with(
        &server,
        &["--create", "--version", "v3", f],
        &[("RELEASE_ID", &id2)],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--create") && run.stderr.contains("RELEASE_ID"));
    let run = upload_with(&server, &[f], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--release-id"), "{}", run.stderr);
}

#[test]
fn as_renames_exactly_one_file_to_a_name_github_keeps() {
    let t = TempDir::new("wf-as");
    // A file whose own name GitHub would mangle: --as is what it is sent as.
    let k = t.path().join("my kernel");
    fs::write(&k, fake_elf("amd64")).unwrap();
    let k = k.to_str().unwrap();
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    let run = upload_with(&server, &["--version", "v1", k, k, "--as", "x"], &[]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("exactly one FILE"), "{}", run.stderr);
    for bad in [
        "../x", "a b", ".hidden", "x.", "k#label", "a..b", "d/x", "é",
    ] {
        let run = upload_with(&server, &["--version", "v1", k, "--as", bad], &[]);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("--as"), "{bad}: {}", run.stderr);
    }
    assert_eq!(server.request_count(), 0);

    let args = ["--version", "v1", k, "--as", "vmlinux-focal-amd64"];
    upload_with(&server, &args, &[]).ok();
    let held = server.assets_of("v1");
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].0, "vmlinux-focal-amd64");
    assert_eq!(held[0].2, fake_elf("amd64"));
    // Again: the asset NAME holds these bytes already.
    let run = upload_with(&server, &args, &[]);
    run.ok();
    assert!(run.stdout.contains("1 already there"), "{}", run.stdout);
    // Other bytes under that NAME: refused unless --clobber.
    let other = t.path().join("other");
    fs::write(&other, b"other kernel").unwrap();
    let args = [
        "--version",
        "v1",
        other.to_str().unwrap(),
        "--as",
        "vmlinux-focal-amd64",
    ];
    let run = upload_with(&server, &args, &[]);
    run.failed();
    assert!(run.stderr.contains("--clobber"), "{}", run.stderr);
}

#[test]
fn a_part_renamed_with_as_is_sent_only_as_itself_from_a_whole_set() {
    let t = TempDir::new("wf-as-set");
    let server = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![])]);
    let send = |file: &Path, name: &str| {
        let args = ["--version", "v1", file.to_str().unwrap(), "--as", name];
        upload_with(&server, &args, &[])
    };
    let gz = "disk-image-focal-amd64.qcow2.tar.gz";
    let whole = t.path().join("whole");
    artifact_set(&whole, &["aa", "ab"], true);
    send(
        &whole.join("disk-image.qcow2.tar.gz.ab"),
        &format!("{gz}.ab"),
    )
    .ok();
    send(
        &whole.join("disk-image.qcow2.sums"),
        "disk-image-focal-amd64.qcow2.sums",
    )
    .ok();

    // Another member's name: refused, whole set or not.
    let run = send(
        &whole.join("disk-image.qcow2.tar.gz.ab"),
        &format!("{gz}.aa"),
    );
    run.failed();
    assert!(run.stderr.contains(".tar.gz.aa"), "{}", run.stderr);
    let notes = whole.join("notes.txt");
    fs::write(&notes, b"notes").unwrap();
    let run = send(&notes, "disk-image-focal-amd64.qcow2.sums");
    run.failed();
    assert!(run.stderr.contains(".sums"), "{}", run.stderr);

    // A set without its sums, or with a gap: refused, naming what is missing.
    let nosums = t.path().join("nosums");
    artifact_set(&nosums, &["aa", "ab"], false);
    let run = send(
        &nosums.join("disk-image.qcow2.tar.gz.aa"),
        &format!("{gz}.aa"),
    );
    run.failed();
    assert!(
        run.stderr.contains("disk-image.qcow2.sums"),
        "{}",
        run.stderr
    );
    let gap = t.path().join("gap");
    artifact_set(&gap, &["aa", "ac"], true);
    let run = send(&gap.join("disk-image.qcow2.tar.gz.aa"), &format!("{gz}.aa"));
    run.failed();
    assert!(
        run.stderr.contains("disk-image.qcow2.tar.gz.ab"),
        "{}",
        run.stderr
    );

    assert_eq!(
        held_names(&server, "v1"),
        [
            "disk-image-focal-amd64.qcow2.sums".to_string(),
            format!("{gz}.ab")
        ]
    );
}
