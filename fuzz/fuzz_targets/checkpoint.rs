//! Checkpoint decoding on arbitrary bytes: must never panic, and whatever decodes must
//! re-encode (within `MAX_ENCODED_LEN`) to a record that decodes to the same value.
//!
//! Random bytes almost never carry a valid CRC-32C, so the input is also wrapped into a record
//! with a correct magic, version and CRC: that reaches the postcard body decoder and the
//! round trip, which the CRC gate would otherwise keep the fuzzer away from.
#![no_main]

use keepsync_core::{Checkpoint, CheckpointError};
use libfuzzer_sys::fuzz_target;

/// CRC-32C (Castagnoli, reflected), as the record trailer uses; bitwise, for the harness only.
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

fn check_round_trip(ckpt: &Checkpoint) {
    let mut buf = [0u8; Checkpoint::MAX_ENCODED_LEN];
    let bytes = ckpt.encode(&mut buf).expect("a decoded checkpoint must re-encode");
    assert!(bytes.len() <= Checkpoint::MAX_ENCODED_LEN);
    let again = Checkpoint::decode(bytes).expect("a re-encoded checkpoint must decode");
    assert_eq!(&again, ckpt, "checkpoint changed across decode -> encode -> decode");
}

fuzz_target!(|data: &[u8]| {
    // 1. The raw input, exactly as a reader would see a file.
    if let Ok(ckpt) = Checkpoint::decode(data) {
        check_round_trip(&ckpt);
    }

    // 2. The input as a postcard body inside a well-formed envelope.
    let body = &data[..data.len().min(Checkpoint::MAX_ENCODED_LEN - 9)];
    let mut rec = [0u8; Checkpoint::MAX_ENCODED_LEN];
    rec[..4].copy_from_slice(b"KSCP");
    rec[4] = 1;
    rec[5..5 + body.len()].copy_from_slice(body);
    let end = 5 + body.len();
    let crc = crc32c(&rec[..end]);
    rec[end..end + 4].copy_from_slice(&crc.to_le_bytes());
    match Checkpoint::decode(&rec[..end + 4]) {
        Ok(ckpt) => check_round_trip(&ckpt),
        Err(CheckpointError::Malformed) => {}
        Err(e) => panic!("well-formed envelope refused with {e:?} (harness CRC or envelope wrong?)"),
    }
});
