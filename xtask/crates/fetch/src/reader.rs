//! Reading an asset while it downloads: [`AssetReader`] hands out the
//! contiguous prefix that has arrived, hashes it on a thread of its own, and
//! at the end checks size and digest before the rename to the final name.

use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc};
use std::thread;

use sha2::{Digest, Sha256};

use util::fmt::hex;
use util::fs as fsutil;
use util::text::Shown;

use super::state::{Mode, Shared};
use super::Error;

/// SHA-256 on a thread of its own, fed copies of what a reader hands out:
/// hashing the parts would otherwise take a sixth of the decompressing
/// thread's time (measured with perf on the full run).
pub(super) struct HashThread {
    tx: Option<mpsc::SyncSender<Vec<u8>>>,
    free: mpsc::Receiver<Vec<u8>>,
    pending: Vec<u8>,
    handle: Option<thread::JoinHandle<[u8; 32]>>,
}

impl HashThread {
    const BATCH: usize = 1 << 20;

    pub(super) fn new() -> HashThread {
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(4);
        let (free_tx, free) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("sha256".into())
            .spawn(move || {
                let mut h = Sha256::new();
                for buf in rx {
                    h.update(&buf);
                    let _ = free_tx.send(buf);
                }
                h.finalize().into()
            })
            .expect("spawn hash thread");
        HashThread {
            tx: Some(tx),
            free,
            pending: Vec::with_capacity(Self::BATCH),
            handle: Some(handle),
        }
    }

    fn update(&mut self, data: &[u8]) {
        self.pending.extend_from_slice(data);
        if self.pending.len() >= Self::BATCH {
            let mut next = self.free.try_recv().unwrap_or_default();
            next.clear();
            let full = std::mem::replace(&mut self.pending, next);
            if let Some(tx) = &self.tx {
                let _ = tx.send(full);
            }
        }
    }

    fn finish(&mut self) -> [u8; 32] {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(std::mem::take(&mut self.pending));
        }
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or([0; 32])
    }
}

/// Streams one asset as it arrives. At the end it checks size and digest and
/// renames the file to its final name; a mismatch deletes it and is an error.
pub struct AssetReader {
    shared: Arc<Shared>,
    index: usize,
    name: String,
    size: u64,
    pos: u64,
    hasher: HashThread,
    file: Option<File>,
    finished: bool,
}

impl AssetReader {
    pub(super) fn new(shared: Arc<Shared>, index: usize) -> AssetReader {
        let (name, size) = {
            let g = shared.lock();
            let a = &g.assets[index];
            (a.wanted.name.clone(), a.wanted.size)
        };
        AssetReader {
            shared,
            index,
            name,
            size,
            pos: 0,
            hasher: HashThread::new(),
            file: None,
            finished: false,
        }
    }

    fn fail(&self, msg: String) -> io::Error {
        let why = Error::Local(msg);
        self.shared.fail(self.index, why.clone());
        io::Error::other(why)
    }

