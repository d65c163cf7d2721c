//! STREAM nonces, after age (and Hoang-Reyhanitabar-Rogaway-Vizár's STREAM construction).
//!
//! ```text
//! byte  0..3   zero
//! byte  3..11  chunk index, u64 big-endian
//! byte 11      0x01 for the final chunk, 0x00 otherwise
//! ```
//!
//! A chunk authenticates only at its own position and only with its own finality, so a reader
//! detects reordering, dropping, duplication, truncation at a chunk boundary (the new last
//! chunk is not marked final) and appending (nothing may follow the final chunk).

use crate::budget::NONCE_LEN;

/// The nonce of chunk `index`.
pub const fn chunk_nonce(index: u64, is_final: bool) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    let be = index.to_be_bytes();
    let mut i = 0;
    while i < 8 {
        n[3 + i] = be[i];
        i += 1;
    }
    n[11] = is_final as u8;
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_counter_then_final_flag() {
        assert_eq!(chunk_nonce(0, false), [0; 12]);
        assert_eq!(chunk_nonce(0x0102_0304_0506_0708, true), [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1]);
        assert_ne!(chunk_nonce(7, false), chunk_nonce(7, true));
    }
}
