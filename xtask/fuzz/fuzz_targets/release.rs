//! Arbitrary bytes as a release JSON document: asset selection for every
//! os/arch either picks safe names or fails, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use github::assets::{check_name, select};
use github::assets::{Arch, Os};
use github::release::Release;

fuzz_target!(|data: &[u8]| {
    let Ok(release) = serde_json::from_slice::<Release>(data) else {
        return;
    };
    for os in Os::ALL {
        for arch in Arch::ALL {
            if let Ok(sel) = select(&release, os, arch) {
                for a in sel.all() {
                    // Whatever is selected is usable as a file name.
                    assert!(check_name(&a.name).is_ok(), "{:?}", a.name);
                }
            }
        }
    }
});
