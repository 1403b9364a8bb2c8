//! Which certificate authorities HTTPS trusts: the system's, as curl and
//! gh do. On Linux that is the CA bundle and directory OpenSSL reads, or
//! `SSL_CERT_FILE` / `SSL_CERT_DIR` instead when set; on macOS and Windows
//! the OS verifier. Mozilla's bundled roots are the fallback only when the
//! system store yields no certificate at all (a bare container), and the
//! errors say so.

use std::sync::OnceLock;

use ureq::tls::RootCerts;

use util::text::clean;

/// The roots chosen for this process, and why, for messages.
pub(super) struct Trust {
    pub(super) roots: RootCerts,
    /// Set when the bundled roots stand in for an empty or unreadable store.
    pub(super) fallback: Option<String>,
    /// `SSL_CERT_FILE=…` / `SSL_CERT_DIR=…` when the user set them.
    pub(super) from_env: Option<String>,
}

/// Decided once: reading the system store costs a few milliseconds.
pub(super) fn trust() -> &'static Trust {
    static TRUST: OnceLock<Trust> = OnceLock::new();
    TRUST.get_or_init(decide)
}

fn from_env() -> Option<String> {
    let set: Vec<String> = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .filter_map(|k| {
            let v = std::env::var_os(k).filter(|v| !v.is_empty())?;
            Some(format!("{k}={}", clean(&v.to_string_lossy(), 200)))
        })
        .collect();
    (!set.is_empty()).then(|| set.join(" "))
}

#[cfg(all(unix, not(target_vendor = "apple")))]
fn decide() -> Trust {
    let env = from_env();
    // What the platform verifier will load; looked at here only to know
    // whether anything is there.
    let loaded = rustls_native_certs::load_native_certs();
    if !loaded.certs.is_empty() {
        return Trust {
            roots: RootCerts::PlatformVerifier,
            fallback: None,
            from_env: env,
        };
    }
    let why = match loaded.errors.first() {
        Some(e) => clean(&e.to_string(), 200),
        None => "no certificate found".into(),
    };
    let store = env
        .clone()
        .unwrap_or_else(|| "the system's certificate store".into());
    Trust {
        roots: RootCerts::WebPki,
        fallback: Some(format!(
            "{store} gave no certificate ({why}), so only the bundled Mozilla roots were trusted"
        )),
        from_env: env,
    }
}

#[cfg(not(all(unix, not(target_vendor = "apple"))))]
fn decide() -> Trust {
    Trust {
        roots: RootCerts::PlatformVerifier,
        fallback: None,
        from_env: from_env(),
    }
}

/// The advice for a server certificate that was not trusted.
pub(super) fn advice(host: &str) -> String {
    let t = trust();
    match (&t.fallback, &t.from_env) {
        (Some(f), Some(_)) => {
            format!("{f}; put the PEM certificate of the CA that signed it there")
        }
        (Some(f), None) => format!(
            "{f}; install the system's CA certificates, or point SSL_CERT_FILE at the PEM \
             certificate of the CA that signed it"
        ),
        (None, Some(env)) => format!(
            "the certificate authorities in {env} do not include the one that signed it; add \
             that CA's PEM certificate there (it replaces the system's store, so it must hold \
             every CA needed)"
        ),
        (None, None) => format!(
            "if {host} is GitHub Enterprise with a private CA, or a proxy that inspects TLS, \
             point SSL_CERT_FILE at that CA's PEM certificate (or SSL_CERT_DIR at a directory \
             of them)"
        ),
    }
}
