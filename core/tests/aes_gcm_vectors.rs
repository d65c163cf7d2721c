//! The AES-256-GCM provider against the GCM specification's test cases (McGrew & Viega,
//! "The Galois/Counter Mode of Operation", test cases 13-16, also in NIST's CAVS gcmEncrypt
//! vectors), plus tag and ciphertext tampering.

use keepsync_core::crypto::{ChunkCipher, CryptoProvider, RustCrypto, SecretKey};

/// The cases, shared with the host's backend tests: `tests/vectors/aes-gcm.json`.
struct Case {
    key: String,
    iv: String,
    pt: String,
    aad: String,
    ct: String,
    tag: String,
}

fn cases() -> Vec<Case> {
    let doc: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/vectors/aes-gcm.json")).unwrap();
    let field = |c: &serde_json::Value, k: &str| c[k].as_str().unwrap().to_string();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            key: field(c, "key"),
            iv: field(c, "iv"),
            pt: field(c, "pt"),
            aad: field(c, "aad"),
            ct: field(c, "ct"),
            tag: field(c, "tag"),
        })
        .collect()
}

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn seals_and_opens_the_specification_vectors() {
    let cases = cases();
    assert_eq!(cases.len(), 4);
    for (i, c) in cases.iter().enumerate() {
        let cipher = RustCrypto.aes256gcm(&SecretKey::from_bytes(h(&c.key).try_into().unwrap()));
        let iv: [u8; 12] = h(&c.iv).try_into().unwrap();
        let mut buf = h(&c.pt);
        let tag = cipher.seal_in_place(&iv, &h(&c.aad), &mut buf);
        assert_eq!(hex::encode(&buf), c.ct, "case {i} ciphertext");
        assert_eq!(hex::encode(tag), c.tag, "case {i} tag");
        cipher.open_in_place(&iv, &h(&c.aad), &mut buf, &tag).unwrap();
        assert_eq!(hex::encode(&buf), c.pt, "case {i} plaintext");
    }
}

#[test]
fn rejects_altered_tag_ciphertext_aad_and_nonce() {
    let cases = cases();
    let c = &cases[3];
    let cipher = RustCrypto.aes256gcm(&SecretKey::from_bytes(h(&c.key).try_into().unwrap()));
    let iv: [u8; 12] = h(&c.iv).try_into().unwrap();
    let tag: [u8; 16] = h(&c.tag).try_into().unwrap();
    let ct = h(&c.ct);
    let aad = h(&c.aad);
    for bit in 0..128 {
        let mut t = tag;
        t[bit / 8] ^= 1 << (bit % 8);
        assert!(cipher.open_in_place(&iv, &aad, &mut ct.clone(), &t).is_err());
    }
    for i in 0..ct.len() {
        let mut bad = ct.clone();
        bad[i] ^= 0x80;
        assert!(cipher.open_in_place(&iv, &aad, &mut bad, &tag).is_err());
    }
    let mut bad_aad = aad.clone();
    bad_aad[0] ^= 1;
    assert!(cipher.open_in_place(&iv, &bad_aad, &mut ct.clone(), &tag).is_err());
    let mut bad_iv = iv;
    bad_iv[11] ^= 1;
    assert!(cipher.open_in_place(&bad_iv, &aad, &mut ct.clone(), &tag).is_err());
}
