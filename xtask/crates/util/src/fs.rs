//! File-system rules every stage follows: nothing half-written ever stands
//! under a final name (write to a hidden temporary beside it, fsync, rename,
//! fsync the directory), no link is ever followed at a name the tool
//! creates (a link found at a working name is junk and is removed), and big
//! writes check free space first.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Removes what stands at `path` unless it is a regular file or nothing:
/// a symlink (whatever it points at), a FIFO, a socket. A directory is an
/// error: the tool never puts one at a file's name.
pub fn clear_non_regular(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_file() => Ok(()),
        Ok(m) if m.file_type().is_dir() => Err(io::Error::other(format!(
            "{} is a directory where a file belongs; move it away",
            path.display()
        ))),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` anew for reading and writing: whatever stood there is
/// removed first, and `O_EXCL` makes sure no link planted meanwhile is
/// followed.
pub fn create_fresh(path: &Path) -> io::Result<File> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_dir() => {
            return Err(io::Error::other(format!(
                "{} is a directory where a file belongs; move it away",
                path.display()
            )))
        }
        Ok(_) => fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens the regular file at `path` for reading and writing, creating it
/// if absent; a link or other non-regular entry there is removed first, and
/// `O_NOFOLLOW` refuses a link planted meanwhile.
pub fn open_or_create(path: &Path) -> io::Result<File> {
    clear_non_regular(path)?;
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// Opens `path` for reading, refusing a link at its last component and
/// anything that is not a regular file (a FIFO would block forever).
pub fn open_regular(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                io::Error::other(format!(
                    "{} is a symbolic link; refusing to follow it",
                    path.display()
                ))
            } else {
                e
            }
        })?;
    let ft = f.metadata()?.file_type();
    if !ft.is_file() {
        let what = if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_dir() {
            "a directory"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(io::Error::other(format!(
            "{} is {what}, not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// Opens a file the user pointed us at (a mirror's asset, an INPUT): links
/// are followed, but only a regular file is read, so a FIFO cannot hang us.
pub fn open_input(path: &Path) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.file_type().is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// The sha256 of the regular file at `path` (a link there is refused).
pub fn sha256_file(path: &Path) -> Result<[u8; 32]> {
    let f = open_regular(path).with_context(|| format!("cannot open {}", path.display()))?;
    sha256_of(f, path)
}

/// The sha256 of a file the user named (links followed, only a regular file read).
pub fn sha256_file_input(path: &Path) -> Result<[u8; 32]> {
    let f = open_input(path).with_context(|| format!("cannot open {}", path.display()))?;
    sha256_of(f, path)
}

fn sha256_of(mut f: File, path: &Path) -> Result<[u8; 32]> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(h.finalize().into())
}

/// Whether `a` and `b` are the same file (links followed; false when either
/// is absent).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Whether a regular file is at `path` (a link there is not one).
pub fn is_regular(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file())
}

/// Reads a small text file the tool wrote (at most `max` bytes), without
/// following a link.
pub fn read_small(path: &Path, max: u64) -> Result<String> {
    let f = open_regular(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_capped(f, path, max)
}

/// Reads a small text file the user pointed at (a mirror's `latest` or
/// release JSON): links followed, only a regular file, at most `max` bytes.
pub fn read_input(path: &Path, max: u64) -> Result<String> {
    let f = open_input(path).with_context(|| format!("cannot open {}", path.display()))?;
    read_capped(f, path, max)
}

fn read_capped(f: File, path: &Path, max: u64) -> Result<String> {
    let mut s = String::new();
    f.take(max + 1)
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if s.len() as u64 > max {
        bail!(
            "{} is larger than {} bytes, so it is not what this tool wrote there",
            path.display(),
            max
        );
    }
    Ok(s)
}

/// Makes the directory `dir` that the tool owns (inside the output
/// directory); see [`own_dir`]. Its parent must exist.
pub fn ensure_own_dir(dir: &Path) -> Result<()> {
    if own_dir(dir)? {
        return Ok(());
    }
    match fs::create_dir(dir) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
            Err(e).with_context(|| format!("cannot create {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// Whether the directory `dir` that the tool owns is there. A link at its
/// name is junk and is removed (never followed); anything else that is not
/// a directory is the user's, and is refused by name, untouched.
pub fn own_dir(dir: &Path) -> Result<bool> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => Ok(true),
        Ok(m) if m.file_type().is_symlink() => {
            fs::remove_file(dir)
                .with_context(|| format!("cannot remove the link {}", dir.display()))?;
            Ok(false)
        }
        Ok(m) => Err(in_the_way(dir, m.file_type(), "directory")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot inspect {}", dir.display())),
    }
}

/// The refusal for something the tool did not make at a name where it
/// keeps or writes a `wanted` ("directory", "file").
pub fn in_the_way(path: &Path, found: fs::FileType, wanted: &str) -> anyhow::Error {
    let found = if found.is_dir() {
        "a directory"
    } else if found.is_file() {
        "a file"
    } else if found.is_fifo() {
        "a FIFO"
    } else if found.is_socket() {
        "a socket"
    } else {
        "a device"
    };
    anyhow::anyhow!(
        "{} is {found} where this tool keeps a {wanted}; it is not the tool's, so it is \
         left as it is: move it away, then run again",
        path.display()
    )
}

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
    /// Creates (truncating) the temporary file for `dest`. A directory at
    /// `dest` is refused before any work (a link there is replaced by the
    /// rename itself, never followed).
    pub fn create(dest: &Path) -> Result<TempFile> {
        if let Some(m) = fs::symlink_metadata(dest).ok().filter(|m| m.is_dir()) {
            return Err(in_the_way(dest, m.file_type(), "file"));
        }
        let tmp = partial_path(dest);
        if let Some(dir) = dest.parent() {
            fs::create_dir_all(dir)
                .with_context(|| format!("cannot create directory {}", dir.display()))?;
        }
        let file =
            create_fresh(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        Ok(TempFile {
            file: Some(file),
            tmp,
            dest: dest.to_path_buf(),
        })
    }

    /// The open file.
    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("file is open until commit")
    }

    /// The temporary name.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// A second handle on the file (another thread writes through it).
    pub fn try_clone_file(&self) -> Result<File> {
        self.file
            .as_ref()
            .expect("file is open until commit")
            .try_clone()
            .with_context(|| format!("cannot reopen {}", self.tmp.display()))
    }

    /// fsync, rename over the final name, fsync the directory.
    pub fn commit(mut self) -> Result<()> {
        let file = self.file.take().expect("commit once");
        file.sync_all()
            .with_context(|| format!("cannot sync {}", self.tmp.display()))?;
        drop(file);
        rename_durable(&self.tmp, &self.dest)
    }

    /// As [`TempFile::commit`], but fails (keeping both files) if something
    /// already stands at the final name: for outputs that are replaced only
    /// with `--force`.
    pub fn commit_new(mut self) -> Result<()> {
        let file = self.file.take().expect("commit once");
        file.sync_all()
            .with_context(|| format!("cannot sync {}", self.tmp.display()))?;
        drop(file);
        let result = rename_noreplace(&self.tmp, &self.dest);
        if result.is_err() {
            let _ = fs::remove_file(&self.tmp);
        }
        result?;
        if let Some(dir) = self.dest.parent() {
            sync_dir(dir)?;
        }
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Writes a small file (a manifest, a tag) atomically.
pub fn write_small(path: &Path, data: &[u8]) -> Result<()> {
    let mut t = TempFile::create(path)?;
    std::io::Write::write_all(t.file(), data)
        .with_context(|| format!("cannot write {}", t.path().display()))?;
    t.commit()
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

/// `rename(from, to)` that refuses to replace anything at `to`
/// (`RENAME_NOREPLACE`; where the file system lacks it, a hard link, which
/// also refuses).
fn rename_noreplace(from: &Path, to: &Path) -> Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .with_context(|| format!("path {} contains a NUL byte", p.display()))
    };
    let (cf, ct) = (c(from)?, c(to)?);
    // SAFETY: both are valid NUL-terminated paths; no memory is shared.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            cf.as_ptr(),
            libc::AT_FDCWD,
            ct.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    let err = if rc == 0 {
        return Ok(());
    } else {
        io::Error::last_os_error()
    };
    let err = match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) => match fs::hard_link(from, to) {
            Ok(()) => {
                fs::remove_file(from)
                    .with_context(|| format!("cannot remove {}", from.display()))?;
                return Ok(());
            }
            Err(e) => e,
        },
        _ => err,
    };
    if err.kind() == io::ErrorKind::AlreadyExists {
        return Err(users_files(format!(
            "{} already exists; pass --force to replace it",
            to.display()
        )));
    }
    Err(err).with_context(|| format!("cannot rename {} to {}", from.display(), to.display()))
}

/// fsyncs the directory `dir` (`.` when empty), so renames in it survive a power loss.
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
    space(dir).map(|(free, _)| free)
}

/// (free to an unprivileged user, total size) of the file system holding `dir`.
pub fn space(dir: &Path) -> Result<(u64, u64)> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("path {} contains a NUL byte", dir.display()))?;
    // SAFETY: statvfs only writes into the zeroed struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot read free space of {}", dir.display()));
    }
    let unit = st.f_frsize as u64;
    Ok((
        (st.f_bavail as u64).saturating_mul(unit),
        (st.f_blocks as u64).saturating_mul(unit),
    ))
}

/// Bytes an unprivileged user may still write on `f`'s file system.
pub fn free_space_of(f: &File) -> io::Result<u64> {
    // SAFETY: fstatvfs only writes into the zeroed struct we pass.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatvfs(std::os::fd::AsRawFd::as_raw_fd(f), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The refusal to write where the user's files stand (exit code 5).
pub fn users_files(msg: String) -> anyhow::Error {
    anyhow::Error::new(crate::Error::UsersFiles(msg))
}

/// The refusal to write to a disk too full (exit code 7).
pub fn no_space(msg: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(crate::Error::NoSpace(msg.into()))
}

/// Fails before anything big is written when `dir` has less than `needed` bytes free.
pub fn ensure_space(dir: &Path, needed: u64, what: &str) -> Result<()> {
    let free = available_space(dir)?;
    if free < needed {
        return Err(no_space(format!(
            "not enough free space in {}: {what} needs {} but only {} is free; \
             free some space or choose another --output",
            dir.display(),
            super::fmt::human_bytes(needed),
            super::fmt::human_bytes(free)
        )));
    }
    Ok(())
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
}
