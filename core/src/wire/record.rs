//! The 12-byte clear-text header in front of every sealed chunk.
//!
//! ```text
//! offset len field
//!      0   4 body_len   bytes of sealed body that follow (tag not included)
//!      4   4 plain_len  bytes of plaintext the body decodes to
//!      8   1 codec      0 store, 1 lz4, 2 deflate, 3 zstd (host only)
//!      9   1 flags      bit 0: final chunk; other bits zero
//!     10   2 reserved   zero
//! ```
//!
//! These 12 bytes are the AEAD associated data of their chunk, so none can be changed without
//! failing authentication. They are in the clear so a reader can bound, skip and index chunks
//! without the key.

use crate::budget::RECORD_HEADER_LEN;
use crate::compress::Codec;
use crate::error::FormatError;

mod field {
    use core::ops::Range;
    pub const BODY_LEN: Range<usize> = 0..4;
    pub const PLAIN_LEN: Range<usize> = 4..8;
    pub const CODEC: usize = 8;
    pub const FLAGS: usize = 9;
    pub const RESERVED: Range<usize> = 10..12;
}

const FLAG_FINAL: u8 = 0x01;

/// A view of a record header. `new_checked` guarantees accessors are in bounds.
#[derive(Debug, Clone, Copy)]
pub struct Record<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Record<T> {
    /// Wraps `buffer` after checking it holds at least [`RECORD_HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, FormatError> {
        if buffer.as_ref().len() < RECORD_HEADER_LEN {
            return Err(FormatError::Truncated);
        }
        Ok(Self { buffer })
    }

    fn u32_at(&self, range: core::ops::Range<usize>) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.buffer.as_ref()[range]);
        u32::from_le_bytes(b)
    }

    /// Parses and validates the record header of chunk `index` for a container whose chunk
    /// size is `chunk_size`. The rules make each plaintext's encoding canonical:
    /// - `plain_len <= chunk_size`, and `plain_len == chunk_size` unless the chunk is final;
    /// - only chunk 0 may be empty (the empty file);
    /// - a stored chunk has `body_len == plain_len`; a compressed one `body_len < plain_len`
    ///   (compression never expands a chunk).
    pub fn parse(&self, index: u64, chunk_size: usize) -> Result<RecordRepr, FormatError> {
        let b = self.buffer.as_ref();
        let malformed = FormatError::MalformedRecord { index };
        let body_len = self.u32_at(field::BODY_LEN) as usize;
        let plain_len = self.u32_at(field::PLAIN_LEN) as usize;
        let flags = b[field::FLAGS];
        if flags & !FLAG_FINAL != 0 || b[field::RESERVED] != [0, 0] {
            return Err(malformed);
        }
        let is_final = flags & FLAG_FINAL != 0;
        let codec = Codec::from_id(b[field::CODEC])
            .ok_or(FormatError::UnsupportedCodec { index, codec: b[field::CODEC] })?;
        let size_ok = if is_final {
            plain_len <= chunk_size && (plain_len > 0 || index == 0)
        } else {
            plain_len == chunk_size
        };
        let body_ok = match codec {
            Codec::Store => body_len == plain_len,
            _ => body_len < plain_len,
        };
        if !(size_ok && body_ok) {
            return Err(malformed);
        }
        Ok(RecordRepr { body_len, plain_len, codec, is_final })
    }
}

/// A parsed record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecordRepr {
    /// Bytes of sealed body (the tag follows it).
    pub body_len: usize,
    /// Bytes of plaintext.
    pub plain_len: usize,
    /// Codec of the body.
    pub codec: Codec,
    /// Whether this is the last chunk of the container.
    pub is_final: bool,
}

impl RecordRepr {
    /// Bytes of the whole record: header, body, tag.
    pub const fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.body_len + crate::budget::TAG_LEN
    }

    /// Writes the 12 header bytes.
    pub fn emit(&self, out: &mut [u8; RECORD_HEADER_LEN]) {
        // Lengths are bounded by MAX_CHUNK_SIZE (4 MiB), so they always fit in u32.
        out[field::BODY_LEN].copy_from_slice(&(self.body_len as u32).to_le_bytes());
        out[field::PLAIN_LEN].copy_from_slice(&(self.plain_len as u32).to_le_bytes());
        out[field::CODEC] = self.codec.id();
        out[field::FLAGS] = if self.is_final { FLAG_FINAL } else { 0 };
        out[field::RESERVED].copy_from_slice(&[0, 0]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn emit(r: RecordRepr) -> [u8; RECORD_HEADER_LEN] {
        let mut b = [0; RECORD_HEADER_LEN];
        r.emit(&mut b);
        b
    }

    #[test]
    fn round_trip_and_canonical_rules() {
        let cs = 4096;
        let ok = RecordRepr { body_len: 100, plain_len: cs, codec: Codec::Lz4, is_final: false };
        assert_eq!(Record::new_checked(&emit(ok)[..]).unwrap().parse(5, cs), Ok(ok));
        let bad = [
            // non-final chunk shorter than the chunk size
            RecordRepr { plain_len: cs - 1, ..ok },
            // compressed body not smaller than its plaintext
            RecordRepr { body_len: cs, ..ok },
            // stored body with a different length
            RecordRepr { codec: Codec::Store, ..ok },
            // plaintext larger than a chunk
            RecordRepr { plain_len: cs + 1, is_final: true, ..ok },
            // empty final chunk after chunk 0
            RecordRepr { body_len: 0, plain_len: 0, codec: Codec::Store, is_final: true },
        ];
        for r in bad {
            assert_eq!(
                Record::new_checked(&emit(r)[..]).unwrap().parse(5, cs),
                Err(FormatError::MalformedRecord { index: 5 }),
                "{r:?}"
            );
        }
        let empty = RecordRepr { body_len: 0, plain_len: 0, codec: Codec::Store, is_final: true };
        assert_eq!(Record::new_checked(&emit(empty)[..]).unwrap().parse(0, cs), Ok(empty));
    }

    #[test]
    fn rejects_flags_reserved_and_codec() {
        let cs = 4096;
        let ok = RecordRepr { body_len: 10, plain_len: 20, codec: Codec::Lz4, is_final: true };
        let mut b = emit(ok);
        b[9] = 0x03;
        assert_eq!(
            Record::new_checked(&b[..]).unwrap().parse(0, cs),
            Err(FormatError::MalformedRecord { index: 0 })
        );
        let mut b = emit(ok);
        b[11] = 1;
        assert_eq!(
            Record::new_checked(&b[..]).unwrap().parse(0, cs),
            Err(FormatError::MalformedRecord { index: 0 })
        );
        let mut b = emit(ok);
        b[8] = 9;
        assert_eq!(
            Record::new_checked(&b[..]).unwrap().parse(0, cs),
            Err(FormatError::UnsupportedCodec { index: 0, codec: 9 })
        );
        assert_eq!(Record::new_checked(&b[..11]).unwrap_err(), FormatError::Truncated);
    }
}
