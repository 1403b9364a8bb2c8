//! Checksum files as `sha256sum` and `shasum -a 256` write them, and the
//! one digest a set's sums file gives for the disk image.

use anyhow::{anyhow, bail, Result};

use util::fmt::parse_sha256_hex;

/// How many names an error lists before saying "and N more".
const LIST_MAX: usize = 20;

// Checksum files

/// One line of a `sha256sum` / `shasum -a 256` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SumEntry {
    /// The digest the line gives.
    pub sha256: [u8; 32],
    /// The file name the line gives (as written, maybe with a directory).
    pub path: String,
}

/// Parses `sha256sum`/`shasum -a 256` output: `<64 hex>  <path>` (text mode),
/// `<64 hex> *<path>` (binary mode), GNU's escaped form (`\<64 hex>  <path
/// with \\ and \n>`) and the BSD/`--tag` form `SHA256 (<path>) = <64 hex>`.
/// Blank lines and CRLF line ends are accepted. Errors name `source` and the
/// line number.
pub fn parse_sums(text: &str, source: &str) -> Result<Vec<SumEntry>> {
    let mut out = Vec::new();
    // Editors on some systems start a UTF-8 file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        let entry = parse_sum_line(line).map_err(|why| {
            anyhow!(
                "{source} line {}: {why} (line: `{}`); the checksum file is damaged",
                i + 1,
                util::text::clean(line, 100)
            )
        })?;
        out.push(entry);
    }
    Ok(out)
}

fn parse_sum_line(line: &str) -> std::result::Result<SumEntry, String> {
    if let Some(rest) = line.strip_prefix("SHA256 (") {
        // BSD tag form: `SHA256 (path) = hex`. The path may itself contain
        // ") = ", so split at the last one.
        let (path, digest) = rest
            .rsplit_once(") = ")
            .ok_or_else(|| "expected `SHA256 (<file>) = <64 hex digits>`".to_string())?;
        let sha256 = parse_hex_digest(digest.trim_end())?;
        if path.is_empty() {
            return Err("the file name is empty".into());
        }
        return Ok(SumEntry {
            sha256,
            path: path.to_string(),
        });
    }
    // GNU coreutils prefixes a line with `\` when the name needed escaping.
    let (escaped, line) = match line.strip_prefix('\\') {
        Some(l) => (true, l),
        None => (false, line),
    };
    let digits = line.bytes().take_while(u8::is_ascii_hexdigit).count();
    let digest = &line[..digits];
    let rest = &line[digits..];
    let path = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))
        .ok_or_else(|| {
            if digits != 64 && rest.starts_with(' ') {
                format!("the checksum has {digits} hex digits; SHA-256 needs 64")
            } else {
                "expected `<64 hex digits>  <file name>` as written by sha256sum".to_string()
            }
        })?;
    let sha256 = parse_hex_digest(digest)?;
    if path.is_empty() {
        return Err("the file name is empty".into());
    }
    let path = if escaped {
        unescape_gnu(path)?
    } else {
        path.to_string()
    };
    Ok(SumEntry { sha256, path })
}

fn parse_hex_digest(s: &str) -> std::result::Result<[u8; 32], String> {
    if s.chars().count() != 64 {
        return Err(format!(
            "the checksum has {} hex digits; SHA-256 needs 64",
            s.chars().count()
        ));
    }
    parse_sha256_hex(s).ok_or_else(|| "the checksum is not hexadecimal".to_string())
}

fn unescape_gnu(s: &str) -> std::result::Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            _ => return Err("bad escape in file name".into()),
        }
    }
    Ok(out)
}

fn shorten(s: &str, max: usize) -> String {
    util::text::clean(s, max)
}

