//! # keepsync-qemu-selftest
//!
//! `keepsync-core` on a Cortex-M4F with no heap, run under QEMU (`-machine mps2-an386`) by
//! `../qemu-selftest.sh`. Everything lives in static buffers or on the stack; output goes to
//! the host through semihosting, and the exit status is QEMU's.
//!
//! What it proves, in order:
//! 1. **Pack, interrupted.** ~20 KiB of fixed-width sensor records are packed with
//!    [`Lz4Encoder`] in 4 KiB chunks into the DATA partition, with a checkpoint every
//!    [`CHECKPOINT_EVERY`] chunks into alternating CHECKPOINT slots. The second checkpoint
//!    write is torn and the power is cut half-way through writing a record.
//! 2. **Resume after the reset.** A new [`Packer`] built with [`Packer::resume`] from the
//!    newest *valid* slot (the torn one is rejected by its CRC), after re-verifying the
//!    container's header MAC and re-hashing the source prefix, finishes the container in place.
//!    Its bytes must equal an uninterrupted pack's, byte for byte.
//! 3. **Unpack** with [`Unpacker`] + [`CoreDecoder`]: the plaintext must equal the records.
//! 4. **Tamper**: a flipped body byte, a flipped header byte and a wrong key are all refused.
//! 5. **Host interop** (when `fixtures/host-lz4-4k.ks` exists): a container packed by the
//!    `keepsync` CLI (`--codec lz4 --for-device --chunk-size 4KiB`) unpacks to the same records.
//! 6. **Report**: the container as hex between `KS-CONTAINER-BEGIN`/`KS-CONTAINER-END` and
//!    the plaintext's length and CRC-32, for `check-container.sh`.
//! 7. **Changed source**: after another interrupted run, a resume from a source changed before
//!    the checkpoint fails its source hash, and one changed after it is caught when the
//!    re-sealed record differs from what DATA holds, before a byte is written (no nonce is
//!    ever used for two plaintexts; docs/SECURITY.md, "Resume").
//! 8. **Upload** (module [`uplink`]): the finished container goes to a host peer in this image
//!    over the sync protocol (PSK handshake, AES-GCM frames) with the firmware-sim's
//!    `uplink::upload`; the peer drops the first connection after two blocks and the device
//!    resumes at the peer's durable prefix. The peer's copy must equal the container.
//! 9. **Footprint**: state object sizes, static RAM from the linker symbols and the stack
//!    high-water mark of each phase (the reset handler paints the stack, see cortex-m-rt's
//!    `paint-stack`; [`stack::measure`] paints again before each phase), and the RAM of the
//!    sync sender role (pack with LZ4 and checkpoints, then upload).
//!
//! The workspaces *and the codec states* are statics; the packer and unpacker borrow the
//! codecs by `&mut`, which keeps them small (2.4 KiB / 0.4 KiB) and cheap to move.
//!
//! Ends with `selftest: ok` and exit status 0; any failure panics, and the panic handler exits
//! QEMU with status 1.
#![no_std]
#![no_main]

use core::mem::MaybeUninit;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use cortex_m as _;
use cortex_m_rt::{ExceptionFrame, entry, exception};
use cortex_m_semihosting::debug;
use keepsync_core::budget::{HEADER_LEN, max_record_len, unpacker_workspace_len};
use keepsync_core::checkpoint::SourceHasher;
use keepsync_core::compress::{Codec, CoreDecoder, Lz4Encoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, RustCryptoAesGcm, SecretKey, open_header};
use keepsync_core::stream::{Packer, ResumePoint, Unpacker};
use keepsync_core::wire::{HeaderRepr, KeySource};
use keepsync_core::{Checkpoint, FormatError};
// The packer's RAM as firmware-sim's device logic borrows it (its chunk size is ours: 4 KiB).
use keepsync_firmware_sim::device::{PACK_WORKSPACE, PackRam};
use keepsync_firmware_sim::net::SyncBuffers;

/// Log lines: through semihosting as text, or (`--features defmt`) as defmt frames that the
/// host decodes with `defmt-print`. The format strings are written to suit both.
#[cfg(not(feature = "defmt"))]
macro_rules! say {
    ($($arg:tt)*) => { cortex_m_semihosting::hprintln!($($arg)*) };
}
#[cfg(feature = "defmt")]
macro_rules! say {
    ($($arg:tt)*) => { defmt::println!($($arg)*) };
}
#[cfg(feature = "defmt")]
use defmt_semihosting as _;

mod uplink;

/// Chunk size: the device logic's (the smallest the format allows, for the smallest
/// workspaces), which sizes [`PACK_WORKSPACE`].
const CHUNK_LOG2: u8 = keepsync_firmware_sim::device::CHUNK_LOG2;
const CHUNK: usize = 1 << CHUNK_LOG2;
/// The master key (the host check writes it into a CLI key file).
const KEY: [u8; 32] = [0x42; 32];
/// The file salt. A real device draws 32 fresh random bytes per container; a fixed one makes
/// the interrupted and the uninterrupted pack comparable and the output reproducible.
const SALT: [u8; 32] = *b"keepsync-qemu-selftest-salt-0001";
/// Checkpoint after every this many sealed chunks.
const CHECKPOINT_EVERY: u64 = 2;
/// Bytes of source read per `write` (what a sensor driver might hand over at a time).
const READ_LEN: usize = 256;

const UNPACK_WORKSPACE: usize = unpacker_workspace_len(CHUNK);
/// The largest container the sensor log can make (every chunk stored), rounded up to sectors.
const CONTAINER_MAX: usize = HEADER_LEN + sensor_log::LEN.div_ceil(CHUNK) * max_record_len(CHUNK);

