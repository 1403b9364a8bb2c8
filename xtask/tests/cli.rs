//! The command line as users and CI meet it, through the real binary: every
//! flag honoured or refused per step, suggestions, `--version`, `verify`'s
//! expectations and `list --source`. (Each step's help and the
//! documentation's flag tables against the one declaration of the flags are
//! unit tests: `xtask/src/cli/doc_tests.rs`.)

mod common;

use common::*;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use testkit::{
    fake_elf, make_qcow2, pack_disk, upstream_assets, Compression, ReleaseSpec, Server, TempDir,
};

fn usage_error(args: &[&str]) -> String {
    let run = xtask(args, &[]);
    assert_eq!(run.code, 2, "{args:?}\n{}", run.all());
    assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    run.stderr
}

/// An installed v1 focal/amd64 set (without the raw image), or None where
/// qemu-img is absent.
fn installed(t: &TempDir) -> Option<(Server, PathBuf)> {
    if !have("qemu-img") {
        eprintln!("skipped: qemu-img is not installed");
        return None;
    }
    let img = t.path().join("src.qcow2");
    make_qcow2(&img, 16, 2).unwrap();
    let d = pack_disk(&img, "focal", "amd64", 1 << 20, Compression::Gzip, t.path()).unwrap();
    let server = Server::start(
        REPO,
        vec![ReleaseSpec::new(
            "v1",
            upstream_assets("focal", "amd64", &d),
        )],
    );
    let out = t.path().join("res");
    resources(None, &out, &server.api_url(), &["--no-raw"], &[]).ok();
    Some((server, out))
}

/// Serves the files under `dir` over plain HTTP on loopback, as any static
/// web server serves a mirror; the thread ends with the test process.
fn serve_dir(dir: &Path) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let dir = dir.to_path_buf();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(&conn);
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let file = dir.join(path.trim_start_matches('/'));
            let body = (!path.contains(".."))
                .then(|| fs::read(file).ok())
                .flatten();
            let mut conn = &conn;
            let (status, body) = match body {
                Some(b) => ("200 OK", b),
                None => ("404 Not Found", Vec::new()),
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = conn
                .write_all(head.as_bytes())
                .and_then(|_| conn.write_all(&body));
        }
    });
    url
}

