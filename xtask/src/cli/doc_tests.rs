//! The documentation against the declarations it is generated from or
//! names: each step's `--help` lists exactly its flags with its defaults,
//! the reference's flag table is the one the declarations make (write it
//! with `XTASK_BLESS=1`), the README's common flags and exit codes and the
//! reference's steps and variables are the tool's.

use std::fs;
use std::path::{Path, PathBuf};

use super::exit::Class;
use super::flags::{self, Cmd, Flag, FLAGS};
use super::help;

/// The names of the flags in a step's `--help`, and their lines.
fn help_flags(step: Cmd) -> Vec<(String, String)> {
    let text = help::step_help(step);
    let (_, section) = text.split_once("\nFLAGS").expect("a FLAGS section");
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
        let f = flags::find(name).unwrap_or_else(|| panic!("README: no flag {name}"));
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
    for (names, _) in help::ENVIRONMENT {
        for v in names.split(", ") {
            assert!(
                vars.contains(&format!("`{v}`")),
                "reference: no variable {v}"
            );
        }
    }
}

#[test]
fn the_readme_exit_code_table_is_the_tools() {
    let readme = fs::read_to_string(repo_file("README.md")).unwrap();
    for c in [
        Class::Other,
        Class::Usage,
        Class::Network,
        Class::Integrity,
        Class::UsersFiles,
        Class::Busy,
        Class::NoSpace,
    ] {
        let row = format!("| {} | `{}` |", c.code(), c.name());
        assert!(readme.contains(&row), "README lacks the row {row}");
    }
}
