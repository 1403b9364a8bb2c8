//! The storage host: assets with Range support, and the asset faults
//! (statuses, cut or stalled bodies, ignored ranges, garbage, a rate cap).

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::http1::{pct_decode, send_reply, write_head, Reply, Request};
use crate::spec::{Body, Fault};
use crate::state::{lock, Host, Shared};
use crate::tls::Conn;

/// How long a stalled handler holds its socket at most.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(120);
pub(crate) const CHUNK: usize = 256 * 1024;
pub(crate) const FIXED_DATE: &str = "Wed, 01 May 2024 12:00:00 GMT";

/// What the fault table says about one asset request.
#[derive(Default)]
pub(crate) struct AssetFaults {
    pub(crate) status: Option<u16>,
    pub(crate) cut: Option<u64>,
    pub(crate) stall: Option<u64>,
    pub(crate) no_range: bool,
    pub(crate) truncated: bool,
    pub(crate) rate: Option<u64>,
    pub(crate) garbage: bool,
}

pub(crate) fn asset_faults(shared: &Shared, name: &str, is_get: bool) -> AssetFaults {
    let mut out = AssetFaults::default();
    let mut faults = lock(&shared.faults);
    // At most one counted fault is consumed per request, first added first.
    let mut consumed = false;
    for slot in faults.iter_mut() {
        let counted = is_get && !consumed && slot.left > 0;
        match &slot.fault {
            Fault::Status { asset, status, .. } if asset == name && counted => {
                out.status = Some(*status);
            }
            Fault::CutAfter { asset, bytes, .. } if asset == name && counted => {
                out.cut = Some(*bytes);
            }
            Fault::Stall {
                asset, after_bytes, ..
            } if asset == name && counted => {
                out.stall = Some(*after_bytes);
            }
            Fault::Garbage { asset, .. } if asset == name && counted => out.garbage = true,
            Fault::NoRange { asset } if asset == name => out.no_range = true,
            Fault::Truncated { asset } if asset == name => out.truncated = true,
            Fault::RateCap { bytes_per_sec } => out.rate = Some((*bytes_per_sec).max(1)),
            _ => continue,
        }
        if !consumed
            && (out.status.is_some() || out.cut.is_some() || out.stall.is_some() || out.garbage)
        {
            consumed = true;
            slot.left -= 1;
        }
    }
    out
}

pub(crate) enum RangeReq {
    Full,
    Part(u64, u64),
    Unsatisfiable,
}

/// One `bytes=` range; anything else (several ranges, bad syntax) is ignored,
/// which RFC 9110 allows.
pub(crate) fn parse_range(value: Option<&str>, total: u64) -> RangeReq {
    let Some(spec) = value.and_then(|v| v.trim().strip_prefix("bytes=")) else {
        return RangeReq::Full;
    };
    if spec.contains(',') {
        return RangeReq::Full;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeReq::Full;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // Suffix range: the last N bytes.
        return match b.parse::<u64>() {
            Ok(0) => RangeReq::Unsatisfiable,
            Ok(_) if total == 0 => RangeReq::Unsatisfiable,
            Ok(n) => RangeReq::Part(total.saturating_sub(n), total - 1),
            Err(_) => RangeReq::Full,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeReq::Full;
    };
    let end = if b.is_empty() {
        u64::MAX
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e,
            _ => return RangeReq::Full,
        }
    };
    if start >= total {
        return RangeReq::Unsatisfiable;
    }
    RangeReq::Part(start, end.min(total - 1))
}

