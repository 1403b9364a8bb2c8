//! qcow2 (stub until the reader lands)
use anyhow::Result;
use std::path::Path;
pub struct Image {
    size: u64,
}
impl Image {
    pub fn open(_p: &Path) -> Result<Image> {
        Ok(Image { size: 0 })
    }
    pub fn virtual_size(&self) -> u64 {
        self.size
    }
}
pub fn compare_with_raw(_q: &Path, _r: &Path) -> Result<Option<u64>> {
    Ok(None)
}
