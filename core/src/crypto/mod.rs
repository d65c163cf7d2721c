//! Authenticated encryption and the key schedule.
//!
//! - [`provider`]: the AEAD behind a small trait, so a host can plug a faster backend without
//!   changing a byte on disk. [`RustCrypto`] is the default and the only one in the core.
//! - [`keys`]: master key → per-file keys (HKDF-SHA256 over a fresh salt), header MAC and key
//!   commitment (HMAC-SHA256).
//! - [`nonce`]: STREAM nonces (chunk counter + final flag).
//! - [`session`]: the sync protocol's PSK handshake secrets and frame nonces.

pub mod keys;
pub mod nonce;
pub mod provider;
pub mod session;

pub use keys::{FileKeys, SecretKey, open_header};
pub use nonce::chunk_nonce;
pub use provider::{AuthFailed, ChunkCipher, CryptoProvider, RustCrypto, RustCryptoAesGcm};
