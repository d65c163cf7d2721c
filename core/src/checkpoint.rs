//! Checkpoint records: how far a pack got, so an interrupted run resumes at the last durable
//! chunk instead of starting over.
//!
//! ```text
//! "KSCP" | version (1) | postcard(Checkpoint) | CRC-32C (LE) over everything before it
//! ```
//!
//! The record is bounded (`MAX_ENCODED_LEN`, from postcard's `MaxSize`) and encodes into a
//! caller's buffer. The CRC catches torn and corrupt writes; it is not a MAC (see
//! `docs/SECURITY.md` for what a resume trusts).
//!
//! A resume must never seal different plaintext under a nonce already used. A checkpoint
//! therefore binds to its container (the header MAC, unique per random salt) and to its source
//! (`source_hash`: BLAKE3 of the plaintext already sealed). A resumer re-hashes the source's
//! first `plain_offset` bytes; when they differ it starts a new container with a fresh salt.

use crc::{CRC_32_ISCSI, Crc};
use postcard::experimental::max_size::MaxSize;
use serde::{Deserialize, Serialize};

const MAGIC: [u8; 4] = *b"KSCP";
const VERSION: u8 = 1;
const CRC32C: Crc<u32> = Crc::<u32>::new(&CRC_32_ISCSI);

/// Progress of a pack, valid once the output it describes is durable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, MaxSize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Checkpoint {
    /// MAC of the container's header: names the container (and its salt) being written.
    pub header_mac: [u8; 32],
    /// Chunks sealed and durable.
    pub chunks_done: u64,
    /// Plaintext bytes those chunks hold.
    pub plain_offset: u64,
    /// Container bytes durable (header included).
    pub sealed_offset: u64,
    /// BLAKE3 of the first `plain_offset` bytes of plaintext.
    pub source_hash: [u8; 32],
}

/// Why a checkpoint record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CheckpointError {
    /// Not a checkpoint record, or one of another version.
    NotACheckpoint,
    /// The CRC does not match: the record is torn or corrupt.
    BadChecksum,
    /// The CRC matches but the body does not decode.
    Malformed,
    /// The output buffer is smaller than [`Checkpoint::MAX_ENCODED_LEN`].
    BufferTooSmall,
}

impl core::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Self::NotACheckpoint => "not a KeepSync checkpoint record",
            Self::BadChecksum => "checkpoint record is torn or corrupt (CRC mismatch)",
            Self::Malformed => "checkpoint record does not decode",
            Self::BufferTooSmall => "buffer too small for a checkpoint record",
        })
    }
}

impl core::error::Error for CheckpointError {}

impl Checkpoint {
    /// Largest encoded record, CRC included.
    pub const MAX_ENCODED_LEN: usize = MAGIC.len() + 1 + Self::POSTCARD_MAX_SIZE + 4;

    /// Encodes into `buf`, returning the record's bytes.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b [u8], CheckpointError> {
        if buf.len() < Self::MAX_ENCODED_LEN {
            return Err(CheckpointError::BufferTooSmall);
        }
        buf[..4].copy_from_slice(&MAGIC);
        buf[4] = VERSION;
        let body_len = postcard::to_slice(self, &mut buf[5..Self::MAX_ENCODED_LEN - 4])
            .map_err(|_| CheckpointError::BufferTooSmall)?
            .len();
        let end = 5 + body_len;
        let crc = CRC32C.checksum(&buf[..end]);
        buf[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        Ok(&buf[..end + 4])
    }

    /// Decodes a record, checking magic, version and CRC first.
    pub fn decode(bytes: &[u8]) -> Result<Self, CheckpointError> {
        if bytes.len() < 9
            || bytes.len() > Self::MAX_ENCODED_LEN
            || bytes[..4] != MAGIC
            || bytes[4] != VERSION
        {
            return Err(CheckpointError::NotACheckpoint);
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if CRC32C.checksum(body).to_le_bytes() != crc {
            return Err(CheckpointError::BadChecksum);
        }
        match postcard::take_from_bytes::<Self>(&body[5..]) {
            Ok((ckpt, [])) => Ok(ckpt),
            _ => Err(CheckpointError::Malformed),
        }
    }
}

/// Running BLAKE3 hash of the plaintext already sealed.
#[derive(Clone)]
pub struct SourceHasher(blake3::Hasher);

impl SourceHasher {
    /// An empty hash state.
    pub fn new() -> Self {
        Self(blake3::Hasher::new())
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything added so far (the state stays usable).
    pub fn digest(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

impl Default for SourceHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for SourceHasher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SourceHasher(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Checkpoint {
        Checkpoint {
            header_mac: [5; 32],
            chunks_done: u64::MAX,
            plain_offset: u64::MAX - 1,
            sealed_offset: 1 << 40,
            source_hash: [6; 32],
        }
    }

    #[test]
    fn round_trip_at_maximum_size() {
        let mut buf = [0u8; Checkpoint::MAX_ENCODED_LEN];
        let bytes = sample().encode(&mut buf).unwrap();
        assert!(bytes.len() <= Checkpoint::MAX_ENCODED_LEN);
        assert_eq!(Checkpoint::decode(bytes).unwrap(), sample());
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_rejected() {
        let mut buf = [0u8; Checkpoint::MAX_ENCODED_LEN];
        let bytes = sample().encode(&mut buf).unwrap();
        let mut copy = [0u8; Checkpoint::MAX_ENCODED_LEN];
        for i in 0..bytes.len() * 8 {
            copy[..bytes.len()].copy_from_slice(bytes);
            copy[i / 8] ^= 1 << (i % 8);
            assert!(Checkpoint::decode(&copy[..bytes.len()]).is_err(), "bit {i}");
        }
        for len in 0..bytes.len() {
            assert!(Checkpoint::decode(&bytes[..len]).is_err(), "len {len}");
        }
    }

    #[test]
    fn small_buffer_is_refused() {
        let mut buf = [0u8; Checkpoint::MAX_ENCODED_LEN - 1];
        assert_eq!(sample().encode(&mut buf), Err(CheckpointError::BufferTooSmall));
    }
}
