//! Self-test of the test kit: the fake GitHub must behave like the real one
//! (routes, pagination, redirects, ranges) and each fault must do exactly what
//! it promises, or every test built on it proves nothing.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::have;
use serde_json::Value;
use testkit::*;

const REPO: &str = "acme/widgets";

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_le_bytes()[2] ^ seed)
        .collect()
}

/// Answers as they are, no redirects followed, no status turned into errors.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The read ended by timeout rather than EOF.
    timed_out: bool,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// One raw HTTP/1.1 exchange, reading until EOF or `timeout`: lets the tests
/// see short bodies and stalls that a real client would turn into errors.
fn raw(url: &str, method: &str, extra: &[(&str, &str)], timeout: Duration) -> Resp {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host).expect("connect");
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: testkit-self-test\r\n");
    for (n, v) in extra {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 65536];
    let mut timed_out = false;
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                timed_out = true;
                break;
            }
            Err(_) => break,
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: buf[end + 4..].to_vec(),
        timed_out,
    }
}

fn get(url: &str, extra: &[(&str, &str)]) -> Resp {
    raw(url, "GET", extra, Duration::from_secs(10))
}

fn three_releases() -> Vec<ReleaseSpec> {
    let mut pre = ReleaseSpec::new("v3.0.0-rc1", vec![AssetSpec::bytes("a.bin", data(100, 3))]);
    pre.prerelease = true;
    let mut v2 = ReleaseSpec::new(
        "v2.0.0",
        vec![
            AssetSpec::bytes("a.bin", data(100_000, 2)),
            AssetSpec::bytes("b.txt", b"hello\n".to_vec()),
        ],
    );
    v2.published_at = "2024-04-01T12:00:00Z".into();
    let v1 = ReleaseSpec::new("v1.0.0", vec![AssetSpec::bytes("a.bin", data(50, 1))]);
    vec![pre, v2, v1]
}

fn asset_url(s: &Server, tag: &str, name: &str) -> String {
    format!("{}/blob/{tag}/{name}", s.asset_url())
}

#[test]
fn routes_latest_tags_and_not_found() {
    let s = Server::start(REPO, three_releases());
    let api = s.api_url();
    assert!(api.starts_with("http://127.0.0.1:"));

    let mut r = ureq::get(&format!("{api}/repos/{REPO}/releases/latest"))
        .call()
        .unwrap();
    let latest: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(latest["tag_name"], "v2.0.0");
    assert_eq!(latest["name"], "v2.0.0");
    assert_eq!(latest["draft"], false);
    assert_eq!(latest["prerelease"], false);
    assert_eq!(latest["published_at"], "2024-04-01T12:00:00Z");
    let a = &latest["assets"][0];
    assert_eq!(a["name"], "a.bin");
    assert_eq!(a["size"], 100_000);
    assert_eq!(a["state"], "uploaded");
    assert_eq!(a["content_type"], "application/octet-stream");
    assert_eq!(
        a["digest"],
        format!("sha256:{}", sha256_hex(&data(100_000, 2)))
    );
    assert_eq!(
        a["browser_download_url"],
        format!("{api}/{REPO}/releases/download/v2.0.0/a.bin")
    );
    assert!(a["url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{api}/repos/{REPO}/releases/assets/")));

    let tag = get(&format!("{api}/repos/{REPO}/releases/tags/v1.0.0"), &[]);
    assert_eq!(tag.status, 200);
    assert_eq!(tag.json()["tag_name"], "v1.0.0");
    assert_eq!(
        String::from_utf8(tag.body.clone()).unwrap(),
        s.release_json("v1.0.0").unwrap(),
        "release_json is byte-identical to what the API serves"
    );
    assert_eq!(tag.header("Connection"), Some("close"));
    assert!(tag
        .header("Content-Type")
        .unwrap()
        .starts_with("application/json"));

    let pre = get(&format!("{api}/repos/{REPO}/releases/tags/v3.0.0-rc1"), &[]);
    assert_eq!(pre.json()["prerelease"], true);

    let missing = get(&format!("{api}/repos/{REPO}/releases/tags/v9"), &[]);
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["message"], "Not Found");
    assert!(missing.json()["documentation_url"].is_string());
    assert_eq!(
        get(&format!("{api}/repos/other/repo/releases/latest"), &[]).status,
        404
    );
    assert!(s.release_json("v9").is_none());

    // Only pre-releases and drafts: no "latest".
    let mut rc = ReleaseSpec::new("v2-rc", vec![]);
    rc.prerelease = true;
    let mut draft = ReleaseSpec::new("v2-draft", vec![]);
    draft.draft = true;
    s.set_releases(vec![draft, rc]);
    let r = get(&format!("{api}/repos/{REPO}/releases/latest"), &[]);
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["message"], "Not Found");
    assert_eq!(
        get(&format!("{api}/repos/{REPO}/releases/tags/v2-draft"), &[]).status,
        404
    );

    // Publishing swaps what "latest" answers.
    s.set_releases(vec![
        ReleaseSpec::new("v4", vec![]),
        ReleaseSpec::new("v3", vec![]),
    ]);
    let r = get(&format!("{api}/repos/{REPO}/releases/latest"), &[]);
    assert_eq!(r.json()["tag_name"], "v4");
    s.stop();
}

