//! Why an archive could not be unpacked, by whose fault: the downloaded
//! bytes ([`Error::BadContent`], which a fetch may mend), the archive as it
//! was made ([`Error::Unsupported`], [`Error::BadImage`]: fetching it again
//! cannot help), or this machine ([`Error::Local`]). The app's exit code and
//! its retry of the disk parts read the kind, found with [`Error::find`].

/// The advice every "the download is bad" error ends with.
pub const REDO: &str = "delete the downloads with --force or re-run";

/// A failure of unpacking, by whose fault it is.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The archive's content is bad (corrupt or truncated compressed data,
    /// a broken tar, a sha256 mismatch): the bytes downloaded are at fault,
    /// not this machine. `at` is how far into the input (the compressed
    /// stream) the fault showed, when it could be placed: the decoders
    /// read ahead, so the bytes that hold it may lie some way before.
    #[error("{msg}")]
    BadContent {
        /// Input bytes read when it showed; None when it showed only at the
        /// end (a CRC), so it may lie anywhere.
        at: Option<u64>,
        /// What is wrong, and what to do.
        msg: String,
    },
    /// The archive decodes, but holds what this tool does not read: another
    /// compression format, two images or none, a member larger than any
    /// file can be. That is the archive as it was made, so fetching it
    /// again cannot change it (unless a part fails its digest, which is
    /// checked apart).
    #[error("{0}")]
    Unsupported(String),
    /// The image is as published (its sha256 matches) but cannot be
    /// converted (an encrypted image, a backing file, broken tables):
    /// fetching it again will not help.
    #[error("{0}")]
    BadImage(String),
    /// A failure of this machine (permissions, a file that cannot be
    /// written), not of the archive. A full disk is not one: it keeps
    /// [`util::Error::NoSpace`], which decides the exit code.
    #[error("{0}")]
    Local(String),
}

impl Error {
    /// The first [`Error`] in `e`'s chain (inside `io::Error`s too).
    pub fn find(e: &anyhow::Error) -> Option<&Error> {
        util::find_in_chain(e)
    }

    /// The message without the advice to fetch again (the clause before it
    /// too: "the download is corrupt"), for when the bytes are known to be
    /// as published.
    pub fn fault(&self) -> String {
        let m = self.to_string();
        match m.rfind(REDO).and_then(|i| m[..i].rfind("; ")) {
            Some(j) => m[..j].to_string(),
            None => m,
        }
    }
}

pub(crate) fn unsupported(msg: String) -> anyhow::Error {
    anyhow::Error::new(Error::Unsupported(msg))
}

/// `e` as a failure of this machine; a full disk is said as one
/// ([`util::Error::NoSpace`]), which decides the exit code.
pub(crate) fn local(e: anyhow::Error) -> anyhow::Error {
    // Anywhere in the chain: a context around it must not hide it.
    if matches!(util::Error::find(&e), Some(util::Error::NoSpace(_))) {
        return e;
    }
    if e.chain().any(util::is_full) {
        return util::fs::no_space(format!("{e:#}; free some space or choose another --output"));
    }
    anyhow::Error::new(Error::Local(format!("{e:#}")))
}
