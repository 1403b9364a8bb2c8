//! The README and the pages under `xtask/docs/`: every relative link points
//! at a file that exists, and every `#anchor` at a heading of that file (as
//! GitHub names headings), so no link in the documentation is dead.

use std::fs;
use std::path::{Path, PathBuf};

fn pages() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut v = vec![root.join("../README.md")];
    for e in fs::read_dir(root.join("docs")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "md") {
            v.push(e.path());
        }
    }
    v.sort();
    v
}

/// GitHub's anchor of a heading: lowercase, punctuation dropped, spaces to `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut v = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            v.push(slug(line.trim_start_matches('#')));
        }
    }
    v
}

/// `(target)` of every `[text](target)` outside code blocks.
fn links(text: &str) -> Vec<String> {
    let mut in_code = false;
    let mut v = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code {
            continue;
        }
        let mut rest = line;
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            v.push(after[..end].to_string());
            rest = &after[end..];
        }
    }
    v
}

#[test]
fn every_link_in_the_documentation_resolves() {
    let mut dead = Vec::new();
    for page in pages() {
        let text = fs::read_to_string(&page).unwrap();
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                page.clone()
            } else {
                page.parent().unwrap().join(file)
            };
            if !target.exists() {
                dead.push(format!("{}: {link} (no such file)", page.display()));
                continue;
            }
            if !anchor.is_empty() {
                let t = fs::read_to_string(&target).unwrap();
                if !anchors(&t).iter().any(|a| a == anchor) {
                    dead.push(format!("{}: {link} (no such heading)", page.display()));
                }
            }
        }
    }
    assert!(dead.is_empty(), "dead links:\n{}", dead.join("\n"));
}

#[test]
fn the_readme_stays_a_short_page_for_users() {
    let readme = fs::read_to_string(&pages()[0]).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 220,
        "README.md is {lines} lines; move depth to xtask/docs/"
    );
    for part in [
        "## Install Rust",
        "## The two commands",
        "## What lands in `resources/`",
        "## Common flags",
        "## Coming from artifacts.py",
        "## CI",
        "## Top errors",
    ] {
        assert!(readme.contains(part), "README lacks {part}");
    }
}

#[test]
fn slugs_follow_github() {
    assert_eq!(
        slug(" What lands in `resources/`"),
        "what-lands-in-resources"
    );
    assert_eq!(slug("Coming from artifacts.py"), "coming-from-artifactspy");
}
