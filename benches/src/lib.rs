//! Shared inputs for KeepSync's benchmarks.

/// A deterministic 64 KiB-scale sample of mixed data: text lines, little-endian tables and a
/// random stretch, so codecs see something like real files.
pub fn mixed_chunk(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 4 {
            0 => out
                .extend_from_slice(format!("GET /api/v1/items/{} 200 {}ms\n", x % 10_000, x % 97).as_bytes()),
            1 => out.extend_from_slice(&(out.len() as u32).to_le_bytes()),
            2 => out.extend_from_slice(&x.to_le_bytes()),
            _ => out.extend_from_slice(b"\0\0\0\0\x48\x89\xe5\x48\x83\xec\x10\xc3"),
        }
    }
    out.truncate(len);
    out
}
