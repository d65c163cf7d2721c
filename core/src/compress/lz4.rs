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

/// Decodes an LZ4 block into exactly `output.len()` bytes.
pub(crate) fn decode(input: &[u8], output: &mut [u8]) -> Result<(), super::DecodeError> {
    match lz4_flex::block::decompress_into(input, output) {
        Ok(n) if n == output.len() => Ok(()),
        _ => Err(super::DecodeError::Corrupt),
    }
}
