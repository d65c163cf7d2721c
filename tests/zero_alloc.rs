//! Packing and unpacking through keepsync-core perform zero heap allocations: a counting
//! global allocator watches this thread while the state machines run.
#![allow(unsafe_code)] // the counting GlobalAlloc below

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, packer_workspace_len, unpacker_workspace_len};
use keepsync_core::compress::{Codec, CoreDecoder, DeflateEncoder, Encoder, Lz4Encoder, StoreEncoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, SecretKey, open_header};
use keepsync_core::stream::{Packer, Unpacker};
use keepsync_core::wire::{HeaderRepr, KeySource};

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: delegates to the system allocator; only counts calls on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<T>(f: impl FnOnce() -> T) -> (T, u64) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (out, ALLOCATIONS.with(Cell::get) - before)
}

/// Packs `data` into `container` (returns its length) with buffers lent by the caller.
fn pack<E: Encoder>(encoder: E, data: &[u8], ws: &mut [u8], container: &mut [u8]) -> usize {
    let repr = HeaderRepr {
        key_source: KeySource::RawKey,
        chunk_log2: 16,
        codec_hint: encoder.hint(),
        file_salt: [4; 32],
    };
    let keys = FileKeys::derive(&SecretKey::from_bytes([8; 32]), &repr.file_salt);
    let mut p = Packer::new(&RustCrypto, &keys, &repr, encoder, ws).unwrap().track_source();
    let (mut input, mut len) = (data, 0);
    while !input.is_empty() {
        let n = p.write(input).unwrap();
        input = &input[n..];
        len += p.read(&mut container[len..]);
    }
    p.finish();
    while !p.is_done() {
        len += p.read(&mut container[len..]);
    }
    assert!(p.checkpoint().is_some());
    len
}

fn unpack(container: &[u8], ws: &mut [u8], out: &mut [u8]) -> usize {
    let (repr, keys) = open_header::<FormatError>(container, |_| Ok(SecretKey::from_bytes([8; 32]))).unwrap();
    let mut u = Unpacker::new(&RustCrypto, &keys, &repr, CoreDecoder::new(), ws).unwrap();
    let (mut input, mut len) = (&container[HEADER_LEN..], 0);
    while !input.is_empty() {
        let n = u.write(input).unwrap();
        input = &input[n..];
        len += u.read(&mut out[len..]);
    }
    u.finish().unwrap();
    len += u.read(&mut out[len..]);
    len
}

#[test]
fn pack_and_unpack_allocate_nothing() {
    let data: Vec<u8> = (0..1_000_000u32).flat_map(|i| (i % 251).to_le_bytes()).take(1_000_000).collect();
    let mut pws = vec![0u8; packer_workspace_len(1 << 16)];
    let mut uws = vec![0u8; unpacker_workspace_len(1 << 16)];
    let mut container = vec![0u8; 2 * data.len()];
    let mut plain = vec![0u8; data.len()];
    // The deflate *encoder* needs the heap (behind `alloc`); build it first, then count only
    // the packing. Decoding deflate needs no heap at all.
    let deflate = DeflateEncoder::new(6);
    let (len, n) = allocations_during(|| pack(deflate, &data, &mut pws, &mut container));
    assert_eq!(n, 0, "deflate pack allocated");
    let (out, n) = allocations_during(|| unpack(&container[..len], &mut uws, &mut plain));
    assert_eq!(n, 0, "deflate unpack allocated");
    assert_eq!(plain[..out], data[..]);

    for codec in [Codec::Store, Codec::Lz4] {
        let (len, n) = allocations_during(|| match codec {
            Codec::Store => pack(StoreEncoder, &data, &mut pws, &mut container),
            _ => pack(Lz4Encoder::new(), &data, &mut pws, &mut container),
        });
        assert_eq!(n, 0, "{codec:?} pack allocated");
        let (out, n) = allocations_during(|| unpack(&container[..len], &mut uws, &mut plain));
        assert_eq!(n, 0, "{codec:?} unpack allocated");
        assert_eq!(plain[..out], data[..]);
    }
    // The counter is live: a Vec allocation is seen.
    let (_, n) = allocations_during(|| vec![1u8; 10]);
    assert_eq!(n, 1);
}
