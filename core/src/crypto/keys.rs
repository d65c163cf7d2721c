//! The key schedule.
//!
//! ```text
//! master key (32 bytes: a key file, or Argon2id(passphrase, kdf_salt, params))
//!   prk         = HKDF-SHA256-Extract(salt = file_salt, ikm = master)
//!   header_key  = HKDF-Expand(prk, "keepsync v1 header", 32)
//!   payload_key = HKDF-Expand(prk, "keepsync v1 payload", 32)
//!   header_mac  = HMAC-SHA256(header_key, header[0..80])
//! ```
//!
//! Every file gets fresh keys from its random 32-byte salt, so chunk counters restart at zero
//! per file without nonce reuse. The header MAC is also the key commitment: HMAC-SHA256 with a
//! 32-byte key is collision-resistant in the key, so no second key opens the same header, and
//! a wrong key fails on the header, before any chunk is read.

use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::provider::CryptoProvider;
use crate::budget::{FILE_SALT_LEN, HEADER_LEN, KEY_LEN};
use crate::error::FormatError;
use crate::wire::header::{self, Header, HeaderRepr, MAC_LEN};

const HEADER_KEY_INFO: &[u8] = b"keepsync v1 header";
const PAYLOAD_KEY_INFO: &[u8] = b"keepsync v1 payload";

/// A 32-byte secret. Zeroized on drop; its `Debug` never prints it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey([u8; KEY_LEN]);

impl SecretKey {
    /// Wraps key bytes. The caller should zeroize its own copy.
    pub const fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    /// The key bytes, for handing to a cipher or KDF.
    pub const fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl core::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

/// The keys of one file, derived from the master key and the file's salt.
#[derive(Clone, Debug)]
pub struct FileKeys {
    header_key: SecretKey,
    payload_key: SecretKey,
}

impl FileKeys {
    /// Derives the file keys for `file_salt`.
    pub fn derive(master: &SecretKey, file_salt: &[u8; FILE_SALT_LEN]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(file_salt), master.expose());
        let mut header_key = [0u8; KEY_LEN];
        let mut payload_key = [0u8; KEY_LEN];
        // 32 bytes is far below HKDF-SHA256's 8160-byte output limit.
        hk.expand(HEADER_KEY_INFO, &mut header_key).expect("32 <= 255 * 32");
        hk.expand(PAYLOAD_KEY_INFO, &mut payload_key).expect("32 <= 255 * 32");
        let keys = Self {
            header_key: SecretKey::from_bytes(header_key),
            payload_key: SecretKey::from_bytes(payload_key),
        };
        header_key.zeroize();
        payload_key.zeroize();
        keys
    }

    fn header_mac(&self, mac_input: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.header_key.expose())
            .expect("HMAC takes keys of any length");
        mac.update(mac_input);
        mac
    }

    /// Emits `repr` and its MAC: the complete header to write first.
    pub fn seal_header(&self, repr: &HeaderRepr) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        repr.emit_unsealed(&mut out);
        let tag: [u8; MAC_LEN] =
            self.header_mac(&out[..header::MAC_INPUT_LEN]).finalize().into_bytes().into();
        header::set_mac(&mut out, &tag);
        out
    }

    /// Checks a header's MAC in constant time.
    pub fn verify_header<T: AsRef<[u8]>>(&self, header: &Header<T>) -> Result<(), FormatError> {
        self.header_mac(header.mac_input()).verify_slice(header.mac()).map_err(|_| FormatError::WrongKey)
    }

    /// The keyed payload cipher from `provider`.
    pub fn payload_cipher<P: CryptoProvider>(&self, provider: &P) -> P::Cipher {
        provider.aes256gcm(&self.payload_key)
    }
}

/// Parses a header, asks `master_key` for the master key (a key file's key, or a passphrase
/// stretched with the header's KDF parameters), derives the file keys and verifies the MAC.
///
/// Nothing from the header is trusted beyond the bounds `parse` checks until this returns `Ok`.
pub fn open_header<E: From<FormatError>>(
    bytes: &[u8],
    master_key: impl FnOnce(&HeaderRepr) -> Result<SecretKey, E>,
) -> Result<(HeaderRepr, FileKeys), E> {
    let header = Header::new_checked(bytes)?;
    let repr = header.parse()?;
    let master = master_key(&repr)?;
    let keys = FileKeys::derive(&master, &repr.file_salt);
    keys.verify_header(&header)?;
    Ok((repr, keys))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Codec;
    use crate::wire::KeySource;

    fn repr() -> HeaderRepr {
        HeaderRepr {
            key_source: KeySource::RawKey,
            chunk_log2: 12,
            codec_hint: Codec::Store,
            file_salt: [9; 32],
        }
    }

    #[test]
    fn header_opens_with_its_key_only() {
        let master = SecretKey::from_bytes([1; 32]);
        let bytes = FileKeys::derive(&master, &[9; 32]).seal_header(&repr());
        let ok: Result<_, FormatError> = open_header(&bytes, |_| Ok(master.clone()));
        assert_eq!(ok.unwrap().0, repr());
        let wrong: Result<_, FormatError> = open_header(&bytes, |_| Ok(SecretKey::from_bytes([2; 32])));
        assert_eq!(wrong.unwrap_err(), FormatError::WrongKey);
    }

    #[test]
    fn salt_changes_every_key() {
        let master = SecretKey::from_bytes([1; 32]);
        let a = FileKeys::derive(&master, &[0; 32]);
        let b = FileKeys::derive(&master, &[1; 32]);
        assert_ne!(a.payload_key.expose(), b.payload_key.expose());
        assert_ne!(a.header_key.expose(), b.header_key.expose());
        assert_ne!(a.header_key.expose(), a.payload_key.expose());
    }

    #[test]
    fn debug_redacts_secrets() {
        let k = SecretKey::from_bytes([0xAB; 32]);
        let mut s = heapless_string();
        core::fmt::write(&mut s, format_args!("{k:?} {:?}", FileKeys::derive(&k, &[0; 32]))).unwrap();
        assert!(!s.0[..s.1].windows(2).any(|w| w == b"ab" || w == b"AB" || w == b"17"));
        assert!(core::str::from_utf8(&s.0[..s.1]).unwrap().contains("redacted"));
    }

    struct Buf([u8; 256], usize);
    fn heapless_string() -> Buf {
        Buf([0; 256], 0)
    }
    impl core::fmt::Write for Buf {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let b = s.as_bytes();
            self.0[self.1..self.1 + b.len()].copy_from_slice(b);
            self.1 += b.len();
            Ok(())
        }
    }
}
