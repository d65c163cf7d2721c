//! Round trips through Packer and Unpacker for every codec, at the sizes where chunking has
//! edges, with arbitrary write and read sizes.

mod common;

use common::*;
use keepsync_core::budget::{HEADER_LEN, RECORD_HEADER_LEN, TAG_LEN};
use keepsync_core::compress::{Codec, Encoder, Lz4Encoder, StoreEncoder};
use keepsync_core::wire::{HeaderRepr, Record};
use proptest::prelude::*;

type MakeEncoder = Box<dyn Fn() -> Box<dyn Encoder>>;

fn encoders() -> Vec<(&'static str, MakeEncoder)> {
    #[cfg_attr(not(feature = "alloc"), allow(unused_mut))]
    let mut v: Vec<(&'static str, MakeEncoder)> = vec![
        ("store", Box::new(|| Box::new(StoreEncoder))),
        ("lz4", Box::new(|| Box::new(Lz4Encoder::new()))),
    ];
    #[cfg(feature = "alloc")]
    v.push(("deflate", Box::new(|| Box::new(keepsync_core::compress::DeflateEncoder::new(6)))));
    v
}

struct Dyn(Box<dyn Encoder>);
impl Encoder for Dyn {
    fn hint(&self) -> Codec {
        self.0.hint()
    }
    fn encode(&mut self, i: &[u8], o: &mut [u8]) -> Option<(Codec, usize)> {
        self.0.encode(i, o)
    }
}

/// Walks the records of a container without the key: (codec, plain_len, is_final) per chunk.
fn records(container: &[u8], chunk_size: usize) -> Vec<(Codec, usize, bool)> {
    let mut pos = HEADER_LEN;
    let mut out = Vec::new();
    while pos < container.len() {
        let r = Record::new_checked(&container[pos..]).unwrap().parse(out.len() as u64, chunk_size).unwrap();
        out.push((r.codec, r.plain_len, r.is_final));
        pos += RECORD_HEADER_LEN + r.body_len + TAG_LEN;
    }
    assert_eq!(pos, container.len());
    out
}

#[test]
fn edge_sizes_for_every_codec() {
    let cs = 4096;
    for (name, make) in encoders() {
        for len in [0, 1, cs - 1, cs, cs + 1, 2 * cs, 5 * cs + 17] {
            let data = mixed(len, len as u64 + 1);
            let c = pack(&data, 12, Dyn(make()), 1000);
            assert_eq!(unpack(&c).unwrap(), data, "{name} len {len}");
            let recs = records(&c, cs);
            // Canonical chunking: ceil(len / cs) chunks, at least one; only the last is final.
            assert_eq!(recs.len(), len.div_ceil(cs).max(1), "{name} len {len}");
            assert!(recs.last().unwrap().2);
            assert!(recs[..recs.len() - 1].iter().all(|r| !r.2 && r.1 == cs));
        }
    }
}

#[test]
fn incompressible_chunks_are_stored_never_expanded() {
    let mut x = 0x1234_5678_9abc_def0u64;
    let random: Vec<u8> = (0..20_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let c = pack(&random, 12, Lz4Encoder::new(), 4096);
    assert!(records(&c, 4096).iter().all(|r| r.0 == Codec::Store));
    let overhead = HEADER_LEN + 5 * (RECORD_HEADER_LEN + TAG_LEN);
    assert_eq!(c.len(), random.len() + overhead);
    let zeros = vec![0u8; 20_000];
    let c = pack(&zeros, 12, Lz4Encoder::new(), 4096);
    assert!(records(&c, 4096).iter().all(|r| r.0 == Codec::Lz4));
    assert!(c.len() < 2_000);
    assert_eq!(unpack(&c).unwrap(), zeros);
}

#[test]
fn header_records_the_chunk_size_and_codec_hint() {
    let c = pack(b"abc", 14, Lz4Encoder::new(), 7);
    let h = keepsync_core::wire::Header::new_checked(&c[..]).unwrap().parse().unwrap();
    assert_eq!(h, HeaderRepr { codec_hint: Codec::Lz4, ..repr(14, Codec::Lz4, 1) });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_data_any_steps_round_trips(
        len in 0usize..40_000,
        seed in any::<u64>(),
        wstep in 1usize..9000,
        rstep in 1usize..9000,
        codec in 0usize..3,
    ) {
        let data = mixed(len, seed);
        let encs = encoders();
        let (_, make) = &encs[codec % encs.len()];
        let c = pack(&data, 12, Dyn(make()), wstep);
        prop_assert_eq!(unpack_with(&c, MASTER, rstep).unwrap(), data);
    }

    #[test]
    fn unpacker_never_panics_on_arbitrary_bodies(body in proptest::collection::vec(any::<u8>(), 0..3000)) {
        let mut c = pack(b"", 12, StoreEncoder, 64);
        c.truncate(HEADER_LEN);
        c.extend_from_slice(&body);
        prop_assert!(unpack(&c).is_err());
    }
}
