//! Host AES-256-GCM backends: [`Ring`] next to the core's [`RustCrypto`], and the `--crypto`
//! choice between them.
//!
//! Both backends compute the same AES-256-GCM, so the choice never changes a byte on disk:
//! a container sealed with one opens with the other (the tests below check it, down to whole
//! records from [`seal_chunk`](keepsync_core::stream::seal_chunk)). It changes only speed and
//! one hygiene property:
//!
//! - [`RustCrypto`] (`soft`): the core's default, pure Rust, runtime-detected AES-NI/VAES and
//!   PCLMULQDQ on x86_64 (constant-time bitsliced AES elsewhere). Its key schedule is
//!   zeroized on drop.
//! - [`Ring`] (`hw`): ring 0.17's AES-GCM, BoringSSL's assembly with runtime dispatch
//!   (AES-NI + PCLMULQDQ with AVX/MOVBE stitched code, VAES + VPCLMULQDQ on AVX2 CPUs, ARMv8
//!   AES + PMULL; constant-time vector-permutation AES on CPUs without AES instructions).
//!   ring does **not** zeroize its expanded key schedule when the key is dropped: the payload
//!   key's round keys can stay in freed memory until it is reused.
//!
//! [`CryptoChoice::Auto`] picks RustCrypto: zeroized keys are a KeepSync guarantee, and
//! crypto is not the bottleneck of a pack (see there). `--crypto hw` opts into ring.

use keepsync_core::budget::{NONCE_LEN, TAG_LEN};
use keepsync_core::crypto::{
    AuthFailed, ChunkCipher, CryptoProvider, FileKeys, RustCrypto, RustCryptoAesGcm, SecretKey,
};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, Tag, UnboundKey};

/// The ring backend: `ring::aead::AES_256_GCM` behind a [`LessSafeKey`].
///
/// `LessSafeKey` takes the nonce per call; nonce uniqueness is the container's job (STREAM
/// nonces from [`chunk_nonce`](keepsync_core::crypto::chunk_nonce) under a fresh key per file).
#[derive(Debug, Default, Clone, Copy)]
pub struct Ring;

/// A keyed ring AES-256-GCM. `Send + Sync`: worker threads share one by reference.
///
/// Unlike [`RustCryptoAesGcm`], its key schedule is not zeroized on drop (ring offers no way).
pub struct RingAesGcm(LessSafeKey);

impl core::fmt::Debug for RingAesGcm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RingAesGcm(..)")
    }
}

impl CryptoProvider for Ring {
    type Cipher = RingAesGcm;

    fn name(&self) -> &'static str {
        "ring"
    }

    fn aes256gcm(&self, key: &SecretKey) -> RingAesGcm {
        // ring refuses only a key of the wrong length; SecretKey is always 32 bytes.
        let key = UnboundKey::new(&AES_256_GCM, key.expose()).expect("AES-256 takes a 32-byte key");
        RingAesGcm(LessSafeKey::new(key))
    }
}

impl ChunkCipher for RingAesGcm {
    fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        // ring refuses only messages over ~64 GiB; chunks are at most MAX_CHUNK_SIZE (4 MiB).
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
            .expect("chunk is far below AES-GCM's length limit");
        tag.as_ref().try_into().expect("an AES-GCM tag is 16 bytes")
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        // On failure ring zeroes `buf`, so no unauthenticated plaintext is left behind.
        self.0
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*tag),
                buf,
                0..,
            )
            .map(|_| ())
            .map_err(|_| AuthFailed)
    }
}

/// A keyed payload cipher from either backend, chosen at run time by [`CryptoChoice`].
///
/// Dispatch is one branch per chunk (per 4 KiB to 4 MiB of data), not per block.
#[derive(Debug)]
pub enum HostCipher {
    /// The core's RustCrypto AES-256-GCM.
    RustCrypto(RustCryptoAesGcm),
    /// ring's AES-256-GCM.
    Ring(RingAesGcm),
}

impl HostCipher {
    /// The backend's name: `rustcrypto` or `ring`.
    pub fn provider_name(&self) -> &'static str {
        match self {
            Self::RustCrypto(_) => RustCrypto.name(),
            Self::Ring(_) => Ring.name(),
        }
    }
}

impl ChunkCipher for HostCipher {
    fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match self {
            Self::RustCrypto(c) => c.seal_in_place(nonce, aad, buf),
            Self::Ring(c) => c.seal_in_place(nonce, aad, buf),
        }
    }

    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> Result<(), AuthFailed> {
        match self {
            Self::RustCrypto(c) => c.open_in_place(nonce, aad, buf, tag),
            Self::Ring(c) => c.open_in_place(nonce, aad, buf, tag),
        }
    }
}

