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
use keepsync_core::budget::{
    FRAME_HEADER_LEN, HEADER_LEN, RECORD_HEADER_LEN, TAG_LEN, compress_bound, frame_body_for_block,
    packer_workspace_len,
};
use keepsync_core::checkpoint::Checkpoint;
use keepsync_core::compress::{Codec, Lz4Encoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, RustCryptoAesGcm, SecretKey, open_header};
use keepsync_core::stream::{Packer, open_chunk, seal_chunk};
use keepsync_core::sync::{Connection, FileMeta, Have, Kind, Receiver, ReceiverEvent, Sender};
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

type Conn = Connection<RustCrypto, Vec<u8>>;

/// Moves every queued byte of `from` into `to`, handing each complete frame's message out.
fn pump(from: &mut Conn, to: &mut Conn) {
    let bytes = from.pending_transmit().to_vec();
    from.consume_transmit(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        at += to.handle_input(0, &bytes[at..]).expect("honest peer");
        let _ = to.poll_message(0);
    }
}

fn conn_pair() -> (Conn, Conn) {
    let buf = || vec![0u8; FRAME_HEADER_LEN + frame_body_for_block(12)];
    let psk = || SecretKey::from_bytes([5; 32]);
    let c = Connection::client(RustCrypto, psk(), [1; 32], 0, buf(), buf()).unwrap();
    let s = Connection::server(RustCrypto, psk(), [2; 32], 0, buf(), buf()).unwrap();
    (c, s)
}

// The PSK handshake, both sides (HKDF, proofs, key schedules), to an open connection.
#[library_benchmark]
#[bench::psk(setup = conn_pair)]
fn sync_handshake((mut c, mut s): (Conn, Conn)) -> bool {
    pump(&mut c, &mut s);
    pump(&mut s, &mut c);
    pump(&mut c, &mut s);
    black_box(c.is_open() && s.is_open())
}

struct Transfer {
    sender: Sender<RustCrypto, Vec<u8>>,
    receiver: Receiver<RustCrypto, Vec<u8>>,
    data: Vec<u8>,
}

fn transfer_setup() -> Transfer {
    let (mut c, mut s) = conn_pair();
    pump(&mut c, &mut s);
    pump(&mut s, &mut c);
    pump(&mut c, &mut s);
    Transfer { sender: Sender::new(c), receiver: Receiver::new(s), data: mixed(256 << 10, 7) }
}

// A 256 KiB file through Sender and Receiver in 4 KiB stored blocks (the device setting):
// framing, AES-GCM both ways and the transfer rules, without codec or file costs.
#[library_benchmark]
#[bench::store_4k(setup = transfer_setup)]
fn sync_transfer_256k(mut t: Transfer) -> u64 {
    let meta = FileMeta {
        id: 1,
        path: "sensor.log",
        kind: Kind::File,
        size: t.data.len() as u64,
        mtime: 0,
        mtime_nsec: 0,
        mode: 0o644,
        target: "",
        hash: None,
        version: [0; 16],
        layout: keepsync_core::sync::Layout::Whole,
    };
    // One frame each way: the offer, then the answer.
    t.sender.offer(0, &meta).unwrap();
    let offer = t.sender.pending_transmit().to_vec();
    t.sender.consume_transmit(offer.len());
    assert_eq!(t.receiver.handle_input(0, &offer), Ok(offer.len()));
    assert!(matches!(t.receiver.poll_event(0), Some(Ok(ReceiverEvent::File(_)))));
    t.receiver.have(0, 1, Have::Need { resume_from: 0, block_log2: 12, blocks: 0 }).unwrap();
    let answer = t.receiver.pending_transmit().to_vec();
    t.receiver.consume_transmit(answer.len());
    assert_eq!(t.sender.handle_input(0, &answer), Ok(answer.len()));
    assert!(t.sender.poll_event(0).is_some_and(|e| e.is_ok()));
    let mut received = 0u64;
    for (i, block) in t.data.chunks(4096).enumerate() {
        t.sender.send_data(0, 1, (i * 4096) as u64, 0, block.len() as u32, block).unwrap();
        let bytes = t.sender.pending_transmit().to_vec();
        t.sender.consume_transmit(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            at += t.receiver.handle_input(0, &bytes[at..]).unwrap();
            while let Some(Ok(ReceiverEvent::Data { raw_len, .. })) = t.receiver.poll_event(0) {
                received += u64::from(raw_len);
            }
        }
    }
    black_box(received)
}

library_benchmark_group!(
    name = chunks;
    benchmarks = seal_64k, open_64k, open_header_raw_key, checkpoint_encode_decode, packer_256k_device
);

library_benchmark_group!(
    name = sync;
    benchmarks = sync_handshake, sync_transfer_256k
);

main!(library_benchmark_groups = chunks, sync);
