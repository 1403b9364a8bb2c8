//! A hostile server, mirror or manifest cannot make the tool write outside
//! its directory, run unbounded, hang, or show or send the token elsewhere:
//! `file:` URLs and redirect loops, hostile names, members and sizes,
//! escaped server text, TLS and proxies, bounded retries and timeouts.

use crate::common::*;
use crate::fixtures::{asset_requests, entries, small_release};
use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use testkit::{fake_elf, AssetSpec, Fault, ReleaseSpec, Server, TempDir};

/// The release JSON the server serves for `tag`, as a value to edit.
fn json_of(server: &Server, tag: &str) -> serde_json::Value {
    serde_json::from_str(&server.release_json(tag).unwrap()).unwrap()
}

fn set_json(server: &Server, tag: &str, v: &serde_json::Value) {
    server.set_release_json(tag, &v.to_string());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let t = e.file_type().unwrap();
        if t.is_dir() {
            out.extend(walk(&e.path()));
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    out
}

fn tar_gz(members: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, kind, data, link) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // Raw name bytes: the builder would refuse `..` and absolute paths.
        let raw = &mut h.as_old_mut().name;
        raw[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap()
}

fn fs2_free(dir: &Path) -> u64 {
    util::fs::available_space(dir).unwrap()
}

fn paths_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(paths_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A looping release list.

fn many_releases() -> Vec<ReleaseSpec> {
    (1..=3)
        .rev()
        .map(|i| bytes_release(&format!("v{i}"), "focal", "amd64", &[100]))
        .collect()
}

const TOKEN: &str = "ghp_net_test_token_0123456789";

fn assert_no_token(run: &Run) {
    assert!(
        !run.all().contains(TOKEN),
        "the token was printed:\n{}",
        run.all()
    );
}

/// The server's CA written to `dir/ca.pem`.
fn ca_file(server: &Server, dir: &Path) -> std::path::PathBuf {
    let path = dir.join("ca.pem");
    fs::write(&path, server.ca_pem().expect("an HTTPS server")).unwrap();
    path
}

/// The subject hash OpenSSL names a CA file by in a hashed directory.
fn openssl_hash(pem: &Path) -> Option<String> {
    let out = Command::new(testkit::find_tool("openssl")?)
        .args(["x509", "-hash", "-noout", "-in"])
        .arg(pem)
        .output()
        .ok()?;
    let h = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && h.len() == 8).then_some(h)
}

// ---------------------------------------------------------------------------
// A file:// URL never reads a local file.

#[test]
fn a_file_url_in_a_release_or_a_redirect_is_refused() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let mut v = json_of(&server, "v1");
    v["assets"][0]["browser_download_url"] = "file:///etc/passwd".into();
    set_json(&server, "v1", &v);
    let dir = TempDir::new("h01");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("vmlinux-focal-amd64") && run.stderr.contains("`file`"),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("kernel").exists());

    // The same through a redirect.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    server.add_fault(Fault::Redirect {
        asset: "vmlinux-focal-amd64".into(),
        location: "file:///etc/passwd".into(),
    });
    let dir = TempDir::new("h01b");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("vmlinux-focal-amd64") && run.stderr.contains("`file`"),
        "{}",
        run.stderr
    );
    let passwd = fs::read("/etc/passwd").unwrap_or_default();
    for f in walk(dir.path()) {
        assert_ne!(
            fs::read(&f).unwrap(),
            passwd,
            "{} holds /etc/passwd",
            f.display()
        );
    }
}

#[test]
fn a_redirect_loop_another_tag_or_another_digest_algorithm_is_named() {
    // A redirect loop fails at once.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let url = json_of(&server, "v1")["assets"][0]["browser_download_url"]
        .as_str()
        .unwrap()
        .to_string();
    server.add_fault(Fault::Redirect {
        asset: "vmlinux-focal-amd64".into(),
        location: url,
    });
    let dir = TempDir::new("h12c");
    let t = std::time::Instant::now();
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(run.stderr.contains("loop"), "{}", run.stderr);
    assert!(t.elapsed().as_secs() < 5, "took {:?}", t.elapsed());

    // A release answering with another tag than the one asked for.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let mut v = json_of(&server, "v1");
    v["tag_name"] = "v9.9.9".into();
    set_json(&server, "v1", &v);
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--version", "v1"],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("v9.9.9") && run.stderr.contains("asked for v1"),
        "{}",
        run.stderr
    );

    // A digest of another algorithm: noted as not checked, not an error.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let mut v = json_of(&server, "v1");
    v["assets"][0]["digest"] = format!("sha512:{}", "ab".repeat(64)).into();
    set_json(&server, "v1", &v);
    let dir = TempDir::new("h12d");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(
        run.stderr.contains("vmlinux-focal-amd64") && run.stderr.contains("does not check"),
        "{}",
        run.stderr
    );
}

