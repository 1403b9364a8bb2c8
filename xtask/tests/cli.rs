//! The command line as users and CI meet it, through the real binary: every
//! flag honoured or refused per step, suggestions, `--version`, each step's
//! help, and the documentation's flag tables checked against the one
//! declaration of the flags (`xtask/src/cli/flags.rs`).

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

use common::*;
use testkit::{make_qcow2, pack_disk, upstream_assets, Compression, ReleaseSpec, Server, TempDir};
use xtask::cli::flags::{Cmd, Flag, FLAGS};

fn usage_error(args: &[&str]) -> String {
    let run = xtask(args, &[]);
    assert_eq!(run.code, 2, "{args:?}\n{}", run.all());
    assert!(run.stdout.is_empty(), "{args:?}: {}", run.stdout);
    run.stderr
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

/// The names of the flags in a step's `--help`, and their lines.
fn help_flags(step: Cmd) -> Vec<(String, String)> {
    let mut args = vec!["resources"];
    if step != Cmd::Run {
        args.push(step.name());
    }
    args.push("--help");
    let run = xtask(&args, &[]);
    run.ok();
    let (_, section) = run.stdout.split_once("\nFLAGS").expect("a FLAGS section");
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .filter_map(|l| {
            let name = l.split_whitespace().find(|w| w.starts_with("--"))?;
            Some((name.to_string(), l.to_string()))
        })
        .collect()
}

#[test]
fn each_steps_help_lists_only_its_flags_with_its_own_defaults() {
    for step in Cmd::ALL {
        let listed: Vec<String> = help_flags(step).into_iter().map(|(n, _)| n).collect();
        let want: Vec<&str> = FLAGS
            .iter()
            .filter(|f| f.takes(step))
            .map(|f| f.long)
            .collect();
        assert_eq!(listed, want, "{}", step.name());
    }
    let line = |step, name: &str| {
        help_flags(step)
            .into_iter()
            .find(|(n, _)| n == name)
            .map(|(_, l)| l)
            .unwrap()
    };
    let pack_output = line(Cmd::Pack, "--output");
    assert!(
        pack_output.contains("(default: the current directory)"),
        "{pack_output}"
    );
    let upload_version = line(Cmd::Upload, "--version");
    assert!(!upload_version.contains("default"), "{upload_version}");
    assert!(!help_flags(Cmd::Verify).iter().any(|(n, _)| n == "--jobs"));
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

// ---------------------------------------------------------------------------
// The documentation's flag tables, against the declarations.

const BEGIN: &str =
    "<!-- flags: generated from xtask/src/cli/flags.rs; the test `cli` prints it -->";
const END: &str = "<!-- flags: end -->";

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// `` `download`, `decompress`: text `` for the steps that say `text`, in order.
fn grouped(f: &Flag, text: impl Fn(Cmd) -> Option<String>) -> Vec<String> {
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for a in f.differs {
        let Some(t) = text(a.step) else { continue };
        match groups.iter_mut().find(|(g, _)| *g == t) {
            Some((_, steps)) => steps.push(a.step.name()),
            None => groups.push((t, vec![a.step.name()])),
        }
    }
    groups
        .into_iter()
        .map(|(t, steps)| {
            let steps: Vec<String> = steps.iter().map(|s| format!("`{s}`")).collect();
            format!("{}: {t}", steps.join(", "))
        })
        .collect()
}

fn shown_default(f: &Flag, d: &str) -> String {
    match (d, f.value) {
        ("", None) => "off".into(),
        ("", Some(_)) => "none".into(),
        (d, _) => d.into(),
    }
}

fn row(f: &Flag) -> String {
    let mut names = Vec::new();
    names.extend(f.short.map(|s| format!("`{s}`")));
    names.push(match f.value {
        Some(v) => format!("`{} {v}`", f.long),
        None => format!("`{}`", f.long),
    });
    let steps = if f.steps.len() == Cmd::ALL.len() {
        "all".to_string()
    } else {
        let s: Vec<String> = f
            .steps
            .iter()
            .map(|c| {
                if *c == Cmd::Run {
                    "*(none)*".into()
                } else {
                    format!("`{}`", c.name())
                }
            })
            .collect();
        s.join(", ")
    };
    let mut meaning = f.help.to_string();
    if !f.more.is_empty() {
        meaning = format!("{meaning}; {}", f.more);
    }
    for g in grouped(f, |c| {
        f.differs
            .iter()
            .find(|a| a.step == c)?
            .help
            .map(String::from)
    }) {
        meaning = format!("{meaning}. {g}");
    }
    let mut default = shown_default(f, f.default);
    let others = grouped(f, |c| {
        let a = f.differs.iter().find(|a| a.step == c)?;
        a.default.map(|d| shown_default(f, d))
    });
    if !others.is_empty() {
        default = format!("{default} ({})", others.join("; "));
    }
    format!(
        "| {} | {} | {} | {} |",
        cell(&names.join(", ")),
        steps,
        cell(&meaning),
        cell(&default)
    )
}

fn flag_table() -> String {
    let mut t = String::from("| flag | steps | meaning | default |\n|---|---|---|---|\n");
    for f in FLAGS {
        t.push_str(&row(f));
        t.push('\n');
    }
    t
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

#[test]
fn the_reference_flag_table_is_the_declarations() {
    let path = repo_file("xtask/docs/reference.md");
    let text = fs::read_to_string(&path).unwrap();
    let want = format!("{BEGIN}\n{}{END}", flag_table());
    let got = match (text.find(BEGIN), text.find(END)) {
        (Some(b), Some(e)) if b < e => &text[b..e + END.len()],
        _ => "",
    };
    if got != want {
        if std::env::var_os("XTASK_BLESS").is_some() {
            let new = if got.is_empty() {
                format!("{text}\n{want}\n")
            } else {
                text.replace(got, &want)
            };
            fs::write(&path, new).unwrap();
        }
        panic!(
            "{} disagrees with the flag declarations; paste this (or run with XTASK_BLESS=1):\n\n{want}\n",
            path.display()
        );
    }
}

/// The rows of the markdown table under `heading` in `text`, as cells.
fn table_rows<'a>(text: &'a str, heading: &str) -> Vec<Vec<&'a str>> {
    let (_, after) = text
        .split_once(heading)
        .unwrap_or_else(|| panic!("no {heading}"));
    after
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2)
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect()
}