/// What the user asked for with `--crypto`. The output is the same bytes whatever the choice.
///
/// Measured on this project's 2-core Intel Xeon machine (AES-NI, PCLMULQDQ, AVX2, VAES,
/// VPCLMULQDQ, AVX-512F), one core, release build without target-cpu flags, 64 KiB chunks,
/// 2 GiB per run, median of 5:
///
/// | backend    | seal MB/s | open MB/s |
/// |------------|-----------|-----------|
/// | RustCrypto |     4 181 |     4 099 |
/// | ring       |     9 443 |     9 841 |
///
/// ring is 2.3x faster (its stitched AES + GHASH assembly uses 256-bit VAES/VPCLMULQDQ;
/// RustCrypto's GHASH uses 128-bit PCLMULQDQ), but it cannot zeroize its expanded key
/// schedule, and zeroized keys are one of KeepSync's security guarantees
/// (docs/SECURITY.md). Crypto is also not what limits a pack: one core seals at 4 GB/s with
/// RustCrypto while zstd compresses at about 0.5 GB/s. So `Auto` picks RustCrypto, and ring is
/// an explicit opt-in (`hw`) for encrypt-only workloads where 9 GB/s matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptoChoice {
    /// The default: RustCrypto (zeroizes its keys); see the type's docs for why not ring.
    Auto,
    /// ring: assembly with runtime dispatch to AES-NI/VAES/ARMv8 AES (fastest here).
    Hw,
    /// RustCrypto: portable Rust, the core's default; zeroizes its key schedule on drop.
    Soft,
}

impl CryptoChoice {
    /// Whether this choice runs ring on this CPU (`Auto` is resolved here).
    pub fn uses_ring(self) -> bool {
        match self {
            Self::Auto => false,
            Self::Hw => true,
            Self::Soft => false,
        }
    }

    /// The keyed payload cipher of `keys` from the chosen backend.
    pub fn cipher(self, keys: &FileKeys) -> HostCipher {
        keys.payload_cipher(&self)
    }

    /// The backend this choice runs on this CPU: `ring` or `rustcrypto`.
    pub fn provider_name(self) -> &'static str {
        if self.uses_ring() { Ring.name() } else { RustCrypto.name() }
    }
}

/// A choice is itself a provider, so it also fits the core's `Packer` / `Unpacker`.
impl CryptoProvider for CryptoChoice {
    type Cipher = HostCipher;

    fn name(&self) -> &'static str {
        self.provider_name()
    }

    fn aes256gcm(&self, key: &SecretKey) -> HostCipher {
        if self.uses_ring() {
            HostCipher::Ring(Ring.aes256gcm(key))
        } else {
            HostCipher::RustCrypto(RustCrypto.aes256gcm(key))
        }
    }
}

/// Whether the CPU has AES rounds and carry-less multiplication in hardware (both backends
/// then run hardware AES-GCM). The standard library caches the detection.
pub fn hardware_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes") && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The CPU features relevant to AES-GCM that this CPU has, detected at run time: on x86_64
/// `aes`, `pclmulqdq`, `avx2`, `vaes`, `vpclmulqdq`, `avx512f`; on aarch64 `aes`, `pmull`;
/// none on other architectures.
pub fn cpu_crypto_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        let all = [
            ("aes", has!("aes")),
            ("pclmulqdq", has!("pclmulqdq")),
            ("avx2", has!("avx2")),
            ("vaes", has!("vaes")),
            ("vpclmulqdq", has!("vpclmulqdq")),
            ("avx512f", has!("avx512f")),
        ];
        found.extend(all.into_iter().filter(|&(_, on)| on).map(|(name, _)| name));
    }
    #[cfg(target_arch = "aarch64")]
    {
        use std::arch::is_aarch64_feature_detected as has;
        let all = [("aes", has!("aes")), ("pmull", has!("pmull"))];
        found.extend(all.into_iter().filter(|&(_, on)| on).map(|(name, _)| name));
    }
    found
}

#[cfg(test)]
mod tests {
    use keepsync_core::budget::{RECORD_HEADER_LEN, compress_bound};
    use keepsync_core::compress::{CoreDecoder, Encoder, Lz4Encoder, StoreEncoder};
    use keepsync_core::stream::{OpenedChunk, open_chunk, seal_chunk};
    use keepsync_core::wire::Record;
    use proptest::prelude::*;

    use super::*;

    fn both(key: [u8; 32]) -> (RustCryptoAesGcm, RingAesGcm) {
        let key = SecretKey::from_bytes(key);
        (RustCrypto.aes256gcm(&key), Ring.aes256gcm(&key))
    }

