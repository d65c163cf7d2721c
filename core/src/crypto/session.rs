//! The sync protocol's key schedule: mutual proof of a pre-shared key and per-direction
//! session keys.
//!
//! ```text
//! th     = SHA-256(ClientHello body | ServerHello body[0..44])      transcript
//! prk    = HKDF-SHA256-Extract(salt = client_random | server_random, ikm = psk)
//! server_proof = HKDF-Expand(prk, "keepsync sync v1 server proof" | th, 32)
//! client_proof = HKDF-Expand(prk, "keepsync sync v1 client proof" | th, 32)
//! c2s_key      = HKDF-Expand(prk, "keepsync sync v1 c2s" | th, 32)
//! s2c_key      = HKDF-Expand(prk, "keepsync sync v1 s2c" | th, 32)
//! ```
//!
//! Both randoms are fresh per connection, so every connection has new keys and frame counters
//! restart at zero without nonce reuse. The transcript binds versions and frame limits, so a
//! man in the middle cannot downgrade them. Distinct labels per direction stop a reflected
//! proof or frame from being accepted. A PSK is a 32-byte random key file (`keepsync keygen`),
//! not a password: an observer of a handshake can test PSK guesses offline against a proof.

use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop};

use super::SecretKey;
use crate::budget::KEY_LEN;

/// Everything a handshake derives.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct SessionSecrets {
    /// Key of frames from client to server.
    pub c2s: [u8; KEY_LEN],
    /// Key of frames from server to client.
    pub s2c: [u8; KEY_LEN],
    /// What the server sends to prove the PSK.
    pub server_proof: [u8; 32],
    /// What the client sends to prove the PSK.
    pub client_proof: [u8; 32],
}

impl SessionSecrets {
    /// Derives the session from the PSK, both randoms and the transcript hash.
    pub fn derive(
        psk: &SecretKey,
        client_random: &[u8; 32],
        server_random: &[u8; 32],
        transcript: &[u8; 32],
    ) -> Self {
        let mut salt = [0u8; 64];
        salt[..32].copy_from_slice(client_random);
        salt[32..].copy_from_slice(server_random);
        let hk = Hkdf::<Sha256>::new(Some(&salt), psk.expose());
        let mut out = Self { c2s: [0; 32], s2c: [0; 32], server_proof: [0; 32], client_proof: [0; 32] };
        for (label, okm) in [
            (&b"keepsync sync v1 server proof"[..], &mut out.server_proof),
            (b"keepsync sync v1 client proof", &mut out.client_proof),
            (b"keepsync sync v1 c2s", &mut out.c2s),
            (b"keepsync sync v1 s2c", &mut out.s2c),
        ] {
            hk.expand_multi_info(&[label, transcript], okm).expect("32 bytes is a valid HKDF-SHA256 length");
        }
        out
    }
}

/// The id a client names its key by in its hello: the first 8 bytes of
/// SHA-256("keepsync key id v1" | key). It tells a server with many clients which key to
/// prove, and reveals nothing usable about the key (a 256-bit key behind a hash).
pub fn key_id(key: &SecretKey) -> [u8; crate::wire::frame::KEY_ID_LEN] {
    use sha2::Digest;
    let digest = Sha256::new().chain_update(b"keepsync key id v1").chain_update(key.expose()).finalize();
    let mut id = [0u8; crate::wire::frame::KEY_ID_LEN];
    id.copy_from_slice(&digest[..crate::wire::frame::KEY_ID_LEN]);
    id
}

/// Compares two proofs in time independent of where they differ.
pub fn proofs_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Nonce of sealed frame number `counter` in one direction: 4 zero bytes, then the counter
/// (big-endian). Each direction has its own key, so the counters never collide.
pub fn frame_nonce(counter: u64) -> [u8; crate::budget::NONCE_LEN] {
    let mut nonce = [0u8; crate::budget::NONCE_LEN];
    nonce[4..].copy_from_slice(&counter.to_be_bytes());
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_input_changes_every_secret() {
        let psk = SecretKey::from_bytes([1; 32]);
        let base = SessionSecrets::derive(&psk, &[2; 32], &[3; 32], &[4; 32]);
        let others = [
            SessionSecrets::derive(&SecretKey::from_bytes([9; 32]), &[2; 32], &[3; 32], &[4; 32]),
            SessionSecrets::derive(&psk, &[9; 32], &[3; 32], &[4; 32]),
            SessionSecrets::derive(&psk, &[2; 32], &[9; 32], &[4; 32]),
            SessionSecrets::derive(&psk, &[2; 32], &[3; 32], &[9; 32]),
        ];
        for o in &others {
            assert_ne!(o.c2s, base.c2s);
            assert_ne!(o.s2c, base.s2c);
            assert_ne!(o.server_proof, base.server_proof);
            assert_ne!(o.client_proof, base.client_proof);
        }
        let all = [base.c2s, base.s2c, base.server_proof, base.client_proof];
        for i in 0..4 {
            for j in i + 1..4 {
                assert_ne!(all[i], all[j], "labels must separate the outputs");
            }
        }
        assert!(proofs_equal(&base.c2s, &base.c2s.clone()));
        assert!(!proofs_equal(&base.c2s, &base.s2c));
    }
}