#[test]
fn unsafe_asset_names_are_refused() {
    for bad in ["../../evil", "sub/dir", ".hidden"] {
        let mut spec = bytes_release("v1", "focal", "amd64", &[100]);
        spec.assets.push(AssetSpec::bytes(bad, b"x".to_vec()));
        let server = Server::start(REPO, vec![spec]);
        let root = TempDir::new("ft-names");
        let out = root.path().join("out");
        let run = resources(Some("download"), &out, &server.api_url(), &[], &[]);
        run.failed();
        assert!(run.stderr.contains("unsafe name"), "{bad}: {}", run.stderr);
        assert!(
            !server.requests().iter().any(|r| r.host == "assets"),
            "{bad}: downloaded anyway"
        );
        // Nothing lands outside the output directory and its download cache.
        assert!(fs::read_dir(root.path())
            .unwrap()
            .flatten()
            .all(|e| e.file_name() == "out" || e.file_name() == "out.cache"));
        assert!(!root.path().join("evil").exists() && !root.path().join("sub").exists());
    }
}

#[test]
fn hostile_tar_members_write_nothing_outside() {
    let fake = b"QFI\xfb not really a qcow2".to_vec();
    for (what, members, needle) in [
        (
            "dotdot",
            vec![("../evil.qcow2", tar::EntryType::Regular, &fake[..], None)],
            "../evil.qcow2",
        ),
        (
            "symlink",
            vec![(
                "temp/disk-image.qcow2",
                tar::EntryType::Symlink,
                &b""[..],
                Some("/etc/passwd"),
            )],
            "temp/disk-image.qcow2",
        ),
        (
            "absolute",
            vec![(
                "/tmp/abs-evil.qcow2",
                tar::EntryType::Regular,
                &fake[..],
                None,
            )],
            "/tmp/abs-evil.qcow2",
        ),
        (
            "hardlink",
            vec![(
                "temp/disk-image.qcow2",
                tar::EntryType::Link,
                &b""[..],
                Some("/etc/passwd"),
            )],
            "temp/disk-image.qcow2",
        ),
        (
            "none",
            vec![(
                "temp/readme.txt",
                tar::EntryType::Regular,
                &b"hello"[..],
                None,
            )],
            "temp/readme.txt",
        ),
    ] {
        let data = tar_gz(&members);
        let mut assets = vec![
            AssetSpec::bytes("vmlinux-focal-amd64", fake_elf("amd64")),
            AssetSpec::bytes("test-client-amd64", fake_elf("amd64")),
            AssetSpec::bytes("disk-image-focal-amd64.qcow2.tar.gz", data),
        ];
        assets.push(AssetSpec::bytes(
            "disk-image-focal-amd64.qcow2.sums",
            format!("{}  temp/disk-image.qcow2\n", "00".repeat(32)).into_bytes(),
        ));
        let server = Server::start(REPO, vec![ReleaseSpec::new("v1", assets)]);
        let root = TempDir::new("pl-hostile");
        let out = root.path().join("out");
        fs::create_dir_all(&out).unwrap();
        let run = resources(None, &out, &server.api_url(), &[], &[]);
        run.failed();
        assert!(run.stderr.contains(needle), "{what}: {}", run.stderr);
        // The output directory and its download cache, nothing else.
        assert_eq!(
            entries(root.path()),
            ["out", "out.cache"],
            "{what}: wrote outside the output dir"
        );
        assert!(!out.join("disk-image.qcow2").exists(), "{what}");
        assert!(!out.join("evil.qcow2").exists(), "{what}");
    }
}