static mut PACKER_WS: [u8; PACK_WORKSPACE] = [0; PACK_WORKSPACE];
static mut UNPACKER_WS: [u8; UNPACK_WORKSPACE] = [0; UNPACK_WORKSPACE];
// The codecs' state (16 KiB of LZ4 hash table, 10 KiB of inflate state) lives in statics too,
// and the packer and unpacker borrow it (`Encoder`/`Decoder` are implemented for `&mut E`).
// Held by value, it would make each state object ~19 KiB / ~11 KiB, and every move of one
// (`new` returns it in a `Result`) a copy on the stack: keepsync-core at opt-level "s" then
// needs over 100 KiB of stack to build a Packer (docs/EMBEDDED.md).
static mut LZ4: MaybeUninit<Lz4Encoder> = MaybeUninit::uninit();
static mut INFLATE: MaybeUninit<CoreDecoder> = MaybeUninit::uninit();
/// The sync role's lent buffers (frames of one 4 KiB block each way, and one block).
static mut SYNC: SyncBuffers = SyncBuffers::new();
/// The host peer of the upload: test scaffolding, not device RAM.
static mut PEER: MaybeUninit<uplink::Peer> = MaybeUninit::uninit();

/// What an unpacker borrows: its workspace and the decoder.
struct UnpackRam {
    ws: &'static mut [u8; UNPACK_WORKSPACE],
    inflate: &'static mut CoreDecoder,
}

type DevicePacker<'a> = Packer<'a, RustCryptoAesGcm, &'a mut Lz4Encoder>;
type DeviceUnpacker<'a> = Unpacker<'a, RustCryptoAesGcm, &'a mut CoreDecoder>;

#[entry]
fn main() -> ! {
    say!(
        "keepsync-core self-test: board {}, {} bytes of sensor records, {} KiB chunks, lz4",
        env!("KEEPSYNC_BOARD"),
        sensor_log::LEN,
        CHUNK >> 10
    );
    let startup = stack::high_water();
    let (mut pack_ram, stack_init_pack) = stack::measure(take_pack_ram);
    let (mut unpack_ram, stack_init_unpack) = stack::measure(take_unpack_ram);
    let (mut ckpt_part, mut data_part) = flash::partitions();
    say!(
        "partitions: CHECKPOINT {:#010x} +{:#x} ({} B slots), DATA {:#010x} +{:#x} ({} B sectors)",
        ckpt_part.address(),
        ckpt_part.len(),
        ckpt_part.sector(),
        data_part.address(),
        data_part.len(),
        data_part.sector()
    );
    assert!(ckpt_part.len() >= 2 * ckpt_part.sector(), "CHECKPOINT needs two slots");
    assert!(ckpt_part.sector() >= 2 + Checkpoint::MAX_ENCODED_LEN, "a checkpoint slot is too small");
    let data_span = CONTAINER_MAX.next_multiple_of(data_part.sector());
    assert!(data_part.len() >= data_span, "DATA is smaller than the container");
    ckpt_part.erase(0, ckpt_part.len()).expect("erase CHECKPOINT");
    data_part.erase(0, data_span).expect("erase DATA");

    let master = SecretKey::from_bytes(KEY);
    let repr = HeaderRepr {
        key_source: KeySource::RawKey,
        chunk_log2: CHUNK_LOG2,
        codec_hint: Codec::Lz4,
        file_salt: SALT,
    };

    // (a) + (b): pack with checkpoints until the power is cut.
    let (cut, stack_pack) = stack::measure(|| {
        pack_until_power_cut(&master, &repr, &mut pack_ram, &mut ckpt_part, &mut data_part)
    });
    say!(
        "pack: power cut after {} chunks, {} container bytes in DATA (last record torn), checkpoints at chunks {:?} (last one torn)",
        cut.chunks_sealed,
        cut.bytes_written,
        cut.checkpoints
    );

    // (c): reset. Only the flash partitions survive; everything is rebuilt from them.
    let (resumed, stack_resume) =
        stack::measure(|| resume_after_reset(&master, &mut pack_ram, &mut ckpt_part, &mut data_part));
    let resumed = resumed.expect("resume");
    // The torn slot (chunk 4) must have been refused in favour of the older one (chunk 2).
    assert_eq!(resumed.from_chunk, CHECKPOINT_EVERY, "resumed from the wrong checkpoint");
    let len = resumed.len;
    let container = data_part.read(0, len);
    let (uninterrupted, stack_compare) =
        stack::measure(|| compare_with_uninterrupted_pack(&master, &repr, &mut pack_ram, container));
    assert_eq!(uninterrupted, len, "the uninterrupted pack has a different length");
    say!("resume: container of {} bytes equals the uninterrupted pack byte for byte", len);

    // (d): unpack and compare with the source.
    let (plain, stack_unpack) = stack::measure(|| unpack_and_verify(&master, &mut unpack_ram, container));
    let plain = plain.expect("unpack the container");
    assert_eq!(plain.len, sensor_log::LEN, "plaintext length");
    assert_eq!(plain.crc, sensor_log::crc32(), "plaintext CRC-32");
    say!("unpack: {} bytes in {} chunks, equal to the source", plain.len, plain.chunks);

    // (e): tampering is refused.
    tamper_checks(&master, &mut unpack_ram, &mut data_part, len);

    // Bonus: a container the host CLI packed opens here too.
    host_fixture(&master, &mut unpack_ram);

    // (f): the container and what the host check compares.
    let container = data_part.read(0, len);
    say!("container: len={} crc32={:08x}", len, crc32(container));
    say!("plaintext: len={} crc32={:08x}", sensor_log::LEN, sensor_log::crc32());
    hex_dump(container);

    // (h): the container goes to a host over the sync protocol, across a dropped link.
    let (sync, peer) = take_sync_ram();
    let up = uplink::run(peer, sync, container);
    let blocks = len.div_ceil(keepsync_firmware_sim::net::BLOCK) as u32;
    assert_eq!(up.report.files_done, 1, "the host confirmed the container");
    assert_eq!(up.report.connections.made, 2, "one dropped link, one reconnect");
    assert_eq!(up.offers, 2, "offered once per connection");
    assert_eq!(up.resumes[0], 0, "first offer starts at 0");
    assert_eq!(up.resumes[1], 2 * keepsync_firmware_sim::net::BLOCK as u64, "resumed at the durable prefix");
    // Resent: at most what was in flight when the link dropped (the pipe holds < one block).
    assert!(up.report.blocks_sent <= blocks + 1, "{} blocks sent for {blocks}", up.report.blocks_sent);
    say!(
        "upload: {} bytes to the host as {}, {} blocks sent for {} ({} connections, the second resumed at {}), host copy equal",
        len,
        uplink::PATH,
        up.report.blocks_sent,
        blocks,
        up.report.connections.made,
        up.resumes[1]
    );
    let stack_upload = up.device_stack;

    // (g): a source that changed since the interrupted run is never sealed again under the
    // same nonces: before the checkpoint it fails the source hash; after it, the re-sealed
    // record differs from what is in DATA and is refused before a byte of it is written.
    data_part.erase(0, data_span).expect("erase DATA");
    ckpt_part.erase(0, ckpt_part.len()).expect("erase CHECKPOINT");
    let cut = pack_until_power_cut(&master, &repr, &mut pack_ram, &mut ckpt_part, &mut data_part);
    let before = crc32(data_part.read(0, data_span));
    sensor_log::change_byte(Some(100));
    let r = resume_after_reset(&master, &mut pack_ram, &mut ckpt_part, &mut data_part).err();
    sensor_log::change_byte(None);
    assert_eq!(r, Some(ResumeRefused::PrefixChanged), "source byte 100 changed");
    say!("changed source: byte 100 (before the checkpoint) -> refused: PrefixChanged");
    let at = 2 * CHUNK + 100;
    sensor_log::change_byte(Some(at));
    let r = resume_after_reset(&master, &mut pack_ram, &mut ckpt_part, &mut data_part).err();
    sensor_log::change_byte(None);
    let Some(ResumeRefused::TailChanged { offset }) = r else {
        panic!("source byte {at} changed: {r:?}");
    };
    assert!(offset < cut.bytes_written, "conflict past what the interrupted run wrote");
    say!(
        "changed source: byte {} (after the checkpoint) -> refused: TailChanged at container byte {}",
        at,
        offset
    );
    assert_eq!(crc32(data_part.read(0, data_span)), before, "a refused resume wrote to DATA");

    footprint(&[
        ("startup", startup),
        ("init lz4", stack_init_pack),
        ("init inflate", stack_init_unpack),
        ("pack", stack_pack),
        ("resume", stack_resume),
        ("uninterrupted pack", stack_compare),
        ("unpack", stack_unpack),
        ("upload", stack_upload),
    ]);
    say!("selftest: ok");
    exit(true)
}

