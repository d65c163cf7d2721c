//! The 112-byte container header.
//!
//! ```text
//! offset len field
//!      0   8 magic        89 4B 53 59 4E 43 0D 0A  ("\x89KSYNC\r\n")
//!      8   1 version      1
//!      9   1 key_source   1 = raw 32-byte key, 2 = Argon2id passphrase
//!     10   1 chunk_log2   12..=22 (4 KiB .. 4 MiB)
//!     11   1 codec_hint   codec the writer was asked for (informative; chunks name their own)
//!     12   4 reserved     zero
//!     16  32 file_salt    fresh random per file; HKDF salt of the per-file keys
//!     48  16 kdf_salt     Argon2id salt (zero for raw keys)
//!     64   4 kdf_memory   Argon2id memory in KiB (zero for raw keys)
//!     68   4 kdf_passes   Argon2id iterations (zero for raw keys)
//!     72   4 kdf_lanes    Argon2id parallelism (zero for raw keys)
//!     76   4 reserved     zero
//!     80  32 header_mac   HMAC-SHA256(header_key, bytes 0..80): authenticity + key commitment
//! ```

use crate::budget::{self, FILE_SALT_LEN, HEADER_LEN, KDF_SALT_LEN};
use crate::compress::Codec;
use crate::error::FormatError;

/// The 8 magic bytes. The high first byte and the CR LF catch 7-bit and newline-mangling
/// transfers, as PNG's signature does.
pub const MAGIC: [u8; 8] = [0x89, b'K', b'S', b'Y', b'N', b'C', b'\r', b'\n'];

/// The container format version this build writes and reads.
pub const VERSION: u8 = 1;

/// Length of the header MAC.
pub const MAC_LEN: usize = 32;

/// Bytes covered by the header MAC.
pub const MAC_INPUT_LEN: usize = HEADER_LEN - MAC_LEN;

mod field {
    use core::ops::Range;
    pub const MAGIC: Range<usize> = 0..8;
    pub const VERSION: usize = 8;
    pub const KEY_SOURCE: usize = 9;
    pub const CHUNK_LOG2: usize = 10;
    pub const CODEC_HINT: usize = 11;
    pub const RESERVED_A: Range<usize> = 12..16;
    pub const FILE_SALT: Range<usize> = 16..48;
    pub const KDF_SALT: Range<usize> = 48..64;
    pub const KDF_MEMORY: Range<usize> = 64..68;
    pub const KDF_PASSES: Range<usize> = 68..72;
    pub const KDF_LANES: Range<usize> = 72..76;
    pub const RESERVED_B: Range<usize> = 76..80;
    pub const MAC: Range<usize> = 80..112;
}

/// Where the master key comes from, as recorded in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum KeySource {
    /// A raw 32-byte key (a key file, or a key held by the device).
    RawKey,
    /// A passphrase stretched with Argon2id (v1.3) under these parameters.
    Argon2id {
        /// Argon2id salt.
        salt: [u8; KDF_SALT_LEN],
        /// Memory cost in KiB.
        memory_kib: u32,
        /// Number of passes.
        passes: u32,
        /// Degree of parallelism.
        lanes: u32,
    },
}

