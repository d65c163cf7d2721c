//! One role of a device, chosen by feature, so `size-report.sh` can measure what each costs.
//! Inputs come from `black_box` so the optimizer keeps the real code paths.
#![no_std]
#![no_main]

use core::hint::black_box;

use cortex_m_rt::entry;
use keepsync_core::budget::{packer_workspace_len, unpacker_workspace_len};
use keepsync_core::crypto::{FileKeys, RustCrypto, SecretKey};
use keepsync_core::wire::{HeaderRepr, KeySource};
use panic_halt as _;

const CHUNK: usize = 4096;
static mut PACK_WS: [u8; packer_workspace_len(CHUNK)] = [0; packer_workspace_len(CHUNK)];
static mut UNPACK_WS: [u8; unpacker_workspace_len(CHUNK)] = [0; unpacker_workspace_len(CHUNK)];

fn keys() -> (HeaderRepr, FileKeys) {
    let repr = HeaderRepr {
        key_source: KeySource::RawKey,
        chunk_log2: 12,
        codec_hint: keepsync_core::compress::Codec::Lz4,
        file_salt: black_box([1; 32]),
    };
    let keys = FileKeys::derive(&SecretKey::from_bytes(black_box([7; 32])), &repr.file_salt);
    (repr, keys)
}

#[allow(dead_code)]
fn pack<E: keepsync_core::compress::Encoder>(encoder: E, checkpoint: bool) -> usize {
    let (repr, keys) = keys();
    // SAFETY: the only reference to the static, in a single-threaded program.
    let ws = unsafe { &mut *core::ptr::addr_of_mut!(PACK_WS) };
    let p = keepsync_core::stream::Packer::new(&RustCrypto, &keys, &repr, encoder, ws).unwrap();
    let mut p = if checkpoint { p.track_source() } else { p };
    let data = black_box([0x55u8; 512]);
    let mut out = [0u8; 1024];
    let mut total = 0;
    for _ in 0..black_box(20) {
        let _ = p.write(&data);
        total += p.read(&mut out);
        if checkpoint && let Some(c) = p.checkpoint() {
            let mut buf = [0u8; keepsync_core::Checkpoint::MAX_ENCODED_LEN];
            let bytes = c.encode(&mut buf).unwrap();
            total += keepsync_core::Checkpoint::decode(black_box(bytes)).map_or(0, |c| c.chunks_done as usize);
        }
    }
    p.finish();
    while !p.is_done() {
        total += p.read(&mut out);
    }
    total
}

#[allow(dead_code)]
fn unpack() -> usize {
    let container = black_box([0u8; 256]);
    let Ok((repr, keys)) = keepsync_core::crypto::open_header::<keepsync_core::FormatError>(&container, |_| {
        Ok(SecretKey::from_bytes(black_box([7; 32])))
    }) else {
        return 0;
    };
    // SAFETY: the only reference to the static, in a single-threaded program.
    let ws = unsafe { &mut *core::ptr::addr_of_mut!(UNPACK_WS) };
    let mut decoder = keepsync_core::compress::CoreDecoder::new();
    let mut u = keepsync_core::stream::Unpacker::new(&RustCrypto, &keys, &repr, &mut decoder, ws).unwrap();
    let mut out = [0u8; 512];
    let _ = u.write(&container[112..]);
    let n = u.read(&mut out);
    n + usize::from(u.finish().is_ok())
}

#[entry]
fn main() -> ! {
    #[cfg(feature = "pack-store")]
    black_box(pack(keepsync_core::compress::StoreEncoder, false));
    #[cfg(feature = "pack-lz4")]
    black_box(pack(keepsync_core::compress::Lz4Encoder::new(), false));
    #[cfg(feature = "pack-lz4-checkpoint")]
    black_box(pack(keepsync_core::compress::Lz4Encoder::new(), true));
    #[cfg(feature = "unpack")]
    black_box(unpack());
    loop {
        cortex_m::asm::wfi();
    }
}
