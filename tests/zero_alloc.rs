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

mod support;

/// A server's `Open` with an over-long filter rule list is refused by the core before the host
/// could allocate for a rule: the frame lands in the server's handshake buffer, and decoding
/// checks the list's bounds while it only borrows the bytes.
#[test]
fn an_open_with_too_many_filter_rules_is_refused_before_anything_is_allocated() {
    use keepsync::net::server::{HANDSHAKE_RX, HANDSHAKE_TX};
    use keepsync_core::budget::{MAX_FILTER_LEN, MAX_FILTER_RULES};
    use keepsync_core::sync::open::poll_open;
    use keepsync_core::sync::{Connection, ProtoError};

    let psk = SecretKey::from_bytes([6; 32]);
    let one = |rules: &[u8]| -> (Option<Result<usize, ProtoError>>, u64) {
        let mut client =
            Connection::client(RustCrypto, psk.clone(), [1; 32], 0, vec![0; 8192], vec![0; 8192]).unwrap();
        let mut server = Connection::server(
            RustCrypto,
            psk.clone(),
            [2; 32],
            0,
            vec![0; HANDSHAKE_RX],
            vec![0; HANDSHAKE_TX],
        )
        .unwrap();
        let client_hello = client.pending_transmit().to_vec();
        client.consume_transmit(client_hello.len());
        assert_eq!(server.handle_input(0, &client_hello), Ok(client_hello.len()));
        let server_hello = server.pending_transmit().to_vec();
        server.consume_transmit(server_hello.len());
        client.handle_input(0, &server_hello).unwrap();
        let proof = client.pending_transmit().to_vec();
        let open = support::seal_as_client(
            &psk,
            &client_hello,
            &server_hello,
            0,
            &support::open_with_raw_rules("t", rules),
        );
        let input = [proof, open].concat();
        allocations_during(|| {
            let mut at = 0;
            while at < input.len() {
                match server.handle_input(0, &input[at..]) {
                    Ok(n) => at += n,
                    Err(e) => return Some(Err(e)),
                }
                if let Some(request) = poll_open(&mut server, 0) {
                    return Some(request.map(|r| r.params.filters.len()));
                }
            }
            None
        })
    };
    let rule = [0u8, 1, b'x'];
    // As many rules as the bound allows: taken, without a copy.
    let (got, n) = one(&rule.repeat(MAX_FILTER_RULES));
    assert_eq!((got, n), (Some(Ok(MAX_FILTER_RULES)), 0));
    // One more: refused as malformed, nothing allocated.
    let (got, n) = one(&rule.repeat(MAX_FILTER_RULES + 1));
    assert_eq!((got, n), (Some(Err(ProtoError::Malformed)), 0));
    // One valid rule longer than the list may be: refused on its length.
    let long = [&[0u8, 0xfe, 0x3f][..], &[b'x'; MAX_FILTER_LEN - 2]].concat();
    assert_eq!(long.len(), MAX_FILTER_LEN + 1);
    let (got, n) = one(&long);
    assert_eq!((got, n), (Some(Err(ProtoError::Malformed)), 0));
}
