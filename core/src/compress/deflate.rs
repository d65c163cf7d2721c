//! Raw DEFLATE compression through miniz_oxide. Needs the `alloc` feature: miniz_oxide keeps
//! its compressor state (about 300 KiB) on the heap.

extern crate alloc;

use alloc::boxed::Box;
use miniz_oxide::deflate::core::{
    CompressorOxide, TDEFLFlush, TDEFLStatus, compress, create_comp_flags_from_zip_params,
};

use super::{Codec, Encoder, smaller};

/// Raw DEFLATE encoder at a zlib-style level (0-9).
pub struct DeflateEncoder {
    state: Box<CompressorOxide>,
}

impl DeflateEncoder {
    /// A new encoder at `level` (clamped to 1..=9; 6 is zlib's default).
    pub fn new(level: u8) -> Self {
        let level = level.clamp(1, 9);
        // window_bits < 0 selects a raw stream (no zlib header), strategy 0 is the default.
        let flags = create_comp_flags_from_zip_params(i32::from(level), -15, 0);
        Self { state: Box::new(CompressorOxide::new(flags)) }
    }
}

impl core::fmt::Debug for DeflateEncoder {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("DeflateEncoder")
    }
}

impl Encoder for DeflateEncoder {
    fn hint(&self) -> Codec {
        Codec::Deflate
    }

    fn encode(&mut self, input: &[u8], output: &mut [u8]) -> Option<(Codec, usize)> {
        self.state.reset();
        // Give the compressor only as much room as would still be a saving: if it runs out,
        // the chunk is stored instead.
        let room = output.len().min(input.len().saturating_sub(1));
        let (status, consumed, produced) =
            compress(&mut self.state, input, &mut output[..room], TDEFLFlush::Finish);
        match status {
            TDEFLStatus::Done if consumed == input.len() => smaller(Codec::Deflate, produced, input.len()),
            _ => None,
        }
    }
}