    /// Seals with `a`, checks `b` gives the same bytes, and that each opens the other's.
    fn check_equivalent(
        a: &impl ChunkCipher,
        b: &impl ChunkCipher,
        nonce: &[u8; 12],
        aad: &[u8],
        plain: &[u8],
    ) -> (Vec<u8>, [u8; 16]) {
        let mut ct_a = plain.to_vec();
        let tag_a = a.seal_in_place(nonce, aad, &mut ct_a);
        let mut ct_b = plain.to_vec();
        let tag_b = b.seal_in_place(nonce, aad, &mut ct_b);
        assert_eq!(ct_a, ct_b, "ciphertexts differ ({} bytes)", plain.len());
        assert_eq!(tag_a, tag_b, "tags differ ({} bytes)", plain.len());
        let mut buf = ct_a.clone();
        b.open_in_place(nonce, aad, &mut buf, &tag_a).expect("b opens a's output");
        assert_eq!(buf, plain);
        let mut buf = ct_b.clone();
        a.open_in_place(nonce, aad, &mut buf, &tag_b).expect("a opens b's output");
        assert_eq!(buf, plain);
        (ct_a, tag_a)
    }

    fn rejects_tampering(c: &impl ChunkCipher, nonce: &[u8; 12], aad: &[u8], ct: &[u8], tag: &[u8; 16]) {
        for bit in [0, 7, 64, 127] {
            let mut t = *tag;
            t[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(c.open_in_place(nonce, aad, &mut ct.to_vec(), &t), Err(AuthFailed));
        }
        for i in [0, ct.len() / 2, ct.len().saturating_sub(1)].into_iter().filter(|&i| i < ct.len()) {
            let mut bad = ct.to_vec();
            bad[i] ^= 0x01;
            assert_eq!(c.open_in_place(nonce, aad, &mut bad, tag), Err(AuthFailed));
        }
        let mut bad_aad = aad.to_vec();
        match bad_aad.first_mut() {
            Some(b) => *b ^= 0x80,
            None => bad_aad.push(0),
        }
        assert_eq!(c.open_in_place(nonce, &bad_aad, &mut ct.to_vec(), tag), Err(AuthFailed));
        let mut bad_nonce = *nonce;
        bad_nonce[11] ^= 1;
        assert_eq!(c.open_in_place(&bad_nonce, aad, &mut ct.to_vec(), tag), Err(AuthFailed));
    }

    proptest! {
        #[test]
        fn providers_agree_and_open_each_other(
            key in any::<[u8; 32]>(),
            nonce in any::<[u8; 12]>(),
            aad in proptest::collection::vec(any::<u8>(), 0..64),
            plain in proptest::collection::vec(any::<u8>(), 0..5000),
        ) {
            let (rc, rg) = both(key);
            let (ct, tag) = check_equivalent(&rc, &rg, &nonce, &aad, &plain);
            rejects_tampering(&rc, &nonce, &aad, &ct, &tag);
            rejects_tampering(&rg, &nonce, &aad, &ct, &tag);
        }
    }

    /// Every length around the block and bulk-loop boundaries (ring's stitched AES-NI and VAES
    /// code paths start at hundreds of bytes), and whole chunks of the sizes the format allows.
    #[test]
    fn providers_agree_across_lengths() {
        let (rc, rg) = both([0x5a; 32]);
        let data: Vec<u8> = (0..(1usize << 22) + 33).map(|i| (i * 31 + i / 251) as u8).collect();
        let mut lens: Vec<usize> = (0..=1100).collect();
        for log2 in 12..=22 {
            let n = 1usize << log2;
            lens.extend([n - 1, n, n + 1, n + 15, n + 33]);
        }
        for (i, len) in lens.into_iter().enumerate() {
            let nonce = keepsync_core::crypto::chunk_nonce(i as u64, i % 2 == 0);
            check_equivalent(&rc, &rg, &nonce, &[i as u8; RECORD_HEADER_LEN], &data[..len]);
        }
    }

    #[test]
    fn ring_fails_closed_and_clears_the_buffer() {
        let (_, rg) = both([3; 32]);
        let mut buf = vec![7u8; 1000];
        let tag = rg.seal_in_place(&[1; 12], b"aad", &mut buf);
        let mut t = tag;
        t[0] ^= 1;
        assert_eq!(rg.open_in_place(&[1; 12], b"aad", &mut buf, &t), Err(AuthFailed));
        assert!(buf.iter().all(|&b| b == 0), "no unauthenticated plaintext is left behind");
    }

    fn chunk_inputs() -> Vec<Vec<u8>> {
        let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    rng_state ^= rng_state << 13;
                    rng_state ^= rng_state >> 7;
                    rng_state ^= rng_state << 17;
                    rng_state as u8
                })
                .collect()
        };
        let text: Vec<u8> = b"KeepSync seals every chunk twice the same way. ".repeat(90);
        vec![
            text[..4096].to_vec(), // compressible: LZ4 shrinks it
            random(4096),          // incompressible: stored even by LZ4
            vec![0; 4096],         // very compressible
            text[..1234].to_vec(), // short final chunk
        ]
    }

    /// Seals the chunks of one container with `cipher` and `encoder` into whole records.
    fn seal_all(cipher: &HostCipher, mut encoder: impl Encoder, chunks: &[Vec<u8>]) -> Vec<Vec<u8>> {
        chunks
            .iter()
            .enumerate()
            .map(|(i, plain)| {
                let mut record = vec![0u8; RECORD_HEADER_LEN + compress_bound(plain.len()) + TAG_LEN];
                let is_final = i + 1 == chunks.len();
                let repr = seal_chunk(cipher, &mut encoder, i as u64, is_final, plain, &mut record);
                record.truncate(repr.record_len());
                record
            })
            .collect()
    }

    /// Opens records the way `unpack` does: parse the header, then authenticate and decode.
    fn open_all(cipher: &HostCipher, records: &[Vec<u8>], chunks: &[Vec<u8>]) {
        let mut decoder = CoreDecoder::new();
        for (i, (record, want)) in records.iter().zip(chunks).enumerate() {
            let repr = Record::new_checked(&record[..]).unwrap().parse(i as u64, 4096).unwrap();
            let mut record = record.clone();
            let mut plain = vec![0u8; repr.plain_len];
            let got =
                match open_chunk(cipher, &mut decoder, i as u64, &repr, &mut record, &mut plain).unwrap() {
                    OpenedChunk::InRecord(n) => record[RECORD_HEADER_LEN..][..n].to_vec(),
                    OpenedChunk::InPlain(n) => plain[..n].to_vec(),
                };
            assert_eq!(&got, want, "chunk {i} via {}", cipher.provider_name());
            // A flipped bit anywhere in the record fails that chunk's authentication.
            let mut bad = record_with_flip(records[i].as_slice());
            assert!(open_chunk(cipher, &mut decoder, i as u64, &repr, &mut bad, &mut plain).is_err());
        }
    }

    fn record_with_flip(record: &[u8]) -> Vec<u8> {
        let mut bad = record.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        bad
    }

    #[test]
    fn containers_are_byte_identical_and_cross_open() {
        let master = SecretKey::from_bytes([0x42; 32]);
        let keys = FileKeys::derive(&master, &[0x17; 32]);
        let soft = CryptoChoice::Soft.cipher(&keys);
        let hw = CryptoChoice::Hw.cipher(&keys);
        assert!(matches!(soft, HostCipher::RustCrypto(_)));
        assert!(matches!(hw, HostCipher::Ring(_)));
        let chunks = chunk_inputs();
        for lz4 in [false, true] {
            let (a, b) = if lz4 {
                (seal_all(&soft, Lz4Encoder::new(), &chunks), seal_all(&hw, Lz4Encoder::new(), &chunks))
            } else {
                (seal_all(&soft, StoreEncoder, &chunks), seal_all(&hw, StoreEncoder, &chunks))
            };
            assert_eq!(a, b, "records differ between backends (lz4: {lz4})");
            if lz4 {
                // The test covers compressed and stored bodies alike.
                assert!(a[0].len() < RECORD_HEADER_LEN + 4096 + TAG_LEN);
                assert_eq!(a[1].len(), RECORD_HEADER_LEN + 4096 + TAG_LEN);
            }
            open_all(&hw, &a, &chunks);
            open_all(&soft, &b, &chunks);
            let auto = CryptoChoice::Auto.cipher(&keys);
            open_all(&auto, &a, &chunks);
        }
    }

    /// The GCM specification's AES-256 cases, shared with keepsync-core's tests.
    fn cases() -> Vec<serde_json::Value> {
        let doc: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/vectors/aes-gcm.json")).expect("vectors parse");
        doc["cases"].as_array().expect("cases").clone()
    }

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    fn check_vectors<P: CryptoProvider>(provider: &P) {
        for (i, c) in cases().iter().enumerate() {
            let cipher =
                provider.aes256gcm(&SecretKey::from_bytes(h(c["key"].as_str().unwrap()).try_into().unwrap()));
            let iv: [u8; 12] = h(c["iv"].as_str().unwrap()).try_into().unwrap();
            let mut buf = h(c["pt"].as_str().unwrap());
            let tag = cipher.seal_in_place(&iv, &h(c["aad"].as_str().unwrap()), &mut buf);
            let who = provider.name();
            assert_eq!(hex::encode(&buf), c["ct"].as_str().unwrap(), "case {i} ciphertext ({who})");
            assert_eq!(hex::encode(tag), c["tag"].as_str().unwrap(), "case {i} tag ({who})");
            cipher.open_in_place(&iv, &h(c["aad"].as_str().unwrap()), &mut buf, &tag).unwrap();
            assert_eq!(hex::encode(&buf), c["pt"].as_str().unwrap(), "case {i} plaintext ({who})");
            let ct = h(c["ct"].as_str().unwrap());
            let tag: [u8; 16] = h(c["tag"].as_str().unwrap()).try_into().unwrap();
            rejects_tampering(&cipher, &iv, &h(c["aad"].as_str().unwrap()), &ct, &tag);
        }
    }

    #[test]
    fn every_backend_matches_the_specification_vectors() {
        check_vectors(&Ring);
        check_vectors(&RustCrypto);
        for choice in [CryptoChoice::Auto, CryptoChoice::Hw, CryptoChoice::Soft] {
            check_vectors(&choice);
        }
    }

    #[test]
    fn choices_resolve_to_their_backends() {
        let keys = FileKeys::derive(&SecretKey::from_bytes([1; 32]), &[2; 32]);
        assert_eq!(CryptoChoice::Soft.provider_name(), "rustcrypto");
        assert_eq!(CryptoChoice::Hw.provider_name(), "ring");
        for choice in [CryptoChoice::Auto, CryptoChoice::Hw, CryptoChoice::Soft] {
            assert_eq!(choice.cipher(&keys).provider_name(), choice.provider_name());
        }
        // Auto keeps the zeroizing backend whatever the CPU.
        assert!(!CryptoChoice::Auto.uses_ring());
        assert_eq!(CryptoChoice::Auto.provider_name(), "rustcrypto");
        let features = cpu_crypto_features();
        let hw = if cfg!(target_arch = "aarch64") { ["aes", "pmull"] } else { ["aes", "pclmulqdq"] };
        assert_eq!(hardware_aes(), hw.iter().all(|f| features.contains(f)), "features: {features:?}");
        assert_eq!(serde_json::to_string(&CryptoChoice::Auto).unwrap(), "\"auto\"");
        assert_eq!(serde_json::to_string(&CryptoChoice::Soft).unwrap(), "\"soft\"");
    }

    #[test]
    fn cpu_features_are_the_detected_subset() {
        let features = cpu_crypto_features();
        #[cfg(target_arch = "x86_64")]
        {
            let known = ["aes", "pclmulqdq", "avx2", "vaes", "vpclmulqdq", "avx512f"];
            assert!(features.iter().all(|f| known.contains(f)), "{features:?}");
            assert_eq!(features.contains(&"aes"), std::arch::is_x86_feature_detected!("aes"));
            assert_eq!(features.contains(&"avx2"), std::arch::is_x86_feature_detected!("avx2"));
        }
        #[cfg(target_arch = "aarch64")]
        assert!(features.iter().all(|f| ["aes", "pmull"].contains(f)), "{features:?}");
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        assert!(features.is_empty());
    }

    #[test]
    fn ciphers_are_shared_across_worker_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<RingAesGcm>();
        send_sync::<HostCipher>();
        let keys = FileKeys::derive(&SecretKey::from_bytes([9; 32]), &[8; 32]);
        let cipher = CryptoChoice::Hw.cipher(&keys);
        let tags: Vec<[u8; 16]> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4u8)
                .map(|i| {
                    let cipher = &cipher;
                    s.spawn(move || cipher.seal_in_place(&[i; 12], b"", &mut vec![i; 4096]))
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let soft = CryptoChoice::Soft.cipher(&keys);
        for (i, tag) in tags.iter().enumerate() {
            assert_eq!(*tag, soft.seal_in_place(&[i as u8; 12], b"", &mut vec![i as u8; 4096]));
        }
    }

    #[test]
    fn debug_never_prints_keys() {
        let keys = FileKeys::derive(&SecretKey::from_bytes([0xab; 32]), &[0; 32]);
        assert_eq!(format!("{:?}", CryptoChoice::Hw.cipher(&keys)), "Ring(RingAesGcm(..))");
        assert_eq!(format!("{:?}", CryptoChoice::Soft.cipher(&keys)), "RustCrypto(RustCryptoAesGcm(..))");
    }
}