#[test]
fn archive_member_names_are_cut_and_cannot_forge_lines() {
    let forged = format!("temp/{}\nerror: all good\n.qcow2", "x".repeat(300_000));
    let mut b = tar::Builder::new(Vec::new());
    for name in [forged.as_str(), "temp/second.qcow2"] {
        let mut h = tar::Header::new_gnu();
        h.set_size(4);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, &b"QFI\xfb"[..]).unwrap();
    }
    let data = b.into_inner().unwrap();
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut enc, &data).unwrap();
    let gz = enc.finish().unwrap();
    let mut spec = bytes_release("v1", "focal", "amd64", &[]);
    spec.assets.retain(|a| !a.name.contains(".tar.gz"));
    spec.assets
        .push(AssetSpec::bytes("disk-image-focal-amd64.qcow2.tar.gz", gz));
    let server = Server::start(REPO, vec![spec]);
    let out = TempDir::new("rv10");
    let run = resources(None, out.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.len() < 10_000,
        "{} bytes of stderr",
        run.stderr.len()
    );
    assert!(!run.stderr.contains("\nerror: all good"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// Server text reaches the terminal escaped and cut; the token never.

#[test]
fn server_text_is_escaped_cut_and_never_shows_the_token() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let mut v = json_of(&server, "v1");
    v["tag_name"] = format!("v1\x1b]0;pwned\x07{}", "x".repeat(10_000)).into();
    v["published_at"] = "\x1b[2J2024".into();
    set_json(&server, "v1", &v);
    let dir = TempDir::new("h11");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(!run.all().contains('\x1b'), "{:?}", run.all());
    assert!(
        run.all().len() < 4000,
        "{} bytes of output",
        run.all().len()
    );
    let run = resources(Some("list"), dir.path(), &server.api_url(), &[], &[]);
    assert!(!run.all().contains('\x1b'), "{:?}", run.all());
    assert!(
        run.all().len() < 4000,
        "{} bytes of output",
        run.all().len()
    );

    // A 5xx that echoes the request headers, token included.
    let token = "ghp_0123456789abcdefSECRET";
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    server.add_fault(Fault::ApiEcho {
        status: 502,
        times: 100,
    });
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &[],
        &[("GH_TOKEN", token)],
    );
    run.failed();
    assert!(!run.all().contains(token), "{}", run.all());
    assert!(run.all().contains("502"), "{}", run.all());

    // A mirror whose `latest` is 100 MB.
    let mirror = TempDir::new("h11-mirror");
    let f = fs::File::create(mirror.path().join("latest")).unwrap();
    f.set_len(100 << 20).unwrap();
    let run = resources(
        None,
        dir.path(),
        "http://127.0.0.1:1",
        &["--source", mirror.path().to_str().unwrap()],
        &[],
    );
    run.failed();
    assert!(
        run.all().len() < 4000,
        "{} bytes of output",
        run.all().len()
    );

    // A sums line with escapes.
    let mut spec = bytes_release("v2", "focal", "amd64", &[100]);
    let sums = spec.assets.len() - 1;
    spec.assets[sums] = AssetSpec::bytes(
        "disk-image-focal-amd64.qcow2.sums",
        b"\x1b[31mnot a sum\x1b[0m  temp/disk-image.qcow2\n".to_vec(),
    );
    let server = Server::start(REPO, vec![spec]);
    let dir = TempDir::new("h11b");
    let run = resources(None, dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(!run.all().contains('\x1b'), "{:?}", run.all());
}

#[test]
fn manifest_text_is_escaped() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    let out = TempDir::new("rv12");
    let m = serde_json::json!({
        "format": 1, "repo": REPO, "tag": "v0\u{1b}]0;PWNED\u{7}\u{1b}[2J", "arch": "amd64",
        "os": "focal", "installed_at": "2024-01-01T00:00:00Z",
        "files": [{"name": "kernel", "size": 1, "sha256": null, "modified_ns": 1, "sources": []}],
    });
    fs::write(out.path().join("manifest.json"), m.to_string()).unwrap();
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &["--version", "v1"],
        &[],
    );
    assert!(!run.all().contains('\u{1b}'), "{:?}", run.all());
}

// ---------------------------------------------------------------------------
// Bad numbers never crash.

