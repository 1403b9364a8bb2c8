//! Arbitrary text as a `.sums` file: parsed entries or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use archive::unpack::{expected_sha256, parse_sums};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(entries) = parse_sums(&text, "fuzz.sums") {
        let _ = expected_sha256(&entries, "disk-image.qcow2", "fuzz.sums");
    }
});
