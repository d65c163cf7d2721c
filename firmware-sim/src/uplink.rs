//! Scenario 2: the device sends files from flash (its finished containers) to the host over
//! the sync protocol, as client and [`Sender`].
//!
//! One file at a time: offer it with its BLAKE3 (so a host that has it answers `Skip`), stream
//! 4 KiB blocks from the receiver's `resume_from` (its durable prefix, so a broken link costs
//! at most the blocks in flight), end with the whole-file BLAKE3, wait for `Done`. Blocks are
//! sent stored: a container is ciphertext, which does not compress, and skipping LZ4 keeps its
//! 16 KiB hash table out of RAM. The receiver's old-copy hashes are not used either: a new
//! container has a new salt, so none of its blocks equals an old one.
//!
//! RAM: the [`SyncBuffers`] (12,456 bytes, lent), the `Sender` (1,952 bytes on thumbv7em), a
//! 256-byte input buffer and a BLAKE3 state on the stack.

use embedded_storage::nor_flash::ReadNorFlash;
use keepsync_core::crypto::SecretKey;
use keepsync_core::sync::{
    CloseCode, Direction, FileMeta, Have, Kind, Layout, ProtoError, SendError, Sender, SenderEvent, Status,
};

use crate::device::{DeviceError, Trng};
use crate::flash::FlashError;
use crate::net::{
    BLOCK, BLOCK_LOG2, Broken, Connections, SyncBuffers, Transport, Wire, dial, with_reconnects,
};

/// Most files one upload call can send (they are tracked in a bit mask).
pub const MAX_UPLOAD_FILES: usize = 32;
/// Most times one file is sent again after the host found its assembled copy wrong.
const MAX_HASH_MISMATCHES: u32 = 3;

/// A file in flash to upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlashFile<'a> {
    /// Name on the host, relative to the tree the device opens.
    pub path: &'a str,
    /// Absolute flash offset of its first byte.
    pub start: u32,
    /// Length in bytes.
    pub len: u32,
    /// Modification time to report (seconds since the Unix epoch).
    pub mtime: i64,
}

/// What an upload did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct UploadReport {
    /// Connections made, and how they broke.
    pub connections: Connections,
    /// Data blocks sent over all connections (resent blocks count again).
    pub blocks_sent: u32,
    /// Files the host confirmed (`Done(Ok)`) or already had (`Skip`).
    pub files_done: u32,
    /// Files the host already had.
    pub files_skipped: u32,
}

