//! Errors, named by fault.
//!
//! [`FormatError`]: the bytes are not a valid, authentic container (bad input: reject it).
//! [`UsageError`]: the caller misused the API (a bug in the caller, never caused by input).

use core::fmt;

/// The input is not a valid, authentic KeepSync container, or not one this key opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FormatError {
    /// The first bytes are not the KeepSync magic: this is not a KeepSync container.
    NotAContainer,
    /// The container was written by a format version this build does not read.
    UnsupportedVersion(u8),
    /// A header field holds a value the format does not allow (reserved bits, chunk size,
    /// key source, KDF parameters out of bounds).
    MalformedHeader,
    /// The header did not authenticate under this key: wrong key or passphrase, or the header
    /// was altered.
    WrongKey,
    /// The input ended inside the header.
    TruncatedHeader,
    /// A chunk's clear-text record header is inconsistent (lengths, flags, reserved bytes).
    MalformedRecord {
        /// Index of the chunk.
        index: u64,
    },
    /// A chunk uses a codec this decoder does not know.
    UnsupportedCodec {
        /// Index of the chunk.
        index: u64,
        /// The codec id found.
        codec: u8,
    },
    /// A chunk failed authentication: it was altered, dropped, duplicated, reordered or moved.
    ChunkAuthFailed {
        /// Index the reader expected at this position.
        index: u64,
    },
    /// A chunk authenticated but its compressed body did not decode to the announced length.
    CorruptChunk {
        /// Index of the chunk.
        index: u64,
    },
    /// The input ended before the final chunk: the container was truncated.
    Truncated,
    /// Bytes follow the final chunk.
    TrailingData,
    /// The header asks Argon2id for more work than a reader runs
    /// ([`MAX_KDF_COST`](crate::budget::MAX_KDF_COST)); nothing was derived.
    KdfTooCostly {
        /// Memory asked for, in KiB.
        memory_kib: u32,
        /// Passes asked for.
        passes: u32,
    },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAContainer => f.write_str("not a KeepSync container (bad magic bytes)"),
            Self::UnsupportedVersion(v) => {
                write!(f, "container format version {v} is not supported by this build")
            }
            Self::MalformedHeader => f.write_str("container header holds invalid values"),
            Self::WrongKey => f.write_str(
                "header authentication failed: wrong key or passphrase, or the header was altered",
            ),
            Self::TruncatedHeader => f.write_str("container is truncated inside its header"),
            Self::MalformedRecord { index } => write!(f, "chunk {index} has a malformed header"),
            Self::UnsupportedCodec { index, codec } => {
                write!(f, "chunk {index} uses unknown codec id {codec}")
            }
            Self::ChunkAuthFailed { index } => write!(
                f,
                "chunk {index} failed authentication: data altered, dropped, duplicated or reordered"
            ),
            Self::CorruptChunk { index } => {
                write!(f, "chunk {index} authenticated but does not decompress")
            }
            Self::Truncated => f.write_str("container is truncated: the final chunk is missing"),
            Self::TrailingData => f.write_str("unexpected bytes after the final chunk"),
            Self::KdfTooCostly { memory_kib, passes } => write!(
                f,
                "the header asks Argon2id for {} MiB x {passes} passes, more than a reader runs (64 MiB x 64 passes' worth)",
                memory_kib / 1024
            ),
        }
    }
}

/// The caller used the API wrongly. Input bytes never cause these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum UsageError {
    /// The lent workspace is too small.
    InsufficientSize {
        /// Bytes needed.
        required: usize,
    },
    /// The chunk size is not a power of two between 4 KiB and 4 MiB.
    InvalidChunkSize,
    /// Data was written after `finish()`.
    WriteAfterFinish,
    /// The call is not allowed in the current state (names the rule).
    NotNow(&'static str),
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InsufficientSize { required } => {
                write!(f, "workspace too small: {required} bytes required")
            }
            Self::InvalidChunkSize => f.write_str("chunk size must be a power of two from 4 KiB to 4 MiB"),
            Self::WriteAfterFinish => f.write_str("input written after finish()"),
            Self::NotNow(rule) => write!(f, "not allowed now: {rule}"),
        }
    }
}

impl core::error::Error for FormatError {}
impl core::error::Error for UsageError {}
