//! URLs as the client checks them: only http and https with a host, the
//! origin a token is bound to, and `Location` headers resolved as RFC 3986
//! says.

use util::text::clean;

/// `scheme://host[:port]` → `host[:port]`, lowercased, userinfo dropped.
pub(crate) fn authority(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let auth = &rest[..end];
    let auth = auth.rsplit_once('@').map(|(_, h)| h).unwrap_or(auth);
    auth.to_ascii_lowercase()
}

/// `scheme://authority`, lowercased: what the token is bound to.
pub(super) fn origin(url: &str) -> String {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or("");
    format!("{}://{}", scheme.to_ascii_lowercase(), authority(url))
}

/// The scheme of `url`, if it has one.
pub(super) fn scheme_of(url: &str) -> Option<String> {
    let (s, _) = url.split_once(':')?;
    let ok = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    ok.then(|| s.to_ascii_lowercase())
}

/// Fails unless `url` is an http(s) URL with a host; `what` names the asset
/// or document it is for.
pub fn check_url(url: &str, what: &str) -> std::result::Result<(), String> {
    match scheme_of(url).as_deref() {
        Some("http") | Some("https") if !authority(url).is_empty() => Ok(()),
        Some("http") | Some("https") => {
            Err(format!("{what}: the URL `{}` has no host", clean(url, 120)))
        }
        Some(other) => Err(format!(
            "{what}: the URL `{}` uses the scheme `{}`; only http and https are accepted",
            clean(url, 120),
            clean(other, 20)
        )),
        None => Err(format!(
            "{what}: `{}` is not a URL; only http and https URLs are accepted",
            clean(url, 120)
        )),
    }
}

/// An http(s) URL that a server named, read strictly so that every parser
/// finds the same host in it: printable ASCII only, no userinfo, no
/// fragment, no braces, `%` only before two hex digits, a host of letters,
/// digits, `-` and `.` (or a bracketed IPv6 address), a numeric port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    /// The URL exactly as given and checked: what is sent.
    pub url: String,
    /// `scheme://host:port`, lowercased, the port always written.
    pub origin: String,
    /// Whether a `?` query follows the path.
    pub has_query: bool,
}

/// Checks `url` as [`Checked`] describes; `what` names it in the error.
pub fn check_strict(url: &str, what: &str) -> std::result::Result<Checked, String> {
    let odd = |why: String| {
        Err(format!(
            "{what}: the URL `{}` {why}; refusing a URL that parsers could read two ways",
            clean(url, 160)
        ))
    };
    if let Some(c) = url.chars().find(|c| !url_char(*c)) {
        return odd(match c {
            '@' => "holds userinfo (`@`)".into(),
            '#' => "has a fragment (`#`)".into(),
            '{' | '}' => "has a brace (a template expression where none belongs)".into(),
            c if c.is_whitespace() => "contains whitespace".into(),
            c if c.is_control() => "contains a control character".into(),
            c if !c.is_ascii() => "contains a non-ASCII character".into(),
            c => format!("contains `{c}`"),
        });
    }
    let bad_escape = url.match_indices('%').any(|(i, _)| {
        let hex = url.as_bytes().get(i + 1..i + 3);
        !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if bad_escape {
        return odd("has a `%` not followed by two hex digits".into());
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return odd("is not an absolute http or https URL".into());
    };
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return odd("is not an http or https URL".into()),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (auth, tail) = rest.split_at(end);
    let Some((host, port)) = host_port(auth, default_port) else {
        return odd("has no usable host and port".into());
    };
    if tail.contains(['[', ']']) {
        return odd("has a bracket outside the host".into());
    }
    Ok(Checked {
        url: url.to_string(),
        origin: format!("{scheme}://{host}:{port}"),
        has_query: tail.contains('?'),
    })
}

/// The characters RFC 3986 allows in a URL, less `@`, `#` and the rest a
/// server has no reason to send.
fn url_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:/?%[]".contains(c)
}

/// `host[:port]` → (lowercased host, port): a name of letters, digits, `-`
/// and `.`, or a bracketed IPv6 address; a port of 1 to 65535.
fn host_port(auth: &str, default_port: u16) -> Option<(String, u16)> {
    let (host, port) = match auth.strip_prefix('[') {
        Some(v6) => {
            let (addr, after) = v6.split_once(']')?;
            let ok = !addr.is_empty()
                && addr
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() || ":.".contains(c));
            (ok.then(|| format!("[{addr}]"))?, after)
        }
        None => {
            let i = auth.find(':').unwrap_or(auth.len());
            let name = &auth[..i];
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-.".contains(c));
            (ok.then(|| name.to_string())?, &auth[i..])
        }
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => default_port,
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().ok().filter(|&p| p != 0)?
        }
        _ => return None,
    };
    Some((host.to_ascii_lowercase(), port))
}

