//! Scenario 3: the device receives one file from the host (a configuration or firmware blob)
//! into a flash partition, as client and [`Receiver`], surviving power cuts and broken links.
//!
//! ## Durability
//! The partition of a [`Layout`] holds the blob from offset 0; its CHECKPOINT sectors hold
//! the A/B slots of [`crate::slots`] with the core's checkpoint record, used as the host's
//! receiver uses it (`docs/PROTOCOL.md`, section 7): `header_mac` binds the version being
//! received (BLAKE3 of its name, size, mtime and announced hash), `plain_offset` is the
//! durable prefix and `source_hash` that prefix's BLAKE3.
//!
//! - Before the first byte of a new version is erased, a progress record at offset 0 replaces
//!   whatever the newest slot said, so a previously valid blob stops being valid *before* it
//!   is overwritten.
//! - A block is one sector: erase, program, then (every [`CHECKPOINT_EVERY_BLOCKS`]) a
//!   progress record that covers only blocks already programmed.
//! - On the next `File` for the same version, the prefix is re-read from flash and must hash
//!   to the record before the device answers `Need { resume_from: prefix }`.
//! - At `End`, the whole blob is read back from flash and hashed: only if it equals the
//!   sender's BLAKE3 is a record flagged complete written. [`valid_blob`] trusts nothing else.
//!
//! RAM: the [`SyncBuffers`] (lent), the `Receiver` (1,936 bytes on thumbv7em), a BLAKE3 state
//! and a 256-byte input buffer; the decoder for compressed blocks is lent too (`CoreDecoder`,
//! 10,500 bytes, decodes store, LZ4 and DEFLATE; a host sending zstd is refused).

use embedded_storage::nor_flash::NorFlash;
use keepsync_core::checkpoint::Checkpoint;
use keepsync_core::compress::{Codec, DecodeError, Decoder};
use keepsync_core::crypto::SecretKey;
use keepsync_core::sync::{CloseCode, Direction, Have, Kind, ProtoError, Receiver, ReceiverEvent, Status};

use crate::device::{DeviceError, Layout, Trng};
use crate::flash::{FlashError, Partition};
use crate::net::{
    BLOCK, BLOCK_LOG2, Broken, Connections, SyncBuffers, Transport, Wire, dial, with_reconnects,
};
use crate::slots::{FLAG_COMPLETE, newest_slot, write_slot};

/// Record durable progress after this many received blocks: each record costs a sector erase,
/// and a power cut costs at most this many blocks.
pub const CHECKPOINT_EVERY_BLOCKS: u64 = 2;

/// A blob the device holds and has verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidBlob {
    /// Bytes, from partition offset 0.
    pub size: u64,
    /// Its BLAKE3, as verified when it was received.
    pub hash: [u8; 32],
}

/// What [`receive_blob`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct BlobReport {
    /// Connections made, and how they broke.
    pub connections: Connections,
    /// The largest durable prefix a connection resumed from (`None`: every one began at 0).
    pub resumed_from: Option<u64>,
    /// Blocks programmed into flash (re-received blocks count again).
    pub blocks_written: u32,
    /// The blob was already valid: the host's offer was answered with `Skip`.
    pub already_valid: bool,
    /// The blob now valid.
    pub blob: Option<ValidBlob>,
}

fn checkpoint_partition<'f, F: NorFlash>(flash: &'f mut F, layout: &Layout) -> Partition<'f, F> {
    Partition::new(flash, layout.checkpoint, 2 * F::ERASE_SIZE as u32)
}

/// The blob the CHECKPOINT slots vouch for, if the newest record marks one complete.
pub fn valid_blob<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
) -> Result<Option<ValidBlob>, DeviceError> {
    let newest = newest_slot(&mut checkpoint_partition(flash, layout))?;
    Ok(newest.and_then(|(_, _, flags, ckpt)| {
        (flags & FLAG_COMPLETE != 0).then_some(ValidBlob { size: ckpt.plain_offset, hash: ckpt.source_hash })
    }))
}

