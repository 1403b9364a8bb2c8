//! File-system rules every stage follows: nothing half-written ever stands
//! under a final name (write to a hidden temporary beside it, fsync, rename,
//! fsync the directory), and big writes check free space first.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The hidden temporary name used while `path` is being written:
/// `dir/.name.partial`. Stable, so an interrupted run can find it again.
pub fn partial_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.partial"))
}

/// A file being written under a temporary name; removed on drop unless
/// [`TempFile::commit`] renamed it to its final name.
pub struct TempFile {
    file: Option<File>,
    tmp: PathBuf,
    dest: PathBuf,
}

impl TempFile {
    /// Creates (truncating) the temporary file for `dest`.
    pub fn create(dest: &Path) -> Result<TempFile> {
        let tmp = partial_path(dest);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(TempFile {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until commit")
    }

    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// fsync, rename over the final name, fsync the directory.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("commit once");
        file.sync_all()
            .with_context(|| format!("cannot sync {}", self.tmp.display()))?;
        drop(file);
        rename_durable(&self.tmp, &self.dest)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Renames `from` to `to` and syncs the directory so the rename survives a
/// power loss.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to)
        .with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))?;
    if let Some(dir) = to.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> Result<()> {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync directory {}", dir.display()))
}

/// Bytes an unprivileged user may still write in the file system holding `dir`.
pub fn available_space(dir: &Path) -> Result<u64> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", dir.display()))?;
    // SAFETY: statvfs only writes into the zeroed struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot read free space of {}", dir.display()));
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// Fails before anything big is written when `dir` has less than `needed` bytes free.
pub fn ensure_space(dir: &Path, needed: u64, what: &str) -> Result<()> {
    let free = available_space(dir)?;
    if free < needed {
        bail!(
            "not enough free space in {}: {what} needs {} but only {} is free; \
             free some space or choose another --output",
            dir.display(),
            human_bytes(needed),
            human_bytes(free)
        );
    }
    Ok(())
}

/// Holds an exclusive lock on `dir/.lock` while alive, so two runs on one
/// output directory never interleave their writes.
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// Removes the lock file and its directory, if nothing else is in it,
    /// while still holding the lock: a finished run leaves no working files.
    pub fn remove(self) {
        let _ = fs::remove_file(&self.path);
        if let Some(dir) = self.path.parent() {
            let _ = fs::remove_dir(dir);
        }
    }
}

pub fn lock(dir: &Path) -> Result<Lock> {
    use std::os::fd::AsRawFd;
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(".lock");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: flock on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::WouldBlock {
            bail!(
                "another `cargo xtask resources` is working on {} (it holds {}); \
                 wait for it to finish, then run again",
                dir.parent().unwrap_or(dir).display(),
                path.display()
            );
        }
        return Err(err).with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(Lock { _file: file, path })
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_file_is_removed_unless_committed() {
        let dir = std::env::temp_dir().join(format!("fsutil-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let dest = dir.join("x.img");
        {
            let mut t = TempFile::create(&dest).unwrap();
            std::io::Write::write_all(t.file(), b"half").unwrap();
        }
        assert!(!partial_path(&dest).exists());
        assert!(!dest.exists());
        let mut t = TempFile::create(&dest).unwrap();
        std::io::Write::write_all(t.file(), b"whole").unwrap();
        t.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"whole");
        assert!(!partial_path(&dest).exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }
}
