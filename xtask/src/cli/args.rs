//! The parser under the declarations, on pico-args: `--flag=value` split,
//! every flag word checked against the declarations (an unknown one named,
//! with a suggestion, before any word is taken for a step), the step found,
//! exactly its flags taken (each at most once, never with an empty value),
//! and a flag of another step named as such. Usage errors are [`Usage`].

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use anyhow::Result;

use super::flags::{self, Cmd, Flag, FLAGS, HELP};
use util::text::clean;

/// An error in how the command was called: exit code 2, one line.
#[derive(Debug)]
pub struct Usage(pub String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
impl std::error::Error for Usage {}

pub(crate) fn usage(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Usage(msg.into()))
}

/// The command line of `cargo xtask resources`, read.
pub enum Line {
    /// `--help` of this step.
    Help(Cmd),
    Given(Given),
}

/// A step's flags as given (only flags it takes), and its other words.
pub struct Given {
    pub cmd: Cmd,
    got: Vec<(&'static str, Option<OsString>)>,
    /// The words that are not flags, in order (those after `--` too).
    free: std::collections::VecDeque<OsString>,
}

/// Reads the words after `resources`.
pub fn parse(words: Vec<OsString>) -> Result<Line> {
    let mut words = split_eq(words)?;
    let tail = match words.iter().position(|w| w == "--") {
        Some(i) => words.split_off(i).into_iter().skip(1).collect(),
        None => Vec::new(),
    };
    let cmd = match first_free(&words)? {
        Some(i) => step_named(&words.remove(i).to_string_lossy())?,
        None => Cmd::Run,
    };
    let mut args = pico_args::Arguments::from_vec(words);
    if args.contains(keys(&HELP)) {
        return Ok(Line::Help(cmd));
    }
    let mut got = Vec::new();
    for f in FLAGS.iter().filter(|f| f.takes(cmd)) {
        if let Some(v) = take(&mut args, f)? {
            got.push((f.long, v));
        }
    }
    let mut free: std::collections::VecDeque<OsString> = Default::default();
    for w in args.finish() {
        if is_flag_word(&w.to_string_lossy()) {
            return Err(not_taken(&w.to_string_lossy(), cmd));
        }
        free.push_back(w);
    }
    free.extend(tail);
    Ok(Line::Given(Given { cmd, got, free }))
}

impl Given {
    fn get(&self, f: &Flag) -> Option<&Option<OsString>> {
        self.got.iter().find(|(l, _)| *l == f.long).map(|(_, v)| v)
    }

    /// Whether the flag was given.
    pub fn on(&self, f: &Flag) -> bool {
        self.get(f).is_some()
    }

    pub fn path(&self, f: &Flag) -> Option<PathBuf> {
        self.get(f).cloned().flatten().map(PathBuf::from)
    }

    /// The value, trimmed.
    pub fn text(&self, f: &Flag) -> Result<Option<String>> {
        Ok(self.text_as_given(f)?.map(|s| s.trim().to_string()))
    }

    /// The value with its blanks kept, for a value read as another tool
    /// reads it (`--part-size` as `split -b`).
    pub fn text_as_given(&self, f: &Flag) -> Result<Option<String>> {
        match self.get(f).cloned().flatten() {
            None => Ok(None),
            Some(v) => v
                .into_string()
                .map(Some)
                .map_err(|_| usage(format!("{} is not valid UTF-8", f.long))),
        }
    }

    /// The next word that is not a flag (a path, a FILE, a cache command).
    pub fn next_free(&mut self) -> Option<OsString> {
        self.free.pop_front()
    }

    /// Refuses a word no one took.
    pub fn finish(&mut self) -> Result<()> {
        match self.next_free() {
            None => Ok(()),
            Some(w) => Err(unexpected(&w.to_string_lossy(), self.cmd)),
        }
    }
}

fn keys(f: &Flag) -> pico_args::Keys {
    match f.short {
        Some(s) => [s, f.long].into(),
        None => f.long.into(),
    }
}

fn is_flag_word(w: &str) -> bool {
    w.starts_with('-') && w.len() > 1
}

/// Takes `f` out of `args`: None when absent, `Some(None)` for a switch,
/// `Some(Some(value))`; twice, without a value, or empty is an error.
fn take(args: &mut pico_args::Arguments, f: &Flag) -> Result<Option<Option<OsString>>> {
    let Some(placeholder) = f.value else {
        let on = args.contains(keys(f));
        if on && args.contains(keys(f)) {
            return Err(usage(format!("{} is given twice", f.long)));
        }
        return Ok(on.then_some(None));
    };
    let mut value = || {
        args.opt_value_from_os_str(keys(f), |s| Ok::<_, String>(s.to_os_string()))
            .map_err(|e| match e {
                pico_args::Error::OptionWithoutAValue(_) => {
                    usage(format!("{} needs a value: {placeholder}", f.long))
                }
                e => usage(format!("{}: {e}", f.long)),
            })
    };
    let Some(v) = value()? else {
        return Ok(None);
    };
    if value()?.is_some() {
        return Err(usage(format!("{} is given twice", f.long)));
    }
    let shown = v.to_string_lossy();
    if shown.trim().is_empty() {
        return Err(usage(format!(
            "{} is empty: expected {placeholder}",
            f.long
        )));
    }
    if flags::find(&shown).is_some() {
        return Err(usage(format!(
            "{} needs a value ({placeholder}), not the flag `{shown}`",
            f.long
        )));
    }
    Ok(Some(Some(v)))
}

/// Splits `--flag=value` into `--flag value` (the form argparse, gh and
/// cargo also take), keeping non-UTF-8 values intact; `--switch=value` and
/// `--flag=` are errors, an unknown `--name=value` is named.
fn split_eq(words: Vec<OsString>) -> Result<Vec<OsString>> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let mut out = Vec::with_capacity(words.len());
    let mut after_dashes = false;
    for word in words {
        let bytes = word.as_bytes();
        let eq = bytes.iter().position(|&b| b == b'=');
        let (Some(i), false, true) = (eq, after_dashes, bytes.starts_with(b"-")) else {
            after_dashes |= bytes == b"--";
            out.push(word);
            continue;
        };
        let name = String::from_utf8_lossy(&bytes[..i]).into_owned();
        let value = bytes[i + 1..].to_vec();
        match flags::find(&name) {
            None => return Err(unknown_flag(&name)),
            Some(f) if f.value.is_none() => {
                return Err(usage(format!("{} takes no value", f.long)))
            }
            Some(f) if value.is_empty() => {
                return Err(usage(format!(
                    "{} is empty: expected {}",
                    f.long,
                    f.value.unwrap_or("a value")
                )))
            }
            Some(_) => {
                out.push(OsString::from(name));
                out.push(OsString::from_vec(value));
            }
        }
    }
    Ok(out)
}

