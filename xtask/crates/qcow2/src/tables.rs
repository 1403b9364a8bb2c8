//! The header's other tables: the refcount table and the snapshot table,
//! which the converters never walk but QEMU opens with the image, and the
//! most bytes a file of the image's virtual size can plausibly hold. For a
//! maintainer's check before an image is shipped (`pack`).

use anyhow::Result;

use super::{be32, be64, max_file_len, Image, ReadAt};

/// Where the header places the tables QEMU opens besides the L1/L2 tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OtherTables {
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u64,
    pub snapshots: u64,
    pub snapshots_offset: u64,
    /// [`max_file_len`] of the header: None when it is out of its range.
    pub max_file_len: Option<u64>,
}

impl<R: ReadAt> Image<R> {
    /// The header's refcount and snapshot table fields, as stored (not
    /// checked: the caller decides what it accepts).
    pub fn other_tables(&self) -> Result<OtherTables> {
        let mut head = [0u8; 72];
        self.read_padded(&mut head, 0)?;
        Ok(OtherTables {
            refcount_table_offset: be64(&head, 48),
            refcount_table_clusters: u64::from(be32(&head, 56)),
            snapshots: u64::from(be32(&head, 60)),
            snapshots_offset: be64(&head, 64),
            max_file_len: max_file_len(&head),
        })
    }
}