    /// Waits until bytes past `pos` exist; how many.
    fn available(&mut self) -> io::Result<u64> {
        let mut g = self.shared.lock();
        loop {
            let a = &g.assets[self.index];
            if let Some(e) = &a.error {
                return Err(io::Error::other(e.clone()));
            }
            let have = a.contiguous();
            if have > self.pos {
                if self.file.is_none() {
                    let path = if a.mode == Mode::Cached {
                        a.wanted.dest.clone()
                    } else {
                        a.partial.clone()
                    };
                    drop(g);
                    let f = File::open(&path).map_err(|e| {
                        io::Error::other(format!("cannot open {}: {e}", path.display()))
                    })?;
                    self.file = Some(f);
                    return Ok(have - self.pos);
                }
                return Ok(have - self.pos);
            }
            if let Some(e) = &g.abort {
                return Err(io::Error::other(e.clone()));
            }
            g = self
                .shared
                .changed
                .wait(g)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Size and digest check, then the rename to the final name.
    fn finish(&mut self) -> io::Result<()> {
        self.finished = true;
        let digest = self.hasher.finish();
        let done = self.complete()?;
        self.check_digest(&done, &digest)?;
        if done.mode != Mode::Cached {
            self.commit(&done, &digest)?;
        }
        let note = if done.mode == Mode::Cached {
            "already there, checked"
        } else {
            "done, checked"
        };
        self.shared.progress.item_done(&done.wanted.name, note);
        Ok(())
    }

    /// Waits until the workers are done with this asset: the bytes may all
    /// be there while a worker still records its segment.
    fn complete(&self) -> io::Result<Done> {
        let mut g = self.shared.lock();
        loop {
            let a = &g.assets[self.index];
            if a.complete() {
                return Ok(Done {
                    wanted: a.wanted.clone(),
                    mode: a.mode,
                    partial: a.partial.clone(),
                    segs_path: a.segs_path.clone(),
                });
            }
            if let Some(e) = a.error.clone().or_else(|| g.abort.clone()) {
                return Err(io::Error::other(e));
            }
            g = self
                .shared
                .changed
                .wait(g)
                .unwrap_or_else(|e| e.into_inner());
        }
    }

    /// A digest that does not match the release's deletes the file and
    /// everything kept about it.
    fn check_digest(&self, done: &Done, digest: &[u8; 32]) -> io::Result<()> {
        let wanted = &done.wanted;
        let Some(want) = wanted.sha256.filter(|want| want != digest) else {
            return Ok(());
        };
        let bad = if done.mode == Mode::Cached {
            &wanted.dest
        } else {
            &done.partial
        };
        let _ = fs::remove_file(bad);
        let _ = fs::remove_file(&done.segs_path);
        let _ = fs::remove_file(super::seal_path(&wanted.dest));
        let msg = format!(
            "asset {}: sha256 mismatch: the release says {}, the download is {}; \
             the bad file was deleted, re-run to download it again",
            Shown(&wanted.name),
            hex(&want),
            hex(digest)
        );
        self.shared.fail(self.index, Error::Local(msg.clone()));
        Err(io::Error::other(Error::DigestMismatch {
            asset: wanted.name.clone(),
            msg,
        }))
    }

    /// Renames the checked download to its final name (durably, unless it
    /// is transient), and seals it when the release gives no digest.
    fn commit(&self, done: &Done, digest: &[u8; 32]) -> io::Result<()> {
        let (wanted, partial) = (&done.wanted, &done.partial);
        let r = if wanted.transient {
            fs::rename(partial, &wanted.dest).map_err(anyhow::Error::from)
        } else {
            File::open(partial)
                .and_then(|f| f.sync_all())
                .map_err(anyhow::Error::from)
                .and_then(|()| fsutil::rename_durable(partial, &wanted.dest))
        };
        if let Err(e) = r {
            return Err(self.fail(format!("asset {}: {e:#}", wanted.name)));
        }
        let _ = fs::remove_file(&done.segs_path);
        if wanted.sha256.is_none() {
            // A later run checks the file against this (see `seal_path`).
            let seal = super::seal_path(&wanted.dest);
            if let Err(e) = fsutil::write_small(&seal, format!("{}\n", hex(digest)).as_bytes()) {
                return Err(self.fail(format!("asset {}: {e:#}", wanted.name)));
            }
        }
        Ok(())
    }
}

/// What finishing an asset needs of its state, copied out of the lock.
struct Done {
    wanted: super::Wanted,
    mode: Mode,
    partial: std::path::PathBuf,
    segs_path: std::path::PathBuf,
}

impl Read for AssetReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.size {
            if !self.finished {
                self.finish()?;
            }
            return Ok(0);
        }
        if buf.is_empty() {
            return Ok(0);
        }
        let avail = self.available()?;
        let want = (avail as usize).min(buf.len());
        let n = self
            .file
            .as_ref()
            .expect("opened in available()")
            .read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(self.fail(format!(
                "asset {}: the downloaded file ended early at byte {}",
                self.name, self.pos
            )));
        }
        self.hasher.update(&buf[..n]);
        self.pos += n as u64;
        self.shared.progress.checked(n as u64);
        if self.pos == self.size {
            self.finish()?;
        }
        Ok(n)
    }
}
