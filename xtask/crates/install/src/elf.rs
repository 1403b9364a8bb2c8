//! What an installed kernel or test client must be: a 64-bit little-endian
//! ELF file for the set's architecture. Only the identifying header fields
//! are read (20 bytes), so a file of any size costs nothing to check.

use std::io::Read;
use std::path::Path;

use util::text::Shown;

/// `path` is an ELF file for `arch`: its note (`ELF amd64`), or what is wrong.
pub fn check(path: &Path, arch: &str) -> Result<String, String> {
    let Some(h) = read_header(path) else {
        return Err("not an ELF file".into());
    };
    if Some(h.machine) != machine_of(arch) {
        return Err(format!(
            "ELF for machine {} ({}), not {}: wrong architecture",
            h.machine,
            machine_name(h.machine),
            Shown(arch)
        ));
    }
    // Both arches are 64-bit little-endian; a 32-bit (x32) or big-endian
    // file of the same machine does not boot as one.
    match (h.class, h.data) {
        (2, 1) => Ok(format!("ELF {}", Shown(arch))),
        (1, _) => Err(format!(
            "a 32-bit ELF (ELFCLASS32) for {}, not a 64-bit one: wrong architecture",
            machine_name(h.machine)
        )),
        (2, _) => Err(format!(
            "a big-endian ELF for {}, not a little-endian one: wrong architecture",
            machine_name(h.machine)
        )),
        (class, _) => Err(format!(
            "an ELF file of unknown class {class}: not a 64-bit {} build",
            Shown(arch)
        )),
    }
}

fn machine_of(arch: &str) -> Option<u16> {
    match arch {
        "amd64" => Some(62),
        "arm64" => Some(183),
        _ => None,
    }
}

fn machine_name(m: u16) -> &'static str {
    match m {
        3 => "x86",
        40 => "ARM",
        62 => "x86-64",
        183 => "AArch64",
        243 => "RISC-V",
        _ => "other",
    }
}

/// The identifying fields of an ELF header.
struct Header {
    /// EI_CLASS: 1 is 32-bit, 2 is 64-bit.
    class: u8,
    /// EI_DATA: 1 is little-endian, 2 is big-endian.
    data: u8,
    /// e_machine, read in the file's own byte order.
    machine: u16,
}

/// The header of the ELF file at `path`, if it is one.
fn read_header(path: &Path) -> Option<Header> {
    let mut head = [0u8; 20];
    util::fs::open_regular(path)
        .ok()?
        .read_exact(&mut head)
        .ok()?;
    if &head[..4] != b"\x7fELF" {
        return None;
    }
    let m = [head[18], head[19]];
    let machine = if head[5] == 2 {
        u16::from_be_bytes(m)
    } else {
        u16::from_le_bytes(m)
    };
    Some(Header {
        class: head[4],
        data: head[5],
        machine,
    })
}