#[test]
fn bad_timeouts_and_absurd_sizes_are_named_and_allocate_nothing() {
    for bad in ["inf", "1e300", "-1", "NaN", "abc", "0"] {
        let run = xtask(
            &["resources", "list", "--github-api", "http://127.0.0.1:1"],
            &[("VSWARM_HTTP_TIMEOUT", bad)],
        );
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("VSWARM_HTTP_TIMEOUT"), "{}", run.stderr);
    }
    for size in [u64::MAX, 1_000_000_000_000_000, 10_000_000_000_000] {
        let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
        let mut v = json_of(&server, "v1");
        v["assets"][2]["size"] = size.into();
        set_json(&server, "v1", &v);
        let dir = TempDir::new("h07");
        let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
        assert_eq!(run.code, 1, "{size}: {}", run.stderr);
        assert!(
            run.stderr
                .contains("disk-image-focal-amd64.qcow2.tar.gz.aa"),
            "{size}: {}",
            run.stderr
        );
        // No huge sparse file was made.
        for f in walk(dir.path()) {
            assert!(fs::metadata(&f).unwrap().len() < 1 << 30, "{}", f.display());
        }
    }
    // Together more than the disk holds: refused before the first byte.
    let server = Server::start(
        REPO,
        vec![bytes_release("v1", "focal", "amd64", &[100, 100])],
    );
    let mut v = json_of(&server, "v1");
    for i in 2..4 {
        v["assets"][i]["size"] = (200u64 << 30).into();
    }
    set_json(&server, "v1", &v);
    let dir = TempDir::new("h07b");
    let free = fs2_free(dir.path());
    if free < 400 << 30 {
        let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
        run.failed();
        assert!(
            run.stderr.contains("not enough free space"),
            "{}",
            run.stderr
        );
        assert_eq!(asset_requests(&server), 0);
    }
}

// ---------------------------------------------------------------------------
// A bare compressed image cannot fill the disk.

#[test]
fn a_bare_image_is_bounded_by_its_header() {
    // A qcow2 header claiming 1 MiB, then 200 MiB of zeros: gzip makes it tiny.
    let mut head = vec![0u8; 512];
    head[..4].copy_from_slice(b"QFI\xfb");
    head[4..8].copy_from_slice(&3u32.to_be_bytes());
    head[20..24].copy_from_slice(&16u32.to_be_bytes());
    head[24..32].copy_from_slice(&(1u64 << 20).to_be_bytes());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    use std::io::Write;
    enc.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..200 {
        enc.write_all(&zeros).unwrap();
    }
    let gz = enc.finish().unwrap();
    let mut spec = bytes_release("v1", "focal", "amd64", &[]);
    spec.assets.retain(|a| !a.name.contains(".tar.gz"));
    spec.assets
        .push(AssetSpec::bytes("disk-image-focal-amd64.qcow2.gz", gz));
    let server = Server::start(REPO, vec![spec]);
    let out = TempDir::new("h09");
    let run = resources(
        None,
        out.path(),
        &server.api_url(),
        &["--keep-downloads"],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("more than its own qcow2 header"),
        "{}",
        run.stderr
    );
    for f in walk(out.path()) {
        assert!(
            fs::metadata(&f).unwrap().len() < 100 << 20,
            "{}",
            f.display()
        );
    }
}

#[test]
fn a_bare_image_stops_before_the_disk_is_full() {
    // A header claiming 16 GiB: only free space can stop it. Needs a small
    // file system of our own: a tmpfs, mounted here as root.
    let mnt = TempDir::new("h09-mnt");
    let Some(_mounted) = tmpfs(mnt.path(), "size=64m") else {
        return;
    };
    let mut head = vec![0u8; 512];
    head[..4].copy_from_slice(b"QFI\xfb");
    head[4..8].copy_from_slice(&3u32.to_be_bytes());
    head[20..24].copy_from_slice(&16u32.to_be_bytes());
    head[24..32].copy_from_slice(&(16u64 << 30).to_be_bytes());
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    use std::io::Write;
    enc.write_all(&head).unwrap();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..128 {
        enc.write_all(&zeros).unwrap();
    }
    let gz = enc.finish().unwrap();
    let mut spec = bytes_release("v1", "focal", "amd64", &[]);
    spec.assets.retain(|a| !a.name.contains(".tar.gz"));
    spec.assets
        .push(AssetSpec::bytes("disk-image-focal-amd64.qcow2.gz", gz));
    let server = Server::start(REPO, vec![spec]);
    let out = mnt.path().join("out");
    let run = resources(None, &out, &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("to keep the disk from filling"),
        "{}",
        run.stderr
    );
    let free = util::fs::available_space(mnt.path()).unwrap();
    assert!(free > 2 << 20, "the disk was filled: {free} bytes free");
}