#[test]
fn digest_modes() {
    let mut missing = AssetSpec::bytes("m", b"x".to_vec());
    missing.digest = DigestMode::Missing;
    let mut wrong = AssetSpec::bytes("w", b"x".to_vec());
    wrong.digest = DigestMode::Wrong;
    let s = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![missing, wrong])]);
    let v: Value = serde_json::from_str(&s.release_json("v1").unwrap()).unwrap();
    assert!(v["assets"][0]["digest"].is_null());
    let w = v["assets"][1]["digest"].as_str().unwrap();
    let hex = w.strip_prefix("sha256:").unwrap();
    assert_eq!(hex.len(), 64);
    assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_ne!(hex, sha256_hex(b"x"));
}

fn link_rel(link: &str, rel: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        (params.trim() == format!("rel=\"{rel}\"")).then(|| {
            url.trim()
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string()
        })
    })
}

#[test]
fn pagination_with_link_headers() {
    let releases = (0..250)
        .rev()
        .map(|i| ReleaseSpec::new(&format!("v0.{i}"), vec![]))
        .collect();
    let s = Server::start(REPO, releases);
    let api = s.api_url();

    let mut url = format!("{api}/repos/{REPO}/releases?per_page=100");
    let mut tags = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&url, &[]);
        assert_eq!(r.status, 200);
        pages += 1;
        tags.extend(
            r.json()
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["tag_name"].as_str().unwrap().to_string()),
        );
        let link = r.header("Link").map(str::to_string);
        if pages == 1 {
            let link = link.as_deref().unwrap();
            assert_eq!(
                link_rel(link, "next").unwrap(),
                format!("{api}/repos/{REPO}/releases?per_page=100&page=2")
            );
            assert_eq!(
                link_rel(link, "last").unwrap(),
                format!("{api}/repos/{REPO}/releases?per_page=100&page=3")
            );
        }
        match link.as_deref().and_then(|l| link_rel(l, "next")) {
            Some(next) => url = next,
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(tags.len(), 250);
    assert_eq!(tags[0], "v0.249", "newest first");
    assert_eq!(tags[249], "v0.0");

    let count = |q: &str| {
        get(&format!("{api}/repos/{REPO}/releases{q}"), &[])
            .json()
            .as_array()
            .unwrap()
            .len()
    };
    assert_eq!(count(""), 30, "default per_page");
    assert_eq!(count("?per_page=500"), 100, "per_page capped");
    assert_eq!(count("?per_page=100&page=3"), 50);
    assert_eq!(count("?per_page=100&page=4"), 0);
    let last = get(
        &format!("{api}/repos/{REPO}/releases?per_page=100&page=3"),
        &[],
    );
    assert!(link_rel(last.header("Link").unwrap(), "next").is_none());
}

