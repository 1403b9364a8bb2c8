//! What the server's threads share: the catalog, the faults switched on,
//! the request log and the shutdown flag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::catalog::Catalog;
use crate::http1::Request;
use crate::spec::{Fault, Logged};

pub(crate) struct FaultSlot {
    pub(crate) fault: Fault,
    /// Remaining uses for counted faults; ignored by the permanent ones.
    pub(crate) left: usize,
}

impl Shared {
    /// Takes one use of the first counted fault `pick` selects.
    pub(crate) fn take_fault<T>(&self, pick: impl Fn(&Fault) -> Option<T>) -> Option<T> {
        let mut faults = lock(&self.faults);
        for slot in faults.iter_mut() {
            if slot.left > 0 {
                if let Some(v) = pick(&slot.fault) {
                    slot.left -= 1;
                    return Some(v);
                }
            }
        }
        None
    }

    /// The token a `RequireToken` fault asks for, if one is on.
    pub(crate) fn required_token(&self) -> Option<String> {
        lock(&self.faults).iter().find_map(|s| match &s.fault {
            Fault::RequireToken { token } => Some(token.clone()),
            _ => None,
        })
    }

    /// Whether the API is switched to never answer.
    pub(crate) fn api_silent(&self) -> bool {
        lock(&self.faults)
            .iter()
            .any(|s| s.fault == Fault::ApiSilent)
    }

    /// The `ListLoop` fault, if one is on: whether its links are fresh URLs.
    pub(crate) fn list_loop(&self) -> Option<bool> {
        lock(&self.faults).iter().find_map(|s| match s.fault {
            Fault::ListLoop { fresh_urls } => Some(fresh_urls),
            _ => None,
        })
    }

    /// Changes the catalog (uploads, new releases, deletions).
    pub(crate) fn edit_catalog<T>(&self, f: impl FnOnce(&mut Catalog) -> T) -> T {
        let mut guard = lock(&self.catalog);
        let mut c: Catalog = (**guard).clone();
        let out = f(&mut c);
        *guard = Arc::new(c);
        out
    }
}

pub(crate) struct Shared {
    pub(crate) owner: String,
    pub(crate) repo: String,
    pub(crate) api_url: String,
    pub(crate) asset_host: String,
    /// `http`, or `https` when `tls` is set.
    pub(crate) scheme: &'static str,
    pub(crate) tls: Option<Arc<rustls::ServerConfig>>,
    pub(crate) catalog: Mutex<Arc<Catalog>>,
    pub(crate) faults: Mutex<Vec<FaultSlot>>,
    pub(crate) log: Mutex<Vec<Logged>>,
    pub(crate) shutdown: AtomicBool,
    pub(crate) api_calls: AtomicU64,
    pub(crate) gate: Gate,
    /// Asset body bytes written to clients, by asset name (all releases).
    pub(crate) served: Mutex<std::collections::HashMap<String, u64>>,
}

/// Where `Fault::UploadHold` uploads wait for the test.
#[derive(Default)]
pub(crate) struct Gate {
    /// (uploads waiting now, whether the gate is open)
    state: Mutex<(usize, bool)>,
    changed: Condvar,
}

impl Gate {
    /// Waits until the gate opens (or `stopping` says the server stops).
    pub(crate) fn pass(&self, stopping: &dyn Fn() -> bool) {
        let mut st = lock(&self.state);
        st.0 += 1;
        self.changed.notify_all();
        while !st.1 && !stopping() {
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.0 -= 1;
    }

    /// Whether an upload waits at the gate, within `limit`.
    pub(crate) fn wait_held(&self, limit: Duration) -> bool {
        let end = Instant::now() + limit;
        let mut st = lock(&self.state);
        while st.0 == 0 {
            let Some(left) = end.checked_duration_since(Instant::now()) else {
                return false;
            };
            st = self
                .changed
                .wait_timeout(st, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    pub(crate) fn open(&self) {
        lock(&self.state).1 = true;
        self.changed.notify_all();
    }
}

/// Lock ignoring poison: a panicking handler thread must not wedge the test.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Host {
    Api,
    Assets,
    Uploads,
}

impl Host {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Host::Api => "api",
            Host::Assets => "assets",
            Host::Uploads => "uploads",
        }
    }
}

impl Shared {
    pub(crate) fn record(&self, host: Host, req: &Request, status: u16) {
        lock(&self.log).push(Logged {
            host: host.name(),
            method: req.method.clone(),
            path: req.target.clone(),
            headers: req.headers.clone(),
            status,
        });
    }

    pub(crate) fn stopping(&self) -> bool {
        self.shutdown.load(Ordering::SeqCst)
    }
}