#[test]
fn a_fifo_in_a_mirror_is_an_error_not_a_hang_and_a_bom_is_read() {
    // A mirror whose asset is a FIFO: an error, not a hang.
    let mirror = TempDir::new("h13-mirror");
    let spec = bytes_release("v1", "focal", "amd64", &[100]);
    let server = Server::start(REPO, vec![spec]);
    resources(Some("mirror"), mirror.path(), &server.api_url(), &[], &[]).ok();
    let kernel = mirror.path().join("v1/vmlinux-focal-amd64");
    fs::remove_file(&kernel).unwrap();
    let st = Command::new("mkfifo").arg(&kernel).status().unwrap();
    assert!(st.success());
    let dir = TempDir::new("h13-out");
    let t = std::time::Instant::now();
    let run = resources(
        Some("download"),
        dir.path(),
        "http://127.0.0.1:1",
        &["--source", mirror.path().to_str().unwrap()],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);
    assert!(t.elapsed().as_secs() < 20);
    // The same for `latest`.
    fs::remove_file(mirror.path().join("latest")).unwrap();
    Command::new("mkfifo")
        .arg(mirror.path().join("latest"))
        .status()
        .unwrap();
    let run = resources(
        None,
        dir.path(),
        "http://127.0.0.1:1",
        &["--source", mirror.path().to_str().unwrap()],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("not a regular file"), "{}", run.stderr);

    // `list`: a set that lacks assets is one short line.
    let mut spec = bytes_release("v2", "focal", "amd64", &[100]);
    spec.assets.truncate(1);
    let server = Server::start(REPO, vec![spec]);
    let run = resources(Some("list"), dir.path(), &server.api_url(), &[], &[]);
    run.ok();
    assert!(
        run.stdout
            .contains("focal amd64  missing: client, sums, disk"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("jammy arm64  missing: kernel, client, sums, disk"),
        "{}",
        run.stdout
    );
}

#[test]
fn token_goes_to_the_api_host_only_and_is_never_shown() {
    let token = "ghp_s3cr3tTOKENvalue0123456789";
    let spec = bytes_release("v1", "focal", "amd64", &[100_000]);
    let server = Server::start(REPO, vec![spec]);
    server.add_fault(Fault::RequireToken {
        token: token.into(),
    });
    let dir = TempDir::new("dl-token");
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &[],
        &[("GITHUB_TOKEN", token)],
    );
    run.ok();
    assert!(!run.all().contains(token));
    let reqs = server.requests();
    let api: Vec<_> = reqs
        .iter()
        .filter(|r| r.host == "api" && r.path.starts_with("/repos/"))
        .collect();
    assert!(!api.is_empty());
    for r in &api {
        assert_eq!(
            r.header("authorization"),
            Some(format!("Bearer {token}").as_str()),
            "{}",
            r.path
        );
    }
    let assets: Vec<_> = reqs.iter().filter(|r| r.host == "assets").collect();
    assert!(!assets.is_empty());
    for r in assets {
        assert!(
            r.header("authorization").is_none(),
            "token sent to the asset host: {}",
            r.path
        );
    }
    // Nor written anywhere under the output directory.
    for entry in paths_under(dir.path()) {
        let data = fs::read(&entry).unwrap();
        assert!(
            !data.windows(token.len()).any(|w| w == token.as_bytes()),
            "{}",
            entry.display()
        );
    }
}

#[test]
fn wrong_token_is_named() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[10])]);
    server.add_fault(Fault::RequireToken {
        token: "right".into(),
    });
    let dir = TempDir::new("dl-badtoken");
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &[],
        &[("GH_TOKEN", "wrong")],
    );
    run.failed();
    assert!(run.stderr.contains("401"), "{}", run.stderr);
    assert!(
        run.stderr.contains("the token in GH_TOKEN was refused"),
        "{}",
        run.stderr
    );
    assert!(!run.all().contains("wrong\n"));
}

