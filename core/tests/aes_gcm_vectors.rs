//! The AES-256-GCM provider against the GCM specification's test cases (McGrew & Viega,
//! "The Galois/Counter Mode of Operation", test cases 13-16, also in NIST's CAVS gcmEncrypt
//! vectors), plus tag and ciphertext tampering.

use keepsync_core::crypto::{ChunkCipher, CryptoProvider, RustCrypto, SecretKey};

struct Case {
    key: &'static str,
    iv: &'static str,
    pt: &'static str,
    aad: &'static str,
    ct: &'static str,
    tag: &'static str,
}

const CASES: &[Case] = &[
    // Test case 13
    Case {
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        iv: "000000000000000000000000",
        pt: "",
        aad: "",
        ct: "",
        tag: "530f8afbc74536b9a963b4f1c4cb738b",
    },
    // Test case 14
    Case {
        key: "0000000000000000000000000000000000000000000000000000000000000000",
        iv: "000000000000000000000000",
        pt: "00000000000000000000000000000000",
        aad: "",
        ct: "cea7403d4d606b6e074ec5d3baf39d18",
        tag: "d0d1c8a799996bf0265b98b5d48ab919",
    },
    // Test case 15
    Case {
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbaddecaf888",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        aad: "",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        tag: "b094dac5d93471bdec1a502270e3cc6c",
    },
    // Test case 16
    Case {
        key: "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        iv: "cafebabefacedbaddecaf888",
        pt: "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        aad: "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        ct: "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        tag: "76fc6ece0f4e1768cddf8853bb2d551b",
    },
];

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

#[test]
fn seals_and_opens_the_specification_vectors() {
    for (i, c) in CASES.iter().enumerate() {
        let cipher = RustCrypto.aes256gcm(&SecretKey::from_bytes(h(c.key).try_into().unwrap()));
        let iv: [u8; 12] = h(c.iv).try_into().unwrap();
        let mut buf = h(c.pt);
        let tag = cipher.seal_in_place(&iv, &h(c.aad), &mut buf);
        assert_eq!(hex::encode(&buf), c.ct, "case {i} ciphertext");
        assert_eq!(hex::encode(tag), c.tag, "case {i} tag");
        cipher.open_in_place(&iv, &h(c.aad), &mut buf, &tag).unwrap();
        assert_eq!(hex::encode(&buf), c.pt, "case {i} plaintext");
    }
}

#[test]
fn rejects_altered_tag_ciphertext_aad_and_nonce() {
    let c = &CASES[3];
    let cipher = RustCrypto.aes256gcm(&SecretKey::from_bytes(h(c.key).try_into().unwrap()));
    let iv: [u8; 12] = h(c.iv).try_into().unwrap();
    let tag: [u8; 16] = h(c.tag).try_into().unwrap();
    let ct = h(c.ct);
    let aad = h(c.aad);
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
