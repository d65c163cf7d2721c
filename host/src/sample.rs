//! Deterministic sample data for measurements and tests: the same bytes for the same seed on
//! every machine.

/// `len` bytes of mixed data: log lines, little-endian integer tables, executable-like byte
/// runs and pseudo-random stretches, interleaved as a seeded xorshift picks. Compresses to
/// roughly half, like a mix of real files.
pub fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 4 {
            0 => out.extend_from_slice(
                format!("line {} of the log: status=ok latency={}us\n", out.len(), x % 997).as_bytes(),
            ),
            1 => out.extend_from_slice(&(out.len() as u32).to_le_bytes()),
            2 => out.extend_from_slice(&x.to_le_bytes()),
            _ => out.extend_from_slice(b"\0\0\0\0\0\0\0\0\x7fELF\x02\x01\x01\0"),
        }
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(super::mixed(10_000, 1), super::mixed(10_000, 1));
        assert_ne!(super::mixed(10_000, 1), super::mixed(10_000, 2));
        assert_eq!(super::mixed(777, 3).len(), 777);
    }
}