#[test]
fn rate_limit_names_reset_time_and_token() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[10])]);
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1800;
    server.add_fault(Fault::ApiRateLimited { reset_epoch: reset });
    let dir = TempDir::new("dl-rate");
    let run = resources(Some("download"), dir.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("rate limit is exhausted"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("resets at 20"), "{}", run.stderr);
    assert!(run.stderr.contains("GITHUB_TOKEN"), "{}", run.stderr);
}

#[test]
fn unreachable_api_names_the_host() {
    let dir = TempDir::new("dl-unreach");
    // Nothing listens on port 1.
    let run = resources(Some("download"), dir.path(), "http://127.0.0.1:1", &[], &[]);
    run.failed();
    assert!(
        run.stderr.contains("cannot reach 127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("HTTPS_PROXY"), "{}", run.stderr);
}

// ---------------------------------------------------------------------------
// Network conventions.

#[test]
fn api_calls_are_retried_and_bounded() {
    let spec = bytes_release("v1", "focal", "amd64", &[100]);
    // Two 500s, then a 429 asking for a second: the run still succeeds.
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::ApiStatus {
        status: 500,
        times: 2,
    });
    server.add_fault(Fault::ApiRetryAfter { secs: 1, times: 1 });
    let dir = TempDir::new("h12");
    resources(Some("download"), dir.path(), &server.api_url(), &[], &[]).ok();

    // A Retry-After beyond what we wait fails at once, saying so.
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::ApiRetryAfter {
        secs: 3600,
        times: 100,
    });
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--force"],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("3600"), "{}", run.stderr);

    // A server dribbling its answer cannot hold the run: the call's deadline
    // (five times the silence timeout) ends it.
    let server = Server::start(REPO, vec![spec.clone()]);
    server.add_fault(Fault::ApiTrickle { interval_ms: 100 });
    let t = std::time::Instant::now();
    let run = resources(
        Some("download"),
        dir.path(),
        &server.api_url(),
        &["--force"],
        &[("VSWARM_HTTP_TIMEOUT", "0.5")],
    );
    run.failed();
    assert!(t.elapsed().as_secs() < 30, "took {:?}", t.elapsed());
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
}

#[test]
fn unreachable_hosts_proxies_and_tokens_are_named() {
    let dir = TempDir::new("h12b");
    // DNS failure: the same help as a refused connection.
    let run = resources(
        Some("list"),
        dir.path(),
        "http://nonexistent.invalid",
        &[],
        &[],
    );
    run.failed();
    assert!(
        run.stderr.contains("cannot resolve nonexistent.invalid")
            && run.stderr.contains("HTTPS_PROXY"),
        "{}",
        run.stderr
    );
    // A dead proxy is named as the proxy.
    let run = resources(
        Some("list"),
        dir.path(),
        "http://example.invalid",
        &[],
        &[("HTTPS_PROXY", "http://127.0.0.1:9")],
    );
    run.failed();
    assert!(
        run.stderr.contains("cannot reach the proxy 127.0.0.1:9"),
        "{}",
        run.stderr
    );
    // A token that cannot be a header value.
    let run = resources(
        Some("list"),
        dir.path(),
        "http://127.0.0.1:1",
        &[],
        &[("GH_TOKEN", "abc def\n")],
    );
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("GH_TOKEN"), "{}", run.stderr);
    assert!(!run.stderr.contains("abc def"), "{}", run.stderr);

    // GH_TOKEN before GITHUB_TOKEN, as gh does.
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    server.add_fault(Fault::RequireToken {
        token: "gh-token-value".into(),
    });
    resources(
        Some("list"),
        dir.path(),
        &server.api_url(),
        &[],
        &[
            ("GH_TOKEN", "gh-token-value"),
            ("GITHUB_TOKEN", "other-value"),
        ],
    )
    .ok();
}

// ---------------------------------------------------------------------------
// The API's bound.

