//! The REST API routes: releases by tag, `latest`, the paginated list,
//! assets by id, the `browser_download_url` redirect, and the API faults.

use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::catalog::Catalog;
use crate::http1::{pct_decode, pct_encode, reason, Reply, Request};
use crate::spec::Fault;
use crate::state::{lock, Shared};

pub(crate) const DEFAULT_PER_PAGE: usize = 30;
pub(crate) const MAX_PER_PAGE: usize = 100;

pub(crate) fn now_epoch() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn api_reply(shared: &Shared, req: &Request, body: &[u8]) -> Reply {
    let path = pct_decode(&req.path);
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let catalog = lock(&shared.catalog).clone();
    let ours = |o: &str, r: &str| {
        // GitHub treats owner/repo case-insensitively.
        o.eq_ignore_ascii_case(&shared.owner) && r.eq_ignore_ascii_case(&shared.repo)
    };

    // The browser_download_url lives on the web host, outside the API proper:
    // no API faults, no rate-limit headers.
    if let [o, r, "releases", "download", tag, name] = segs[..] {
        if !ours(o, r) {
            return Reply::text(404, "Not Found");
        }
        let redirected = lock(&shared.faults)
            .iter()
            .find_map(|slot| match &slot.fault {
                Fault::Redirect { asset, location } if asset == name => Some(location.clone()),
                _ => None,
            });
        if let Some(location) = redirected {
            return Reply::text(302, "").header("Location", location);
        }
        return match catalog.asset(tag, name) {
            Some(_) => redirect(shared, tag, name),
            None => Reply::text(404, "Not Found"),
        };
    }

    if let Some(reply) = api_fault(shared, req) {
        return reply;
    }
    let used = shared.api_calls.fetch_add(1, Ordering::SeqCst) + 1;
    let reply = match req.method.as_str() {
        "POST" | "DELETE" => change(shared, req, &segs, body, ours),
        _ => route_api(shared, req, &segs, &catalog, ours),
    };
    // Plausible, never-zero quota headers: zero belongs to the rate-limit fault.
    reply
        .header("X-RateLimit-Limit", "5000")
        .header(
            "X-RateLimit-Remaining",
            5000u64.saturating_sub(used).max(1).to_string(),
        )
        .header("X-RateLimit-Reset", (now_epoch() + 3600).to_string())
        .header("X-RateLimit-Used", used.to_string())
        .header("X-RateLimit-Resource", "core")
}

pub(crate) fn redirect(shared: &Shared, tag: &str, name: &str) -> Reply {
    let location = format!(
        "{}://{}/blob/{}/{}",
        shared.scheme,
        shared.asset_host,
        pct_encode(tag),
        pct_encode(name)
    );
    Reply::text(302, "").header("Location", location)
}

/// Order: transient statuses first (they model a failing front end), then
/// credentials, then the quota.
pub(crate) fn api_fault(shared: &Shared, req: &Request) -> Option<Reply> {
    let mut faults = lock(&shared.faults);
    for slot in faults.iter_mut() {
        if let Fault::ApiStatus { status, .. } = slot.fault {
            if slot.left > 0 {
                slot.left -= 1;
                return Some(Reply::message(status, reason(status)));
            }
        }
        if let Fault::ApiEcho { status, .. } = slot.fault {
            if slot.left > 0 {
                slot.left -= 1;
                let echo: String = req
                    .headers
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}\n"))
                    .collect();
                return Some(Reply::text(
                    status,
                    &format!("upstream said no; you sent:\n{echo}"),
                ));
            }
        }
        if let Fault::ApiRetryAfter { secs, .. } = slot.fault {
            if slot.left > 0 {
                slot.left -= 1;
                return Some(
                    Reply::message(429, "secondary rate limit")
                        .header("Retry-After", secs.to_string()),
                );
            }
        }
    }
    for slot in faults.iter() {
        if let Fault::RequireToken { token } = &slot.fault {
            let ok = req.header("authorization").is_some_and(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
                    .is_some_and(|t| t.trim() == token)
            });
            if !ok {
                return Some(Reply::message(401, "Bad credentials"));
            }
        }
    }
    for slot in faults.iter() {
        if let Fault::ApiRateLimited { reset_epoch } = slot.fault {
            let body = json!({
                "message": "API rate limit exceeded for 127.0.0.1. (But here's the good news: \
                    Authenticated requests get a higher rate limit. Check out the documentation \
                    for more details.)",
                "documentation_url": "https://docs.github.com/rest/overview/resources-in-the-rest-api#rate-limiting",
            });
            return Some(
                Reply::json(403, body.to_string())
                    .header("X-RateLimit-Limit", "60")
                    .header("X-RateLimit-Remaining", "0")
                    .header("X-RateLimit-Reset", reset_epoch.to_string())
                    .header("X-RateLimit-Used", "60")
                    .header("X-RateLimit-Resource", "core"),
            );
        }
    }
    None
}

/// What follows `/repos/{o}/{r}/releases` when `{o}/{r}` is the served repo.
fn releases_route<'a>(
    segs: &'a [&'a str],
    ours: impl Fn(&str, &str) -> bool,
) -> Option<&'a [&'a str]> {
    match segs {
        ["repos", o, r, "releases", rest @ ..] if ours(o, r) => Some(rest),
        _ => None,
    }
}