/// The one entry whose path's file name equals `file_name` (upstream writes
/// `temp/disk-image.qcow2`; we match it as `disk-image.qcow2`). Zero matches,
/// or several with different digests, is an error listing the entries.
pub fn expected_sha256(entries: &[SumEntry], file_name: &str, source: &str) -> Result<[u8; 32]> {
    let matches: Vec<&SumEntry> = entries
        .iter()
        .filter(|e| base_name(&e.path) == file_name)
        .collect();
    let listing = || {
        if entries.is_empty() {
            "it lists nothing".to_string()
        } else {
            let names: Vec<String> = entries.iter().map(|e| shorten(&e.path, 100)).collect();
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            format!("it lists: {}", list_names(&names))
        }
    };
    match matches.as_slice() {
        [] => bail!("{source} has no checksum for {file_name} ({})", listing()),
        [first, rest @ ..] => {
            // The same digest listed twice (e.g. `./x` and `x`) is harmless.
            if rest.iter().any(|e| e.sha256 != first.sha256) {
                bail!(
                    "{source} lists {file_name} {} times with different checksums ({}); \
                     cannot tell which is right",
                    matches.len(),
                    listing()
                );
            }
            Ok(first.sha256)
        }
    }
}

/// The last path component, ignoring trailing slashes.
pub(super) fn base_name(path: &str) -> &str {
    let p = path.trim_end_matches('/');
    p.rsplit('/').next().unwrap_or(p)
}

fn list_names(names: &[&str]) -> String {
    let mut s = names
        .iter()
        .take(LIST_MAX)
        .copied()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > LIST_MAX {
        s.push_str(&format!(" … and {} more", names.len() - LIST_MAX));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn sums_text_binary_crlf_and_blank_lines() {
        let text = format!("\n{H}  temp/disk-image.qcow2\r\n\r\n{H} *other file\n   \n");
        let e = parse_sums(&text, "x.sums").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].path, "temp/disk-image.qcow2");
        assert_eq!(e[1].path, "other file");
        assert_eq!(e[0].sha256[0], 0x01);
        assert_eq!(e[0].sha256[31], 0xef);
    }

    #[test]
    fn sums_upper_case_tag_and_escaped_forms() {
        let up = H.to_uppercase();
        let text = format!("SHA256 (a b.qcow2) = {H}\n\\{up}  dir\\\\x\\ny\n");
        let e = parse_sums(&text, "s").unwrap();
        assert_eq!(e[0].path, "a b.qcow2");
        assert_eq!(e[1].path, "dir\\x\ny");
        assert_eq!(e[0].sha256, e[1].sha256);
    }

    #[test]
    fn sums_errors_name_source_and_line() {
        let bad_hex = format!("{H}  ok\n{}  x\n", H.replace('a', "g"));
        let err = parse_sums(&bad_hex, "disk.sums").unwrap_err().to_string();
        assert!(err.contains("disk.sums line 2"), "{err}");

        let short = format!("{}  x\n", &H[..63]);
        let err = parse_sums(&short, "disk.sums").unwrap_err().to_string();
        assert!(
            err.contains("line 1") && err.contains("63 hex digits"),
            "{err}"
        );

        let long = format!("{H}0  x\n");
        let err = parse_sums(&long, "disk.sums").unwrap_err().to_string();
        assert!(err.contains("65"), "{err}");

        for bad in [
            format!("{H} x"),
            format!("{H}  "),
            H.to_string(),
            "hello".into(),
        ] {
            assert!(parse_sums(&bad, "s").is_err(), "accepted {bad:?}");
        }
        // Non-ASCII must not make slicing panic.
        assert!(parse_sums("ééééé  x", "s").is_err());
        assert!(parse_sums("SHA256 (x) = zz", "s").is_err());
    }

    #[test]
    fn expected_matches_base_name_only() {
        let e = parse_sums(&format!("{H}  temp/disk-image.qcow2\n"), "s").unwrap();
        assert_eq!(
            expected_sha256(&e, "disk-image.qcow2", "s").unwrap(),
            e[0].sha256
        );
        let err = expected_sha256(&e, "image.qcow2", "sums.txt")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sums.txt") && err.contains("temp/disk-image.qcow2"));
        assert!(expected_sha256(&[], "x", "s").is_err());

        let other = H.replace('0', "1");
        let two = parse_sums(&format!("{H}  a/x.qcow2\n{other}  b/x.qcow2\n"), "s").unwrap();
        assert!(expected_sha256(&two, "x.qcow2", "s").is_err());
        let same = parse_sums(&format!("{H}  a/x.qcow2\n{H}  ./x.qcow2\n"), "s").unwrap();
        assert!(expected_sha256(&same, "x.qcow2", "s").is_ok());
    }
}