#[test]
fn redirect_and_ranges() {
    let body = data(100_000, 2);
    let s = Server::start(REPO, three_releases());
    let api = s.api_url();
    if s.asset_host_is_distinct() {
        assert!(s.asset_host().starts_with("127.0.0.2:"));
    }
    let dl = format!("{api}/{REPO}/releases/download/v2.0.0/a.bin");

    let r = agent().get(&dl).call().unwrap();
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers().get("location").unwrap().to_str().unwrap(),
        format!("http://{}/blob/v2.0.0/a.bin", s.asset_host())
    );
    // A real client follows it to the other host.
    let mut r = ureq::get(&dl).call().unwrap();
    assert_eq!(r.body_mut().read_to_vec().unwrap(), body);
    assert_eq!(
        get(&format!("{api}/{REPO}/releases/download/v2.0.0/nope"), &[]).status,
        404
    );

    let url = asset_url(&s, "v2.0.0", "a.bin");
    let full = get(&url, &[]);
    assert_eq!(full.status, 200);
    assert_eq!(full.header("Content-Length"), Some("100000"));
    assert_eq!(full.header("Accept-Ranges"), Some("bytes"));
    assert_eq!(full.body, body);

    let r = get(&url, &[("Range", "bytes=1000-1999")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 1000-1999/100000"));
    assert_eq!(r.header("Content-Length"), Some("1000"));
    assert_eq!(r.body, body[1000..2000]);

    let r = get(&url, &[("Range", "bytes=99990-")]);
    assert_eq!(r.status, 206);
    assert_eq!(r.header("Content-Range"), Some("bytes 99990-99999/100000"));
    assert_eq!(r.body, body[99990..]);

    let r = get(&url, &[("Range", "bytes=99990-200000")]);
    assert_eq!(r.header("Content-Range"), Some("bytes 99990-99999/100000"));

    let r = get(&url, &[("Range", "bytes=100000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("Content-Range"), Some("bytes */100000"));

    let r = raw(&url, "HEAD", &[], Duration::from_secs(5));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert!(r.body.is_empty());

    assert_eq!(get(&asset_url(&s, "v2.0.0", "zzz"), &[]).status, 404);
}

#[test]
fn file_bodies_and_concurrent_segments() {
    let dir = TempDir::new("testkit-selftest");
    let content = data(3 << 20, 9);
    let path = dir.path().join("big.bin");
    std::fs::write(&path, &content).unwrap();
    let s = Server::start(
        REPO,
        vec![ReleaseSpec::new(
            "v1",
            vec![AssetSpec::file("big.bin", &path)],
        )],
    );
    let v: Value = serde_json::from_str(&s.release_json("v1").unwrap()).unwrap();
    assert_eq!(v["assets"][0]["size"], 3 << 20);
    assert_eq!(
        v["assets"][0]["digest"],
        format!("sha256:{}", sha256_hex(&content))
    );

    // Eight segments at once, as the downloader does.
    let url = asset_url(&s, "v1", "big.bin");
    let seg = content.len() / 8;
    let handles: Vec<_> = (0..8)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let range = format!("bytes={}-{}", i * seg, (i + 1) * seg - 1);
                let r = get(&url, &[("Range", &range)]);
                assert_eq!(r.status, 206);
                r.body
            })
        })
        .collect();
    let joined: Vec<u8> = handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect();
    assert_eq!(joined, content);
    assert_eq!(s.request_count(), 8);
}

