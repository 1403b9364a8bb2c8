//! The command line's unit tests: parsing, refusals, the help text.
use std::any::Any;

use super::common::check_repo;
use super::flags::FLAGS;
use super::*;
use crate::commands::list::ListArgs;
use crate::commands::maintain::pack::PackArgs;

fn parse_words(words: &[&str]) -> Result<Task> {
    parse(words.iter().map(OsString::from).collect())
}

/// The options and the typed arguments of a command line that must parse
/// into the command `T`.
fn parsed<T: Any>(words: &[&str]) -> (Box<Opts>, T) {
    let Task::Resources(o, _, command) = parse_words(words).unwrap() else {
        panic!("{words:?}: not a command of resources")
    };
    let command: Box<dyn Any> = command;
    match command.downcast::<T>() {
        Ok(c) => (o, *c),
        Err(_) => panic!("{words:?}: not a {}", std::any::type_name::<T>()),
    }
}

fn err(words: &[&str]) -> String {
    match parse_words(words) {
        Ok(_) => panic!("{words:?} parsed"),
        Err(e) => {
            assert!(e.downcast_ref::<Usage>().is_some(), "{words:?}: {e}");
            e.to_string()
        }
    }
}

#[test]
fn eq_form_short_forms_and_step_anywhere() {
    let (o, _) = parsed::<DownloadArgs>(&[
        "resources",
        "-v",
        "v1.2",
        "--arch=arm64",
        "-o",
        "/tmp/x",
        "download",
        "-l",
        "jammy",
    ]);
    assert_eq!(o.version, "v1.2");
    assert_eq!(o.arch, Arch::Arm64);
    assert_eq!(o.os, Os::Jammy);
    assert_eq!(o.output, PathBuf::from("/tmp/x"));
}

#[test]
fn twice_empty_and_foreign_flags() {
    assert!(err(&["resources", "--arch", "amd64", "--arch", "arm64"]).contains("given twice"));
    assert!(err(&["resources", "--force", "--force"]).contains("given twice"));
    assert!(err(&["resources", "--output", ""]).contains("--output is empty"));
    assert!(err(&["resources", "--output="]).contains("--output is empty"));
    assert!(err(&["resources", "--source", ""]).contains("--source is empty"));
    assert!(err(&["resources", "download", "--deep"]).contains("flag of `verify`"));
    assert!(err(&["resources", "--jobs", "17"]).contains("invalid --jobs"));
}

#[test]
fn repos() {
    check_repo("vhive-serverless/vSwarm-u").unwrap();
    for bad in ["x", "/x", "x/", "a/b/c", "../x", "a/.."] {
        assert!(check_repo(bad).is_err(), "{bad}");
    }
}

#[test]
fn sizes_read_as_split_reads_them() {
    use super::pack::parse_size;
    let good: &[(&str, u64)] = &[
        ("500M", 500 << 20),
        ("500m", 500 << 20),
        ("1G", 1 << 30),
        ("64KiB", 64 << 10),
        ("1KB", 1000),
        ("1kD", 1000),
        ("1MB", 1_000_000),
        ("4096", 4096),
        ("010", 10),
        ("+3", 3),
        (" \t3", 3),
        ("1b", 512),
        ("b", 512),
        ("M", 1 << 20),
        ("1T", 1 << 40),
        ("7E", 7 << 60),
        ("9223372036854775807", i64::MAX as u64),
    ];
    for (s, n) in good {
        assert_eq!(parse_size(s), Some(*n), "{s:?}");
    }
    for bad in [
        "",
        "0",
        "0K",
        "-1",
        "-0",
        "+",
        "+ 3",
        " K",
        "3 ",
        "1.5G",
        "1e3",
        "0x10",
        "1Mb",
        "1mb",
        "1Kb",
        "1Kib",
        "1KIB",
        "1B",
        "B",
        "1bB",
        "1g",
        "1t",
        "1Z",
        "1c",
        "8E",
        "10EB",
        "K3",
        "9223372036854775808",
        "99999999999999999999G",
    ] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
}

