//! The uploads host: `POST /repos/{o}/{r}/releases/{id}/assets?name=NAME`
//! with the raw bytes as the body, as `uploads.github.com` takes them, and
//! its faults (a cut body, a 502 after the body), both of which leave an
//! empty asset in state `starter` behind, as GitHub does.

use std::io::{self, Read};
use std::net::Shutdown;

use serde_json::json;

use crate::http1::{pct_decode, read_body, send_reply, Reply, Request};
use crate::spec::Fault;
use crate::state::{Host, Shared};
use crate::tls::Conn;

/// Uploads held in memory: the fixtures are small.
const MAX_UPLOAD: u64 = 256 << 20;

/// What GitHub makes of an unusual asset name; ours: spaces become dots.
fn github_name(name: &str) -> String {
    name.replace(' ', ".")
}

pub(crate) fn receive_upload(shared: &Shared, stream: &mut Conn, req: &Request) -> io::Result<()> {
    let path = pct_decode(&req.path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let reply = |shared: &Shared, stream: &mut Conn, r: Reply| {
        shared.record(Host::Uploads, req, r.status);
        send_reply(stream, r, false)
    };
    let ["repos", o, r, "releases", id, "assets"] = segs[..] else {
        return reply(shared, stream, Reply::message(404, "Not Found"));
    };
    if !(o.eq_ignore_ascii_case(&shared.owner) && r.eq_ignore_ascii_case(&shared.repo)) {
        return reply(shared, stream, Reply::message(404, "Not Found"));
    }
    if req.method != "POST" {
        return reply(shared, stream, Reply::message(405, "Method Not Allowed"));
    }
    if !req
        .header("authorization")
        .is_some_and(|v| v.starts_with("Bearer ") || v.starts_with("token "))
    {
        return reply(
            shared,
            stream,
            Reply::message(401, "Requires authentication"),
        );
    }
    if let Some(required) = shared.required_token() {
        let ok = req
            .header("authorization")
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
            })
            .is_some_and(|t| t.trim() == required);
        if !ok {
            return reply(shared, stream, Reply::message(401, "Bad credentials"));
        }
    }
    let Ok(id) = id.parse::<u64>() else {
        return reply(shared, stream, Reply::message(404, "Not Found"));
    };
    let Some(name) = req
        .query_param("name")
        .map(pct_decode)
        .filter(|n| !n.is_empty())
    else {
        return reply(shared, stream, Reply::message(422, "name is missing"));
    };
    if req.header("content-type").is_none() {
        return reply(
            shared,
            stream,
            Reply::message(422, "Content-Type is missing"),
        );
    }
    let Some(len) = req
        .header("content-length")
        .and_then(|v| v.parse::<u64>().ok())
    else {
        return reply(shared, stream, Reply::message(411, "Length Required"));
    };
    let name = github_name(&name);
    let exists = shared.edit_catalog(|c| {
        c.releases
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.assets.iter().any(|a| a.name == name))
    });
    match exists {
        None => return reply(shared, stream, Reply::message(404, "Not Found")),
        Some(true) => {
            let body = json!({
                "message": "Validation Failed",
                "errors": [{"resource": "ReleaseAsset", "code": "already_exists", "field": "name"}],
                "status": "422",
            });
            return reply(shared, stream, Reply::json(422, body.to_string()));
        }
        Some(false) => {}
    }
    if let Some(after) = shared.take_fault(|f| match f {
        Fault::UploadCut { after_bytes, .. } => Some(*after_bytes),
        _ => None,
    }) {
        let _ = read_body(stream, req, after.min(len));
        shared.edit_catalog(|c| c.add_asset(id, &name, Vec::new(), "starter"));
        shared.record(Host::Uploads, req, 0);
        let _ = stream.shutdown(Shutdown::Both);
        return Ok(());
    }
    if len > MAX_UPLOAD {
        return reply(
            shared,
            stream,
            Reply::message(422, "too large for the test server"),
        );
    }
    let hold = shared.take_fault(|f| match f {
        Fault::UploadHold { after_bytes, .. } => Some(*after_bytes),
        _ => None,
    });
    let data = match hold {
        Some(after) => read_held(shared, stream, req, len, after)?,
        None => read_body(stream, req, len)?,
    };
    if (data.len() as u64) < len {
        // The client went away: GitHub keeps an empty `starter` asset.
        shared.edit_catalog(|c| c.add_asset(id, &name, Vec::new(), "starter"));
        shared.record(Host::Uploads, req, 0);
        return Ok(());
    }
    if let Some(status) = shared.take_fault(|f| match f {
        Fault::UploadStatus { status, .. } => Some(*status),
        _ => None,
    }) {
        shared.edit_catalog(|c| c.add_asset(id, &name, Vec::new(), "starter"));
        return reply(shared, stream, Reply::message(status, "upstream failure"));
    }
    let asset = shared.edit_catalog(|c| c.add_asset(id, &name, data, "uploaded"));
    match asset {
        Some(a) => reply(shared, stream, Reply::json(201, a.to_string())),
        None => reply(shared, stream, Reply::message(404, "Not Found")),
    }
}

/// The body of `len` bytes, read in two goes with the gate between.
fn read_held(
    shared: &Shared,
    stream: &mut Conn,
    req: &Request,
    len: u64,
    after: u64,
) -> io::Result<Vec<u8>> {
    let mut data = read_body(stream, req, after.min(len))?;
    shared.gate.pass(&|| shared.stopping());
    // What the request's first read took in past `after`, then the socket.
    let buffered = req.body_start.get(data.len()..).unwrap_or(&[]);
    let take = buffered.len().min((len - data.len() as u64) as usize);
    data.extend_from_slice(&buffered[..take]);
    let mut chunk = vec![0u8; 64 * 1024];
    while (data.len() as u64) < len {
        let want = (len - data.len() as u64).min(chunk.len() as u64) as usize;
        let n = stream.read(&mut chunk[..want])?;
        if n == 0 {
            break;
        }
        data.extend_from_slice(&chunk[..n]);
    }
    Ok(data)
}