#[test]
fn asset_faults() {
    let body = data(100_000, 2);
    let s = Server::start(REPO, three_releases());
    let url = asset_url(&s, "v2.0.0", "a.bin");
    let other = asset_url(&s, "v2.0.0", "b.txt");

    s.add_fault(Fault::Status {
        asset: "a.bin".into(),
        status: 500,
        times: 2,
    });
    assert_eq!(get(&other, &[]).status, 200, "other assets unaffected");
    assert_eq!(
        raw(&url, "HEAD", &[], Duration::from_secs(5)).status,
        200,
        "HEAD not counted"
    );
    assert_eq!(get(&url, &[]).status, 500);
    assert_eq!(get(&url, &[]).status, 500);
    assert_eq!(get(&url, &[]).body, body);

    s.add_fault(Fault::CutAfter {
        asset: "a.bin".into(),
        bytes: 5000,
        times: 1,
    });
    let r = get(&url, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Length"), Some("100000"));
    assert_eq!(r.body, body[..5000]);
    assert!(!r.timed_out, "socket closed after the cut");
    let r = get(&url, &[("Range", "bytes=100-")]);
    assert_eq!(r.body, body[100..], "only once");

    s.add_fault(Fault::NoRange {
        asset: "a.bin".into(),
    });
    let r = get(&url, &[("Range", "bytes=100-199")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Range"), None);
    assert_eq!(r.body, body);
    s.clear_faults();

    s.add_fault(Fault::Truncated {
        asset: "a.bin".into(),
    });
    let r = get(&url, &[]);
    assert_eq!(r.header("Content-Length"), Some("99990"));
    assert_eq!(r.body, body[..99_990]);
    let r = get(&url, &[("Range", "bytes=99980-")]);
    assert_eq!(r.header("Content-Range"), Some("bytes 99980-99989/99990"));
    s.clear_faults();

    s.add_fault(Fault::RateCap {
        bytes_per_sec: 200_000,
    });
    let t = Instant::now();
    assert_eq!(get(&url, &[]).body, body);
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "capped: took {took:?}");
    s.clear_faults();

    s.add_fault(Fault::Stall {
        asset: "a.bin".into(),
        after_bytes: 1000,
        times: 1,
    });
    let r = raw(&url, "GET", &[], Duration::from_millis(500));
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body[..1000]);
    assert!(r.timed_out, "stalled, not closed");
    // A stall in progress must not hold up stopping.
    s.add_fault(Fault::Stall {
        asset: "a.bin".into(),
        after_bytes: 10,
        times: 1,
    });
    let before = s.request_count();
    let stalled = std::thread::spawn({
        let url = url.clone();
        move || raw(&url, "GET", &[], Duration::from_secs(20))
    });
    // Logged means headers are decided; give the 10 bytes a moment to go out.
    while s.request_count() == before {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    s.stop();
    let r = stalled.join().unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "stop released the stall"
    );
    assert_eq!(r.body.len(), 10);
    assert!(!r.timed_out);
}

#[test]
fn api_faults_and_request_log() {
    let s = Server::start(REPO, three_releases());
    let latest = format!("{}/repos/{REPO}/releases/latest", s.api_url());

    s.add_fault(Fault::ApiRateLimited {
        reset_epoch: 1_900_000_000,
    });
    let r = get(&latest, &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("X-RateLimit-Remaining"), Some("0"));
    assert_eq!(r.header("X-RateLimit-Reset"), Some("1900000000"));
    assert!(r.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("API rate limit exceeded for 127.0.0.1"));
    // The download redirect is not part of the API quota.
    let dl = format!("{}/{REPO}/releases/download/v2.0.0/b.txt", s.api_url());
    assert_eq!(get(&dl, &[]).status, 302);
    s.clear_faults();
    let r = get(&latest, &[]);
    assert_eq!(r.status, 200);
    assert_ne!(r.header("X-RateLimit-Remaining"), Some("0"));

    s.add_fault(Fault::ApiStatus {
        status: 502,
        times: 1,
    });
    assert_eq!(get(&latest, &[]).status, 502);
    assert_eq!(get(&latest, &[]).status, 200);

    s.add_fault(Fault::RequireToken {
        token: "sekrit".into(),
    });
    let r = get(&latest, &[]);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["message"], "Bad credentials");
    assert_eq!(
        get(&latest, &[("Authorization", "Bearer nope")]).status,
        401
    );
    assert_eq!(
        get(&latest, &[("Authorization", "Bearer sekrit")]).status,
        200
    );
    s.clear_faults();

    let log = s.requests();
    assert_eq!(log.len(), s.request_count());
    let statuses: Vec<u16> = log.iter().map(|l| l.status).collect();
    assert_eq!(statuses, [403, 302, 200, 502, 200, 401, 401, 200]);
    let last = log.last().unwrap();
    assert_eq!(last.host, "api");
    assert_eq!(last.method, "GET");
    assert_eq!(last.path, "/repos/acme/widgets/releases/latest");
    assert_eq!(last.header("authorization"), Some("Bearer sekrit"));
    assert_eq!(last.header("user-agent"), Some("testkit-self-test"));

    get(
        &format!("{}?x=1", asset_url(&s, "v1.0.0", "a.bin")),
        &[("Range", "bytes=0-")],
    );
    let l = s.requests().pop().unwrap();
    assert_eq!(
        (l.host, l.path.as_str(), l.status),
        ("assets", "/blob/v1.0.0/a.bin?x=1", 206)
    );
    assert_eq!(l.header("range"), Some("bytes=0-"));
}

#[test]
fn fake_elf_headers() {
    for (arch, machine) in [("amd64", 62u16), ("arm64", 183)] {
        let e = fake_elf(arch);
        assert!(e.len() >= 4096);
        assert_eq!(&e[..4], b"\x7fELF");
        assert_eq!(e[4], 2, "ELF64");
        assert_eq!(e[5], 1, "little-endian");
        assert_eq!(u16::from_le_bytes([e[16], e[17]]), 2, "ET_EXEC");
        assert_eq!(u16::from_le_bytes([e[18], e[19]]), machine);
    }
}