/// The packer's workspace and the LZ4 encoder, borrowed `'static` exactly once. Not inlined:
/// building a codec state may go through temporaries on the stack, which must not stay in
/// `main`'s frame (the self-test measures it as its own phase).
#[inline(never)]
fn take_pack_ram() -> PackRam<'static> {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    assert!(!TAKEN.swap(true, Ordering::Relaxed), "pack RAM taken twice");
    // SAFETY: the flag above makes these the only references ever made to the two statics.
    // (`&mut *&raw mut` is edition 2024's way to borrow a `static mut`; clippy misreads it.)
    #[allow(clippy::deref_addrof)]
    unsafe {
        PackRam { workspace: &mut *(&raw mut PACKER_WS), lz4: (*(&raw mut LZ4)).write(Lz4Encoder::new()) }
    }
}

/// The unpacker's workspace and the inflate state, as [`take_pack_ram`].
#[inline(never)]
fn take_unpack_ram() -> UnpackRam {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    assert!(!TAKEN.swap(true, Ordering::Relaxed), "unpack RAM taken twice");
    // SAFETY: the flag above makes these the only references ever made to the two statics.
    #[allow(clippy::deref_addrof)]
    unsafe {
        UnpackRam {
            ws: &mut *(&raw mut UNPACKER_WS),
            inflate: (*(&raw mut INFLATE)).write(CoreDecoder::new()),
        }
    }
}

/// The sync buffers and the host peer, borrowed `'static` exactly once.
#[inline(never)]
fn take_sync_ram() -> (&'static mut SyncBuffers, &'static mut uplink::Peer) {
    static TAKEN: AtomicBool = AtomicBool::new(false);
    assert!(!TAKEN.swap(true, Ordering::Relaxed), "sync RAM taken twice");
    // SAFETY: the flag above makes these the only references ever made to the two statics.
    #[allow(clippy::deref_addrof)]
    unsafe {
        (&mut *(&raw mut SYNC), uplink::Peer::init(&mut *(&raw mut PEER)))
    }
}

// ---------------------------------------------------------------------------------------------
// Packing, checkpoints, power cut and resume
// ---------------------------------------------------------------------------------------------

struct PowerCut {
    chunks_sealed: u64,
    bytes_written: usize,
    checkpoints: [u64; 2],
}

/// Packs from the start, checkpointing every [`CHECKPOINT_EVERY`] chunks. The second checkpoint
/// write is torn (only part of the record reaches flash); after chunk 5 is sealed only half of
/// its record is written, and the power goes.
#[inline(never)]
fn pack_until_power_cut(
    master: &SecretKey,
    repr: &HeaderRepr,
    ram: &mut PackRam<'_>,
    ckpt: &mut flash::Partition,
    data: &mut flash::Partition,
) -> PowerCut {
    const TORN_CHECKPOINT: u64 = 2 * CHECKPOINT_EVERY;
    const CUT_AFTER_CHUNKS: u64 = 5;
    let keys = FileKeys::derive(master, &repr.file_salt);
    let mut packer = Packer::new(&RustCrypto, &keys, repr, &mut *ram.lz4, &mut ram.workspace[..])
        .expect("new packer")
        .track_source();
    let mut written = 0;
    let mut next_checkpoint = CHECKPOINT_EVERY;
    let mut checkpoints = [0; 2];
    let mut saved = 0;
    let mut buf = [0u8; READ_LEN];
    let mut offset = 0;
    while offset < sensor_log::LEN {
        let n = sensor_log::read_at(offset, &mut buf);
        offset += n;
        let mut input = &buf[..n];
        while !input.is_empty() {
            let taken = packer.write(input).expect("write");
            input = &input[taken..];
            if packer.chunks_sealed() == CUT_AFTER_CHUNKS {
                let pending = packer.output();
                let half = pending.len() / 2;
                data.program(written, &pending[..half]).expect("program DATA");
                return PowerCut {
                    chunks_sealed: CUT_AFTER_CHUNKS,
                    bytes_written: written + half,
                    checkpoints,
                };
            }
            drain(&mut packer, data, &mut written);
            if packer.chunks_sealed() >= next_checkpoint {
                let ck = packer.checkpoint().expect("checkpoint after a drain");
                let torn = (ck.chunks_done == TORN_CHECKPOINT).then_some(40);
                save_checkpoint(ckpt, &ck, torn);
                checkpoints[saved] = ck.chunks_done;
                saved += 1;
                next_checkpoint += CHECKPOINT_EVERY;
            }
        }
    }
    panic!("the power cut never happened");
}