#[test]
fn one_api_call_against_a_silent_server_ends_within_five_times_the_timeout() {
    let server = Server::start(REPO, vec![bytes_release("v1", "focal", "amd64", &[100])]);
    server.add_fault(Fault::ApiSilent);
    let out = TempDir::new("r3-silent");
    for step in ["list", "download"] {
        let t = Instant::now();
        let run = resources(
            Some(step),
            out.path(),
            &server.api_url(),
            &[],
            &[("VSWARM_HTTP_TIMEOUT", "0.5")],
        );
        let took = t.elapsed();
        // The API failed: exit code 3.
        assert_eq!(run.code, 3, "{step}: {}", run.all());
        assert!(run.stderr.contains("timed out"), "{step}: {}", run.stderr);
        // The bound the README states (5 × 0.5 s), plus a margin for
        // starting the process.
        assert!(
            took < Duration::from_millis(2500 + 1500),
            "{step} took {took:?}: {}",
            run.stderr
        );
    }
}

#[test]
fn a_release_list_whose_pages_loop_shows_each_release_once_and_stops() {
    for fresh_urls in [false, true] {
        let server = Server::start(REPO, many_releases());
        server.add_fault(Fault::ListLoop { fresh_urls });
        let out = TempDir::new("r3-loop");
        let run = resources(Some("list"), out.path(), &server.api_url(), &[], &[]);
        run.ok();
        for tag in ["v1", "v2", "v3"] {
            let shown = run
                .stdout
                .lines()
                .filter(|l| l.split_whitespace().next() == Some(tag))
                .count();
            assert_eq!(shown, 1, "{tag} shown {shown} times:\n{}", run.stdout);
        }
        assert!(run.stderr.contains("note:"), "{}", run.stderr);
        assert!(run.stderr.contains("stopped"), "{}", run.stderr);
        let pages = server
            .requests()
            .iter()
            .filter(|r| r.host == "api" && r.path.contains("/releases?"))
            .count();
        // The same URL is not asked for again; a new one that repeats stops the walk.
        assert_eq!(pages, if fresh_urls { 2 } else { 1 }, "{}", run.stderr);
    }
    // A tag that does not exist: the list of tags is read once as well.
    let server = Server::start(REPO, many_releases());
    server.add_fault(Fault::ListLoop { fresh_urls: false });
    let out = TempDir::new("r3-loop-tag");
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &["--version", "v9"],
        &[],
    );
    run.failed();
    assert!(run.stderr.contains("v3, v2, v1"), "{}", run.stderr);
}

#[test]
fn https_fake_github_without_its_ca_fails_naming_the_host_and_ssl_cert_file() {
    let server = Server::start_https(REPO, vec![small_release(64)]);
    let api = server.api_url();
    assert!(api.starts_with("https://127.0.0.1:"), "{api}");
    let out = TempDir::new("net-noca");
    let run = resources(
        Some("download"),
        out.path(),
        &api,
        &[],
        &[("GH_TOKEN", TOKEN)],
    );
    run.failed();
    let host = api.trim_start_matches("https://");
    assert!(
        run.stderr.contains(host) && run.stderr.contains("certificate is not trusted"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("SSL_CERT_FILE"), "{}", run.stderr);
    // Refused at once: a certificate does not become trusted by waiting.
    assert!(!run.stderr.contains("retrying"), "{}", run.stderr);
    assert_no_token(&run);
    assert!(
        server.requests().is_empty(),
        "a request got through: {:?}",
        server.requests()
    );
}

#[test]
fn https_fake_github_works_through_ssl_cert_file_and_the_token_goes_only_to_the_api() {
    let server = Server::start_https(REPO, vec![small_release(300)]);
    let api = server.api_url();
    let out = TempDir::new("net-cafile");
    let ca = ca_file(&server, out.path());
    let run = resources(
        Some("download"),
        out.path(),
        &api,
        &[],
        &[("GH_TOKEN", TOKEN), ("SSL_CERT_FILE", ca.to_str().unwrap())],
    );
    run.ok();
    assert_no_token(&run);
    assert_eq!(
        fs::read(out.path().join("kernel")).unwrap(),
        fake_elf("amd64")
    );
    let reqs = server.requests();
    assert!(reqs.iter().any(|r| r.host == "assets"), "{reqs:?}");
    for r in &reqs {
        let auth = r.header("authorization");
        match r.host {
            "api" => {}
            _ => assert!(auth.is_none(), "token sent to {}: {r:?}", r.host),
        }
    }
    assert!(
        reqs.iter()
            .any(|r| r.host == "api"
                && r.header("authorization") == Some(&format!("Bearer {TOKEN}"))),
        "{reqs:?}"
    );
}

#[test]
fn https_fake_github_works_through_ssl_cert_dir_in_openssl_hashed_layout() {
    let server = Server::start_https(REPO, vec![small_release(64)]);
    let out = TempDir::new("net-cadir");
    let certs = TempDir::new("net-cadir-certs");
    let pem = ca_file(&server, out.path());
    let Some(hash) = openssl_hash(&pem) else {
        eprintln!("skipped: openssl is not installed to name the CA file by its hash");
        return;
    };
    fs::copy(&pem, certs.path().join(format!("{hash}.0"))).unwrap();
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &[],
        &[("SSL_CERT_DIR", certs.path().to_str().unwrap())],
    );
    run.ok();
}

