//! Codec choice on the host.

use keepsync_core::compress::{Codec, DeflateEncoder, Encoder, Lz4Encoder, StoreEncoder};

/// What the user asked for with `--codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecChoice {
    /// LZ4 per chunk; chunks that do not shrink are stored. (Content-aware choice between
    /// store, lz4 and zstd per chunk arrives with the parallel pipeline.)
    Auto,
    /// Store every chunk (encrypt only).
    None,
    /// LZ4: fast, modest ratio.
    Lz4,
    /// DEFLATE level 6: slower, better ratio, readable by the core without an allocator.
    Deflate,
}

/// The encoder for a choice.
pub enum HostEncoder {
    /// No compression.
    Store(StoreEncoder),
    /// LZ4 (boxed: its hash table is 16 KiB).
    Lz4(Box<Lz4Encoder>),
    /// DEFLATE.
    Deflate(DeflateEncoder),
}

impl CodecChoice {
    /// A fresh encoder for this choice.
    pub fn encoder(self) -> HostEncoder {
        match self {
            Self::None => HostEncoder::Store(StoreEncoder),
            Self::Auto | Self::Lz4 => HostEncoder::Lz4(Box::default()),
            Self::Deflate => HostEncoder::Deflate(DeflateEncoder::new(6)),
        }
    }
}

impl Encoder for HostEncoder {
    fn hint(&self) -> Codec {
        match self {
            Self::Store(e) => e.hint(),
            Self::Lz4(e) => e.hint(),
            Self::Deflate(e) => e.hint(),
        }
    }

    fn encode(&mut self, input: &[u8], output: &mut [u8]) -> Option<(Codec, usize)> {
        match self {
            Self::Store(e) => e.encode(input, output),
            Self::Lz4(e) => e.encode(input, output),
            Self::Deflate(e) => e.encode(input, output),
        }
    }
}
