//! `split -b`: a stream cut into parts of a fixed size, each written under
//! a hidden temporary name and committed only when the caller says so.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;

use util::fs::TempFile;

/// One part, complete but still under its temporary name.
pub struct Part {
    /// The part's file name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// The part, written under a temporary name until committed.
    pub file: TempFile,
}

/// A writer that cuts what it is given into parts of `part_size` bytes
/// named by `name_of(index)` inside `dir`. Parts are created lazily, so a
/// stream of an exact multiple of the size gets no empty last part (as
/// `split` does).
pub struct Splitter<'a> {
    dir: PathBuf,
    part_size: u64,
    max_parts: u64,
    name_of: &'a dyn Fn(u64) -> String,
    current: Option<Part>,
    done: Vec<Part>,
}

impl<'a> Splitter<'a> {
    /// A splitter writing parts of `part_size` bytes (at most `max_parts`)
    /// into `dir`, part `i` named `name_of(i)`.
    pub fn new(
        dir: &Path,
        part_size: u64,
        max_parts: u64,
        name_of: &'a dyn Fn(u64) -> String,
    ) -> Splitter<'a> {
        assert!(part_size > 0, "part size is checked by the caller");
        Splitter {
            dir: dir.to_path_buf(),
            part_size,
            max_parts,
            name_of,
            current: None,
            done: Vec::new(),
        }
    }

    /// The parts in order, still under their temporary names (dropping
    /// them removes them).
    pub fn finish(mut self) -> Result<Vec<Part>> {
        if let Some(p) = self.current.take() {
            self.done.push(p);
        }
        Ok(std::mem::take(&mut self.done))
    }

    fn open_part(&mut self) -> io::Result<&mut Part> {
        if self
            .current
            .as_ref()
            .is_some_and(|p| p.size == self.part_size)
        {
            let full = self.current.take().expect("checked");
            self.done.push(full);
        }
        if self.current.is_none() {
            let index = self.done.len() as u64;
            if index >= self.max_parts {
                return Err(io::Error::other(format!(
                    "the archive needs more than {} parts; pass a larger --part-size",
                    self.max_parts
                )));
            }
            let name = (self.name_of)(index);
            let file = TempFile::create(&self.dir.join(&name))
                .map_err(|e| io::Error::other(format!("{e:#}")))?;
            self.current = Some(Part {
                name,
                size: 0,
                file,
            });
        }
        Ok(self.current.as_mut().expect("just set"))
    }
}

impl Write for Splitter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let part_size = self.part_size;
        let part = self.open_part()?;
        let room = usize::try_from(part_size - part.size).unwrap_or(usize::MAX);
        let n = buf.len().min(room);
        let path = part.file.path().to_path_buf();
        let f: &mut File = part.file.file();
        f.write_all(&buf[..n]).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display()))
        })?;
        part.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