/// After a reset: picks the newest valid checkpoint, checks that it belongs to the container
/// in DATA and that the source's prefix is unchanged, resumes, and finishes the container.
#[inline(never)]
fn resume_after_reset(
    master: &SecretKey,
    ram: &mut PackRam<'_>,
    ckpt: &mut flash::Partition,
    data: &mut flash::Partition,
) -> Result<Resumed, ResumeRefused> {
    // The header in DATA names the container; a checkpoint of any other one is ignored.
    let (repr, keys) = open_header::<FormatError>(data.read(0, HEADER_LEN), |_| Ok(master.clone()))
        .expect("open the header in DATA");
    let header_mac: [u8; 32] = data.read(HEADER_LEN - 32, 32).try_into().unwrap();

    let mut best: Option<Checkpoint> = None;
    for slot in 0..2 {
        match load_checkpoint(ckpt, slot) {
            Ok(ck) if ck.header_mac == header_mac => {
                say!("resume: slot {} holds a checkpoint at chunk {}", slot, ck.chunks_done);
                if best.as_ref().is_none_or(|b| ck.chunks_done > b.chunks_done) {
                    best = Some(ck);
                }
            }
            Ok(_) => say!("resume: slot {} belongs to another container", slot),
            Err(e) => say!("resume: slot {} refused: {:?}", slot, e),
        }
    }
    let ck = best.ok_or(ResumeRefused::NoCheckpoint)?;

    // Re-hash the source's first plain_offset bytes: resume only if they are unchanged (else
    // sealing different plaintext under the same nonces would break the encryption).
    let plain_offset = usize::try_from(ck.plain_offset).unwrap();
    let mut source = SourceHasher::new();
    let mut buf = [0u8; READ_LEN];
    let mut offset = 0;
    while offset < plain_offset {
        let n = sensor_log::read_at(offset, &mut buf[..READ_LEN.min(plain_offset - offset)]);
        source.update(&buf[..n]);
        offset += n;
    }
    if source.digest() != ck.source_hash {
        return Err(ResumeRefused::PrefixChanged);
    }

    let mut written = usize::try_from(ck.sealed_offset).unwrap();
    say!(
        "resume: from chunk {} (plaintext offset {}, container offset {})",
        ck.chunks_done,
        plain_offset,
        written
    );
    let at = ResumePoint {
        next_index: ck.chunks_done,
        plain_offset: ck.plain_offset,
        sealed_offset: ck.sealed_offset,
        source,
    };
    let mut packer: DevicePacker<'_> =
        Packer::resume(&RustCrypto, &keys, &repr, &mut *ram.lz4, &mut ram.workspace[..], at)
            .expect("resume packer");
    let mut next_checkpoint = ck.chunks_done + CHECKPOINT_EVERY;
    while offset < sensor_log::LEN {
        let n = sensor_log::read_at(offset, &mut buf);
        offset += n;
        let mut input = &buf[..n];
        while !input.is_empty() {
            let taken = packer.write(input).expect("write");
            input = &input[taken..];
            // What the interrupted run wrote after its checkpoint is written again: the same
            // bytes (sealing is deterministic), so a NOR program needs no erase. Different
            // bytes mean the source changed: drain_resumed refuses before writing any.
            drain_resumed(&mut packer, data, &mut written)?;
            if packer.chunks_sealed() >= next_checkpoint {
                save_checkpoint(ckpt, &packer.checkpoint().expect("checkpoint after a drain"), None);
                next_checkpoint += CHECKPOINT_EVERY;
            }
        }
    }
    packer.finish();
    while !packer.is_done() {
        drain_resumed(&mut packer, data, &mut written)?;
    }
    assert_eq!(packer.sealed_offset(), written as u64);
    say!(
        "resume: finished, {} chunks, {} container bytes, chunks per codec [store, lz4, deflate, zstd] = {:?} (this run)",
        packer.chunks_sealed(),
        written,
        packer.codec_chunks()
    );
    // The container is complete: its checkpoints are obsolete.
    ckpt.erase(0, ckpt.len()).expect("erase CHECKPOINT");
    Ok(Resumed { len: written, from_chunk: ck.chunks_done })
}

struct Resumed {
    /// Length of the finished container.
    len: usize,
    /// The checkpoint it resumed from.
    from_chunk: u64,
}

/// Why a resume started no packer, or stopped: in every case, start a new container with a
/// fresh salt.
#[derive(Debug, PartialEq, Eq)]
enum ResumeRefused {
    /// No slot holds a valid checkpoint for the container in DATA.
    NoCheckpoint,
    /// The source's first `plain_offset` bytes no longer hash to the checkpoint's `source_hash`.
    PrefixChanged,
    /// A chunk sealed again differs from what the interrupted run wrote at `offset`: the
    /// source changed after the checkpoint. Nothing was written.
    TailChanged { offset: usize },
}

/// [`drain`] for a resumed packer: each record is compared with DATA *before* it is written
/// (docs/SECURITY.md, "Resume", step 3). Where the interrupted run wrote, the bytes must be
/// equal; elsewhere DATA is still erased (it was erased when the container was started).
fn drain_resumed(
    packer: &mut DevicePacker<'_>,
    data: &mut flash::Partition,
    written: &mut usize,
) -> Result<(), ResumeRefused> {
    let out = packer.output();
    if let Some(i) = data.first_conflict(*written, out) {
        return Err(ResumeRefused::TailChanged { offset: *written + i });
    }
    drain(packer, data, written);
    Ok(())
}

/// Writes the packer's pending output to DATA at `*written`.
fn drain(packer: &mut DevicePacker<'_>, data: &mut flash::Partition, written: &mut usize) {
    loop {
        let out = packer.output();
        if out.is_empty() {
            return;
        }
        let n = out.len();
        data.program(*written, out).expect("program DATA");
        *written += n;
        packer.consume(n);
    }
}