/// Resolves a `Location` header against the URL that sent it (RFC 3986
/// reference resolution: absolute, network-path, absolute-path, query-only
/// and relative-path references, with `.` and `..` segments removed).
pub(super) fn resolve_location(base: &str, loc: &str) -> String {
    if scheme_of(loc).is_some() {
        return loc.to_string();
    }
    let scheme = base.split_once("://").map(|(s, _)| s).unwrap_or("https");
    if let Some(rest) = loc.strip_prefix("//") {
        return format!("{scheme}://{rest}");
    }
    let (root, rest) = match base.split_once("://") {
        Some((s, r)) => {
            let end = r.find(['/', '?', '#']).unwrap_or(r.len());
            (format!("{s}://{}", &r[..end]), &r[end..])
        }
        None => (base.to_string(), ""),
    };
    let base_path = rest.split(['?', '#']).next().unwrap_or("");
    let base_path = if base_path.is_empty() { "/" } else { base_path };
    let loc = loc.split('#').next().unwrap_or("");
    if loc.is_empty() {
        let query = rest
            .find('?')
            .map_or("", |i| rest[i..].split('#').next().unwrap_or(""));
        return format!("{root}{base_path}{query}");
    }
    if loc.starts_with('?') {
        return format!("{root}{base_path}{loc}");
    }
    let (path, query) = match loc.find('?') {
        Some(i) => (&loc[..i], &loc[i..]),
        None => (loc, ""),
    };
    let merged = if path.starts_with('/') {
        path.to_string()
    } else {
        let dir = base_path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{path}")
    };
    format!("{root}{}{query}", remove_dots(&merged))
}

/// RFC 3986 §5.2.4, on an absolute path.
fn remove_dots(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segs: Vec<&str> = path.split('/').skip(1).collect();
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        match *seg {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_urls_read_one_way() {
        let c = check_strict(
            "HTTPS://Uploads.GitHub.com/repos/o/r/releases/1/assets",
            "u",
        )
        .unwrap();
        assert_eq!(c.origin, "https://uploads.github.com:443");
        assert!(!c.has_query);
        let c = check_strict("http://127.0.0.1:8080/a%20b?name=x.y", "u").unwrap();
        assert_eq!(c.origin, "http://127.0.0.1:8080");
        assert!(c.has_query);
        assert_eq!(
            check_strict("http://[::1]:9/x", "u").unwrap().origin,
            "http://[::1]:9"
        );
        for bad in [
            "http://127.0.0.3:1{@127.0.0.1:2/x",
            "http://user@127.0.0.1/x",
            "http://h/x@y",
            "http://h/x#f",
            "http://h/a{b}",
            "http://h/a b",
            "http://h/a\tb",
            "http://h/a\u{e9}",
            "http://h/a%2",
            "http://h/a%zz",
            "http://h/a\\b",
            "http://h/a|b",
            "http://h:/x",
            "http://h:0/x",
            "http://h:65536/x",
            "http://h:8x/x",
            "http:///x",
            "http://h_x/",
            "http://h/[x]",
            "http:h",
            "ftp://h/x",
            "//h/x",
        ] {
            let e = check_strict(bad, "the upload_url").unwrap_err();
            assert!(e.starts_with("the upload_url: the URL"), "{bad}: {e}");
        }
    }

    #[test]
    fn authorities() {
        assert_eq!(
            authority("https://api.github.com/repos/x"),
            "api.github.com"
        );
        assert_eq!(authority("http://127.0.0.1:8080"), "127.0.0.1:8080");
        assert_eq!(authority("https://u:p@Host.example/x?y"), "host.example");
        assert_eq!(origin("HTTPS://Api.GitHub.com/x"), "https://api.github.com");
    }

    #[test]
    fn schemes() {
        assert!(check_url("https://x/y", "a").is_ok());
        assert!(check_url("HTTP://x", "a").is_ok());
        let e = check_url("file:///etc/passwd", "asset kernel").unwrap_err();
        assert!(e.contains("asset kernel") && e.contains("`file`"), "{e}");
        assert!(check_url("ftp://x/y", "a").unwrap_err().contains("`ftp`"));
        assert!(check_url("/etc/passwd", "a").is_err());
        assert!(check_url("https:///x", "a").is_err());
    }

    #[test]
    fn locations() {
        assert_eq!(resolve_location("http://a/b/c?q", "/d"), "http://a/d");
        assert_eq!(resolve_location("http://a/b/c", "d"), "http://a/b/d");
        assert_eq!(resolve_location("https://a/b", "//h/x"), "https://h/x");
        assert_eq!(resolve_location("https://a/b", "http://h/x"), "http://h/x");
        assert_eq!(resolve_location("https://a/b", "file:///x"), "file:///x");
        assert_eq!(
            resolve_location("http://h/r/tags/v1", "?x=1"),
            "http://h/r/tags/v1?x=1"
        );
        assert_eq!(resolve_location("http://h/a/b/c", "../d"), "http://h/a/d");
        assert_eq!(
            resolve_location("http://h/a/b/c", "./d/./e"),
            "http://h/a/b/d/e"
        );
        assert_eq!(resolve_location("http://h/a/b", "/x/../y"), "http://h/y");
        assert_eq!(resolve_location("http://h/a/b?q", "#f"), "http://h/a/b?q");
        assert_eq!(resolve_location("http://h", "x"), "http://h/x");
    }
}