/// A view of header bytes. `new_checked` guarantees every accessor is in bounds.
#[derive(Debug, Clone, Copy)]
pub struct Header<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Header<T> {
    /// Wraps `buffer` without checks. Accessors panic if it is shorter than [`HEADER_LEN`].
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking it holds at least [`HEADER_LEN`] bytes.
    pub fn new_checked(buffer: T) -> Result<Self, FormatError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(FormatError::TruncatedHeader);
        }
        Ok(Self { buffer })
    }

    /// Returns the wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn bytes(&self) -> &[u8] {
        &self.buffer.as_ref()[..HEADER_LEN]
    }

    fn u32_at(&self, range: core::ops::Range<usize>) -> u32 {
        let mut b = [0u8; 4];
        b.copy_from_slice(&self.bytes()[range]);
        u32::from_le_bytes(b)
    }

    /// The magic bytes.
    pub fn magic(&self) -> &[u8] {
        &self.bytes()[field::MAGIC]
    }

    /// The format version byte.
    pub fn version(&self) -> u8 {
        self.bytes()[field::VERSION]
    }

    /// The bytes the header MAC covers.
    pub fn mac_input(&self) -> &[u8] {
        &self.bytes()[..MAC_INPUT_LEN]
    }

    /// The header MAC.
    pub fn mac(&self) -> &[u8] {
        &self.bytes()[field::MAC]
    }

    /// Parses and validates every field (but does not check the MAC: that needs the key).
    pub fn parse(&self) -> Result<HeaderRepr, FormatError> {
        let b = self.bytes();
        if b[field::MAGIC] != MAGIC {
            return Err(FormatError::NotAContainer);
        }
        if b[field::VERSION] != VERSION {
            return Err(FormatError::UnsupportedVersion(b[field::VERSION]));
        }
        if b[field::RESERVED_A].iter().chain(&b[field::RESERVED_B]).any(|&x| x != 0) {
            return Err(FormatError::MalformedHeader);
        }
        let chunk_log2 = b[field::CHUNK_LOG2];
        if budget::chunk_size_from_log2(chunk_log2).is_none() {
            return Err(FormatError::MalformedHeader);
        }
        let codec_hint = Codec::from_id(b[field::CODEC_HINT]).ok_or(FormatError::MalformedHeader)?;
        let mut file_salt = [0u8; FILE_SALT_LEN];
        file_salt.copy_from_slice(&b[field::FILE_SALT]);
        let mut kdf_salt = [0u8; KDF_SALT_LEN];
        kdf_salt.copy_from_slice(&b[field::KDF_SALT]);
        let (memory_kib, passes, lanes) =
            (self.u32_at(field::KDF_MEMORY), self.u32_at(field::KDF_PASSES), self.u32_at(field::KDF_LANES));
        let key_source = match b[field::KEY_SOURCE] {
            1 => {
                if kdf_salt != [0; KDF_SALT_LEN] || (memory_kib, passes, lanes) != (0, 0, 0) {
                    return Err(FormatError::MalformedHeader);
                }
                KeySource::RawKey
            }
            2 => {
                // Argon2 itself requires memory >= 8 * lanes KiB; beyond that the limits bound
                // what a hostile header can make the reader spend before the MAC is checked.
                // u64 arithmetic: `lanes` is attacker-chosen and 8 * lanes overflows u32.
                let lanes_ok = (1..=budget::MAX_KDF_LANES).contains(&lanes);
                let memory_ok =
                    u64::from(memory_kib) >= 8 * u64::from(lanes) && memory_kib <= budget::MAX_KDF_MEMORY_KIB;
                let passes_ok = (1..=budget::MAX_KDF_PASSES).contains(&passes);
                if !(lanes_ok && memory_ok && passes_ok) {
                    return Err(FormatError::MalformedHeader);
                }
                if u64::from(memory_kib) * u64::from(passes) > budget::MAX_KDF_COST {
                    return Err(FormatError::KdfTooCostly { memory_kib, passes });
                }
                KeySource::Argon2id { salt: kdf_salt, memory_kib, passes, lanes }
            }
            _ => return Err(FormatError::MalformedHeader),
        };
        Ok(HeaderRepr { key_source, chunk_log2, codec_hint, file_salt })
    }
}

/// The parsed, validated header fields (everything but the MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HeaderRepr {
    /// Where the master key comes from.
    pub key_source: KeySource,
    /// log2 of the chunk size.
    pub chunk_log2: u8,
    /// The codec the writer was asked for. Informative only: each chunk names its own.
    pub codec_hint: Codec,
    /// The per-file salt.
    pub file_salt: [u8; FILE_SALT_LEN],
}

impl HeaderRepr {
    /// The chunk size in bytes.
    pub const fn chunk_size(&self) -> usize {
        1usize << self.chunk_log2
    }

    /// Writes bytes 0..80 of the header into `out` (the MAC is added by
    /// [`FileKeys::seal_header`](crate::crypto::FileKeys::seal_header)).
    pub fn emit_unsealed(&self, out: &mut [u8; HEADER_LEN]) {
        *out = [0; HEADER_LEN];
        out[field::MAGIC].copy_from_slice(&MAGIC);
        out[field::VERSION] = VERSION;
        out[field::CHUNK_LOG2] = self.chunk_log2;
        out[field::CODEC_HINT] = self.codec_hint.id();
        out[field::FILE_SALT].copy_from_slice(&self.file_salt);
        match self.key_source {
            KeySource::RawKey => out[field::KEY_SOURCE] = 1,
            KeySource::Argon2id { salt, memory_kib, passes, lanes } => {
                out[field::KEY_SOURCE] = 2;
                out[field::KDF_SALT].copy_from_slice(&salt);
                out[field::KDF_MEMORY].copy_from_slice(&memory_kib.to_le_bytes());
                out[field::KDF_PASSES].copy_from_slice(&passes.to_le_bytes());
                out[field::KDF_LANES].copy_from_slice(&lanes.to_le_bytes());
            }
        }
    }
}

