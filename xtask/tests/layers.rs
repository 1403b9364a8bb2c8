//! What the compiler cannot check about the app crate (the engine crates'
//! order is the dependency graph's, and the app is a binary, so nothing in
//! it is seen from outside): every file opens with a `//!` line on what it
//! owns and stays readable; `cli` is imported by `main.rs` alone; a command
//! imports no other command, only the session below it (and a maintainer's
//! command the maintainers' shared `maintain::local`); the session imports
//! no command. The paths are read from the source.

use std::fs;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The module path of a source file: `src/fetch/http.rs` → [fetch, http].
fn module_of(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src()).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().unwrap();
    match last.as_str() {
        "mod.rs" | "lib.rs" | "main.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    parts
}

/// The source file that defines module path `m`, or the longest prefix of
/// it that is a file (an item inside it).
fn file_of(m: &[String]) -> Option<PathBuf> {
    for n in (1..=m.len()).rev() {
        let base = src().join(m[..n].join("/"));
        for cand in [base.with_extension("rs"), base.join("mod.rs")] {
            if cand.is_file() {
                return Some(cand);
            }
        }
    }
    None
}

/// Code without comments and without the unit tests at the end of a file
/// (their `super` is the file itself; they are not the architecture).
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every path that starts `crate::` or `super::` in `text`, with `{a, b::c}`
/// groups expanded, as segments.
fn paths(text: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = text[from..].find(root) {
            let start = from + i;
            from = start + root.len();
            let before = start.checked_sub(1).map(|j| bytes[j]);
            if before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':') {
                continue;
            }
            let head = root.trim_end_matches("::").to_string();
            expand(&text[from..], vec![head], &mut out);
        }
    }
    out
}

fn expand(rest: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let rest = rest.trim_start();
    if let Some(inner) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut end = 0;
        for (i, c) in inner.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i;
                        break;
                    }
                }
                _ => {}
            }
        }
        let mut depth = 0;
        let mut piece = String::new();
        for c in inner[..end].chars().chain(std::iter::once(',')) {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(&piece, prefix.clone(), out);
                    piece.clear();
                    continue;
                }
                _ => {}
            }
            piece.push(c);
        }
        return;
    }
    let ident: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    if ident.is_empty() || ident == "self" {
        out.push(prefix);
        return;
    }
    let mut p = prefix;
    p.push(ident.clone());
    match rest[ident.len()..].strip_prefix("::") {
        Some(more) => expand(more, p, out),
        None => out.push(p),
    }
}

/// The files `file` imports, each with the path that names it.
fn imports(file: &Path) -> Vec<(PathBuf, String)> {
    let text = code(&fs::read_to_string(file).unwrap());
    let me = module_of(file);
    let mut out = Vec::new();
    for p in paths(&text) {
        let target: Vec<String> = if p[0] == "crate" {
            p[1..].to_vec()
        } else {
            // `super` is the module above this file's own module.
            let mut base = me.clone();
            let mut rest = &p[..];
            while rest.first().is_some_and(|s| s == "super") {
                base.pop();
                rest = &rest[1..];
            }
            base.extend(rest.iter().cloned());
            base
        };
        if let Some(f) = file_of(&target) {
            if f != file {
                out.push((f, p.join("::")));
            }
        }
    }
    out
}

/// The part of the app a module belongs to: `main`, `cli`, `commands` (the
/// `Command` trait), `session`, `maintain` (its module list),
/// `maintain::local`, or the name of a command (`run`, `maintain::pack`).
fn unit(m: &[String]) -> String {
    let m: Vec<&str> = m.iter().map(String::as_str).collect();
    match m.as_slice() {
        [] => "main".into(),
        ["cli", ..] => "cli".into(),
        ["commands"] => "commands".into(),
        ["commands", "session", ..] => "session".into(),
        ["commands", "maintain"] => "maintain".into(),
        ["commands", "maintain", sub, ..] => format!("maintain::{sub}"),
        ["commands", cmd, ..] => cmd.to_string(),
        other => panic!("{other:?} is in no part of the app"),
    }
}

