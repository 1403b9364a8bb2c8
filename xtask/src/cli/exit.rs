//! What kind of failure an error is, for the exit code and `--json`: read
//! from the types in the error's chain (and inside `io::Error`s), never from
//! its text. The README's table lists the codes; a test checks each. And
//! the `--json` document a run ends with.

use std::io;
use std::time::Instant;

use serde_json::{json, Value};

use crate::commands::session::{BadSums, VerifyFailed};

use super::Usage;

/// The classes of failure, with their exit codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Anything not named below.
    Other = 1,
    /// The command line or the environment is wrong.
    Usage = 2,
    /// The network, a server, the API (rate limit and auth too).
    Network = 3,
    /// A digest, the sums, an archive or image the tool refuses.
    Integrity = 4,
    /// The user's files would be replaced (`--force` replaces them).
    UsersFiles = 5,
    /// Another run holds the lock (`--no-wait`).
    Busy = 6,
    /// The disk is too full.
    NoSpace = 7,
}

impl Class {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The name `--json` gives.
    pub fn name(self) -> &'static str {
        match self {
            Class::Other => "other",
            Class::Usage => "usage",
            Class::Network => "network",
            Class::Integrity => "integrity",
            Class::UsersFiles => "users_files",
            Class::Busy => "busy",
            Class::NoSpace => "no_space",
        }
    }
}

/// The class of `err`: of the causes in its chain, the one most specific
/// to what the user must do (a full disk over the network error it caused).
pub fn class(err: &anyhow::Error) -> Class {
    let util = util::Error::find(err).map(|e| match e {
        util::Error::Busy(_) => Class::Busy,
        util::Error::UsersFiles(_) => Class::UsersFiles,
        util::Error::NoSpace(_) => Class::NoSpace,
    });
    let fetch = fetch::Error::find(err).map(|e| match e {
        fetch::Error::Network(_) => Class::Network,
        fetch::Error::DigestMismatch { .. } => Class::Integrity,
        fetch::Error::Local(_) => Class::Other,
    });
    let archive = archive::Error::find(err).map(|e| match e {
        archive::Error::Local(_) => Class::Other,
        _ => Class::Integrity,
    });
    let app = err.chain().flat_map(|c| {
        let inner = c
            .downcast_ref::<io::Error>()
            .and_then(|e| e.get_ref())
            .map(|i| of(i as &(dyn std::error::Error + 'static)));
        [Some(of(c)), inner].into_iter().flatten()
    });
    [util, fetch, archive]
        .into_iter()
        .flatten()
        .chain(app)
        .max_by_key(|c| rank(*c))
        .unwrap_or(Class::Other)
}

/// Which class wins when several causes are in one chain.
fn rank(c: Class) -> u8 {
    match c {
        Class::Other => 0,
        Class::Network => 1,
        Class::Integrity => 2,
        Class::NoSpace => 3,
        Class::UsersFiles => 4,
        Class::Busy => 5,
        Class::Usage => 6,
    }
}

/// The app's own error types, and a full disk said by the system.
fn of(e: &(dyn std::error::Error + 'static)) -> Class {
    if e.is::<Usage>() {
        Class::Usage
    } else if util::is_full(e) {
        Class::NoSpace
    } else if e.is::<BadSums>() || e.is::<VerifyFailed>() {
        Class::Integrity
    } else {
        Class::Other
    }
}

/// The `--json` document: schema 1, what the step reported, and on failure
/// the error's class and message.
pub fn document(step: &str, result: &anyhow::Result<()>, started: Instant) -> Value {
    let mut doc = json!({
        "schema": 1,
        "tool": concat!("xtask ", env!("CARGO_PKG_VERSION")),
        "step": step,
        "ok": result.is_ok(),
    });
    for (k, v) in util::say::reported() {
        doc[k] = v;
    }
    doc["network_bytes"] = json!(fetch::received());
    doc["elapsed_s"] = json!((started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
    doc["warnings"] = json!(util::say::kept());
    doc["error"] = match result {
        Ok(()) => Value::Null,
        Err(err) => {
            let class = class(err);
            json!({
                "class": class.name(),
                "exit_code": class.code(),
                "message": util::text::clean_message(&format!("{err:#}")),
            })
        }
    };
    doc
}