/// Writes the MAC into a header buffer.
pub(crate) fn set_mac(out: &mut [u8; HEADER_LEN], mac: &[u8; MAC_LEN]) {
    out[field::MAC].copy_from_slice(mac);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(key_source: KeySource) -> HeaderRepr {
        HeaderRepr { key_source, chunk_log2: 16, codec_hint: Codec::Lz4, file_salt: [7; 32] }
    }

    #[test]
    fn emit_then_parse_is_identity() {
        for ks in
            [KeySource::RawKey, KeySource::Argon2id { salt: [3; 16], memory_kib: 65536, passes: 3, lanes: 4 }]
        {
            let repr = sample(ks);
            let mut buf = [0u8; HEADER_LEN];
            repr.emit_unsealed(&mut buf);
            assert_eq!(Header::new_checked(&buf[..]).unwrap().parse().unwrap(), repr);
        }
    }

    #[test]
    fn rejects_short_bad_magic_version_and_reserved() {
        let mut buf = [0u8; HEADER_LEN];
        sample(KeySource::RawKey).emit_unsealed(&mut buf);
        assert_eq!(Header::new_checked(&buf[..HEADER_LEN - 1]).unwrap_err(), FormatError::TruncatedHeader);
        let mut b = buf;
        b[0] = b'P';
        assert_eq!(Header::new_unchecked(&b).parse(), Err(FormatError::NotAContainer));
        let mut b = buf;
        b[8] = 2;
        assert_eq!(Header::new_unchecked(&b).parse(), Err(FormatError::UnsupportedVersion(2)));
        for i in (12..16).chain(76..80) {
            let mut b = buf;
            b[i] = 1;
            assert_eq!(Header::new_unchecked(&b).parse(), Err(FormatError::MalformedHeader));
        }
    }

    #[test]
    fn rejects_out_of_range_fields() {
        let mut buf = [0u8; HEADER_LEN];
        sample(KeySource::RawKey).emit_unsealed(&mut buf);
        let bad = |f: &dyn Fn(&mut [u8; HEADER_LEN])| {
            let mut b = buf;
            f(&mut b);
            Header::new_unchecked(&b).parse()
        };
        assert_eq!(bad(&|b| b[10] = 11), Err(FormatError::MalformedHeader));
        assert_eq!(bad(&|b| b[10] = 23), Err(FormatError::MalformedHeader));
        assert_eq!(bad(&|b| b[9] = 0), Err(FormatError::MalformedHeader));
        assert_eq!(bad(&|b| b[9] = 3), Err(FormatError::MalformedHeader));
        assert_eq!(bad(&|b| b[11] = 200), Err(FormatError::MalformedHeader));
        // Raw keys carry no KDF parameters.
        assert_eq!(bad(&|b| b[64] = 1), Err(FormatError::MalformedHeader));
        // A passphrase header asking for 2 GiB of Argon2 memory is refused before any work.
        let argon = KeySource::Argon2id { salt: [1; 16], memory_kib: 1 << 21, passes: 1, lanes: 1 };
        sample(argon).emit_unsealed(&mut buf);
        assert_eq!(Header::new_unchecked(&buf).parse(), Err(FormatError::MalformedHeader));
        // Each bound holds, but 1 GiB x 64 passes is more work than a reader runs; 64 MiB x 64
        // (the most a writer records) and 1 GiB x 4 are not.
        let mut cost = |memory_kib, passes| {
            let argon = KeySource::Argon2id { salt: [1; 16], memory_kib, passes, lanes: 1 };
            sample(argon).emit_unsealed(&mut buf);
            Header::new_unchecked(&buf).parse().map(drop)
        };
        assert_eq!(cost(1 << 20, 64), Err(FormatError::KdfTooCostly { memory_kib: 1 << 20, passes: 64 }));
        assert_eq!(cost(1 << 20, 5), Err(FormatError::KdfTooCostly { memory_kib: 1 << 20, passes: 5 }));
        assert_eq!(cost(64 << 10, 64), Ok(()));
        assert_eq!(cost(1 << 20, 4), Ok(()));
    }

    /// Found by the `header` fuzz target: a lane count above u32::MAX / 8 overflowed the
    /// memory check and panicked in debug builds.
    #[test]
    fn huge_lane_count_is_refused_without_overflow() {
        let argon = KeySource::Argon2id { salt: [0; 16], memory_kib: 0, passes: 0, lanes: 0x2000_0000 };
        let mut buf = [0u8; HEADER_LEN];
        sample(argon).emit_unsealed(&mut buf);
        assert_eq!(Header::new_unchecked(&buf).parse(), Err(FormatError::MalformedHeader));
        let argon = KeySource::Argon2id { salt: [0; 16], memory_kib: u32::MAX, passes: 1, lanes: u32::MAX };
        sample(argon).emit_unsealed(&mut buf);
        assert_eq!(Header::new_unchecked(&buf).parse(), Err(FormatError::MalformedHeader));
    }
}
