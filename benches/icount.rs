//! Deterministic instruction counts (valgrind callgrind via iai-callgrind) of the core's hot
//! paths, for CI gates: the same binary and input give the same count on any machine state.
//! `benches/icount-check.py` compares a run with the committed `benches/icount-baseline.json`.

// iai-callgrind's macros generate undocumented modules.
#![allow(missing_docs)]

use std::hint::black_box;

use iai_callgrind::{library_benchmark, library_benchmark_group, main};
use keepsync::codec::{CodecChoice, CodecPlan, HostDecoder, HostEncoder};
use keepsync::sample::mixed;
use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, RECORD_HEADER_LEN, TAG_LEN, compress_bound, packer_workspace_len};
use keepsync_core::checkpoint::Checkpoint;
use keepsync_core::compress::{Codec, Lz4Encoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, RustCryptoAesGcm, SecretKey, open_header};
use keepsync_core::stream::{Packer, open_chunk, seal_chunk};
use keepsync_core::wire::{HeaderRepr, KeySource, Record, RecordRepr};

const CHUNK: usize = 64 << 10;

fn keys() -> FileKeys {
    FileKeys::derive(&SecretKey::from_bytes([9; 32]), &[1; 32])
}

struct SealInput {
    cipher: RustCryptoAesGcm,
    encoder: HostEncoder,
    plain: Vec<u8>,
    record: Vec<u8>,
}

fn seal_setup(choice: CodecChoice) -> SealInput {
    SealInput {
        cipher: keys().payload_cipher(&RustCrypto),
        encoder: CodecPlan::new(choice).encoder(),
        plain: mixed(CHUNK, 42),
        record: vec![0; RECORD_HEADER_LEN + compress_bound(CHUNK) + TAG_LEN],
    }
}

// Compress + seal one 64 KiB chunk of mixed data.
#[library_benchmark]
#[bench::store(setup = seal_setup, args = (CodecChoice::None))]
#[bench::lz4(setup = seal_setup, args = (CodecChoice::Lz4))]
#[bench::zstd(setup = seal_setup, args = (CodecChoice::Zstd))]
#[bench::deflate(setup = seal_setup, args = (CodecChoice::Deflate))]
fn seal_64k(mut i: SealInput) -> usize {
    black_box(seal_chunk(&i.cipher, &mut i.encoder, 3, false, &i.plain, &mut i.record).record_len())
}

struct OpenInput {
    cipher: RustCryptoAesGcm,
    repr: RecordRepr,
    record: Vec<u8>,
    plain: Vec<u8>,
    decoder: HostDecoder,
}

fn open_setup(choice: CodecChoice) -> OpenInput {
    let mut s = seal_setup(choice);
    let repr = seal_chunk(&s.cipher, &mut s.encoder, 3, false, &s.plain, &mut s.record);
    s.record.truncate(repr.record_len());
    let repr = Record::new_checked(&s.record[..]).and_then(|r| r.parse(3, CHUNK)).unwrap();
    OpenInput { cipher: s.cipher, repr, record: s.record, plain: vec![0; CHUNK], decoder: HostDecoder::new() }
}

// Authenticate + decrypt + decode one 64 KiB chunk.
#[library_benchmark]
#[bench::store(setup = open_setup, args = (CodecChoice::None))]
#[bench::lz4(setup = open_setup, args = (CodecChoice::Lz4))]
#[bench::zstd(setup = open_setup, args = (CodecChoice::Zstd))]
#[bench::deflate(setup = open_setup, args = (CodecChoice::Deflate))]
fn open_64k(mut i: OpenInput) -> usize {
    let opened = open_chunk(&i.cipher, &mut i.decoder, 3, &i.repr, &mut i.record, &mut i.plain).unwrap();
    black_box(matches!(opened, keepsync_core::stream::OpenedChunk::InPlain(_)) as usize)
}

fn header_setup() -> [u8; HEADER_LEN] {
    let repr = HeaderRepr {
        key_source: KeySource::RawKey,
        chunk_log2: 16,
        codec_hint: Codec::Zstd,
        file_salt: [1; 32],
    };
    keys().seal_header(&repr)
}

// Parse a header, derive the file keys (HKDF) and check the MAC (HMAC).
#[library_benchmark]
#[bench::raw_key(setup = header_setup)]
fn open_header_raw_key(header: [u8; HEADER_LEN]) -> u8 {
    let (repr, _) = open_header::<FormatError>(&header, |_| Ok(SecretKey::from_bytes([9; 32]))).unwrap();
    black_box(repr.chunk_log2)
}

fn checkpoint_setup() -> Checkpoint {
    Checkpoint {
        header_mac: [5; 32],
        chunks_done: 1 << 20,
        plain_offset: 1 << 36,
        sealed_offset: 1 << 35,
        source_hash: [6; 32],
    }
}

// Encode a checkpoint record (postcard + CRC) and decode it back.
#[library_benchmark]
#[bench::round_trip(setup = checkpoint_setup)]
fn checkpoint_encode_decode(c: Checkpoint) -> u64 {
    let mut buf = [0u8; Checkpoint::MAX_ENCODED_LEN];
    let bytes = c.encode(&mut buf).unwrap();
    black_box(Checkpoint::decode(bytes).unwrap().chunks_done)
}

fn device_setup() -> Vec<u8> {
    mixed(256 << 10, 7)
}

// The device configuration: the core's Packer over 256 KiB, LZ4, 4 KiB chunks, checkpoint
// tracking on, caller-lent buffers.
#[library_benchmark]
#[bench::lz4_4k(setup = device_setup)]
fn packer_256k_device(data: Vec<u8>) -> u64 {
    let repr = HeaderRepr {
        key_source: KeySource::RawKey,
        chunk_log2: 12,
        codec_hint: Codec::Lz4,
        file_salt: [2; 32],
    };
    let keys = keys();
    let mut ws = vec![0u8; packer_workspace_len(4096)];
    let mut lz4 = Lz4Encoder::new();
    let mut p = Packer::new(&RustCrypto, &keys, &repr, &mut lz4, &mut ws).unwrap().track_source();
    let mut out = [0u8; 8192];
    let mut input = &data[..];
    let mut total = 0u64;
    while !input.is_empty() {
        let n = p.write(input).unwrap();
        input = &input[n..];
        total += p.read(&mut out) as u64;
    }
    p.finish();
    while !p.is_done() {
        total += p.read(&mut out) as u64;
    }
    black_box(total)
}

library_benchmark_group!(
    name = chunks;
    benchmarks = seal_64k, open_64k, open_header_raw_key, checkpoint_encode_decode, packer_256k_device
);

main!(library_benchmark_groups = chunks);
