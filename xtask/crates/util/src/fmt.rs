//! How numbers and bytes are written for people: sizes in binary units,
//! digests in hex, and the hex a release or sums file gives read back.

/// `n` bytes in binary units: `10 B`, `1.5 KiB`, `3.0 GiB`.
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

/// `bytes` in lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A SHA-256 in hex (64 digits, either case) as bytes; None if it is not one.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(human_bytes(10), "10 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 << 30), "3.0 GiB");
    }

    #[test]
    fn sha256_hex_round_trip() {
        let h = [0xabu8; 32];
        assert_eq!(parse_sha256_hex(&hex(&h)), Some(h));
        assert_eq!(parse_sha256_hex(&hex(&h).to_uppercase()), Some(h));
        assert_eq!(parse_sha256_hex("ab"), None);
        assert_eq!(parse_sha256_hex(&"g".repeat(64)), None);
        assert_eq!(parse_sha256_hex(&"é".repeat(32)), None);
    }
}
