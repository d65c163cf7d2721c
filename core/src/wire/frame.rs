//! Frames of the sync protocol and the clear-text handshake bodies.
//!
//! ```text
//! frame:  body_len (4, LE) | body (body_len bytes)
//!
//! ClientHello body (52 bytes, clear)      ServerHello body (76 bytes, clear)
//!   0  4 magic "KSYN"                       0  4 magic "KSYN"
//!   4  1 lowest version spoken              4  1 chosen version
//!   5  1 highest version spoken             5  1 chosen version (again)
//!   6  2 reserved, zero                     6  2 reserved, zero
//!   8  4 max_body: largest frame body       8  4 max_body
//!         the sender of this hello         12 32 server random
//!         accepts (LE)                     44 32 server proof
//!  12 32 client random
//!  44  8 key id: names the client's key (never the key)
//!
//! ClientProof body (32 bytes, clear): client proof
//! Sealed frame body (after the handshake): ciphertext | 16-byte AES-256-GCM tag
//! ```
//!
//! The length is checked against the receiver's limit *before* any byte of the body is
//! buffered ([`FrameHeader::parse`]). The 4 length bytes are the associated data of a sealed
//! body, so a changed length fails authentication too.

use crate::budget::{FRAME_HEADER_LEN, MIN_FRAME_BODY, TAG_LEN};
use crate::sync::ProtoError;

/// The magic that opens both hellos.
pub const PROTO_MAGIC: [u8; 4] = *b"KSYN";

/// The protocol version this build speaks (lowest and highest: only one so far). Version 5
/// added the filter rules and `delete_excluded` to `Open`; version 4 the key id to the
/// ClientHello.
pub const PROTO_VERSION: u8 = 5;

/// Length of the part both hellos share (magic, versions, max_body, random).
pub const HELLO_LEN: usize = 44;

/// Length of the key id a client names its key by.
pub const KEY_ID_LEN: usize = 8;

/// Length of the ClientHello body: the shared part and the key id.
pub const CLIENT_HELLO_LEN: usize = HELLO_LEN + KEY_ID_LEN;

/// Length of a ClientHello of version 3 and before (no key id): a server still reads it, to
/// tell such a client which versions it speaks.
pub const OLD_CLIENT_HELLO_LEN: usize = HELLO_LEN;

/// Length of the ServerHello body.
pub const SERVER_HELLO_LEN: usize = HELLO_LEN + PROOF_LEN;

/// Length of a handshake proof and of the ClientProof body.
pub const PROOF_LEN: usize = 32;

/// Length of each side's handshake random.
pub const RANDOM_LEN: usize = 32;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..4;
    pub const VERSION_MIN: usize = 4;
    pub const VERSION_MAX: usize = 5;
    pub const RESERVED: Range<usize> = 6..8;
    pub const MAX_BODY: Range<usize> = 8..12;
    pub const RANDOM: Range<usize> = 12..44;
    pub const KEY_ID: Range<usize> = 44..52;
    pub const PROOF: Range<usize> = 44..76;
}

/// The 4-byte length in front of every frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Bytes of body that follow.
    pub body_len: usize,
}

impl FrameHeader {
    /// Parses a frame length and refuses it unless `min <= len <= max`: nothing is buffered
    /// for a frame that is too large for the receiver.
    pub fn parse(bytes: [u8; FRAME_HEADER_LEN], min: usize, max: usize) -> Result<Self, ProtoError> {
        let len = u32::from_le_bytes(bytes);
        let body_len = usize::try_from(len).unwrap_or(usize::MAX);
        if body_len > max {
            return Err(ProtoError::FrameTooLarge { len, max: max as u32 });
        }
        if body_len < min {
            return Err(ProtoError::FrameTooShort { len });
        }
        Ok(Self { body_len })
    }

    /// The 4 bytes of this header.
    pub fn emit(&self) -> [u8; FRAME_HEADER_LEN] {
        (self.body_len as u32).to_le_bytes()
    }
}

/// A parsed hello (either side; a server's has a proof and one version).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloRepr {
    /// Lowest version spoken (the chosen one in a ServerHello).
    pub version_min: u8,
    /// Highest version spoken (the chosen one in a ServerHello).
    pub version_max: u8,
    /// Largest frame body the sender of the hello accepts.
    pub max_body: u32,
    /// The sender's fresh random.
    pub random: [u8; RANDOM_LEN],
}

