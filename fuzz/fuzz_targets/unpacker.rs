//! The unpacker fed arbitrary chunk-record streams behind a valid header.
//!
//! Input layout: byte 0 picks the write split size (1..=255 bytes per `write`), the rest is the
//! record stream that follows the 112-byte header. The unpacker must never panic, must make
//! progress, and must never release more plaintext than the chunks it authenticated can hold.
#![no_main]

use std::sync::LazyLock;

use keepsync_core::budget::{HEADER_LEN, unpacker_workspace_len};
use keepsync_core::compress::{Codec, CoreDecoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, SecretKey};
use keepsync_core::stream::Unpacker;
use keepsync_core::wire::{Header, HeaderRepr, KeySource};
use libfuzzer_sys::fuzz_target;

const CHUNK_SIZE: usize = 1 << 12;
const WS_LEN: usize = unpacker_workspace_len(CHUNK_SIZE);

/// The opened header of a container under raw key [0x42; 32], salt [1; 32], 4 KiB chunks, lz4.
/// Built once: HKDF + HMAC per input would only slow the fuzzer down.
static OPENED: LazyLock<(HeaderRepr, FileKeys)> = LazyLock::new(|| {
    let repr = HeaderRepr {
        key_source: KeySource::RawKey,
        chunk_log2: 12,
        codec_hint: Codec::Lz4,
        file_salt: [1; 32],
    };
    let keys = FileKeys::derive(&SecretKey::from_bytes([0x42; 32]), &repr.file_salt);
    let sealed: [u8; HEADER_LEN] = keys.seal_header(&repr);
    let header = Header::new_checked(&sealed[..]).expect("header is HEADER_LEN bytes");
    assert_eq!(header.parse().expect("sealed header parses"), repr);
    keys.verify_header(&header).expect("sealed header verifies");
    (repr, keys)
});

fuzz_target!(|data: &[u8]| {
    let Some((&split, records)) = data.split_first() else { return };
    let step = usize::from(split.max(1));
    let (repr, keys) = &*OPENED;
    assert_eq!(repr.chunk_size(), CHUNK_SIZE);

    let mut ws = vec![0u8; WS_LEN];
    let mut u = Unpacker::new(&RustCrypto, keys, repr, CoreDecoder::new(), &mut ws)
        .expect("workspace is unpacker_workspace_len(chunk_size)");
    let mut buf = [0u8; 255];
    let mut released: u64 = 0;
    let mut input = records;
    let mut result = Ok(());
    loop {
        let n = match u.write(&input[..input.len().min(step)]) {
            Ok(n) => n,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        input = &input[n..];
        let m = u.read(&mut buf[..step]);
        released += m as u64;
        assert!(
            released <= u.chunks_opened() * CHUNK_SIZE as u64,
            "released {released} plaintext bytes from {} chunks",
            u.chunks_opened()
        );
        if input.is_empty() && u.output().is_empty() {
            break;
        }
        assert!(n > 0 || m > 0, "unpacker made no progress");
    }
    // Drain anything left (errors clear the output, so this is a no-op after a failure).
    loop {
        let m = u.read(&mut buf[..step]);
        if m == 0 {
            break;
        }
        released += m as u64;
    }
    let finished = u.finish();
    if result.is_ok() {
        result = finished;
    }
    assert!(
        released <= u.chunks_opened() * CHUNK_SIZE as u64,
        "released {released} plaintext bytes from {} chunks",
        u.chunks_opened()
    );
    assert!(released <= u.plain_offset(), "released {released} > plain_offset {}", u.plain_offset());
    if result.is_ok() {
        assert!(u.is_done(), "finish() succeeded but the unpacker is not done");
        assert_eq!(released, u.plain_offset(), "a complete container released a different length");
    }
});
