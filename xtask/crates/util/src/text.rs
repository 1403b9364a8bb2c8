//! Text from outside (a server, a mirror, a file header) on its way to a
//! terminal or a log: control characters escaped so it cannot move the
//! cursor or retitle the window, cut to a readable length, and any secret
//! this process holds (the GitHub token) blanked out even if a server echoes it.

use std::fmt;
use std::sync::{Mutex, OnceLock};

/// How much of one piece of outside text a message shows.
pub(crate) const SHOWN_MAX: usize = 200;

fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// Remembers `secret` so that [`clean`] and [`clean_message`] never show it.
pub fn register_secret(secret: &str) {
    // Very short values would blank out ordinary words.
    if secret.len() >= 4 {
        let mut s = secrets().lock().unwrap_or_else(|e| e.into_inner());
        if !s.iter().any(|x| x == secret) {
            s.push(secret.to_string());
        }
    }
}

/// `s` with every registered secret replaced by `***`.
pub(crate) fn redact(s: &str) -> String {
    let list = secrets().lock().unwrap_or_else(|e| e.into_inner());
    let mut out = s.to_string();
    for secret in list.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "***");
        }
    }
    out
}

/// `s` made safe to print: secrets blanked, control characters (C0, DEL,
/// C1, and the bidi overrides that reorder what a terminal shows) written
/// as `\u{..}` escapes, and at most `max` characters kept, with `…` when cut.
pub fn clean(s: &str, max: usize) -> String {
    // Cut before redacting would let a secret straddle the cut; the input may
    // be huge, so look only a little past what is kept.
    let window: String = s.chars().take(max.saturating_add(256)).collect();
    let window = redact(&window);
    let mut out = String::with_capacity(window.len().min(max * 2));
    let mut cut = s.chars().nth(max.saturating_add(256)).is_some();
    for (kept, c) in window.chars().enumerate() {
        if kept >= max {
            cut = true;
            break;
        }
        if is_control(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    if cut {
        out.push('…');
    }
    out
}

/// Longest message shown whole: each piece of outside text in it is cut
/// already; this is the backstop.
const MESSAGE_MAX: usize = 8000;

/// The same for a whole message that may hold several lines of our own:
/// newlines stay, every other control character is escaped, and only a
/// message of runaway length is cut.
pub fn clean_message(s: &str) -> String {
    let s = redact(s);
    let s = match s.char_indices().nth(MESSAGE_MAX) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    };
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c != '\n' && is_control(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    out
}

fn is_control(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Displays outside text cleaned and cut to 200 characters.
pub struct Shown<'a>(pub &'a str);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&clean(self.0, SHOWN_MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_controls_and_cuts() {
        assert_eq!(clean("v1\x1b]0;pwned\x07", 50), "v1\\u{1b}]0;pwned\\u{7}");
        assert_eq!(clean("a\u{202e}b", 10), "a\\u{202e}b");
        let long = "x".repeat(10_000);
        let c = clean(&long, 20);
        assert_eq!(c.chars().count(), 21);
        assert!(c.ends_with('…'));
        assert_eq!(clean("short", 20), "short");
        assert_eq!(clean_message("line\nnext\r"), "line\nnext\\u{d}");
    }

    #[test]
    fn secrets_are_blanked() {
        register_secret("ghp_secretvalue123");
        assert_eq!(
            clean("echo: Bearer ghp_secretvalue123 end", 100),
            "echo: Bearer *** end"
        );
        assert_eq!(redact("ghp_secretvalue123"), "***");
    }
}