/// Packs the whole source in one go and compares its output with `container` as it streams.
/// Returns the length it produced.
#[inline(never)]
fn compare_with_uninterrupted_pack(
    master: &SecretKey,
    repr: &HeaderRepr,
    ram: &mut PackRam<'_>,
    container: &[u8],
) -> usize {
    let keys = FileKeys::derive(master, &repr.file_salt);
    let mut packer =
        Packer::new(&RustCrypto, &keys, repr, &mut *ram.lz4, &mut ram.workspace[..]).expect("new packer");
    let mut pos = 0;
    let mut compare = |packer: &mut DevicePacker<'_>| loop {
        let out = packer.output();
        if out.is_empty() {
            return;
        }
        let n = out.len();
        assert!(container.get(pos..pos + n) == Some(out), "resumed container differs near byte {pos}");
        pos += n;
        packer.consume(n);
    };
    let mut buf = [0u8; READ_LEN];
    let mut offset = 0;
    while offset < sensor_log::LEN {
        let n = sensor_log::read_at(offset, &mut buf);
        offset += n;
        let mut input = &buf[..n];
        while !input.is_empty() {
            let taken = packer.write(input).expect("write");
            input = &input[taken..];
            compare(&mut packer);
        }
    }
    packer.finish();
    while !packer.is_done() {
        compare(&mut packer);
    }
    pos
}

// ---------------------------------------------------------------------------------------------
// Checkpoint slots: [record length: u16 LE][record], one slot per CHECKPOINT sector
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[allow(dead_code, reason = "fields are read through Debug")]
enum SlotError {
    Empty,
    BadLength,
    Record(keepsync_core::CheckpointError),
}

fn slot_for(ck: &Checkpoint) -> usize {
    usize::from((ck.chunks_done / CHECKPOINT_EVERY) % 2 == 1)
}

/// Erases the checkpoint's slot and programs the record; `torn` stops after that many bytes.
fn save_checkpoint(part: &mut flash::Partition, ck: &Checkpoint, torn: Option<usize>) {
    let mut buf = [0xFF; 2 + Checkpoint::MAX_ENCODED_LEN];
    let len = ck.encode(&mut buf[2..]).expect("encode checkpoint").len();
    buf[..2].copy_from_slice(&(len as u16).to_le_bytes());
    // Round-trip check: what goes to flash decodes to the same checkpoint.
    assert_eq!(Checkpoint::decode(&buf[2..2 + len]).as_ref(), Ok(ck), "checkpoint round trip");
    let slot = slot_for(ck);
    let start = slot * part.sector();
    part.erase(start, start + part.sector()).expect("erase slot");
    let n = torn.unwrap_or(2 + len).min(2 + len);
    part.program(start, &buf[..n]).expect("program slot");
}

fn load_checkpoint(part: &flash::Partition, slot: usize) -> Result<Checkpoint, SlotError> {
    let start = slot * part.sector();
    let len = usize::from(u16::from_le_bytes(part.read(start, 2).try_into().unwrap()));
    if len == 0xFFFF {
        return Err(SlotError::Empty);
    }
    if len > Checkpoint::MAX_ENCODED_LEN {
        return Err(SlotError::BadLength);
    }
    Checkpoint::decode(part.read(start + 2, len)).map_err(SlotError::Record)
}

// ---------------------------------------------------------------------------------------------
// Unpacking and tampering
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct Plain {
    len: usize,
    crc: u32,
    chunks: u64,
}

#[derive(Debug)]
#[allow(dead_code, reason = "fields are read through Debug")]
enum VerifyError {
    Format(FormatError),
    Differs { offset: usize },
}

impl From<FormatError> for VerifyError {
    fn from(e: FormatError) -> Self {
        Self::Format(e)
    }
}

/// Opens `container` with `master` and checks its plaintext against the sensor log as it
/// streams out, 512 container bytes at a time.
#[inline(never)]
fn unpack_and_verify(
    master: &SecretKey,
    ram: &mut UnpackRam,
    container: &[u8],
) -> Result<Plain, VerifyError> {
    let (repr, keys) = open_header::<FormatError>(container, |_| Ok(master.clone()))?;
    let mut unpacker: DeviceUnpacker<'_> =
        Unpacker::new(&RustCrypto, &keys, &repr, &mut *ram.inflate, &mut ram.ws[..])
            .expect("unpacker workspace");
    let mut crc = CRC32.digest();
    let mut offset = 0;
    let mut expected = [0u8; READ_LEN];
    let mut body = container.get(HEADER_LEN..).ok_or(FormatError::TruncatedHeader)?;
    while !body.is_empty() {
        let n = unpacker.write(&body[..body.len().min(512)])?;
        body = &body[n..];
        loop {
            let out = unpacker.output();
            if out.is_empty() {
                break;
            }
            for piece in out.chunks(READ_LEN) {
                let m = sensor_log::read_at(offset, &mut expected[..piece.len()]);
                if m != piece.len() || piece != &expected[..m] {
                    return Err(VerifyError::Differs { offset });
                }
                crc.update(piece);
                offset += piece.len();
            }
            let n = out.len();
            unpacker.consume(n);
        }
    }
    unpacker.finish()?;
    Ok(Plain { len: offset, crc: crc.finalize(), chunks: unpacker.chunks_opened() })
}

#[inline(never)]
fn tamper_checks(master: &SecretKey, ram: &mut UnpackRam, data: &mut flash::Partition, len: usize) {
    // A byte in the middle of the body (inside some chunk's ciphertext).
    let at = HEADER_LEN + (len - HEADER_LEN) / 2;
    data.corrupt(at, 0x01);
    let r = unpack_and_verify(master, ram, data.read(0, len));
    data.corrupt(at, 0x01);
    match r {
        Err(VerifyError::Format(e @ FormatError::ChunkAuthFailed { .. })) => {
            say!("tamper: flipped container byte {} -> refused: {:?}", at, e)
        }
        Err(e) => panic!("flipped byte {at}: unexpected error {e:?}"),
        Ok(_) => panic!("flipped byte {at} was accepted"),
    }
    // A byte of the header's salt.
    data.corrupt(20, 0x80);
    let r = unpack_and_verify(master, ram, data.read(0, len));
    data.corrupt(20, 0x80);
    assert!(matches!(r, Err(VerifyError::Format(FormatError::WrongKey))), "flipped header byte: {r:?}");
    say!("tamper: flipped header byte 20 -> refused: WrongKey");
    // The wrong key.
    let r = unpack_and_verify(&SecretKey::from_bytes([0x43; 32]), ram, data.read(0, len));
    assert!(matches!(r, Err(VerifyError::Format(FormatError::WrongKey))), "wrong key: {r:?}");
    say!("tamper: wrong key -> refused: WrongKey");
    // And the restored container still opens.
    unpack_and_verify(master, ram, data.read(0, len)).expect("restored container");
}