/// Asks the host for `path` and receives it into `layout`'s partition, resuming after power
/// cuts (call again after a reboot) and broken connections (reconnects with a fresh random).
#[allow(clippy::too_many_arguments)] // the board's parts, each lent separately
pub fn receive_blob<F: NorFlash<Error = FlashError>, T: Transport, D: Decoder>(
    flash: &mut F,
    layout: &Layout,
    path: &str,
    psk: &SecretKey,
    trng_seed: u64,
    t: &mut T,
    buffers: &mut SyncBuffers,
    decoder: &mut D,
) -> Result<BlobReport, DeviceError> {
    // A block must cover whole sectors: it is erased, then programmed.
    if !BLOCK.is_multiple_of(F::ERASE_SIZE) || !BLOCK.is_multiple_of(F::WRITE_SIZE) {
        return Err(DeviceError::Flash);
    }
    let mut trng = Trng::new(trng_seed);
    let mut report = BlobReport::default();
    report.connections = with_reconnects(t, |t, progressed| {
        let before = report.blocks_written;
        let result = connection(flash, layout, path, psk, &mut trng, t, buffers, decoder, &mut report);
        *progressed = report.blocks_written != before || report.blob.is_some();
        result
    })?;
    Ok(report)
}

/// An owned copy of what an event carried (events borrow the receive buffer).
enum Input {
    File { id: u32, regular: bool, size: u64, binding: [u8; 32], announced: Option<[u8; 32]> },
    Data { id: u32, offset: u64, len: usize, decoded: Result<(), DecodeError> },
    End { id: u32, hash: [u8; 32] },
    Finished,
    Closed,
}

/// The version being received on this connection.
struct Incoming {
    id: u32,
    size: u64,
    binding: [u8; 32],
    announced: Option<[u8; 32]>,
    written: u64,
    hasher: blake3::Hasher,
    seq: u32,
}

/// A reply waiting for room in the send queue.
#[derive(Clone, Copy)]
enum Reply {
    Have(u32, Have),
    Done(u32, Status),
}

fn binding(path: &str, size: u64, mtime: i64, hash: Option<[u8; 32]>) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(b"keepsync device blob v1\0");
    h.update(&(path.len() as u64).to_le_bytes());
    h.update(path.as_bytes());
    h.update(&size.to_le_bytes());
    h.update(&mtime.to_le_bytes());
    h.update(&hash.unwrap_or([0; 32]));
    *h.finalize().as_bytes()
}

fn decode<D: Decoder>(decoder: &mut D, codec: u8, body: &[u8], out: &mut [u8]) -> Result<(), DecodeError> {
    match Codec::from_id(codec) {
        Some(Codec::Store) if body.len() == out.len() => {
            out.copy_from_slice(body);
            Ok(())
        }
        Some(Codec::Store) => Err(DecodeError::Corrupt),
        Some(codec) => decoder.decode(codec, body, out),
        None => Err(DecodeError::Unsupported),
    }
}