/// The same table against the real `split -b` (GNU coreutils), when there
/// is one: the same inputs accepted, and the same part size.
#[test]
fn sizes_match_gnu_split() {
    use super::pack::parse_size;
    let split = std::process::Command::new("split")
        .arg("--version")
        .output();
    if !split.is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"split (GNU")) {
        eprintln!("skipped: no GNU split here");
        return;
    }
    let dir = std::env::temp_dir().join(format!("xtask-split-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("in");
    const LEN: u64 = 5000;
    std::fs::write(&input, vec![7u8; LEN as usize]).unwrap();
    for s in [
        "4999",
        "01000",
        "+4000",
        " 4000",
        "\t4000",
        "3 ",
        "0",
        "-1",
        "",
        "b",
        "1b",
        "3bB",
        "K",
        "M",
        "B",
        "1K",
        "1k",
        "1KB",
        "1kB",
        "1KiB",
        "1kiB",
        "1Kib",
        "1Kb",
        "1Mb",
        "1mb",
        "1MB",
        "1M",
        "1m",
        "1MiB",
        "1MD",
        "1KD",
        "1D",
        "1B",
        "1g",
        "1G",
        "1T",
        "1t",
        "1P",
        "1E",
        "1Z",
        "1c",
        "1w",
        "1.5K",
        "1e3",
        "0x10",
        "8E",
        "9EB",
        "10EB",
        "K3",
        "Ki",
        "1KiBB",
        "9223372036854775807",
        "9223372036854775808",
    ] {
        let out = dir.join("x");
        let run = std::process::Command::new("split")
            .arg("-b")
            .arg(s)
            .arg(&input)
            .arg(&out)
            .output()
            .unwrap();
        let ours = parse_size(s);
        assert_eq!(
            run.status.success(),
            ours.is_some(),
            "split -b {s:?}: ours {ours:?}"
        );
        let first = out.with_file_name("xaa");
        if let Some(n) = ours {
            let got = std::fs::metadata(&first).unwrap().len();
            assert_eq!(got, n.min(LEN), "split -b {s:?}");
        }
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            if e.file_name() != "in" {
                std::fs::remove_file(e.path()).unwrap();
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn pack_and_upload_flags() {
    let (o, p) = parsed::<PackArgs>(&[
        "resources",
        "pack",
        "d.qcow2",
        "--compression=zst",
        "--part-size",
        "100M",
        "--level",
        "19",
    ]);
    assert_eq!(p.part_size, 100 << 20);
    assert_eq!(p.level, Some(19));
    assert_eq!(o.output, PathBuf::from("."), "pack writes where it is run");
    assert!(err(&["resources", "pack"]).contains("DISK"));
    assert!(err(&[
        "resources",
        "pack",
        "d",
        "--level",
        "20",
        "--compression",
        "zst"
    ])
    .contains("invalid --level"));
    assert!(err(&["resources", "download", "--part-size", "1M"]).contains("flag of `pack`"));
    assert!(err(&["resources", "upload", "f"]).contains("--version"));
    assert!(err(&["resources", "upload", "--version", "v1"]).contains("FILES"));
    assert!(help::step_help(Cmd::Pack).contains("--part-size"));
    assert!(help::step_help(Cmd::Upload).contains("--clobber"));
    assert!(help::step_help(Cmd::Decompress).contains("--from"));
}

/// A value each flag accepts, for the step that takes it.
fn sample(f: &Flag) -> Option<&'static str> {
    f.value?;
    Some(match f.long {
        "--version" => "v1",
        "--arch" => "arm64",
        "--os-version" => "jammy",
        "--repo" => "a/b",
        "--github-api" => "http://127.0.0.1:1",
        "--jobs" | "--keep" | "--level" => "3",
        "--max-size" | "--part-size" => "1M",
        "--compression" => "xz",
        "--release-id" => "5",
        "--as" => "name",
        _ => "/tmp/x",
    })
}

/// `resources STEP FLAG [VALUE]` plus what the step needs besides.
fn words_for(cmd: Cmd, f: &Flag) -> Vec<String> {
    let mut w = vec!["resources".to_string()];
    if cmd != Cmd::Run {
        w.push(cmd.name().into());
    }
    w.push(f.long.into());
    w.extend(sample(f).map(String::from));
    match cmd {
        Cmd::Pack => w.push("d.qcow2".into()),
        Cmd::Cache => w.push("prune".into()),
        Cmd::Upload => {
            if f.long != "--version" && f.long != "--release-id" {
                w.extend(["--version".into(), "v1".into()]);
            }
            if f.long == "--draft" {
                w.push("--create".into());
            }
            w.push("file".into());
        }
        _ => {}
    }
    w
}

#[test]
fn every_flag_is_taken_by_exactly_its_steps() {
    for cmd in Cmd::ALL {
        for f in FLAGS {
            let words = words_for(cmd, f);
            let got = parse(words.iter().map(OsString::from).collect());
            if f.takes(cmd) {
                if let Err(e) = got {
                    panic!("{words:?}: {e}");
                }
                continue;
            }
            let e = match got {
                Ok(_) => panic!("{words:?} was accepted"),
                Err(e) => e,
            };
            let msg = e.to_string();
            assert!(e.downcast_ref::<Usage>().is_some(), "{words:?}: {msg}");
            assert!(msg.contains(f.long), "{words:?}: {msg}");
            assert!(
                msg.contains(&cmd.label())
                    && (msg.contains("is a flag of") || msg.contains("takes no")),
                "{words:?}: {msg}"
            );
        }
    }
}

/// The names of the flags a step's help lists, in its FLAGS section.
fn listed(help: &str) -> Vec<&str> {
    let (_, section) = help.split_once("\nFLAGS").expect("a FLAGS section");
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("--")))
        .collect()
}

#[test]
fn each_steps_help_lists_exactly_its_flags_with_its_defaults() {
    for cmd in Cmd::ALL {
        let want: Vec<&str> = FLAGS
            .iter()
            .filter(|f| f.takes(cmd))
            .map(|f| f.long)
            .collect();
        let help = help::step_help(cmd);
        assert_eq!(listed(&help), want, "{}", cmd.name());
    }
    let line = |cmd, long: &str| {
        let help = help::step_help(cmd);
        let (_, flags) = help.split_once("\nFLAGS").unwrap();
        let l = flags
            .lines()
            .find(|l| l.contains(&format!("{long} ")))
            .unwrap();
        l.to_string()
    };
    assert!(line(Cmd::Pack, "--output").contains("(default: the current directory)"));
    assert!(!line(Cmd::Pack, "--output").contains("RESOURCES"));
    assert!(line(Cmd::Run, "--output").contains("$RESOURCES"));
    let upload = line(Cmd::Upload, "--version");
    assert!(!upload.contains("default"), "{upload}");
    assert!(upload.contains("required"), "{upload}");
    assert!(line(Cmd::Verify, "--arch").contains("not checked"));
    assert!(line(Cmd::Decompress, "--version").contains("the last downloaded"));
}

#[test]
fn an_unknown_flag_is_named_with_a_suggestion_before_any_step() {
    let e = err(&["resources", "--verison", "v0.1.0"]);
    assert_eq!(e, "unknown flag `--verison` (did you mean `--version`?)");
    let e = err(&["resources", "download", "--no-cahce"]);
    assert!(e.contains("did you mean `--no-cache`?"), "{e}");
    let e = err(&["resources", "--no"]);
    assert!(
        e.contains("`--no-cache`, `--no-raw` or `--no-sparse-detect`"),
        "{e}"
    );
    let e = err(&["resources", "verfy"]);
    assert!(
        e.starts_with("unknown step `verfy` (did you mean `verify`?)"),
        "{e}"
    );
    let e = err(&["resources", "--force", "v0.1.0"]);
    assert!(
        e.contains("unknown step `v0.1.0` (a tag goes after --version)"),
        "{e}"
    );
    assert!(err(&["resources", "-x"]).starts_with("unknown flag `-x`"));
    assert!(err(&["resources", "cache", "lst"]).contains("did you mean `list`?"));
    assert!(err(&["resorces"]).contains("did you mean `resources`?"));
    assert_eq!(args::suggest("--zzzzzz", &["--version"]), None);
}

#[test]
fn the_top_level_version_is_the_tools() {
    for flag in ["--version", "-V"] {
        let Task::Help(text) = parse_words(&[flag]).unwrap() else {
            panic!("{flag}: not printed")
        };
        assert_eq!(text, format!("xtask {}\n", env!("CARGO_PKG_VERSION")));
    }
    assert!(err(&["--version", "v1"]).contains("cargo xtask resources --version TAG"));
    assert!(err(&["--help-me"]).starts_with("unknown flag"));
}

#[test]
fn twice_empty_and_flag_like_values_are_refused() {
    for words in [
        &["resources", "-q", "--quiet"][..],
        &["resources", "--json", "--json"],
        &["resources", "verify", "-v", "v1", "--version=v2"],
        &["resources", "upload", "--as", "a", "--as", "b", "f"],
    ] {
        assert!(err(words).contains("given twice"), "{words:?}");
    }
    assert!(err(&["resources", "--version", " "]).contains("--version is empty"));
    assert!(err(&["resources", "upload", "--as=", "f"]).contains("--as is empty"));
    assert!(err(&["resources", "--output", "--force"]).contains("not the flag `--force`"));
    assert!(err(&["resources", "--arch"]).contains("--arch needs a value: ARCH"));
    assert!(err(&["resources", "--json=yes"]).contains("--json takes no value"));
    assert!(err(&["resources", "download", "v1"]).contains("unexpected argument `v1`"));
}

#[test]
fn verify_and_list_read_what_they_are_given() {
    let (_, v) = parsed::<VerifyArgs>(&[
        "resources",
        "verify",
        "-v",
        "v1",
        "--arch",
        "arm64",
        "--repo",
        "a/b",
        "--quick",
    ]);
    assert_eq!(v.depth, Depth::Quick);
    assert_eq!(
        v.expect,
        Expect {
            tag: Some("v1".into()),
            arch: Some(Arch::Arm64),
            os: None,
            repo: Some("a/b".into())
        }
    );
    let (_, v) = parsed::<VerifyArgs>(&["resources", "verify", "--version", "latest"]);
    assert_eq!(v.expect, Expect::default(), "`latest` checks no tag");
    let (o, _) = parsed::<ListArgs>(&["resources", "list", "--source", "/srv/m"]);
    assert_eq!(o.source.as_deref(), Some("/srv/m"));
    let e = err(&["resources", "decompress", "--from", "d", "--version", "v1"]);
    assert!(e.contains("--version does not apply"), "{e}");
    let (_, c) = parsed::<ConvertArgs>(&["resources", "convert", "--", "-in.qcow2"]);
    assert_eq!(
        c.input,
        Some(PathBuf::from("-in.qcow2")),
        "after --, a word is a path"
    );
}
