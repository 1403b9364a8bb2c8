//! Minimal HTTP/1.1 plumbing: reading a request head, writing a reply
//! (whole, or one byte at a time), percent decoding.

use crate::tls::Conn;
use std::io::{self, Read, Write};
use std::time::Duration;

use serde_json::json;

pub(crate) fn pct_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) struct Request {
    /// Bytes read past the head: the start of the body.
    pub(crate) body_start: Vec<u8>,
    pub(crate) method: String,
    /// Path and query as sent (absolute-form reduced to origin-form).
    pub(crate) target: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// Read the request head (up to the blank line); bodies are ignored.
pub(crate) fn read_request(stream: &mut Conn) -> io::Result<Request> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p;
        }
        if buf.len() > 64 * 1024 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too long"));
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let mut parts = lines.next().unwrap_or("").split(' ');
    let method = parts.next().unwrap_or("").to_string();
    let mut target = parts.next().unwrap_or("").to_string();
    if let Some(rest) = target.strip_prefix("http://") {
        target = rest.find('/').map_or("/".into(), |i| rest[i..].to_string());
    }
    if method.is_empty() || !target.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad request line",
        ));
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Request {
        body_start: buf[end + 4..].to_vec(),
        method,
        target,
        path,
        query,
        headers,
    })
}

/// Reads up to `limit` bytes of the body (Content-Length framed); fewer
/// when the client stops sending.
pub(crate) fn read_body(stream: &mut Conn, req: &Request, limit: u64) -> io::Result<Vec<u8>> {
    let len: u64 = req
        .header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let want = len.min(limit) as usize;
    let mut body = req.body_start.clone();
    body.truncate(want);
    let mut chunk = vec![0u8; 64 * 1024];
    while body.len() < want {
        let n = stream.read(&mut chunk[..(want - body.len()).min(64 * 1024)])?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(body)
}

pub(crate) fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        411 => "Length Required",
        422 => "Unprocessable Entity",
        206 => "Partial Content",
        302 => "Found",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

pub(crate) fn write_head(
    stream: &mut Conn,
    status: u16,
    headers: &[(String, String)],
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (n, v) in headers {
        head.push_str(&format!("{n}: {v}\r\n"));
    }
    head.push_str("Server: testkit\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes())
}

/// A complete small response (API answers, errors, redirects).
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn json(status: u16, body: String) -> Reply {
        Reply {
            status,
            headers: vec![(
                "Content-Type".into(),
                "application/json; charset=utf-8".into(),
            )],
            body: body.into_bytes(),
        }
    }

    pub(crate) fn message(status: u16, message: &str) -> Reply {
        let body = json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": status.to_string(),
        });
        Reply::json(status, body.to_string())
    }

    pub(crate) fn text(status: u16, text: &str) -> Reply {
        Reply {
            status,
            headers: vec![("Content-Type".into(), "text/plain; charset=utf-8".into())],
            body: text.as_bytes().to_vec(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: impl Into<String>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }
}

pub(crate) fn send_reply(stream: &mut Conn, reply: Reply, head_only: bool) -> io::Result<()> {
    let mut headers = reply.headers;
    headers.push(("Content-Length".into(), reply.body.len().to_string()));
    write_head(stream, reply.status, &headers)?;
    if !head_only {
        stream.write_all(&reply.body)?;
    }
    stream.flush()
}

/// Sends `reply` one body byte at a time, `ms` apart, until done or stopped.
pub(crate) fn send_trickled(
    stopping: impl Fn() -> bool,
    stream: &mut Conn,
    reply: Reply,
    ms: u64,
) -> io::Result<()> {
    let mut headers = reply.headers;
    headers.push(("Content-Length".into(), reply.body.len().to_string()));
    write_head(stream, reply.status, &headers)?;
    for b in &reply.body {
        if stopping() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        stream.write_all(&[*b])?;
        stream.flush()?;
        std::thread::sleep(Duration::from_millis(ms));
    }
    Ok(())
}