#[allow(clippy::too_many_arguments)] // one connection's context; kept flat to borrow parts
fn connection<F: NorFlash<Error = FlashError>, T: Transport, D: Decoder>(
    flash: &mut F,
    layout: &Layout,
    path: &str,
    psk: &SecretKey,
    trng: &mut Trng,
    t: &mut T,
    buffers: &mut SyncBuffers,
    decoder: &mut D,
    report: &mut BlobReport,
) -> Result<(), Broken> {
    let SyncBuffers { rx, tx, block } = buffers;
    let mut wire = Wire::new();
    let conn = dial(t, &mut wire, (&mut rx[..], &mut tx[..]), psk, trng, path, Direction::Pull)?;
    let mut receiver = Receiver::new(conn);
    let mut incoming: Option<Incoming> = None;
    let mut reply: Option<Reply> = None;
    loop {
        let now = t.now();
        // One event at a time, and only with no reply waiting: every event may need one.
        while reply.is_none() {
            let Some(event) = receiver.poll_event(now) else { break };
            let input = match event? {
                ReceiverEvent::File(meta) => Input::File {
                    id: meta.id,
                    // The device takes its blob whole: it never asks for parts (its `Open` has
                    // no session), and refuses a part a server offers anyway.
                    regular: meta.kind == Kind::File && meta.layout == keepsync_core::sync::Layout::Whole,
                    size: meta.size,
                    binding: binding(meta.path, meta.size, meta.mtime, meta.hash),
                    announced: meta.hash,
                },
                ReceiverEvent::Data { id, offset, codec, raw_len, body } => {
                    let len = raw_len as usize; // at most one block: the receiver checked
                    block[len..].fill(0xFF); // padding of the last word programs nothing
                    Input::Data { id, offset, len, decoded: decode(decoder, codec, body, &mut block[..len]) }
                }
                ReceiverEvent::End { id, hash } => Input::End { id, hash },
                ReceiverEvent::Finished => Input::Finished,
                ReceiverEvent::Closed(_) => Input::Closed,
            };
            match input {
                Input::File { id, regular, size, binding, announced } => {
                    if !regular || size > u64::from(layout.data_len) || incoming.is_some() {
                        reply = Some(Reply::Done(id, Status::Rejected));
                        continue;
                    }
                    let (inc, skip) = start(flash, layout, id, size, binding, announced, block)?;
                    if skip {
                        report.already_valid = report.blocks_written == 0;
                        report.blob = valid_blob(flash, layout).map_err(Broken::Device)?;
                        reply = Some(Reply::Have(id, Have::Skip));
                        continue;
                    }
                    if inc.written > 0 {
                        report.resumed_from = report.resumed_from.max(Some(inc.written));
                    }
                    let need = Have::Need { resume_from: inc.written, block_log2: BLOCK_LOG2, blocks: 0 };
                    reply = Some(Reply::Have(id, need));
                    incoming = Some(inc);
                }
                Input::Data { id, offset, len, decoded } => {
                    let Some(inc) = incoming.as_mut().filter(|inc| inc.id == id) else {
                        return Err(Broken::Proto(ProtoError::Unexpected(
                            "data for a file this device refused",
                        )));
                    };
                    if decoded.is_err() {
                        // Authenticated but undecodable, or a codec this build lacks: retrying
                        // would fail the same way.
                        receiver.close(now, CloseCode::Refused);
                        wire.flush(&mut receiver, t);
                        return Err(Broken::Device(DeviceError::Refused));
                    }
                    if offset != inc.written {
                        // No old-copy hashes were sent, so no block may be skipped.
                        return Err(Broken::Proto(ProtoError::Unexpected("a gap in the data")));
                    }
                    write_block(flash, layout, inc, block, len)?;
                    report.blocks_written += 1;
                }
                Input::End { id, hash } => {
                    let Some(inc) = incoming.take().filter(|inc| inc.id == id) else {
                        return Err(Broken::Proto(ProtoError::Unexpected(
                            "End for a file this device refused",
                        )));
                    };
                    let status = finish(flash, layout, inc, hash, block)?;
                    report.blob = valid_blob(flash, layout).map_err(Broken::Device)?;
                    reply = Some(Reply::Done(id, status));
                }
                Input::Finished => {
                    receiver.close(now, CloseCode::Done);
                    wire.flush(&mut receiver, t);
                    return if report.blob.is_some() {
                        Ok(())
                    } else {
                        Err(Broken::Device(DeviceError::Refused))
                    };
                }
                Input::Closed => return Err(Broken::Proto(ProtoError::Closed)),
            }
        }
        let mut queued = false;
        if let Some(r) = reply {
            let sent = match r {
                Reply::Have(id, have) => receiver.have(now, id, have),
                Reply::Done(id, status) => receiver.done(now, id, status),
            };
            match sent {
                Ok(()) => {
                    reply = None;
                    queued = true;
                }
                Err(keepsync_core::sync::SendError::Blocked) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let moved = wire.pump(&mut receiver, t)?;
        if !moved && !queued {
            wire.idle(&mut receiver, t)?;
        }
    }
}

/// Decides how to receive version `binding`: skip it (already valid), resume at a verified
/// durable prefix, or start over (recording that before anything is erased).
fn start<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
    id: u32,
    size: u64,
    binding: [u8; 32],
    announced: Option<[u8; 32]>,
    block: &mut [u8; BLOCK],
) -> Result<(Incoming, bool), Broken> {
    let newest = newest_slot(&mut checkpoint_partition(flash, layout))?;
    let seq = newest.as_ref().map_or(0, |(_, seq, _, _)| *seq);
    let mut inc = Incoming { id, size, binding, announced, written: 0, hasher: blake3::Hasher::new(), seq };
    if let Some((_, _, flags, ckpt)) = newest
        && ckpt.header_mac == binding
        && ckpt.plain_offset <= size
        && (ckpt.plain_offset.is_multiple_of(BLOCK as u64) || ckpt.plain_offset == size)
    {
        let mut hasher = blake3::Hasher::new();
        let mut data = Partition::new(flash, layout.data, layout.data_len);
        let mut offset = 0;
        while offset < ckpt.plain_offset {
            let n = (ckpt.plain_offset - offset).min(BLOCK as u64) as usize;
            data.read(offset as u32, &mut block[..n])?;
            hasher.update(&block[..n]);
            offset += n as u64;
        }
        if *hasher.finalize().as_bytes() == ckpt.source_hash {
            if flags & FLAG_COMPLETE != 0 {
                return Ok((inc, true));
            }
            inc.written = ckpt.plain_offset;
            inc.hasher = hasher;
            return Ok((inc, false));
        }
    }
    // Starting over: this record supersedes a valid blob's before its bytes are touched.
    checkpoint(flash, layout, &mut inc, 0)?;
    Ok((inc, false))
}

/// Writes the progress (or, with `FLAG_COMPLETE`, the verdict) of `inc` into the next slot.
fn checkpoint<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
    inc: &mut Incoming,
    flags: u32,
) -> Result<(), FlashError> {
    inc.seq += 1;
    let record = Checkpoint {
        header_mac: inc.binding,
        chunks_done: inc.written.div_ceil(BLOCK as u64),
        plain_offset: inc.written,
        sealed_offset: inc.size,
        source_hash: *inc.hasher.finalize().as_bytes(),
    };
    write_slot(&mut checkpoint_partition(flash, layout), inc.seq, flags, &record)
}

