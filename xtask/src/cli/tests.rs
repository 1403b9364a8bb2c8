//! The command line's unit tests: parsing, refusals, the help text.
use super::*;

fn parse_words(words: &[&str]) -> Result<Task> {
    parse(words.iter().map(OsString::from).collect())
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
    let Task::Resources(o, step) = parse_words(&[
        "resources",
        "-v",
        "v1.2",
        "--arch=arm64",
        "-o",
        "/tmp/x",
        "download",
        "-l",
        "jammy",
    ])
    .unwrap() else {
        panic!("not resources")
    };
    assert_eq!(step, Step::Download);
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
fn help_lists_every_flag() {
    let h = resources_help(None);
    for f in FLAGS.iter().filter(|f| f.steps.is_empty()) {
        assert!(h.contains(f.long), "{}", f.long);
    }
    assert!(resources_help(Some("convert")).contains("--with-qemu-img"));
    assert!(!resources_help(Some("download")).contains("--deep"));
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
    let Task::Resources(o, Step::Pack(p)) = parse_words(&[
        "resources",
        "pack",
        "d.qcow2",
        "--compression=zst",
        "--part-size",
        "100M",
        "--level",
        "19",
    ])
    .unwrap() else {
        panic!("not pack")
    };
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
    assert!(resources_help(Some("pack")).contains("--part-size"));
    assert!(resources_help(Some("upload")).contains("--clobber"));
    assert!(resources_help(Some("decompress")).contains("--from"));
}
