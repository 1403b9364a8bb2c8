//! What GitHub's answers mean for the user: a spent rate limit (with the
//! time it resets), a refused token, or anything else unexpected, each as a
//! message that says what to do.

use fetch::network;
use fetch::{header, quota_spent, ApiResponse, Http};
use util::text::Shown;

/// The error for a rate-limited or unauthorised API answer, if it is one.
pub(crate) fn api_refusal(resp: &ApiResponse, url: &str, http: &Http) -> Option<anyhow::Error> {
    if quota_spent(resp) {
        let reset = header(&resp.headers, "x-ratelimit-reset")
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|t| (0..=4_102_444_800).contains(t))
            .map(|t| format!("it resets at {}", util::time::local_time(t)))
            .unwrap_or_else(|| "the reset time was not given".into());
        let hint = if http.has_token() {
            "wait until then (the token's own limit is exhausted)"
        } else {
            "set GH_TOKEN (or GITHUB_TOKEN) to a GitHub token to lift the limit to 5000 an hour, or wait"
        };
        return Some(network(format!(
            "the GitHub API rate limit is exhausted ({} answered {}); {reset}; {hint}",
            Shown(url),
            resp.status
        )));
    }
    if resp.status == 401 {
        let var = http.token_var();
        return Some(network(format!(
            "{} answered 401: the token in {var} was refused (invalid or expired); fix it or unset it",
            Shown(url)
        )));
    }
    None
}

pub(crate) fn unexpected(resp: &ApiResponse, url: &str) -> anyhow::Error {
    network(format!(
        "{} answered HTTP {}: {}",
        Shown(url),
        resp.status,
        Shown(&resp.body)
    ))
}
