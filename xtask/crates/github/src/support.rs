//! What the documentation says of each os/arch set: kernel, Ubuntu
//! release, stable or experimental, gem5 or QEMU only.

use super::assets::{Arch, Os};

/// Support status of one os/arch set, from the documentation's tables.
pub struct Support {
    /// The kernel version of the set.
    pub kernel: &'static str,
    /// The Ubuntu version of the disk image.
    pub ubuntu: &'static str,
    /// Whether the set is supported as stable.
    pub stable: bool,
    /// Whether it runs under gem5 as well as QEMU.
    pub gem5: bool,
}

/// What the set for `os`/`arch` supports.
pub fn support(os: Os, arch: Arch) -> Support {
    match (os, arch) {
        (Os::Focal, Arch::Amd64) => Support {
            kernel: "v5.4.84",
            ubuntu: "Ubuntu 20.04",
            stable: true,
            gem5: true,
        },
        (Os::Jammy, _) => Support {
            kernel: "v5.15.59",
            ubuntu: "Ubuntu 22.04",
            stable: false,
            gem5: false,
        },
        (Os::Focal, Arch::Arm64) => Support {
            kernel: "v5.4.84",
            ubuntu: "Ubuntu 20.04",
            stable: false,
            gem5: true,
        },
    }
}

impl Support {
    /// One line, e.g. `kernel v5.4.84, Ubuntu 20.04: stable, QEMU + gem5`.
    pub fn summary(&self) -> String {
        format!(
            "kernel {}, {}: {}, QEMU {}",
            self.kernel,
            self.ubuntu,
            if self.stable {
                "stable"
            } else {
                "experimental"
            },
            if self.gem5 {
                "+ gem5"
            } else {
                "only (no gem5 support)"
            }
        )
    }
}
