//! What the tool tells people besides its errors, in one place: results on
//! stdout (`out!`), progress and notes on stderr (`say!`, `note!`,
//! `warning!`). `--quiet` silences all of it; `--json` keeps stdout for its
//! one document, and the notes and warnings said are kept for that document.
//! A closed stdout (`… | head -1`) ends the program quietly, as `head`
//! expects, never with a panic.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static QUIET: AtomicBool = AtomicBool::new(false);
static JSON: AtomicBool = AtomicBool::new(false);
static KEPT: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// What the step reports for `--json`, key by key.
static REPORT: Mutex<Vec<(&'static str, serde_json::Value)>> = Mutex::new(Vec::new());

/// Set once, from the command line.
pub fn set(quiet: bool, json: bool) {
    QUIET.store(quiet, Ordering::Relaxed);
    JSON.store(json, Ordering::Relaxed);
}

/// Whether `--quiet` was given.
pub fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// A line of results on stdout (not with `--quiet` or `--json`).
pub fn out_line(args: fmt::Arguments) {
    if quiet() || JSON.load(Ordering::Relaxed) {
        return;
    }
    write_stdout(&format!("{args}\n"));
}

/// Writes to stdout; a reader that went away ends the program quietly.
pub fn write_stdout(text: &str) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
    }
}

/// A line on stderr (not with `--quiet`).
pub fn err_line(args: fmt::Arguments) {
    if !quiet() {
        let _ = writeln!(io::stderr().lock(), "{args}");
    }
}

/// `note: …` on stderr, kept for the JSON document.
pub fn note_line(args: fmt::Arguments) {
    keep(format!("note: {args}"));
    err_line(format_args!("note: {args}"));
}

/// `warning: …` on stderr, kept for the JSON document.
pub fn warning_line(args: fmt::Arguments) {
    keep(format!("warning: {args}"));
    err_line(format_args!("warning: {args}"));
}

fn keep(line: String) {
    let mut k = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    // A long run says little; a hostile server must not make it say a lot.
    if k.len() < 200 {
        k.push(crate::text::clean(&line, 500));
    }
}

/// Puts `key` into the step's `--json` document (replacing an earlier one).
pub fn report(key: &'static str, value: serde_json::Value) {
    let mut r = REPORT.lock().unwrap_or_else(|e| e.into_inner());
    r.retain(|(k, _)| *k != key);
    r.push((key, value));
}

/// What the step reported, in order.
pub fn reported() -> Vec<(&'static str, serde_json::Value)> {
    REPORT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Whether `--json` was given.
pub fn json() -> bool {
    JSON.load(Ordering::Relaxed)
}

/// The notes and warnings said so far.
pub fn kept() -> Vec<String> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A line of results on stdout (not with `--quiet` or `--json`).
#[macro_export]
macro_rules! out {
    () => { $crate::say::out_line(format_args!("")) };
    ($($t:tt)*) => { $crate::say::out_line(format_args!($($t)*)) };
}

/// A line of progress on stderr (not with `--quiet`).
#[macro_export]
macro_rules! say {
    () => { $crate::say::err_line(format_args!("")) };
    ($($t:tt)*) => { $crate::say::err_line(format_args!($($t)*)) };
}

/// `note: …` on stderr, kept for the `--json` document.
#[macro_export]
macro_rules! note {
    ($($t:tt)*) => { $crate::say::note_line(format_args!($($t)*)) };
}

/// `warning: …` on stderr, kept for the `--json` document.
#[macro_export]
macro_rules! warning {
    ($($t:tt)*) => { $crate::say::warning_line(format_args!($($t)*)) };
}