pub(crate) fn route_api(
    shared: &Shared,
    req: &Request,
    segs: &[&str],
    catalog: &Catalog,
    ours: impl Fn(&str, &str) -> bool,
) -> Reply {
    let not_found = || Reply::message(404, "Not Found");
    let Some(rest) = releases_route(segs, ours) else {
        return not_found();
    };
    match rest {
        [] | [""] => list_releases(shared, req, catalog),
        ["latest"] => catalog
            .releases
            .iter()
            .find(|r| !r.draft && !r.prerelease)
            .map_or_else(not_found, |r| Reply::json(200, r.json.clone())),
        // Drafts are not reachable by tag (GitHub hides them from this route).
        ["tags", tag] => catalog
            .by_tag(tag)
            .filter(|r| !r.draft)
            .map_or_else(not_found, |r| Reply::json(200, r.json.clone())),
        ["assets", id] => {
            let Some((rel, asset)) = id.parse().ok().and_then(|id| catalog.asset_by_id(id)) else {
                return not_found();
            };
            let wants_bytes = req
                .header("accept")
                .is_some_and(|a| a.contains("application/octet-stream"));
            if wants_bytes {
                return redirect(shared, &rel.tag, &asset.name);
            }
            Reply::json(200, catalog.asset_json(rel, asset).to_string())
        }
        [id] => id
            .parse::<u64>()
            .ok()
            .and_then(|id| catalog.releases.iter().find(|r| r.id == id))
            .map_or_else(not_found, |r| Reply::json(200, r.json.clone())),
        _ => not_found(),
    }
}

/// The writing routes: create a release, delete an asset. They need a token.
fn change(
    shared: &Shared,
    req: &Request,
    segs: &[&str],
    body: &[u8],
    ours: impl Fn(&str, &str) -> bool,
) -> Reply {
    let not_found = || Reply::message(404, "Not Found");
    let Some(rest) = releases_route(segs, ours) else {
        return not_found();
    };
    if req.header("authorization").is_none() {
        return Reply::message(401, "Requires authentication");
    }
    match (req.method.as_str(), rest) {
        ("POST", [] | [""]) => {
            let Ok(v) = serde_json::from_slice::<Value>(body) else {
                return Reply::message(400, "Problems parsing JSON");
            };
            let Some(tag) = v["tag_name"].as_str().filter(|t| !t.is_empty()) else {
                return Reply::message(422, "tag_name is missing");
            };
            let draft = v["draft"].as_bool().unwrap_or(false);
            let pre = v["prerelease"].as_bool().unwrap_or(false);
            let created = shared.edit_catalog(|c| {
                if c.by_tag(tag).is_some() {
                    None
                } else {
                    Some(c.create(tag, draft, pre))
                }
            });
            match created {
                Some(json) => Reply::json(201, json),
                None => {
                    let body = json!({
                        "message": "Validation Failed",
                        "errors": [{"resource": "Release", "code": "already_exists", "field": "tag_name"}],
                    });
                    Reply::json(422, body.to_string())
                }
            }
        }
        ("DELETE", ["assets", id]) => match id.parse::<u64>() {
            Ok(id) if shared.edit_catalog(|c| c.delete_asset(id)) => Reply::text(204, ""),
            _ => not_found(),
        },
        _ => Reply::message(405, "Method Not Allowed"),
    }
}

pub(crate) fn list_releases(shared: &Shared, req: &Request, catalog: &Catalog) -> Reply {
    let per_page = req
        .query_param("per_page")
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_PER_PAGE)
        .min(MAX_PER_PAGE);
    let page = req
        .query_param("page")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1);
    let total = catalog.releases.len();
    let last = total.div_ceil(per_page).max(1);
    let looping = shared.list_loop();
    // A looping list serves the first page whatever page is asked for.
    let shown = if looping.is_some() { 1 } else { page };
    let items: Vec<&str> = catalog
        .releases
        .iter()
        .skip((shown - 1).saturating_mul(per_page))
        .take(per_page)
        .map(|r| r.json.as_str())
        .collect();
    let body = format!("[{}]", items.join(","));
    let mut reply = Reply::json(200, body);
    let url = |k: usize| {
        format!(
            "<{}/repos/{}/{}/releases?per_page={per_page}&page={k}>",
            shared.api_url, shared.owner, shared.repo
        )
    };
    if let Some(fresh) = looping {
        let next = if fresh {
            url(page + 1)
        } else {
            format!("<{}{}>", shared.api_url, req.target)
        };
        return reply.header("Link", format!("{next}; rel=\"next\""));
    }
    // Same relation order as GitHub: prev, next, last, first.
    let mut links = Vec::new();
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", url((page - 1).min(last))));
    }
    if page < last {
        links.push(format!("{}; rel=\"next\"", url(page + 1)));
        links.push(format!("{}; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"first\"", url(1)));
    }
    if !links.is_empty() {
        reply = reply.header("Link", links.join(", "));
    }
    reply
}
