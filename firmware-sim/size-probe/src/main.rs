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
            total +=
                keepsync_core::Checkpoint::decode(black_box(bytes)).map_or(0, |c| c.chunks_done as usize);
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
    let Ok((repr, keys)) =
        keepsync_core::crypto::open_header::<keepsync_core::FormatError>(&container, |_| {
            Ok(SecretKey::from_bytes(black_box([7; 32])))
        })
    else {
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

/// The sync roles: the board's flash and link are stand-ins whose behaviour the optimizer
/// cannot see through (`black_box`), so the whole upload or download path is kept.
#[cfg(any(feature = "sync-sender", feature = "sync-receiver"))]
mod sync {
    use core::hint::black_box;

    use embedded_storage::nor_flash::{ErrorType, NorFlash, ReadNorFlash};
    use keepsync_core::crypto::SecretKey;
    use keepsync_core::sync::Millis;
    use keepsync_firmware_sim::flash::FlashError;
    use keepsync_firmware_sim::net::{LinkError, SyncBuffers, Transport};

    static mut SYNC: SyncBuffers = SyncBuffers::new();

    struct Flash;
    impl ErrorType for Flash {
        type Error = FlashError;
    }
    impl ReadNorFlash for Flash {
        const READ_SIZE: usize = 1;
        fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
            bytes.fill(black_box(offset as u8));
            Ok(())
        }
        fn capacity(&self) -> usize {
            black_box(1 << 20)
        }
    }
    impl NorFlash for Flash {
        const WRITE_SIZE: usize = 4;
        const ERASE_SIZE: usize = 4096;
        fn erase(&mut self, _: u32, _: u32) -> Result<(), FlashError> {
            black_box(Ok(()))
        }
        fn write(&mut self, _: u32, _: &[u8]) -> Result<(), FlashError> {
            black_box(Ok(()))
        }
    }

    struct Link(Millis);
    impl Transport for Link {
        fn now(&mut self) -> Millis {
            black_box(self.0)
        }
        fn connect(&mut self) -> Result<(), LinkError> {
            black_box(Ok(()))
        }
        fn write(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
            Ok(black_box(bytes).len())
        }
        fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
            buf.fill(black_box(0));
            Ok(black_box(buf.len()))
        }
        fn wait(&mut self, deadline: Millis) {
            self.0 = black_box(deadline);
        }
        fn close(&mut self) {}
    }

    #[cfg(feature = "sync-sender")]
    pub fn send() -> usize {
        use keepsync_firmware_sim::uplink::{FlashFile, upload};
        // SAFETY: the only reference to the static, in a single-threaded program.
        let buffers = unsafe { &mut *core::ptr::addr_of_mut!(SYNC) };
        let files = [FlashFile { path: "probe.ks", start: 0, len: black_box(20_000), mtime: 0 }];
        let psk = SecretKey::from_bytes(black_box([3; 32]));
        upload(&mut Flash, &files, "device", &psk, black_box(1), &mut Link(0), buffers)
            .map_or(0, |r| r.blocks_sent as usize)
    }

    #[cfg(feature = "sync-receiver")]
    pub fn receive() -> usize {
        use core::mem::MaybeUninit;

        use keepsync_core::compress::CoreDecoder;
        use keepsync_firmware_sim::device::Layout;
        use keepsync_firmware_sim::downlink::receive_blob;
        // The inflate state (10.5 KiB) in a static, lent by &mut, as docs/EMBEDDED.md advises.
        static mut DECODER: MaybeUninit<CoreDecoder> = MaybeUninit::uninit();
        // SAFETY: the only references to the statics, in a single-threaded program.
        let (buffers, decoder) = unsafe {
            (
                &mut *core::ptr::addr_of_mut!(SYNC),
                (*core::ptr::addr_of_mut!(DECODER)).write(CoreDecoder::new()),
            )
        };
        let layout = Layout { checkpoint: 0, data: 8192, data_len: black_box(65_536) };
        let psk = SecretKey::from_bytes(black_box([3; 32]));
        receive_blob(&mut Flash, &layout, "config.bin", &psk, black_box(1), &mut Link(0), buffers, decoder)
            .map_or(0, |r| r.blocks_written as usize)
    }
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
    #[cfg(feature = "sync-sender")]
    black_box(pack(keepsync_core::compress::Lz4Encoder::new(), true) + sync::send());
    #[cfg(feature = "sync-receiver")]
    black_box(sync::receive());
    loop {
        cortex_m::asm::wfi();
    }
}
