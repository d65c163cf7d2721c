//! The AEAD provider trait and the RustCrypto implementation.
//!
//! Like rustls' `CryptoProvider`, the algorithm is a value the caller passes in. Unlike rustls,
//! the core cannot box trait objects (no allocator), so the provider is a generic parameter
//! whose keyed cipher is an associated type: no heap, no dynamic dispatch per chunk.

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{AeadInOut, KeyInit};

use super::SecretKey;
use crate::budget::{NONCE_LEN, TAG_LEN};

/// Authentication failed: the ciphertext, its associated data, nonce or tag is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthFailed;

/// AES-256-GCM under one key, sealing and opening in place.
pub trait ChunkCipher {
    /// Encrypts `buf` in place and returns the tag over `aad` and the ciphertext.
    fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN];

    /// Checks `tag` and decrypts `buf` in place. On failure `buf` must not be released.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed>;
}

/// Makes keyed AES-256-GCM ciphers.
pub trait CryptoProvider {
    /// The keyed cipher.
    type Cipher: ChunkCipher;

    /// A short name for diagnostics (`rustcrypto`, `ring`, ...).
    fn name(&self) -> &'static str;

    /// Expands `key` into a cipher.
    fn aes256gcm(&self, key: &SecretKey) -> Self::Cipher;
}

/// The RustCrypto `aes-gcm` backend (constant-time software AES, or AES-NI/ARMv8 AES when
/// the CPU has them). The core's default.
#[derive(Debug, Default, Clone, Copy)]
pub struct RustCrypto;

/// A keyed RustCrypto AES-256-GCM. Its key schedule is zeroized on drop.
pub struct RustCryptoAesGcm(Aes256Gcm);

impl core::fmt::Debug for RustCryptoAesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RustCryptoAesGcm(..)")
    }
}

impl CryptoProvider for RustCrypto {
    type Cipher = RustCryptoAesGcm;

    fn name(&self) -> &'static str {
        "rustcrypto"
    }

    fn aes256gcm(&self, key: &SecretKey) -> RustCryptoAesGcm {
        RustCryptoAesGcm(Aes256Gcm::new(&(*key.expose()).into()))
    }
}

impl ChunkCipher for RustCryptoAesGcm {
    fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        // AES-GCM refuses only messages over 64 GiB; chunks are at most MAX_CHUNK_SIZE (4 MiB).
        let tag = self
            .0
            .encrypt_inout_detached(&(*nonce).into(), aad, buf.into())
            .expect("chunk is far below AES-GCM's length limit");
        tag.into()
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        self.0
            .decrypt_inout_detached(&(*nonce).into(), aad, buf.into(), &(*tag).into())
            .map_err(|_| AuthFailed)
    }
}