#[cfg(ks_host_fixture)]
fn host_fixture(master: &SecretKey, ram: &mut UnpackRam) {
    static HOST_CONTAINER: &[u8] = include_bytes!("../fixtures/host-lz4-4k.ks");
    let plain = unpack_and_verify(master, ram, HOST_CONTAINER).expect("unpack the host-packed container");
    assert_eq!(plain.len, sensor_log::LEN, "host container plaintext length");
    say!(
        "host container: {} bytes packed by `keepsync pack --codec lz4 --for-device --chunk-size 4KiB` -> {} bytes in {} chunks, equal to the source",
        HOST_CONTAINER.len(),
        plain.len,
        plain.chunks
    );
}

#[cfg(not(ks_host_fixture))]
fn host_fixture(_: &SecretKey, _: &mut UnpackRam) {
    say!("host container: skipped (no fixtures/host-lz4-4k.ks)");
}

// ---------------------------------------------------------------------------------------------
// Output
// ---------------------------------------------------------------------------------------------

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32 as zlib and `python3 -c 'import zlib'` compute it.
fn crc32(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

/// Under defmt the log is binary frames, which check-container.sh does not read: the plain
/// build carries the container out.
#[cfg(feature = "defmt")]
fn hex_dump(bytes: &[u8]) {
    say!("container hex dump: {} bytes, in the plain (non-defmt) build only", bytes.len());
}

#[cfg(not(feature = "defmt"))]
fn hex_dump(bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    say!("KS-CONTAINER-BEGIN");
    let mut line = [0u8; 64];
    for row in bytes.chunks(32) {
        for (i, b) in row.iter().enumerate() {
            line[2 * i] = DIGITS[usize::from(b >> 4)];
            line[2 * i + 1] = DIGITS[usize::from(b & 15)];
        }
        say!("{}", core::str::from_utf8(&line[..2 * row.len()]).unwrap());
    }
    say!("KS-CONTAINER-END");
}

/// Stack high-water per phase: `(name, bytes)`.
type StackMarks = [(&'static str, usize)];

/// The phases a sync sender (a device that packs with LZ4 and checkpoints, then uploads) goes
/// through; the others (unpacking, the comparison pack) belong to other roles or the test.
const SYNC_SENDER_PHASES: [&str; 4] = ["init lz4", "pack", "resume", "upload"];
/// The RAM budget of that role (issue 7's target, docs/EMBEDDED.md): statics plus measured
/// stack. The self-test fails if a change makes the role outgrow it.
const SYNC_SENDER_RAM_BUDGET: usize = 48 * 1024;

fn footprint(marks: &StackMarks) {
    unsafe extern "C" {
        static __sdata: u8;
        static __edata: u8;
        static __sbss: u8;
        static __ebss: u8;
        static __suninit: u8;
        static __euninit: u8;
    }
    let sym = |p: *const u8| p as usize;
    let (data, bss, uninit) = (
        sym(&raw const __edata) - sym(&raw const __sdata),
        sym(&raw const __ebss) - sym(&raw const __sbss),
        sym(&raw const __euninit) - sym(&raw const __suninit),
    );
    say!(
        "sizes: Packer {} B, Unpacker {} B, packer workspace {} B, unpacker workspace {} B, checkpoint record <= {} B",
        core::mem::size_of::<DevicePacker<'static>>(),
        core::mem::size_of::<DeviceUnpacker<'static>>(),
        PACK_WORKSPACE,
        UNPACK_WORKSPACE,
        Checkpoint::MAX_ENCODED_LEN
    );
    say!(
        "sizes: Lz4Encoder {} B, CoreDecoder {} B, SyncBuffers {} B, host peer {} B (test scaffolding)",
        core::mem::size_of::<Lz4Encoder>(),
        core::mem::size_of::<CoreDecoder>(),
        core::mem::size_of::<SyncBuffers>(),
        core::mem::size_of::<uplink::Peer>()
    );
    for (phase, bytes) in marks {
        say!("stack: {}: {} B", phase, bytes);
    }
    let stack = marks.iter().map(|m| m.1).max().unwrap_or(0);
    let statics = data + bss + uninit;
    say!(
        "ram: .data {} B, .bss {} B, .uninit {} B, static total {} B; stack high-water {} B (of {} B); total {} B",
        data,
        bss,
        uninit,
        statics,
        stack,
        stack::size(),
        statics + stack
    );
    // What a device in the sync sender role needs: its own statics (not the unpacker's, the
    // inflate state's or the host peer's) and the deepest stack of its phases.
    let role_static =
        PACK_WORKSPACE + core::mem::size_of::<Lz4Encoder>() + core::mem::size_of::<SyncBuffers>();
    let role_stack =
        marks.iter().filter(|m| SYNC_SENDER_PHASES.contains(&m.0)).map(|m| m.1).max().unwrap_or(0);
    say!(
        "ram, sync sender role (pack with lz4 + checkpoints, then upload): static {} B (packer workspace {} + Lz4Encoder {} + SyncBuffers {}) + stack {} B = {} B",
        role_static,
        PACK_WORKSPACE,
        core::mem::size_of::<Lz4Encoder>(),
        core::mem::size_of::<SyncBuffers>(),
        role_stack,
        role_static + role_stack
    );
    assert!(
        role_static + role_stack <= SYNC_SENDER_RAM_BUDGET,
        "the sync sender role needs {} B of RAM, over its budget of {} B",
        role_static + role_stack,
        SYNC_SENDER_RAM_BUDGET
    );
}

mod stack {
    //! Stack high-water marks. The reset handler paints `[_stack_end, _stack_start)` with
    //! `STACK_PAINT_VALUE` (cortex-m-rt's `paint-stack`); the lowest word that lost its paint
    //! is as deep as the stack went. [`repaint`] paints again below the current frame, so
    //! each phase of the self-test gets its own figure.

    use cortex_m_rt::STACK_PAINT_VALUE;

    unsafe extern "C" {
        static _stack_start: u8;
        static _stack_end: u8;
    }

    fn bounds() -> (usize, usize) {
        ((&raw const _stack_end) as usize, (&raw const _stack_start) as usize)
    }

    pub fn size() -> usize {
        let (bottom, top) = bounds();
        top - bottom
    }

    /// Bytes of stack in use at the deepest point since the last paint.
    pub fn high_water() -> usize {
        let (bottom, top) = bounds();
        let mut deepest = bottom;
        // SAFETY: [_stack_end, _stack_start) is RAM reserved for the stack; reads only.
        while deepest < top && unsafe { core::ptr::read_volatile(deepest as *const u32) } == STACK_PAINT_VALUE
        {
            deepest += 4;
        }
        top - deepest
    }

    /// Paints the free stack again, from the bottom up to 64 bytes below this frame.
    #[inline(never)]
    pub fn repaint() {
        let (bottom, _) = bounds();
        let end = (cortex_m::register::msp::read() as usize - 64) & !3;
        let mut p = bottom;
        while p < end {
            // SAFETY: below the stack pointer (minus a margin for this frame) nothing is live:
            // no interrupt is enabled, so nothing else can be using that stack.
            unsafe { core::ptr::write_volatile(p as *mut u32, STACK_PAINT_VALUE) };
            p += 4;
        }
    }

    /// Runs `phase` on freshly painted stack; returns its result and its high-water mark.
    #[inline(never)]
    pub fn measure<T>(phase: impl FnOnce() -> T) -> (T, usize) {
        repaint();
        let result = phase();
        (result, high_water())
    }
}

fn exit(ok: bool) -> ! {
    debug::exit(if ok { debug::EXIT_SUCCESS } else { debug::EXIT_FAILURE });
    // Not reached under QEMU; on a board without a debugger, stop here.
    loop {
        cortex_m::asm::bkpt();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    #[cfg(not(feature = "defmt"))]
    say!("selftest: FAILED: {}", info);
    #[cfg(feature = "defmt")]
    say!("selftest: FAILED: {}", defmt::Display2Format(info));
    exit(false)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    say!("selftest: FAILED: HardFault at pc={:#010x}", frame.pc());
    exit(false)
}

// ---------------------------------------------------------------------------------------------
// Flash partitions
// ---------------------------------------------------------------------------------------------

mod flash {
    //! A partition with NOR flash rules: erase sets whole sectors to 0xFF, programming can only
    //! clear bits (so rewriting identical bytes is allowed, anything else needs an erase).

    #[derive(Debug)]
    #[allow(dead_code, reason = "fields are read through Debug")]
    pub enum FlashError {
        OutOfBounds,
        Unaligned,
        /// Programming would have to set a bit that is 0: erase first.
        NotErased {
            offset: usize,
        },
    }

    pub struct Partition {
        mem: &'static mut [u8],
        sector: usize,
    }

    impl Partition {
        pub fn address(&self) -> usize {
            self.mem.as_ptr() as usize
        }

        pub fn len(&self) -> usize {
            self.mem.len()
        }

        /// Erase granularity in bytes.
        pub fn sector(&self) -> usize {
            self.sector
        }

        pub fn read(&self, offset: usize, len: usize) -> &[u8] {
            &self.mem[offset..offset + len]
        }

        pub fn erase(&mut self, from: usize, to: usize) -> Result<(), FlashError> {
            if !from.is_multiple_of(self.sector) || !to.is_multiple_of(self.sector) {
                return Err(FlashError::Unaligned);
            }
            self.mem.get_mut(from..to).ok_or(FlashError::OutOfBounds)?.fill(0xFF);
            Ok(())
        }

        pub fn program(&mut self, offset: usize, bytes: &[u8]) -> Result<(), FlashError> {
            let dst = self.mem.get_mut(offset..offset + bytes.len()).ok_or(FlashError::OutOfBounds)?;
            if let Some(i) = dst.iter().zip(bytes).position(|(&old, &new)| old & new != new) {
                return Err(FlashError::NotErased { offset: offset + i });
            }
            dst.iter_mut().zip(bytes).for_each(|(old, &new)| *old &= new);
            Ok(())
        }

        /// The first byte of `bytes` that differs from a programmed (not erased) byte at
        /// `offset..`, if any.
        pub fn first_conflict(&self, offset: usize, bytes: &[u8]) -> Option<usize> {
            let here = &self.mem[offset..(offset + bytes.len()).min(self.mem.len())];
            here.iter().zip(bytes).position(|(&old, &new)| old != new && old != 0xFF)
        }

        /// Flips bits behind the flash rules' back: a test's stand-in for a corrupted sector.
        pub fn corrupt(&mut self, offset: usize, mask: u8) {
            self.mem[offset] ^= mask;
        }
    }

    /// CHECKPOINT and DATA as the linker script places them. On MPS2 they are code-memory
    /// SSRAM, writable with plain stores, so the self-test uses the real partitions.
    #[cfg(ks_ram_partitions)]
    pub fn partitions() -> (Partition, Partition) {
        unsafe extern "C" {
            static mut __checkpoint_start: u8;
            static __checkpoint_end: u8;
            static __checkpoint_sector_size: u8;
            static mut __data_start: u8;
            static __data_end: u8;
            static __data_sector_size: u8;
        }
        static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        assert!(!TAKEN.swap(true, core::sync::atomic::Ordering::Relaxed), "partitions taken twice");
        let region = |start: *mut u8, end: *const u8| {
            // SAFETY: the linker script reserves [start, end) for this partition: no section is
            // placed there and nothing else in this program refers to it; `TAKEN` makes this
            // the only reference.
            unsafe { core::slice::from_raw_parts_mut(start, end as usize - start as usize) }
        };
        let ckpt = Partition {
            mem: region(&raw mut __checkpoint_start, &raw const __checkpoint_end),
            sector: (&raw const __checkpoint_sector_size) as usize,
        };
        let data = Partition {
            mem: region(&raw mut __data_start, &raw const __data_end),
            sector: (&raw const __data_sector_size) as usize,
        };
        (ckpt, data)
    }

    /// Boards whose flash needs a driver (STM32, nRF): this image only proves that the program
    /// links and fits, so it stands in small RAM copies for CHECKPOINT and DATA.
    #[cfg(not(ks_ram_partitions))]
    pub fn partitions() -> (Partition, Partition) {
        const SLOT: usize = 256;
        const SECTOR: usize = 4096;
        const DATA_LEN: usize = super::CONTAINER_MAX.next_multiple_of(SECTOR);
        // Zero-initialised (.bss, not .data: no flash copy); the self-test erases them first.
        static mut CKPT: [u8; 2 * SLOT] = [0; 2 * SLOT];
        static mut DATA: [u8; DATA_LEN] = [0; DATA_LEN];
        static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
        assert!(!TAKEN.swap(true, core::sync::atomic::Ordering::Relaxed), "partitions taken twice");
        // SAFETY: `TAKEN` makes these the only references ever made to the two statics.
        #[allow(clippy::deref_addrof)]
        unsafe {
            (
                Partition { mem: &mut *(&raw mut CKPT), sector: SLOT },
                Partition { mem: &mut *(&raw mut DATA), sector: SECTOR },
            )
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The source: a sensor log, computed on the fly
// ---------------------------------------------------------------------------------------------

mod sensor_log {
    //! A deterministic log of fixed-width text records, e.g.
    //! `000123 t=08:30:45 s3 T=+21.53C RH=45.2% P=1013.25hPa V=3.29V ok`, computed from the
    //! record number so any byte range can be produced without storing the log.

    pub const RECORD_LEN: usize = 64;
    pub const RECORDS: usize = 330;
    /// 21,120 bytes: five full 4 KiB chunks and a partial sixth.
    pub const LEN: usize = RECORD_LEN * RECORDS;

    use core::sync::atomic::{AtomicUsize, Ordering};

    /// A byte of the log to alter (usize::MAX: none): the "source changed" tests.
    static CHANGED: AtomicUsize = AtomicUsize::new(usize::MAX);

    /// From now on, byte `at` of the log reads differently (`None`: as it should).
    pub fn change_byte(at: Option<usize>) {
        CHANGED.store(at.unwrap_or(usize::MAX), Ordering::Relaxed);
    }

    /// Copies the log's bytes from `offset` into `out`; returns how many (0 at the end).
    pub fn read_at(offset: usize, out: &mut [u8]) -> usize {
        let mut n = 0;
        while n < out.len() && offset + n < LEN {
            let rec = record((offset + n) / RECORD_LEN);
            let col = (offset + n) % RECORD_LEN;
            let m = (RECORD_LEN - col).min(out.len() - n);
            out[n..n + m].copy_from_slice(&rec[col..col + m]);
            n += m;
        }
        if let Some(i) = CHANGED.load(Ordering::Relaxed).checked_sub(offset).filter(|&i| i < n) {
            out[i] ^= 0x01;
        }
        n
    }

    /// CRC-32 (zlib) of the whole log.
    pub fn crc32() -> u32 {
        let mut crc = super::CRC32.digest();
        for i in 0..RECORDS {
            crc.update(&record(i));
        }
        crc.finalize()
    }

    fn noise(i: usize) -> u32 {
        // A small integer hash (splitmix-style), so neighbouring records differ a little.
        let mut x = (i as u32).wrapping_mul(0x9E37_79B9) ^ 0x5bd1_e995;
        x ^= x >> 15;
        x = x.wrapping_mul(0x2c1b_3c6d);
        x ^= x >> 12;
        x
    }

    pub fn record(i: usize) -> [u8; RECORD_LEN] {
        let mut w = Line { buf: [b' '; RECORD_LEN], pos: 0 };
        let h = noise(i);
        let sensor = (i % 4) as u32;
        let secs = 8 * 3600 + 15 * i as u32;
        // Temperature in centi-degrees: a slow triangle wave per sensor plus noise.
        let tri = (i as i32 % 120 - 60).abs();
        let temp = match sensor {
            3 => -350 + 12 * tri + (h % 40) as i32, // outdoor: below and above zero
            s => 2050 + 40 * s as i32 + 3 * tri + (h % 25) as i32,
        };
        let rh = 380 + (h >> 8) % 200; // tenths of a percent
        let hpa = 101_100 + (i as u32 * 7) % 400 + (h >> 16) % 30; // centi-hPa
        let volts = 330 - (i as u32 / 50); // centivolts, a slowly draining battery
        w.num(i as u32, 6);
        w.str(" t=");
        w.num(secs / 3600 % 24, 2);
        w.str(":");
        w.num(secs / 60 % 60, 2);
        w.str(":");
        w.num(secs % 60, 2);
        w.str(" s");
        w.num(sensor, 1);
        w.str(" T=");
        w.str(if temp < 0 { "-" } else { "+" });
        w.num(temp.unsigned_abs() / 100, 2);
        w.str(".");
        w.num(temp.unsigned_abs() % 100, 2);
        w.str("C RH=");
        w.num(rh / 10, 2);
        w.str(".");
        w.num(rh % 10, 1);
        w.str("% P=");
        w.num(hpa / 100, 4);
        w.str(".");
        w.num(hpa % 100, 2);
        w.str("hPa V=");
        w.num(volts / 100, 1);
        w.str(".");
        w.num(volts % 100, 2);
        w.str(if temp > 2300 { "V HI" } else { "V ok" });
        assert_eq!(w.pos, RECORD_LEN - 1, "record width");
        w.buf[RECORD_LEN - 1] = b'\n';
        w.buf
    }

    struct Line {
        buf: [u8; RECORD_LEN],
        pos: usize,
    }

    impl Line {
        fn str(&mut self, s: &str) {
            self.buf[self.pos..self.pos + s.len()].copy_from_slice(s.as_bytes());
            self.pos += s.len();
        }

        /// `value` in decimal, zero-padded to exactly `width` digits.
        fn num(&mut self, mut value: u32, width: usize) {
            for k in (0..width).rev() {
                self.buf[self.pos + k] = b'0' + (value % 10) as u8;
                value /= 10;
            }
            self.pos += width;
        }
    }
}
