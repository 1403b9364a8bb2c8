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
    assert_eq!(parse_size("500M"), Some(500 << 20));
    assert_eq!(parse_size("500m"), Some(500 << 20));
    assert_eq!(parse_size("1G"), Some(1 << 30));
    assert_eq!(parse_size("64KiB"), Some(64 << 10));
    assert_eq!(parse_size("1KB"), Some(1000));
    assert_eq!(parse_size("4096"), Some(4096));
    assert_eq!(parse_size("1b"), Some(512));
    for bad in ["", "M", "1.5G", "-1", "1T", "99999999999999999999G"] {
        assert_eq!(parse_size(bad), None, "{bad}");
    }
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