#[test]
fn a_flag_a_step_does_not_take_exits_2_naming_the_step_and_the_flag() {
    for (args, says) in [
        (
            &["resources", "download", "--deep"][..],
            "`--deep` is a flag of `verify`, not of `download`",
        ),
        (
            &["resources", "download", "--no-raw"],
            "`--no-raw` is a flag of the full run, not of `download`",
        ),
        (
            &["resources", "verify", "--jobs", "4"],
            "`verify` takes no --jobs",
        ),
        (
            &["resources", "verify", "--github-api", "http://h"],
            "`verify` takes no --github-api",
        ),
        (
            &["resources", "list", "--output", "x"],
            "`list` takes no --output",
        ),
        (
            &["resources", "list", "--arch", "arm64"],
            "`list` takes no --arch",
        ),
        (
            &["resources", "cache", "list", "--no-wait"],
            "`cache` takes no --no-wait",
        ),
        (
            &["resources", "convert", "--version", "v1"],
            "`convert` takes no --version",
        ),
        (
            &["resources", "upload", "--jobs", "2", "-v", "v1", "f"],
            "`upload` takes no --jobs",
        ),
        (
            &["resources", "--from", "d"],
            "`--from` is a flag of `decompress`, not of the full run",
        ),
        (
            &["resources", "decompress", "--from", "d", "--version", "v1"],
            "--version does not apply",
        ),
    ] {
        let err = usage_error(args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_flag_given_twice_empty_or_missing_its_value_exits_2() {
    for (args, says) in [
        (
            &["resources", "-a", "amd64", "--arch", "arm64"][..],
            "--arch is given twice",
        ),
        (&["resources", "-q", "--quiet"], "--quiet is given twice"),
        (
            &["resources", "upload", "--as", "a", "--as", "b", "f"],
            "--as is given twice",
        ),
        (&["resources", "--output", ""], "--output is empty"),
        (&["resources", "--version= "], "--version is empty"),
        (
            &["resources", "--output", "--force"],
            "--output needs a value (DIR), not the flag `--force`",
        ),
        (
            &["resources", "list", "--repo"],
            "--repo needs a value: OWNER/NAME",
        ),
        (&["resources", "--json=yes"], "--json takes no value"),
    ] {
        let err = usage_error(args);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn a_mistyped_flag_or_step_is_named_with_what_was_meant() {
    let err = usage_error(&["resources", "--verison", "v0.1.0"]);
    assert!(
        err.contains("unknown flag `--verison` (did you mean `--version`?)"),
        "{err}"
    );
    assert!(!err.contains("unknown step"), "{err}");
    let err = usage_error(&["resources", "verfy"]);
    assert!(
        err.contains("unknown step `verfy` (did you mean `verify`?)"),
        "{err}"
    );
    let err = usage_error(&["resources", "download", "--no-cahce"]);
    assert!(err.contains("(did you mean `--no-cache`?)"), "{err}");
    let err = usage_error(&["resorces"]);
    assert!(err.contains("(did you mean `resources`?)"), "{err}");
}

#[test]
fn cargo_xtask_version_prints_the_tools_version() {
    for flag in ["--version", "-V"] {
        let run = xtask(&[flag], &[]);
        run.ok();
        assert_eq!(run.stdout, format!("xtask {}\n", env!("CARGO_PKG_VERSION")));
    }
}

#[test]
fn verify_fails_when_the_installed_set_is_not_the_one_named() {
    let t = TempDir::new("cli-verify");
    let Some((_server, out)) = installed(&t) else {
        return;
    };
    let verify = |extra: &[&str]| resources(Some("verify"), &out, "", extra, &[]);
    verify(&["--version", "v1", "--arch", "amd64", "-l", "focal"]).ok();
    verify(&["--version", "latest", "--repo", REPO]).ok();
    let run = verify(&["--version", "v0.0.9", "--arch", "arm64"]);
    assert!(run.code != 0 && run.code != 2, "{}", run.all());
    for says in [
        "--version v1 is installed, not v0.0.9",
        "--arch amd64 is installed, not arm64",
        "--version v0.0.9 --arch arm64",
    ] {
        assert!(run.stderr.contains(says), "{says}: {}", run.stderr);
    }
    assert!(
        !run.stdout.contains("  ok "),
        "no file is said to be ok: {}",
        run.stdout
    );
    let run = verify(&["--os-version", "jammy"]);
    run.failed();
    assert!(
        run.stderr
            .contains("--os-version focal is installed, not jammy"),
        "{}",
        run.stderr
    );
}

#[test]
fn list_source_lists_the_mirrors_releases_not_githubs() {
    let spec = |tag| bytes_release(tag, "focal", "amd64", &[100]);
    let server = Server::start(REPO, vec![spec("v1"), spec("v2")]);
    let mirror = TempDir::new("cli-list-mirror");
    for tag in ["v1", "v2"] {
        resources(
            Some("mirror"),
            mirror.path(),
            &server.api_url(),
            &["--version", tag],
            &[],
        )
        .ok();
    }
    server.set_releases(vec![spec("v1"), spec("v2"), spec("v3")]);
    let asked = server.request_count();
    let m = mirror.path().to_str().unwrap();
    let run = resources(
        Some("list"),
        mirror.path(),
        &server.api_url(),
        &["--source", m],
        &[],
    );
    run.ok();
    assert_eq!(server.request_count(), asked, "GitHub was not asked");
    let out = &run.stdout;
    assert!(
        out.contains(&format!("Releases in the mirror {m}")),
        "{out}"
    );
    assert!(!out.contains("v3"), "{out}");
    let (v1, v2) = (out.find("\nv1 ").unwrap(), out.find("\nv2 ").unwrap());
    assert!(v1 > 0 && v2 > 0);
    assert!(out.contains("focal amd64  complete"), "{out}");
    assert!(out.contains("jammy arm64  missing:"), "{out}");

    // Over HTTP a mirror has no index: the release `latest` names.
    let url = serve_dir(mirror.path());
    let run = resources(
        Some("list"),
        mirror.path(),
        "http://127.0.0.1:1",
        &["--source", &url],
        &[],
    );
    run.ok();
    assert!(run.stdout.contains("no index"), "{}", run.stdout);
    assert!(
        run.stdout.contains("\nv1 ") && !run.stdout.contains("\nv2 "),
        "{}",
        run.stdout
    );
}

#[test]
fn help_for_every_step() {
    for args in [
        vec!["--help"],
        vec!["resources", "--help"],
        vec!["resources", "-h"],
        vec!["resources", "download", "--help"],
        vec!["resources", "decompress", "--help"],
        vec!["resources", "convert", "--help"],
        vec!["resources", "verify", "--help"],
        vec!["resources", "list", "--help"],
        vec!["resources", "mirror", "--help"],
        vec!["bench", "--help"],
    ] {
        let run = xtask(&args, &[]);
        assert_eq!(run.code, 0, "{args:?}: {}", run.stderr);
        assert!(
            run.stdout.contains("cargo xtask"),
            "{args:?}: {}",
            run.stdout
        );
    }
}

#[test]
fn flags_may_come_before_the_step() {
    let run = xtask(
        &[
            "resources",
            "--arch",
            "arm64",
            "--output",
            "/nonexistent",
            "download",
            "--help",
        ],
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.starts_with("cargo xtask resources download"),
        "{}",
        run.stdout
    );
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for (args, needle) in [
        (vec!["resources", "--bogus"], "unknown flag `--bogus`"),
        (
            vec!["resources", "download", "--arch", "riscv"],
            "invalid --arch `riscv`",
        ),
        (
            vec!["resources", "--os-version", "bionic"],
            "invalid --os-version `bionic`",
        ),
        (
            vec!["resources", "--version", "../../x"],
            "invalid --version",
        ),
        (vec!["resources", "--jobs", "0"], "invalid --jobs"),
        (vec!["resources", "frobnicate"], "unknown step `frobnicate`"),
        (vec!["nope"], "unknown task `nope`"),
    ] {
        let run = xtask(&args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        let first = run.stderr.lines().next().unwrap_or("");
        assert!(
            first.starts_with("error: ") && first.contains(needle),
            "{args:?}: {}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------
// The command line.

#[test]
fn empty_repeated_or_invalid_values_exit_2_and_long_and_short_forms_agree() {
    for (args, needle) in [
        (vec!["resources", "--output", ""], "--output is empty"),
        (vec!["resources", "--source", ""], "--source is empty"),
        (
            vec!["resources", "-a", "amd64", "--arch", "arm64"],
            "given twice",
        ),
        (vec!["resources", "--jobs", "99"], "invalid --jobs"),
    ] {
        let run = xtask(&args, &[]);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
    // `--flag=value` and upstream's short forms reach the same place.
    let server = Server::start(REPO, vec![bytes_release("v1", "jammy", "arm64", &[100])]);
    let dir = TempDir::new("h13");
    let out = format!("--output={}", dir.path().display());
    let api = format!("--github-api={}", server.api_url());
    xtask(
        &[
            "resources",
            "download",
            &out,
            &api,
            "-v",
            "v1",
            "-a",
            "arm64",
            "-l",
            "jammy",
        ],
        &[],
    )
    .ok();
    assert_eq!(
        fs::read(dir.path().join("kernel")).unwrap(),
        fake_elf("arm64")
    );
}

#[test]
fn environment_values_are_blamed_on_their_variable() {
    let out = TempDir::new("net-env");
    let o = out.path().to_str().unwrap();
    let file = out.path().join("a-file");
    fs::write(&file, "mine").unwrap();
    let f = file.to_str().unwrap();
    let cases: [(&str, &str, &[&str]); 4] = [
        (
            "GITHUB_API_URL",
            "127.0.0.1:1",
            &["resources", "download", "-o", o],
        ),
        ("RESOURCES", f, &["resources", "download"]),
        (
            "VSWARM_RESOURCES_SOURCE",
            "/nonexistent/mirror",
            &["resources", "download", "-o", o],
        ),
        (
            "VSWARM_HTTP_TIMEOUT",
            "soon",
            &["resources", "download", "-o", o],
        ),
    ];
    for (var, value, args) in cases {
        let run = xtask(args, &[(var, value)]);
        run.failed();
        assert!(
            run.stderr.contains(&format!("error: {var}")),
            "{var}={value}: {}",
            run.stderr
        );
        assert!(!run.stderr.contains("--github-api:"), "{}", run.stderr);
    }
    assert_eq!(fs::read(&file).unwrap(), b"mine");
}
