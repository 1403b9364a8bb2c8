//! Arbitrary bytes as a downloaded disk archive: the unpacker writes at most
//! its one destination file, inside its directory, or fails; never panics.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use archive::unpack::unpack_qcow2;

fuzz_target!(|data: &[u8]| {
    let dir: PathBuf = std::env::temp_dir().join(format!("fuzz-archive-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let dest = dir.join("disk-image.qcow2");
    // Bound what a decompression bomb may write during fuzzing.
    let mut check = |size: u64| {
        if size > 64 << 20 {
            anyhow::bail!("too big for fuzzing")
        }
        Ok(())
    };
    let _ = unpack_qcow2(data, "fuzz.tar.gz", &dest, None, &mut check);
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        assert_eq!(e.file_name(), "disk-image.qcow2", "stray file {:?}", e.file_name());
    }
    let _ = std::fs::remove_file(&dest);
});
