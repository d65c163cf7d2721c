//! Helpers shared by the core's integration tests: drive the sans-IO machines over byte
//! vectors with arbitrary write/read sizes.
#![allow(dead_code)]

use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, packer_workspace_len, unpacker_workspace_len};
use keepsync_core::compress::{Codec, CoreDecoder, Encoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, SecretKey, open_header};
use keepsync_core::stream::{Packer, Unpacker};
use keepsync_core::wire::{HeaderRepr, KeySource};

pub const MASTER: [u8; 32] = [0x42; 32];

pub fn repr(chunk_log2: u8, codec: Codec, salt: u8) -> HeaderRepr {
    HeaderRepr { key_source: KeySource::RawKey, chunk_log2, codec_hint: codec, file_salt: [salt; 32] }
}

/// Packs `data`, feeding at most `step` bytes per write and draining at most `step` per read.
pub fn pack<E: Encoder>(data: &[u8], chunk_log2: u8, encoder: E, step: usize) -> Vec<u8> {
    let r = repr(chunk_log2, encoder.hint(), 1);
    let keys = FileKeys::derive(&SecretKey::from_bytes(MASTER), &r.file_salt);
    let mut ws = vec![0u8; packer_workspace_len(r.chunk_size())];
    let mut p = Packer::new(&RustCrypto, &keys, &r, encoder, &mut ws).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; step];
    let mut input = data;
    while !input.is_empty() {
        let n = p.write(&input[..input.len().min(step)]).unwrap();
        input = &input[n..];
        let m = p.read(&mut buf);
        out.extend_from_slice(&buf[..m]);
        assert!(n > 0 || m > 0, "packer made no progress");
    }
    p.finish();
    while !p.is_done() {
        let m = p.read(&mut buf);
        out.extend_from_slice(&buf[..m]);
    }
    out
}

/// Unpacks a whole container with `key`, feeding at most `step` bytes per write.
pub fn unpack_with(container: &[u8], key: [u8; 32], step: usize) -> Result<Vec<u8>, FormatError> {
    let (r, keys) = open_header::<FormatError>(container, |_| Ok(SecretKey::from_bytes(key)))?;
    let mut ws = vec![0u8; unpacker_workspace_len(r.chunk_size())];
    let mut u = Unpacker::new(&RustCrypto, &keys, &r, CoreDecoder::new(), &mut ws).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; step];
    let mut input = &container[HEADER_LEN..];
    loop {
        let n = u.write(&input[..input.len().min(step)])?;
        input = &input[n..];
        let m = u.read(&mut buf);
        out.extend_from_slice(&buf[..m]);
        if input.is_empty() && u.output().is_empty() {
            break;
        }
        assert!(n > 0 || m > 0, "unpacker made no progress");
    }
    u.finish()?;
    Ok(out)
}

pub fn unpack(container: &[u8]) -> Result<Vec<u8>, FormatError> {
    unpack_with(container, MASTER, 8192)
}

/// Mixed test data: text-like runs, counters and pseudo-random bytes.
pub fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 3 {
            0 => out.extend_from_slice(b"the quick brown fox jumps over the lazy dog. "),
            1 => out.extend_from_slice(&(out.len() as u32).to_le_bytes()),
            _ => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
    out.truncate(len);
    out
}