/// Erases the sectors of the block's place and programs its first `len` bytes; records
/// progress every few blocks.
fn write_block<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
    inc: &mut Incoming,
    block: &[u8; BLOCK],
    len: usize,
) -> Result<(), Broken> {
    if inc.written + len as u64 > inc.size {
        return Err(Broken::Proto(ProtoError::Unexpected("data past the announced size")));
    }
    let at = inc.written as u32;
    let mut data = Partition::new(flash, layout.data, layout.data_len);
    let end = (at + BLOCK as u32).min(layout.data_len);
    data.erase(at, end)?;
    // Whole words: the block's tail past `len` was filled with 0xFF, which programs nothing.
    data.write(at, &block[..len.next_multiple_of(F::WRITE_SIZE)])?;
    inc.hasher.update(&block[..len]);
    inc.written += len as u64;
    if (inc.written / BLOCK as u64).is_multiple_of(CHECKPOINT_EVERY_BLOCKS) && inc.written < inc.size {
        checkpoint(flash, layout, inc, 0)?;
    }
    Ok(())
}

/// Verifies the whole blob as it is in flash against the sender's BLAKE3 (and the hash its
/// `File` announced); marks it valid only then. A mismatch drops the progress.
fn finish<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
    mut inc: Incoming,
    hash: [u8; 32],
    block: &mut [u8; BLOCK],
) -> Result<Status, Broken> {
    let mut hasher = blake3::Hasher::new();
    let mut data = Partition::new(flash, layout.data, layout.data_len);
    let mut offset = 0;
    while offset < inc.written {
        let n = (inc.written - offset).min(BLOCK as u64) as usize;
        data.read(offset as u32, &mut block[..n])?;
        hasher.update(&block[..n]);
        offset += n as u64;
    }
    let in_flash = *hasher.finalize().as_bytes();
    if inc.written == inc.size && in_flash == hash && inc.announced.is_none_or(|a| a == hash) {
        inc.hasher = hasher;
        checkpoint(flash, layout, &mut inc, FLAG_COMPLETE)?;
        return Ok(Status::Ok);
    }
    inc.written = 0;
    inc.hasher = blake3::Hasher::new();
    checkpoint(flash, layout, &mut inc, 0)?;
    Ok(Status::HashMismatch)
}