/// Whether a file of `from` may import `to`.
fn allowed(from: &str, to: &str) -> bool {
    let shared = ["commands", "session"];
    match from {
        "main" => true,
        _ if to == "main" => false,
        "cli" => to != "maintain",
        "commands" | "maintain" => to != "cli",
        "session" => to == "session",
        "maintain::local" => to == from,
        cmd => {
            to == cmd
                || shared.contains(&to)
                || (to == "maintain::local" && cmd.starts_with("maintain::"))
        }
    }
}

#[test]
fn commands_import_only_the_session_and_no_one_imports_the_command_line() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    all.sort();
    let mut bad = Vec::new();
    for f in &all {
        let from = unit(&module_of(f));
        for (target, how) in imports(f) {
            let to = unit(&module_of(&target));
            if !allowed(&from, &to) {
                bad.push(format!(
                    "{} ({from}) imports {} ({to}) by {how}",
                    f.strip_prefix(src()).unwrap().display(),
                    target.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "imports across the app's parts:\n{}",
        bad.join("\n")
    );
}

#[test]
fn the_parts_are_what_the_rules_say() {
    let m = |p: &str| p.split('/').map(String::from).collect::<Vec<_>>();
    assert_eq!(unit(&m("commands/run")), "run");
    assert_eq!(unit(&m("commands/maintain/pack")), "maintain::pack");
    assert!(allowed("maintain::pack", "maintain::local"));
    assert!(allowed("run", "session"));
    assert!(!allowed("run", "download"));
    assert!(!allowed("maintain::pack", "maintain::upload"));
    assert!(!allowed("session", "run"));
    assert!(!allowed("run", "cli"));
    assert!(!allowed("session", "cli"));
}

#[test]
fn every_folder_says_what_it_owns_and_files_stay_readable() {
    let mut all = Vec::new();
    files(&src(), &mut all);
    for f in &all {
        let text = fs::read_to_string(f).unwrap();
        let rel = f.strip_prefix(src()).unwrap().display().to_string();
        assert!(
            text.starts_with("//!"),
            "{rel} does not open with a line on what it owns"
        );
        let lines = text.lines().count();
        assert!(lines <= 600, "{rel} has {lines} lines; split it");
    }
}

#[test]
fn the_checker_sees_imports() {
    let p = paths("use crate::{a::b, c::{d, e}};\nlet x = super::f::g(); y::crate::z");
    let joined: Vec<String> = p.iter().map(|v| v.join("::")).collect();
    assert_eq!(
        joined,
        ["crate::a::b", "crate::c::d", "crate::c::e", "super::f::g"]
    );
}

/// The engine crates' floors, top first: a crate may depend only on crates
/// on a lower floor. Cargo refuses a circle, but not an arrow back up
/// (`qcow2` depending on `fetch` would build).
const FLOORS: &[&[&str]] = &[
    &["github"],
    &["fetch", "archive"],
    &["mgzip", "qcow2", "install"],
    &["util"],
];

fn floor(name: &str) -> Option<usize> {
    FLOORS.iter().position(|f| f.contains(&name))
}

/// The workspace crates `crates/NAME/Cargo.toml` depends on (any section).
fn engine_deps(name: &str) -> Vec<String> {
    let toml = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates")
        .join(name)
        .join("Cargo.toml");
    let text = fs::read_to_string(&toml).unwrap();
    text.lines()
        .filter_map(|l| l.split(['=', '.', ' ']).next())
        .filter(|dep| floor(dep).is_some())
        .map(str::to_string)
        .collect()
}

#[test]
fn engine_crates_depend_only_on_lower_floors() {
    let crates = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates");
    let mut seen = 0;
    for e in fs::read_dir(&crates).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(mine) = floor(&name) else {
            panic!("crates/{name} is on no floor; add it to FLOORS in tests/layers.rs");
        };
        seen += 1;
        for dep in engine_deps(&name) {
            let theirs = floor(&dep).unwrap();
            assert!(
                theirs > mine,
                "crates/{name} depends on {dep}, which is not on a lower floor"
            );
        }
    }
    assert_eq!(seen, FLOORS.iter().map(|f| f.len()).sum::<usize>());
    // The checker reads a dependency line as the crate it names.
    assert!(engine_deps("archive").contains(&"qcow2".to_string()));
}