#[test]
fn pack_disk_like_upstream() {
    if !have("qemu-img") || !have("qemu-io") {
        println!("skip: qemu-img/qemu-io not installed");
        return;
    }
    let dir = TempDir::new("testkit-fixture");
    let kept = dir.path().to_path_buf();
    let src = dir.path().join("src.qcow2");
    make_qcow2(&src, 16, 3).unwrap();
    let info = Command::new("qemu-img")
        .args(["info", "--output=json"])
        .arg(&src)
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["format"], "qcow2");
    assert_eq!(info["virtual-size"], 16 << 20);

    let work = dir.path().join("gz");
    std::fs::create_dir(&work).unwrap();
    let disk = pack_disk(&src, "ubuntu", "amd64", 256 << 10, Compression::Gzip, &work).unwrap();
    assert_eq!(disk.sha256_hex, sha256_hex(&std::fs::read(&src).unwrap()));
    assert_eq!(
        std::fs::read(&disk.qcow2).unwrap(),
        std::fs::read(&src).unwrap()
    );

    let names: Vec<&str> = disk.assets.iter().map(|a| a.name.as_str()).collect();
    assert!(
        names.len() >= 3,
        "~0.8 MiB compressed in 256 KiB parts: {names:?}"
    );
    assert_eq!(names[0], "disk-image-ubuntu-amd64.qcow2.tar.gz.aa");
    assert_eq!(names[1], "disk-image-ubuntu-amd64.qcow2.tar.gz.ab");
    assert_eq!(*names.last().unwrap(), "disk-image-ubuntu-amd64.qcow2.sums");
    let sums = std::fs::read_to_string(work.join(names.last().unwrap())).unwrap();
    assert_eq!(
        sums,
        format!("{}  temp/disk-image.qcow2\n", disk.sha256_hex)
    );

    let mut joined = Vec::new();
    for a in &disk.assets[..disk.assets.len() - 1] {
        let Body::File(p) = &a.body else {
            panic!("parts are files")
        };
        let part = std::fs::read(p).unwrap();
        assert!(part.len() as u64 <= 256 << 10);
        joined.extend(part);
    }
    assert_eq!(&joined[..2], &[0x1f, 0x8b], "gzip magic");
    let archive = dir.path().join("joined.tar.gz");
    std::fs::write(&archive, &joined).unwrap();
    let list = Command::new("tar")
        .arg("tzf")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(list.status.success());
    assert_eq!(
        String::from_utf8(list.stdout).unwrap(),
        "temp/disk-image.qcow2\n"
    );
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let x = Command::new("tar")
        .arg("xzf")
        .arg(&archive)
        .arg("-C")
        .arg(&out)
        .status()
        .unwrap();
    assert!(x.success());
    assert_eq!(
        std::fs::read(out.join("temp/disk-image.qcow2")).unwrap(),
        std::fs::read(&src).unwrap()
    );

    let xz_work = dir.path().join("xz");
    std::fs::create_dir(&xz_work).unwrap();
    let xz = pack_disk(&src, "ubuntu", "arm64", 4 << 20, Compression::Xz, &xz_work).unwrap();
    assert_eq!(xz.assets[0].name, "disk-image-ubuntu-arm64.qcow2.tar.xz.aa");

    let all = upstream_assets("ubuntu", "arm64", &xz);
    let names: Vec<&str> = all.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names[..3],
        [
            "vmlinux-ubuntu-arm64",
            "test-client-arm64",
            "disk-image-ubuntu-arm64.qcow2.tar.xz.aa"
        ]
    );

    // Served end to end: the parts come back byte-identical.
    let s = Server::start(REPO, vec![ReleaseSpec::new("v1", all)]);
    let got = get(
        &asset_url(&s, "v1", "disk-image-ubuntu-arm64.qcow2.sums"),
        &[],
    );
    assert_eq!(
        String::from_utf8(got.body).unwrap(),
        format!("{}  temp/disk-image.qcow2\n", xz.sha256_hex)
    );

    drop(dir);
    assert!(!kept.exists(), "TempDir removes itself");
}

#[test]
fn bytes_bodies_are_shared() {
    let shared = Arc::new(data(10, 0));
    let spec = AssetSpec {
        name: "x".into(),
        body: Body::Bytes(shared.clone()),
        digest: DigestMode::Correct,
    };
    let s = Server::start(REPO, vec![ReleaseSpec::new("v1", vec![spec])]);
    assert_eq!(get(&asset_url(&s, "v1", "x"), &[]).body, *shared);
}