#[test]
fn an_ssl_cert_file_without_certificates_falls_back_to_the_bundled_roots_and_says_so() {
    let server = Server::start_https(REPO, vec![small_release(64)]);
    let out = TempDir::new("net-emptyca");
    let empty = out.path().join("empty.pem");
    fs::write(&empty, "").unwrap();
    let run = resources(
        Some("download"),
        out.path(),
        &server.api_url(),
        &[],
        &[("SSL_CERT_FILE", empty.to_str().unwrap())],
    );
    run.failed();
    assert!(
        run.stderr.contains("certificate is not trusted")
            && run.stderr.contains("SSL_CERT_FILE=")
            && run.stderr.contains("bundled Mozilla roots"),
        "{}",
        run.stderr
    );
}

#[test]
fn a_retry_is_one_short_line_and_the_proxy_hint_is_given_once() {
    let out = TempDir::new("net-retry");
    // Nothing listens on port 1; a short deadline keeps the test quick.
    let run = resources(
        Some("download"),
        out.path(),
        "http://127.0.0.1:1",
        &[],
        &[("VSWARM_HTTP_TIMEOUT", "0.5"), ("GH_TOKEN", TOKEN)],
    );
    run.failed();
    let retries: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("retrying"))
        .collect();
    assert!(retries.len() >= 2, "{}", run.stderr);
    for l in &retries {
        assert!(l.len() <= 100, "a long retry line ({}): {l}", l.len());
        assert!(l.contains("127.0.0.1:1") && l.contains("try "), "{l}");
    }
    assert_eq!(
        run.stderr.matches("HTTPS_PROXY").count(),
        1,
        "the proxy hint is given once:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("error: cannot reach 127.0.0.1:1"),
        "{}",
        run.stderr
    );
    assert_no_token(&run);
}

#[test]
fn a_name_that_does_not_resolve_is_tried_at_most_twice_then_named() {
    let out = TempDir::new("net-dns");
    // RFC 2606: `.invalid` never resolves; no packet leaves for a real host.
    let run = xtask_within(
        &[
            "resources",
            "download",
            "--output",
            out.path().to_str().unwrap(),
            "--github-api",
            "http://api.nosuchhost.invalid",
        ],
        &[],
        Duration::from_secs(60),
    );
    run.failed();
    assert!(
        run.stderr
            .contains("cannot resolve api.nosuchhost.invalid: offline, or a proxy needed?"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.matches("retrying").count() <= 1,
        "{}",
        run.stderr
    );

    // The same for an asset host, fetched by the download engine.
    let server = Server::start(REPO, vec![small_release(64)]);
    let mut v: serde_json::Value =
        serde_json::from_str(&server.release_json("v1").unwrap()).unwrap();
    for a in v["assets"].as_array_mut().unwrap() {
        let name = a["name"].as_str().unwrap().to_string();
        a["browser_download_url"] = format!("http://files.nosuchhost.invalid/{name}").into();
    }
    server.set_release_json("v1", &v.to_string());
    let run = resources(Some("download"), out.path(), &server.api_url(), &[], &[]);
    run.failed();
    assert!(
        run.stderr
            .contains("cannot resolve files.nosuchhost.invalid"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .lines()
            .filter(|l| l.contains("retrying"))
            .count()
            <= 3,
        "one retry per asset at most:\n{}",
        run.stderr
    );
}
