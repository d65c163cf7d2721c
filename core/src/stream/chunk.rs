//! Sealing and opening single chunks.

use crate::budget::{RECORD_HEADER_LEN, TAG_LEN, compress_bound};
use crate::compress::{Codec, DecodeError, Decoder, Encoder};
use crate::crypto::{ChunkCipher, chunk_nonce};
use crate::error::FormatError;
use crate::wire::RecordRepr;

/// Compresses and seals chunk `index` of `plain` into `record`, returning the record's header
/// (its [`record_len`](RecordRepr::record_len) is the number of bytes written).
///
/// `record` must hold at least `RECORD_HEADER_LEN + compress_bound(plain.len()) + TAG_LEN`
/// bytes. A chunk that does not get smaller is stored raw.
pub fn seal_chunk<C: ChunkCipher, E: Encoder>(
    cipher: &C,
    encoder: &mut E,
    index: u64,
    is_final: bool,
    plain: &[u8],
    record: &mut [u8],
) -> RecordRepr {
    let body_room = compress_bound(plain.len());
    let (head, rest) = record.split_at_mut(RECORD_HEADER_LEN);
    let (codec, body_len) = match encoder.encode(plain, &mut rest[..body_room]) {
        Some(found) => found,
        None => {
            rest[..plain.len()].copy_from_slice(plain);
            (Codec::Store, plain.len())
        }
    };
    let repr = RecordRepr { body_len, plain_len: plain.len(), codec, is_final };
    let head: &mut [u8; RECORD_HEADER_LEN] = head.try_into().expect("split at RECORD_HEADER_LEN");
    repr.emit(head);
    let (body, tail) = rest.split_at_mut(body_len);
    let tag = cipher.seal_in_place(&chunk_nonce(index, is_final), head, body);
    tail[..TAG_LEN].copy_from_slice(&tag);
    repr
}

/// Where an opened chunk's plaintext lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenedChunk {
    /// Stored chunk: plaintext is `record[RECORD_HEADER_LEN..][..len]` (decrypted in place).
    InRecord(usize),
    /// Compressed chunk: plaintext is `plain[..len]`.
    InPlain(usize),
}

/// Authenticates and decrypts a complete record of chunk `index` in place, then decodes it.
///
/// `repr` is the parsed record header of `record`; `plain` must hold `repr.plain_len` bytes.
/// Nothing is decoded unless the chunk authenticated.
pub fn open_chunk<C: ChunkCipher, D: Decoder>(
    cipher: &C,
    decoder: &mut D,
    index: u64,
    repr: &RecordRepr,
    record: &mut [u8],
    plain: &mut [u8],
) -> Result<OpenedChunk, FormatError> {
    let (head, rest) = record.split_at_mut(RECORD_HEADER_LEN);
    let (body, tail) = rest.split_at_mut(repr.body_len);
    let tag: &[u8; TAG_LEN] = tail[..TAG_LEN].try_into().expect("record holds its tag");
    cipher
        .open_in_place(&chunk_nonce(index, repr.is_final), head, body, tag)
        .map_err(|_| FormatError::ChunkAuthFailed { index })?;
    if repr.codec == Codec::Store {
        return Ok(OpenedChunk::InRecord(repr.body_len));
    }
    match decoder.decode(repr.codec, body, &mut plain[..repr.plain_len]) {
        Ok(()) => Ok(OpenedChunk::InPlain(repr.plain_len)),
        Err(DecodeError::Unsupported) => Err(FormatError::UnsupportedCodec { index, codec: repr.codec.id() }),
        Err(DecodeError::Corrupt) => Err(FormatError::CorruptChunk { index }),
    }
}
