//! The ground floor's failures that decide an exit code ([`Error`]), and the
//! one way every crate finds its typed error in an `anyhow` chain
//! ([`find_in_chain`]), looking inside `io::Error`s too: a `Read` can only
//! fail with an `io::Error`, so a typed failure read through one is wrapped.

use std::io;

/// A failure the app classifies by kind (its exit code), not by text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The user's files stand where the run would write (exit code 5):
    /// `--force` replaces them.
    #[error("{0}")]
    UsersFiles(String),
    /// A disk too full for what must be written (exit code 7).
    #[error("{0}")]
    NoSpace(String),
    /// Another run holds a lock and we were told not to wait (exit code 6).
    #[error("{0}")]
    Busy(String),
}

impl Error {
    /// The first [`Error`] in `e`'s chain (inside `io::Error`s too).
    pub fn find(e: &anyhow::Error) -> Option<&Error> {
        find_in_chain(e)
    }

    /// Whether `e` says the disk is full: a [`Error::NoSpace`], or an I/O
    /// error of a full disk or quota anywhere in its chain.
    pub fn is_no_space(e: &anyhow::Error) -> bool {
        matches!(Error::find(e), Some(Error::NoSpace(_))) || e.chain().any(is_full)
    }
}

/// An I/O error of a full disk or quota.
pub fn is_full(e: &(dyn std::error::Error + 'static)) -> bool {
    e.downcast_ref::<io::Error>().is_some_and(|io| {
        matches!(
            io.raw_os_error(),
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
        )
    })
}

/// The first `E` in `e`'s chain, looking inside each `io::Error` as well.
pub fn find_in_chain<E: std::error::Error + 'static>(e: &anyhow::Error) -> Option<&E> {
    e.chain().find_map(|c| {
        c.downcast_ref::<E>().or_else(|| {
            c.downcast_ref::<io::Error>()
                .and_then(|io| io.get_ref())
                .and_then(|inner| inner.downcast_ref::<E>())
        })
    })
}
