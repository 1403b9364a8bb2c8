//! Locks on directories the tool owns (the output directory's `.downloads/`,
//! a cache entry): `flock` on the directory's own descriptor, so there is no
//! lock file to plant, leave behind or swap. A run that finds a lock taken
//! waits for it, saying once who holds it, as cargo does; `--no-wait` makes
//! that an error of its own kind ([`Error::Busy`](crate::Error::Busy)).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::fs::{clear_non_regular, ensure_own_dir};

/// Exclusive: the holder writes. Shared: holders only read (a complete cache
/// entry), and keep writers and pruning out.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// One holder, who writes.
    Exclusive,
    /// Any number of holders, who only read.
    Shared,
}

/// How to lock: what to call the place in messages, and whether to wait.
pub struct How<'a> {
    /// Exclusive or shared.
    pub kind: Kind,
    /// Said in messages: `another run on {what}`.
    pub what: &'a str,
    /// Wait for another run's lock; else fail with [`Error::Busy`](crate::Error::Busy).
    pub wait: bool,
    /// The directory is the tool's own (`.downloads/`, a cache entry): it is
    /// made before each try, a link at its name being junk. Otherwise it is
    /// the user's (`pack --output`, a mirror) and must exist.
    pub own: bool,
}

/// A lock on a directory, held while alive.
pub struct Lock {
    _dir: File,
    path: PathBuf,
}

impl Lock {
    /// Removes the locked directory if nothing is left in it, while still
    /// holding the lock: a finished run leaves no working files. A run
    /// waiting on it notices the directory is gone and locks a new one.
    pub fn remove(self) {
        // A `.lock` file of an older version of the tool is junk now.
        let _ = clear_non_regular(&self.path.join(".lock"));
        let _ = fs::remove_file(self.path.join(".lock"));
        let _ = fs::remove_dir(&self.path);
    }
}

/// Locks the directory `dir` (made first when it is the tool's own). When
/// another run holds it: waits, printing once who, or fails with [`Error::Busy`](crate::Error::Busy).
pub fn lock(dir: &Path, how: &How) -> Result<Lock> {
    let mut said = false;
    let flags = if how.own {
        libc::O_DIRECTORY | libc::O_NOFOLLOW
    } else {
        libc::O_DIRECTORY
    };
    loop {
        if how.own {
            ensure_own_dir(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(flags)
            .open(dir)
            .with_context(|| format!("cannot open {} to lock it", dir.display()))?;
        if !try_flock(&file, how.kind, false).with_context(|| cannot(dir))? {
            let holder = holder_pid(&file).map_or(String::new(), |p| format!(" (pid {p})"));
            if !how.wait {
                return Err(anyhow::Error::new(crate::Error::Busy(format!(
                    "another run is working on {}{holder}; wait for it to finish, or run \
                     again without --no-wait to wait for it",
                    how.what
                ))));
            }
            if !said {
                say!("waiting for another run on {}{holder}", how.what);
                said = true;
            }
            try_flock(&file, how.kind, true).with_context(|| cannot(dir))?;
        }
        // The holder may have removed the directory before letting go: then
        // this lock guards nothing, and a fresh directory is locked instead.
        if !how.own || still_there(&file, dir) {
            return Ok(Lock {
                _dir: file,
                path: dir.to_path_buf(),
            });
        }
    }
}

fn cannot(dir: &Path) -> String {
    format!("cannot lock {}", dir.display())
}

/// flock; Ok(false) when it is taken and `block` is false.
fn try_flock(f: &File, kind: Kind, block: bool) -> io::Result<bool> {
    let mut op = match kind {
        Kind::Exclusive => libc::LOCK_EX,
        Kind::Shared => libc::LOCK_SH,
    };
    if !block {
        op |= libc::LOCK_NB;
    }
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock if !block => return Ok(false),
            _ => return Err(err),
        }
    }
}

fn still_there(f: &File, dir: &Path) -> bool {
    match (f.metadata(), fs::symlink_metadata(dir)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The pid holding a `flock` on `f`'s inode, from `/proc/locks` (absent in
/// some containers: then the message goes without it).
fn holder_pid(f: &File) -> Option<u32> {
    let ino = f.metadata().ok()?.ino();
    let text = fs::read_to_string("/proc/locks").ok()?;
    pid_in_proc_locks(&text, ino)
}

/// `1: FLOCK  ADVISORY  WRITE 4242 08:02:1234 0 EOF`; waiters (`->`) skipped.
fn pid_in_proc_locks(text: &str, ino: u64) -> Option<u32> {
    text.lines().find_map(|line| {
        let words: Vec<&str> = line.split_whitespace().collect();
        if words.get(1) != Some(&"FLOCK") {
            return None;
        }
        let file_ino = words.get(5)?.rsplit(':').next()?.parse::<u64>().ok()?;
        (file_ino == ino).then(|| words.get(4)?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_give_the_holder_not_a_waiter() {
        let text = "1: POSIX  ADVISORY  WRITE 11 08:02:77 0 EOF\n\
                    2: FLOCK  ADVISORY  WRITE 4242 08:02:1234 0 EOF\n\
                    2: -> FLOCK  ADVISORY  WRITE 5151 08:02:1234 0 EOF\n";
        assert_eq!(pid_in_proc_locks(text, 1234), Some(4242));
        assert_eq!(pid_in_proc_locks(text, 77), None);
        assert_eq!(pid_in_proc_locks(text, 9), None);
    }

    #[test]
    fn a_second_lock_without_waiting_is_busy_and_names_the_place() {
        let dir = std::env::temp_dir().join(format!("lock-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let how = How {
            kind: Kind::Exclusive,
            what: "the test dir",
            wait: false,
            own: true,
        };
        let held = lock(&dir, &how).unwrap();
        let err = lock(&dir, &how).err().expect("busy");
        let Some(crate::Error::Busy(busy)) = crate::Error::find(&err) else {
            panic!("not a Busy error: {err:#}");
        };
        assert!(busy.contains("the test dir"), "{busy}");
        assert!(
            busy.contains(&format!("pid {}", std::process::id())),
            "{busy}"
        );
        let shared = How {
            kind: Kind::Shared,
            ..how
        };
        assert!(
            lock(&dir, &shared).is_err(),
            "an exclusive lock keeps readers out"
        );
        held.remove();
        let a = lock(&dir, &shared).unwrap();
        let _b = lock(&dir, &shared).expect("two readers share");
        drop(a);
        fs::remove_dir_all(&dir).unwrap();
    }
}