/// Checks that every flag word is a declared flag and returns where the
/// first word that is neither a flag nor a flag's value is: the step.
fn first_free(words: &[OsString]) -> Result<Option<usize>> {
    let mut step = None;
    let mut i = 0;
    while i < words.len() {
        let w = words[i].to_string_lossy();
        if is_flag_word(&w) {
            let f = flags::find(&w).ok_or_else(|| unknown_flag(&w))?;
            // The value is not looked at: it may start with `-`.
            i += usize::from(f.value.is_some());
        } else if step.is_none() {
            step = Some(i);
        }
        i += 1;
    }
    Ok(step)
}

fn step_named(word: &str) -> Result<Cmd> {
    Cmd::from_word(word).ok_or_else(|| {
        let names: Vec<&str> = Cmd::ALL[1..].iter().map(|c| c.name()).collect();
        usage(format!(
            "unknown step `{}`{}; the steps are {}",
            clean(word, 40),
            suggest(word, &names).unwrap_or_else(|| tag_hint(word)),
            names.join(", ")
        ))
    })
}

/// For a word that looks like a tag where none is expected.
fn tag_hint(word: &str) -> String {
    let tagish = word.starts_with('v') && word[1..].starts_with(|c: char| c.is_ascii_digit());
    if tagish {
        " (a tag goes after --version)".into()
    } else {
        String::new()
    }
}

fn unknown_flag(word: &str) -> anyhow::Error {
    let longs: Vec<&str> = FLAGS.iter().map(|f| f.long).collect();
    usage(format!(
        "unknown flag `{}`{}",
        clean(word, 60),
        suggest(word, &longs).unwrap_or_default()
    ))
}

/// A declared flag that `cmd` does not take: which steps do.
fn not_taken(word: &str, cmd: Cmd) -> anyhow::Error {
    let Some(f) = flags::find(word) else {
        return unknown_flag(word);
    };
    match f.steps {
        [only] => usage(format!(
            "`{}` is a flag of {}, not of {}",
            f.long,
            only.label(),
            cmd.label()
        )),
        steps => {
            let owners: Vec<String> = steps.iter().map(|c| c.label()).collect();
            usage(format!(
                "{} takes no {} (it is a flag of {})",
                cmd.label(),
                f.long,
                owners.join(", ")
            ))
        }
    }
}

fn unexpected(word: &str, cmd: Cmd) -> anyhow::Error {
    usage(format!(
        "unexpected argument `{}` for {}{}",
        clean(word, 60),
        cmd.label(),
        tag_hint(word)
    ))
}

/// ` (did you mean `x`?)` for the names one edit from `word`, those it
/// begins, then those two edits away (for a word of three letters or more), at most
/// three, nearest first.
pub fn suggest(word: &str, names: &[&str]) -> Option<String> {
    let core = word.trim_start_matches('-').chars().count();
    if core < 2 {
        return None;
    }
    let mut near: Vec<(usize, &str)> = names
        .iter()
        .filter_map(|&n| {
            let rank = match distance(word, n) {
                d @ 0..=1 => d,
                _ if n.starts_with(word) => 2,
                2 if core >= 3 => 3,
                _ => return None,
            };
            Some((rank, n))
        })
        .collect();
    near.sort();
    near.dedup();
    let names: Vec<String> = near.iter().take(3).map(|(_, n)| format!("`{n}`")).collect();
    match names.as_slice() {
        [] => None,
        [one] => Some(format!(" (did you mean {one}?)")),
        [rest @ .., last] => Some(format!(" (did you mean {} or {last}?)", rest.join(", "))),
    }
}

/// The Levenshtein distance between `a` and `b`, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}