impl HelloRepr {
    /// Parses the first [`HELLO_LEN`] bytes of a hello body.
    pub fn parse(body: &[u8]) -> Result<Self, ProtoError> {
        if body.len() < HELLO_LEN {
            return Err(ProtoError::MalformedHello);
        }
        if body[field::MAGIC] != PROTO_MAGIC {
            return Err(ProtoError::NotKeepSync);
        }
        if body[field::RESERVED] != [0, 0] {
            return Err(ProtoError::MalformedHello);
        }
        let mut max = [0u8; 4];
        max.copy_from_slice(&body[field::MAX_BODY]);
        let max_body = u32::from_le_bytes(max);
        let (version_min, version_max) = (body[field::VERSION_MIN], body[field::VERSION_MAX]);
        if version_min > version_max || (max_body as usize) < MIN_FRAME_BODY {
            return Err(ProtoError::MalformedHello);
        }
        let mut random = [0u8; RANDOM_LEN];
        random.copy_from_slice(&body[field::RANDOM]);
        Ok(Self { version_min, version_max, max_body, random })
    }

    /// Writes the shared part of a hello into `out[..HELLO_LEN]`.
    pub fn emit(&self, out: &mut [u8]) {
        out[field::MAGIC].copy_from_slice(&PROTO_MAGIC);
        out[field::VERSION_MIN] = self.version_min;
        out[field::VERSION_MAX] = self.version_max;
        out[field::RESERVED].copy_from_slice(&[0, 0]);
        out[field::MAX_BODY].copy_from_slice(&self.max_body.to_le_bytes());
        out[field::RANDOM].copy_from_slice(&self.random);
    }

    /// The key id that follows a ClientHello's first 44 bytes.
    pub fn key_id(body: &[u8]) -> Option<[u8; KEY_ID_LEN]> {
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(body.get(field::KEY_ID)?);
        Some(id)
    }

    /// The proof that follows a ServerHello's first 44 bytes.
    pub fn server_proof(body: &[u8]) -> Option<[u8; PROOF_LEN]> {
        let mut proof = [0u8; PROOF_LEN];
        proof.copy_from_slice(body.get(field::PROOF)?);
        Some(proof)
    }
}

/// Smallest sealed body: an empty plaintext still carries its tag.
pub const MIN_SEALED_BODY: usize = TAG_LEN;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_round_trips_and_rejects_bad_fields() {
        let repr = HelloRepr { version_min: 1, version_max: 2, max_body: 70_000, random: [7; 32] };
        let mut body = [0u8; CLIENT_HELLO_LEN];
        repr.emit(&mut body);
        assert_eq!(HelloRepr::parse(&body), Ok(repr));
        let mut bad = body;
        bad[0] = b'X';
        assert_eq!(HelloRepr::parse(&bad), Err(ProtoError::NotKeepSync));
        let mut bad = body;
        bad[6] = 1;
        assert_eq!(HelloRepr::parse(&bad), Err(ProtoError::MalformedHello));
        let mut bad = body;
        bad[4] = 3;
        assert_eq!(HelloRepr::parse(&bad), Err(ProtoError::MalformedHello));
        let mut bad = body;
        bad[8..12].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(HelloRepr::parse(&bad), Err(ProtoError::MalformedHello));
        assert!(HelloRepr::parse(&body[..43]).is_err());
    }

    #[test]
    fn frame_length_is_bounded_before_reading() {
        assert_eq!(FrameHeader::parse(10u32.to_le_bytes(), 1, 10), Ok(FrameHeader { body_len: 10 }));
        assert_eq!(
            FrameHeader::parse(11u32.to_le_bytes(), 1, 10),
            Err(ProtoError::FrameTooLarge { len: 11, max: 10 })
        );
        assert_eq!(
            FrameHeader::parse(u32::MAX.to_le_bytes(), 1, 10),
            Err(ProtoError::FrameTooLarge { len: u32::MAX, max: 10 })
        );
        assert_eq!(FrameHeader::parse(0u32.to_le_bytes(), 1, 10), Err(ProtoError::FrameTooShort { len: 0 }));
    }
}
