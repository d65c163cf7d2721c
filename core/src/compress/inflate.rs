//! The core's decoder: LZ4 and raw DEFLATE, both without an allocator.

use miniz_oxide::inflate::TINFLStatus;
use miniz_oxide::inflate::core::{DecompressorOxide, decompress, inflate_flags};

use super::{Codec, DecodeError, Decoder, lz4};

/// Decodes every codec the core knows (store is handled by the reader, zstd is host-only).
/// Holds miniz_oxide's inflate state (about 11 KiB) as a field.
pub struct CoreDecoder {
    inflate: DecompressorOxide,
}

impl CoreDecoder {
    /// A new decoder.
    #[inline(always)]
    pub fn new() -> Self {
        Self { inflate: DecompressorOxide::new() }
    }
}

impl Default for CoreDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for CoreDecoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CoreDecoder")
    }
}

impl Decoder for CoreDecoder {
    fn decode(&mut self, codec: Codec, input: &[u8], output: &mut [u8]) -> Result<(), DecodeError> {
        match codec {
            Codec::Store => {
                if input.len() != output.len() {
                    return Err(DecodeError::Corrupt);
                }
                output.copy_from_slice(input);
                Ok(())
            }
            Codec::Lz4 => lz4::decode(input, output),
            Codec::Deflate => inflate_exact(&mut self.inflate, input, output),
            Codec::Zstd => Err(DecodeError::Unsupported),
        }
    }
}

/// Inflates a complete raw DEFLATE stream into exactly `output.len()` bytes.
fn inflate_exact(state: &mut DecompressorOxide, input: &[u8], output: &mut [u8]) -> Result<(), DecodeError> {
    state.init();
    // The whole body is present and the whole output is lent, so one call must finish.
    let flags = inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF;
    let (status, consumed, produced) = decompress(state, input, output, 0, flags);
    match status {
        TINFLStatus::Done if consumed == input.len() && produced == output.len() => Ok(()),
        _ => Err(DecodeError::Corrupt),
    }
}
