//! Codecs behind two small traits with caller-lent buffers.
//!
//! A chunk is compressed on its own, so chunks can be sealed in parallel and read at random.
//! The [`Encoder`] decides per chunk; when the result would not be smaller the chunk is stored
//! raw, so incompressible data is never expanded.

#[cfg(feature = "alloc")]
mod deflate;
mod inflate;
mod lz4;

#[cfg(feature = "alloc")]
pub use deflate::DeflateEncoder;
pub use inflate::CoreDecoder;
pub use lz4::Lz4Encoder;

/// Codec ids as stored in the header and in each chunk's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[repr(u8)]
pub enum Codec {
    /// Stored raw.
    Store = 0,
    /// LZ4 block format (no frame), as written by `lz4_flex::block`.
    Lz4 = 1,
    /// Raw DEFLATE (RFC 1951, no zlib or gzip wrapper).
    Deflate = 2,
    /// Zstandard frame. Reserved for host builds: the core does not decode it.
    Zstd = 3,
}

impl Codec {
    /// All codecs, in id order.
    pub const ALL: [Codec; 4] = [Codec::Store, Codec::Lz4, Codec::Deflate, Codec::Zstd];

    /// The codec for an id, or `None` for an unknown id.
    pub const fn from_id(id: u8) -> Option<Self> {
        match id {
            0 => Some(Self::Store),
            1 => Some(Self::Lz4),
            2 => Some(Self::Deflate),
            3 => Some(Self::Zstd),
            _ => None,
        }
    }

    /// The id byte.
    pub const fn id(self) -> u8 {
        self as u8
    }

    /// The lower-case name users type (`store`, `lz4`, `deflate`, `zstd`).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Store => "store",
            Self::Lz4 => "lz4",
            Self::Deflate => "deflate",
            Self::Zstd => "zstd",
        }
    }
}

/// Compresses one chunk at a time.
pub trait Encoder {
    /// The codec written into the header as the writer's intent.
    fn hint(&self) -> Codec;

    /// Compresses `input` into `output`, which has at least
    /// [`compress_bound`](crate::budget::compress_bound)`(input.len())` bytes.
    ///
    /// Returns the codec used and the compressed length only when that length is strictly
    /// smaller than `input.len()`; `None` tells the caller to store the chunk raw.
    fn encode(&mut self, input: &[u8], output: &mut [u8]) -> Option<(Codec, usize)>;
}

/// Decompresses one chunk at a time.
pub trait Decoder {
    /// Decodes `input` (compressed with `codec`) into `output`, whose length is the exact
    /// plaintext length announced by the record. Fails unless the body decodes to exactly
    /// `output.len()` bytes.
    fn decode(&mut self, codec: Codec, input: &[u8], output: &mut [u8]) -> Result<(), DecodeError>;
}

/// Why a chunk body did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// This decoder does not implement the codec.
    Unsupported,
    /// The body is not valid data for the codec, or its length differs from the record's.
    Corrupt,
}

/// An encoder that never compresses: every chunk is stored.
#[derive(Debug, Default, Clone, Copy)]
pub struct StoreEncoder;

impl Encoder for StoreEncoder {
    fn hint(&self) -> Codec {
        Codec::Store
    }

    fn encode(&mut self, _input: &[u8], _output: &mut [u8]) -> Option<(Codec, usize)> {
        None
    }
}

impl<E: Encoder + ?Sized> Encoder for &mut E {
    fn hint(&self) -> Codec {
        (**self).hint()
    }

    fn encode(&mut self, input: &[u8], output: &mut [u8]) -> Option<(Codec, usize)> {
        (**self).encode(input, output)
    }
}

impl<D: Decoder + ?Sized> Decoder for &mut D {
    fn decode(&mut self, codec: Codec, input: &[u8], output: &mut [u8]) -> Result<(), DecodeError> {
        (**self).decode(codec, input, output)
    }
}

/// Keeps `Some` only when compression saved at least one byte.
pub(crate) fn smaller(codec: Codec, len: usize, input_len: usize) -> Option<(Codec, usize)> {
    (len < input_len).then_some((codec, len))
}
