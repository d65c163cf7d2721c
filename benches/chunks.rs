//! Wall-clock cost of sealing and opening one 64 KiB chunk, per codec and in total.
//! For humans, not gates: CI gates on instruction counts (see issue on benchmarks).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use keepsync::codec::{CodecChoice, CodecPlan, HostDecoder};
use keepsync_benches::mixed;
use keepsync_core::budget::{RECORD_HEADER_LEN, TAG_LEN, compress_bound};
use keepsync_core::crypto::{FileKeys, RustCrypto, SecretKey};
use keepsync_core::stream::{open_chunk, seal_chunk};
use keepsync_core::wire::Record;

const CHUNK: usize = 64 << 10;

fn chunks(c: &mut Criterion) {
    let keys = FileKeys::derive(&SecretKey::from_bytes([9; 32]), &[1; 32]);
    let cipher = keys.payload_cipher(&RustCrypto);
    let plain = mixed(CHUNK, 42);
    let mut group = c.benchmark_group("chunk_64KiB");
    group.throughput(Throughput::Bytes(CHUNK as u64));
    for choice in
        [CodecChoice::None, CodecChoice::Lz4, CodecChoice::Zstd, CodecChoice::Auto, CodecChoice::Deflate]
    {
        let name = format!("{choice:?}").to_lowercase();
        let mut encoder = CodecPlan::new(choice).encoder();
        let mut record = vec![0u8; RECORD_HEADER_LEN + compress_bound(CHUNK) + TAG_LEN];
        group.bench_function(format!("seal/{name}"), |b| {
            b.iter(|| seal_chunk(&cipher, &mut encoder, 7, false, &plain, &mut record).record_len())
        });
        let repr = seal_chunk(&cipher, &mut encoder, 7, false, &plain, &mut record);
        let sealed = record[..repr.record_len()].to_vec();
        let parsed = Record::new_checked(&sealed[..]).unwrap().parse(7, CHUNK).unwrap();
        let mut decoder = HostDecoder::new();
        let mut scratch = sealed.clone();
        let mut out = vec![0u8; CHUNK];
        group.bench_function(format!("open/{name}"), |b| {
            b.iter(|| {
                scratch.copy_from_slice(&sealed);
                open_chunk(&cipher, &mut decoder, 7, &parsed, &mut scratch, &mut out).unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, chunks);
criterion_main!(benches);
