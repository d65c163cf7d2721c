//! LZ4 block compression through `lz4_flex`, with the hash table held in the encoder.

use lz4_flex::block::{CompressTable, compress_into_with_table};

use super::{Codec, Encoder, smaller};

/// LZ4 block encoder. Holds its 16 KiB hash table as a field, so encoding never allocates
/// and never puts the table on the stack.
pub struct Lz4Encoder {
    table: CompressTable,
}

impl Lz4Encoder {
    /// A new encoder.
    #[inline(always)]
    pub fn new() -> Self {
        Self { table: CompressTable::large() }
    }
}

impl Default for Lz4Encoder {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for Lz4Encoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Lz4Encoder")
    }
}

impl Encoder for Lz4Encoder {
    fn hint(&self) -> Codec {
        Codec::Lz4
    }

    fn encode(&mut self, input: &[u8], output: &mut [u8]) -> Option<(Codec, usize)> {
        let len = compress_into_with_table(input, output, &mut self.table).ok()?;
        smaller(Codec::Lz4, len, input.len())
    }
}

/// Decodes an LZ4 block into exactly `output.len()` bytes. The block must also keep the
/// format's end-of-block rules (see [`conforms`]), so that a reader built on liblz4 and this
/// one accept exactly the same containers.
pub(crate) fn decode(input: &[u8], output: &mut [u8]) -> Result<(), super::DecodeError> {
    if !conforms(input, output.len()) {
        return Err(super::DecodeError::Corrupt);
    }
    match lz4_flex::block::decompress_into(input, output) {
        Ok(n) if n == output.len() => Ok(()),
        _ => Err(super::DecodeError::Corrupt),
    }
}

/// The smallest match.
const MIN_MATCH: usize = 4;
/// The last bytes of a block are always literals.
const LAST_LITERALS: usize = 5;
/// The last match starts at least this far before the end of the block.
const MF_LIMIT: usize = 12;

/// Whether `input`, a block that decodes to `out_len` bytes, keeps the rules liblz4's
/// `LZ4_decompress_safe` checks beyond memory safety (lz4_flex accepts any block it can
/// decode safely): the block ends with a run of literals that consumes the input exactly;
/// literals that reach into the last 12 bytes of output, or leave fewer than 8 bytes of
/// input, must be that final run; every match ends at least 5 bytes before the end; no
/// offset is 0 or reaches before the start. Reads the sequence headers only, not the data.
fn conforms(input: &[u8], out_len: usize) -> bool {
    fn length(input: &[u8], ip: &mut usize, mut len: usize) -> Option<usize> {
        if len == 15 {
            loop {
                let byte = *input.get(*ip)?;
                *ip += 1;
                len = len.checked_add(usize::from(byte))?;
                if byte != 255 {
                    break;
                }
            }
        }
        Some(len)
    }
    let walk = || -> Option<bool> {
        let (mut ip, mut op) = (0usize, 0usize);
        loop {
            let token = *input.get(ip)?;
            ip += 1;
            let literals = length(input, &mut ip, usize::from(token >> 4))?;
            let lit_end = ip.checked_add(literals)?;
            let op_end = op.checked_add(literals)?;
            if op_end + MF_LIMIT > out_len || lit_end + 2 + 1 + LAST_LITERALS > input.len() {
                return Some(lit_end == input.len() && op_end == out_len);
            }
            (ip, op) = (lit_end, op_end);
            let offset = usize::from(u16::from_le_bytes([*input.get(ip)?, *input.get(ip + 1)?]));
            ip += 2;
            if offset == 0 || offset > op {
                return Some(false);
            }
            let matched = length(input, &mut ip, usize::from(token & 15))?.checked_add(MIN_MATCH)?;
            op = op.checked_add(matched)?;
            if op + LAST_LITERALS > out_len {
                return Some(false);
            }
        }
    };
    walk().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of literals `lit`, then a match of `len` bytes at `offset`, then `tail`
    /// literals (none: the block ends with the match).
    fn block(lit: &[u8], offset: u16, len: usize, tail: &[u8]) -> ([u8; 64], usize) {
        assert!(lit.len() < 15 && (4..19).contains(&len) && tail.len() < 15);
        let mut b = [0u8; 64];
        b[0] = ((lit.len() as u8) << 4) | (len - 4) as u8;
        b[1..1 + lit.len()].copy_from_slice(lit);
        let mut at = 1 + lit.len();
        b[at..at + 2].copy_from_slice(&offset.to_le_bytes());
        at += 2;
        if !tail.is_empty() {
            b[at] = (tail.len() as u8) << 4;
            b[at + 1..at + 1 + tail.len()].copy_from_slice(tail);
            at += 1 + tail.len();
        }
        (b, at)
    }

    #[test]
    fn blocks_breaking_the_end_rules_are_refused_as_liblz4_refuses_them() {
        let mut out = [0u8; 64];
        // 8 literals, a 10-byte match, 5 literals: 23 bytes, every rule kept.
        let (b, n) = block(b"abcdefgh", 8, 10, b"12345");
        assert_eq!(decode(&b[..n], &mut out[..23]), Ok(()));
        assert_eq!(&out[..23], b"abcdefghabcdefghab12345");
        let refused = [
            (block(b"abcdefgh", 8, 10, b""), 18),      // ends with a match
            (block(b"abcdefgh", 8, 10, b"1234"), 22),  // 4 literals after the last match
            (block(b"abcdefgh", 0, 10, b"12345"), 23), // offset 0
            (block(b"abcd", 4, 4, b"12345"), 13),      // a match in the last 12 bytes
        ];
        for (i, ((b, n), len)) in refused.iter().enumerate() {
            assert!(decode(&b[..*n], &mut out[..*len]).is_err(), "case {i}");
        }
        // lz4_flex alone decodes the short tail and the late match: the rules are ours.
        for i in [1, 3] {
            let ((b, n), len) = refused[i];
            let flex = lz4_flex::block::decompress_into(&b[..n], &mut out[..len]);
            assert_eq!(flex.ok(), Some(len), "case {i}: lz4_flex takes it");
        }
        // Literals only, any length, and the empty block.
        assert_eq!(decode(&[0x30, b'x', b'y', b'z'], &mut out[..3]), Ok(()));
        assert_eq!(decode(&[0x00], &mut out[..0]), Ok(()));
        assert!(decode(&[0x30, b'x', b'y', b'z', 0], &mut out[..3]).is_err(), "a trailing byte");
    }

    #[test]
    fn what_the_encoder_writes_keeps_the_rules() {
        let mut enc = Lz4Encoder::new();
        let mut seed = 7u32;
        let mut data = [0u8; 5000];
        let mut out = [0u8; 6000];
        let mut back = [0u8; 5000];
        for len in [1usize, 5, 12, 13, 17, 64, 100, 999, 5000] {
            for (i, b) in data.iter_mut().enumerate() {
                seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                *b = if i % 7 < 4 { b"text "[i % 5] } else { (seed >> 24) as u8 };
            }
            let n = compress_into_with_table(&data[..len], &mut out, &mut enc.table).unwrap();
            assert!(conforms(&out[..n], len), "len {len}");
            decode(&out[..n], &mut back[..len]).unwrap();
            assert_eq!(back[..len], data[..len]);
        }
    }
}