pub(crate) fn serve_asset(shared: &Shared, stream: &mut Conn, req: &Request) -> io::Result<()> {
    let path = pct_decode(&req.path);
    let catalog = lock(&shared.catalog).clone();
    let found = match path.trim_start_matches('/').split('/').collect::<Vec<_>>()[..] {
        ["blob", tag, name] => catalog.asset(tag, name),
        _ => None,
    };
    let Some(asset) = found else {
        shared.record(Host::Assets, req, 404);
        return send_reply(stream, Reply::text(404, "NoSuchKey\n"), false);
    };
    let (is_get, head_only) = (req.method == "GET", req.method == "HEAD");
    if !is_get && !head_only {
        shared.record(Host::Assets, req, 405);
        return send_reply(stream, Reply::text(405, "method not allowed\n"), false);
    }
    let f = asset_faults(shared, &asset.name, is_get);
    if let Some(status) = f.status {
        shared.record(Host::Assets, req, status);
        return send_reply(stream, Reply::text(status, "injected failure\n"), false);
    }
    let total = if f.truncated {
        asset.size.saturating_sub(10)
    } else {
        asset.size
    };
    let range = if f.no_range {
        RangeReq::Full
    } else {
        parse_range(req.header("range"), total)
    };
    let mut headers: Vec<(String, String)> = vec![
        ("Content-Type".into(), "application/octet-stream".into()),
        ("Last-Modified".into(), FIXED_DATE.into()),
        ("ETag".into(), format!("\"{}-{}\"", asset.id, total)),
    ];
    if !f.no_range {
        headers.push(("Accept-Ranges".into(), "bytes".into()));
    }
    let (status, start, len) = match range {
        RangeReq::Full => (200, 0, total),
        RangeReq::Part(a, b) => {
            headers.push(("Content-Range".into(), format!("bytes {a}-{b}/{total}")));
            (206, a, b - a + 1)
        }
        RangeReq::Unsatisfiable => {
            headers.push(("Content-Range".into(), format!("bytes */{total}")));
            shared.record(Host::Assets, req, 416);
            let reply = Reply {
                status: 416,
                headers,
                body: Vec::new(),
            };
            return send_reply(stream, reply, head_only);
        }
    };
    headers.push(("Content-Length".into(), len.to_string()));
    shared.record(Host::Assets, req, status);
    write_head(stream, status, &headers)?;
    if head_only {
        return stream.flush();
    }
    let send = f.cut.or(f.stall).map_or(len, |n| n.min(len));
    if f.garbage {
        let junk = Body::Bytes(Arc::new(super::fixture::pseudo_random(total, 0x6a75_6e6b)));
        send_body(shared, stream, &asset.name, &junk, (start, send), f.rate)?;
    } else {
        send_body(
            shared,
            stream,
            &asset.name,
            &asset.body,
            (start, send),
            f.rate,
        )?;
    }
    stream.flush()?;
    if f.cut.is_some() {
        let _ = stream.shutdown(Shutdown::Both);
        return Err(io::ErrorKind::ConnectionAborted.into());
    }
    if f.stall.is_some() {
        hold(shared, stream);
        return Err(io::ErrorKind::TimedOut.into());
    }
    Ok(())
}

/// Keep a stalled socket open, silent, until the client leaves, the stall
/// limit passes, or the server stops.
pub(crate) fn hold(shared: &Shared, stream: &mut Conn) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let deadline = Instant::now() + STALL_LIMIT;
    let mut sink = [0u8; 1024];
    while !shared.stopping() && Instant::now() < deadline {
        match stream.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
}

/// Write `count` bytes of `body` from `start`, paced to `rate` bytes/s if
/// set, counting them as served of asset `name`.
pub(crate) fn send_body(
    shared: &Shared,
    stream: &mut Conn,
    name: &str,
    body: &Body,
    (start, count): (u64, u64),
    rate: Option<u64>,
) -> io::Result<()> {
    // Small chunks under a cap keep the pacing smooth.
    let chunk = rate.map_or(CHUNK, |r| (r / 20).clamp(1, CHUNK as u64) as usize);
    let began = Instant::now();
    let mut sent = 0u64;
    let mut file = match body {
        Body::File(p) => {
            let mut f = std::fs::File::open(p)?;
            f.seek(SeekFrom::Start(start))?;
            Some(f)
        }
        Body::Bytes(_) => None,
    };
    let mut buf = vec![0u8; if file.is_some() { chunk } else { 0 }];
    while sent < count {
        if shared.stopping() {
            return Err(io::ErrorKind::Interrupted.into());
        }
        let n = (count - sent).min(chunk as u64) as usize;
        match (body, file.as_mut()) {
            (Body::Bytes(b), _) => {
                let from = (start + sent) as usize;
                stream.write_all(&b[from..from + n])?;
            }
            (_, Some(f)) => {
                f.read_exact(&mut buf[..n])?;
                stream.write_all(&buf[..n])?;
            }
            (Body::File(_), None) => unreachable!(),
        }
        sent += n as u64;
        *lock(&shared.served).entry(name.to_string()).or_default() += n as u64;
        if let Some(r) = rate {
            let due = Duration::from_secs_f64(sent as f64 / r as f64);
            let elapsed = began.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
    }
    Ok(())
}