/// Sends `files` to the host tree `tree` (it only reads `flash`), reconnecting with a fresh random until every file is
/// confirmed. `trng_seed` seeds the simulated TRNG (a hardware RNG on a board).
pub fn upload<F: ReadNorFlash<Error = FlashError>, T: Transport>(
    flash: &mut F,
    files: &[FlashFile<'_>],
    tree: &str,
    psk: &SecretKey,
    trng_seed: u64,
    t: &mut T,
    buffers: &mut SyncBuffers,
) -> Result<UploadReport, DeviceError> {
    if files.len() > MAX_UPLOAD_FILES {
        return Err(DeviceError::Refused);
    }
    let mut trng = Trng::new(trng_seed);
    let mut report = UploadReport::default();
    let mut state = Progress { done: 0, mismatches: 0 };
    report.connections = with_reconnects(t, |t, progressed| {
        let before = (state.done, report.blocks_sent);
        let result = connection(flash, files, tree, psk, &mut trng, t, buffers, &mut state, &mut report);
        *progressed = (state.done, report.blocks_sent) != before;
        result
    })?;
    Ok(report)
}

/// What survives from one connection to the next.
struct Progress {
    /// Bit `i`: file `i` is confirmed.
    done: u32,
    mismatches: u32,
}

/// The file being sent on this connection.
#[derive(Clone, Copy)]
struct Current {
    index: usize,
    id: u32,
    hash: [u8; 32],
    /// Next offset to send, once the receiver said where to start.
    next: Option<u64>,
    /// Hashes of the receiver's old copy still to arrive before data may flow.
    hashes_pending: bool,
    ended: bool,
}

#[allow(clippy::too_many_arguments)] // one connection's context; kept flat to borrow parts
fn connection<F: ReadNorFlash<Error = FlashError>, T: Transport>(
    flash: &mut F,
    files: &[FlashFile<'_>],
    tree: &str,
    psk: &SecretKey,
    trng: &mut Trng,
    t: &mut T,
    buffers: &mut SyncBuffers,
    state: &mut Progress,
    report: &mut UploadReport,
) -> Result<(), Broken> {
    let SyncBuffers { rx, tx, block } = buffers;
    let mut wire = Wire::new();
    let conn = dial(t, &mut wire, (&mut rx[..], &mut tx[..]), psk, trng, tree, Direction::Push)?;
    let mut sender = Sender::new(conn);
    let all = if files.len() == MAX_UPLOAD_FILES { u32::MAX } else { (1 << files.len()) - 1 };
    let mut current: Option<Current> = None;
    let mut next_id = 0u32;
    let mut finished = false;
    // The hash of the file about to be offered: kept while the send queue is full, so a
    // blocked offer does not re-read the whole file from flash.
    let mut hashed: Option<(usize, [u8; 32])> = None;
    loop {
        let now = t.now();
        while let Some(event) = sender.poll_event(now) {
            let Some(cur) = current.as_mut() else {
                match event? {
                    SenderEvent::Closed(CloseCode::Done) if finished => return Ok(()),
                    _ => return Err(Broken::Proto(ProtoError::Closed)),
                }
            };
            match event? {
                // Only after Finished, which is sent with no file current; the device never
                // asks for deletions anyway.
                SenderEvent::Deleted(_) => {}
                SenderEvent::Have { have: Have::Skip, .. } => {
                    state.done |= 1 << cur.index;
                    report.files_done += 1;
                    report.files_skipped += 1;
                    current = None;
                }
                SenderEvent::Have { have: Have::Need { resume_from, block_log2, blocks }, .. } => {
                    // The block buffer and the frames hold 4 KiB: a larger block is refused.
                    if block_log2 > BLOCK_LOG2 {
                        sender.close(now, CloseCode::Refused);
                        wire.flush(&mut sender, t);
                        return Err(Broken::Device(DeviceError::Refused));
                    }
                    cur.next = Some(resume_from);
                    cur.hashes_pending = blocks > 0;
                }
                SenderEvent::Hashes { complete, .. } => cur.hashes_pending = !complete,
                SenderEvent::Done { status: Status::Ok, .. } => {
                    state.done |= 1 << cur.index;
                    report.files_done += 1;
                    current = None;
                }
                SenderEvent::Done { status: Status::HashMismatch, .. }
                    if state.mismatches < MAX_HASH_MISMATCHES =>
                {
                    // The receiver dropped a partial from another version; offer it again,
                    // hashed afresh.
                    state.mismatches += 1;
                    current = None;
                    hashed = None;
                }
                SenderEvent::Done { .. } => return Err(Broken::Device(DeviceError::Refused)),
                SenderEvent::Closed(_) => return Err(Broken::Proto(ProtoError::Closed)),
            }
        }
        let now = t.now();
        let mut queued = false;
        match current.as_mut() {
            None => {
                if let Some(index) = (0..files.len()).find(|i| state.done & (1 << i) == 0) {
                    let file = &files[index];
                    let hash = match hashed {
                        Some((i, hash)) if i == index => hash,
                        _ => hash_file(flash, file, block)?,
                    };
                    hashed = Some((index, hash));
                    let meta = FileMeta {
                        id: next_id,
                        path: file.path,
                        kind: Kind::File,
                        size: u64::from(file.len),
                        mtime: file.mtime,
                        mtime_nsec: 0,
                        mode: 0o600,
                        target: "",
                        hash: Some(hash),
                        // The content's hash is the device's identity of this version.
                        version: version_of(&hash),
                        layout: Layout::Whole,
                    };
                    match sender.offer(now, &meta) {
                        Ok(()) => {
                            current = Some(Current {
                                index,
                                id: next_id,
                                hash,
                                next: None,
                                hashes_pending: false,
                                ended: false,
                            });
                            next_id += 1;
                            queued = true;
                        }
                        Err(SendError::Blocked) => {}
                        Err(e) => return Err(e.into()),
                    }
                } else if state.done == all && !finished {
                    match sender.finish(now) {
                        Ok(()) => finished = true,
                        Err(SendError::Blocked) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Some(cur) if !cur.hashes_pending && !cur.ended => {
                if let Some(offset) = cur.next {
                    let file = &files[cur.index];
                    if offset < u64::from(file.len) {
                        let n = (u64::from(file.len) - offset).min(BLOCK as u64) as usize;
                        flash.read(file.start + offset as u32, &mut block[..n])?;
                        match sender.send_data(now, cur.id, offset, 0, n as u32, &block[..n]) {
                            Ok(()) => {
                                cur.next = Some(offset + n as u64);
                                report.blocks_sent += 1;
                                queued = true;
                            }
                            Err(SendError::Blocked) => {}
                            Err(e) => return Err(e.into()),
                        }
                    } else {
                        match sender.end_file(now, cur.id, cur.hash) {
                            Ok(()) => {
                                cur.ended = true;
                                queued = true;
                            }
                            Err(SendError::Blocked) => {}
                            Err(e) => return Err(e.into()),
                        }
                    }
                }
            }
            Some(_) => {}
        }
        let moved = wire.pump(&mut sender, t)?;
        if !moved && !queued {
            wire.idle(&mut sender, t)?;
        }
    }
}

/// BLAKE3 of a file in flash, read through the block buffer.
fn hash_file<F: ReadNorFlash<Error = FlashError>>(
    flash: &mut F,
    file: &FlashFile<'_>,
    block: &mut [u8; BLOCK],
) -> Result<[u8; 32], FlashError> {
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0;
    while offset < file.len {
        let n = (file.len - offset).min(BLOCK as u32);
        flash.read(file.start + offset, &mut block[..n as usize])?;
        hasher.update(&block[..n as usize]);
        offset += n;
    }
    Ok(*hasher.finalize().as_bytes())
}

/// The identity of a version of a file's content that the receiver keys its partials by: the
/// first half of the content's BLAKE3, which a device knows before it sends anything.
pub fn version_of(hash: &[u8; 32]) -> [u8; 16] {
    let mut v = [0u8; 16];
    v.copy_from_slice(&hash[..16]);
    v
}