#[test]
fn the_readme_common_flags_agree_with_the_declarations() {
    let readme = fs::read_to_string(repo_file("README.md")).unwrap();
    let rows = table_rows(&readme, "## Common flags");
    assert!(rows.len() >= 5, "{rows:?}");
    for r in rows {
        let names: Vec<&str> = r[0].split('`').skip(1).step_by(2).collect();
        let long = names
            .iter()
            .find(|n| n.starts_with("--"))
            .expect("a long name");
        let (name, value) = match long.split_once(' ') {
            Some((n, v)) => (n, Some(v)),
            None => (*long, None),
        };
        let f = xtask::cli::flags::find(name).unwrap_or_else(|| panic!("README: no flag {name}"));
        assert!(
            f.takes(Cmd::Run),
            "README: {name} is not a flag of the full run"
        );
        assert_eq!(value, f.value, "README: {name}'s value");
        let short = names.iter().find(|n| !n.starts_with("--")).copied();
        assert_eq!(short, f.short, "README: {name}'s short form");
        assert_eq!(
            r[2],
            shown_default(f, f.default_at(Cmd::Run)),
            "README: {name}'s default"
        );
    }
}

#[test]
fn the_reference_names_every_step_and_variable() {
    let text = fs::read_to_string(repo_file("xtask/docs/reference.md")).unwrap();
    let steps: Vec<&str> = table_rows(&text, "## Steps")
        .iter()
        .filter_map(|r| r[0].split('`').nth(1)?.split_whitespace().next())
        .collect();
    for c in &Cmd::ALL[1..] {
        assert!(steps.contains(&c.name()), "reference: no step {}", c.name());
    }
    let vars: String = table_rows(&text, "## Environment variables")
        .iter()
        .map(|r| r[0])
        .collect();
    for (names, _) in xtask::cli::help::ENVIRONMENT {
        for v in names.split(", ") {
            assert!(
                vars.contains(&format!("`{v}`")),
                "reference: no variable {v}"
            );
        }
    }
}
