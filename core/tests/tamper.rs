//! Every way of damaging a container is rejected, with the error that names the fault.

mod common;

use common::*;
use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, RECORD_HEADER_LEN, TAG_LEN};
use keepsync_core::compress::Lz4Encoder;

const CS: usize = 4096;

/// A 4-chunk container (3 full chunks + a partial final one) and its chunk boundaries.
fn sample() -> (Vec<u8>, Vec<u8>, Vec<std::ops::Range<usize>>) {
    let data = mixed(3 * CS + 100, 9);
    let c = pack(&data, 12, Lz4Encoder::new(), CS);
    let mut ranges = Vec::new();
    let mut pos = HEADER_LEN;
    while pos < c.len() {
        let body = u32::from_le_bytes(c[pos..pos + 4].try_into().unwrap()) as usize;
        let end = pos + RECORD_HEADER_LEN + body + TAG_LEN;
        ranges.push(pos..end);
        pos = end;
    }
    assert_eq!(ranges.len(), 4);
    (data, c, ranges)
}

fn splice(c: &[u8], ranges: &[std::ops::Range<usize>], order: &[usize]) -> Vec<u8> {
    let mut out = c[..HEADER_LEN].to_vec();
    for &i in order {
        out.extend_from_slice(&c[ranges[i].clone()]);
    }
    out
}

#[test]
fn untouched_sample_opens() {
    let (data, c, _) = sample();
    assert_eq!(unpack(&c).unwrap(), data);
}

#[test]
fn every_flipped_byte_is_rejected() {
    let (_, c, _) = sample();
    for i in 0..c.len() {
        let mut bad = c.clone();
        bad[i] ^= 0x01;
        let err = unpack(&bad).unwrap_err();
        if i < 8 {
            assert_eq!(err, FormatError::NotAContainer, "byte {i}");
        } else if i == 8 {
            assert_eq!(err, FormatError::UnsupportedVersion(0), "byte {i}");
        } else if i < HEADER_LEN {
            assert!(matches!(err, FormatError::WrongKey | FormatError::MalformedHeader), "byte {i}: {err:?}");
        } else {
            assert!(
                matches!(
                    err,
                    FormatError::ChunkAuthFailed { .. }
                        | FormatError::MalformedRecord { .. }
                        | FormatError::UnsupportedCodec { .. }
                        | FormatError::Truncated
                ),
                "byte {i}: {err:?}"
            );
        }
    }
}

#[test]
fn every_truncation_is_rejected() {
    let (_, c, ranges) = sample();
    for len in 0..c.len() {
        let err = unpack(&c[..len]).unwrap_err();
        if len < HEADER_LEN {
            assert_eq!(err, FormatError::TruncatedHeader, "len {len}");
        } else {
            assert_eq!(err, FormatError::Truncated, "len {len}");
        }
    }
    // Cutting at a chunk boundary leaves a valid-looking prefix whose last chunk is not final.
    assert_eq!(unpack(&c[..ranges[2].end]).unwrap_err(), FormatError::Truncated);
}

#[test]
fn dropped_duplicated_swapped_and_appended_chunks_are_rejected() {
    let (_, c, r) = sample();
    let auth = |i| FormatError::ChunkAuthFailed { index: i };
    assert_eq!(unpack(&splice(&c, &r, &[0, 2, 3])).unwrap_err(), auth(1), "dropped");
    assert_eq!(unpack(&splice(&c, &r, &[0, 0, 1, 2, 3])).unwrap_err(), auth(1), "duplicated");
    assert_eq!(unpack(&splice(&c, &r, &[1, 0, 2, 3])).unwrap_err(), auth(0), "swapped");
    assert_eq!(unpack(&splice(&c, &r, &[0, 1, 2, 3, 3])).unwrap_err(), FormatError::TrailingData, "appended");
    // A non-final chunk moved to the end cannot pose as the final one.
    assert_eq!(unpack(&splice(&c, &r, &[0, 1, 2])).unwrap_err(), FormatError::Truncated);
    let mut trailing = c.clone();
    trailing.push(0);
    assert_eq!(unpack(&trailing).unwrap_err(), FormatError::TrailingData);
}

#[test]
fn chunks_from_another_file_under_the_same_key_are_rejected() {
    let (_, a, ra) = sample();
    let data = mixed(3 * CS + 100, 9);
    // Same key, same data, different salt: every chunk is bound to its own file.
    let r = repr(12, keepsync_core::compress::Codec::Lz4, 2);
    let keys = keepsync_core::crypto::FileKeys::derive(
        &keepsync_core::crypto::SecretKey::from_bytes(MASTER),
        &r.file_salt,
    );
    let mut ws = vec![0u8; keepsync_core::budget::packer_workspace_len(CS)];
    let mut p = keepsync_core::stream::Packer::new(
        &keepsync_core::crypto::RustCrypto,
        &keys,
        &r,
        Lz4Encoder::new(),
        &mut ws,
    )
    .unwrap();
    let mut b = Vec::new();
    let mut input = &data[..];
    let mut buf = vec![0u8; 1 << 16];
    while !input.is_empty() {
        let n = p.write(input).unwrap();
        input = &input[n..];
        let m = p.read(&mut buf);
        b.extend_from_slice(&buf[..m]);
    }
    p.finish();
    while !p.is_done() {
        let m = p.read(&mut buf);
        b.extend_from_slice(&buf[..m]);
    }
    let mut mixed_up = a[..ra[1].end].to_vec();
    mixed_up.extend_from_slice(&b[ra[1].end..]);
    assert_eq!(unpack(&mixed_up).unwrap_err(), FormatError::ChunkAuthFailed { index: 2 });
}

#[test]
fn wrong_key_fails_on_the_header() {
    let (_, c, _) = sample();
    let mut key = MASTER;
    key[31] ^= 0x80;
    assert_eq!(unpack_with(&c, key, 4096).unwrap_err(), FormatError::WrongKey);
}
