//! The A/B slots of a CHECKPOINT partition (two sectors), shared by every role that keeps
//! durable progress: packing a container (`device`) and receiving a file (`downlink`).
//!
//! A slot is `"KSSL" | seq u32 | flags u32 | len u32 | checkpoint record (postcard + CRC-32C)`,
//! padded to whole words. A new record goes into the slot *not* holding the newest one, so a
//! power cut while writing it leaves the previous one intact; the newest slot whose record
//! decodes wins. Bit 0 of `flags` marks the work complete.

use embedded_storage::nor_flash::NorFlash;
use keepsync_core::checkpoint::Checkpoint;

use crate::flash::{FlashError, Partition};

const SLOT_MAGIC: [u8; 4] = *b"KSSL";
const SLOT_HEADER: usize = 16;
const SLOT_BYTES: usize = SLOT_HEADER + Checkpoint::MAX_ENCODED_LEN;
/// `flags` bit: the work the record describes is complete.
pub(crate) const FLAG_COMPLETE: u32 = 1;

/// The newest valid checkpoint slot: (slot index, seq, flags, checkpoint).
pub(crate) fn newest_slot<F: NorFlash<Error = FlashError>>(
    part: &mut Partition<'_, F>,
) -> Result<Option<(u32, u32, u32, Checkpoint)>, FlashError> {
    let mut best = None;
    for slot in 0..2u32 {
        let mut buf = [0u8; SLOT_BYTES];
        part.read(slot * F::ERASE_SIZE as u32, &mut buf)?;
        if buf[..4] != SLOT_MAGIC {
            continue;
        }
        let seq = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]);
        let flags = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]);
        let len = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]) as usize;
        if len > Checkpoint::MAX_ENCODED_LEN {
            continue;
        }
        let Ok(ckpt) = Checkpoint::decode(&buf[SLOT_HEADER..SLOT_HEADER + len]) else { continue };
        if best.as_ref().is_none_or(|(_, s, _, _)| seq > *s) {
            best = Some((slot, seq, flags, ckpt));
        }
    }
    Ok(best)
}

/// Writes a checkpoint into the slot that does not hold the newest one.
pub(crate) fn write_slot<F: NorFlash<Error = FlashError>>(
    part: &mut Partition<'_, F>,
    seq: u32,
    flags: u32,
    ckpt: &Checkpoint,
) -> Result<(), FlashError> {
    let newest = newest_slot(part)?;
    let slot = match newest {
        Some((s, _, _, _)) => 1 - s,
        None => 0,
    };
    let sector = F::ERASE_SIZE as u32;
    part.erase(slot * sector, (slot + 1) * sector)?;
    let mut buf = [0xFFu8; SLOT_BYTES + 8];
    buf[..4].copy_from_slice(&SLOT_MAGIC);
    buf[4..8].copy_from_slice(&seq.to_le_bytes());
    buf[8..12].copy_from_slice(&flags.to_le_bytes());
    let mut rec = [0u8; Checkpoint::MAX_ENCODED_LEN];
    let bytes = ckpt.encode(&mut rec).expect("buffer is MAX_ENCODED_LEN");
    buf[12..16].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    buf[SLOT_HEADER..SLOT_HEADER + bytes.len()].copy_from_slice(bytes);
    let len = (SLOT_HEADER + bytes.len()).next_multiple_of(F::WRITE_SIZE);
    part.write(slot * sector, &buf[..len])
}
