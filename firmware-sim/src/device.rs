//! The device: packs a sensor log into a container in the DATA partition, checkpoints into
//! the CHECKPOINT partition, and resumes after a power cut.
//!
//! Everything here is what firmware would run: `keepsync-core` state machines, the packer's
//! RAM lent by the caller ([`PackRam`], statics on a board), small fixed buffers on the stack,
//! a NOR flash behind `embedded-storage`. No allocator.
//!
//! ## Flash layout
//! - CHECKPOINT: two sectors, slot A and slot B. A slot is `"KSSL" | seq u32 | flags u32 |
//!   len u32 | checkpoint record (postcard + CRC-32C)`, padded to whole words. A new
//!   checkpoint goes into the slot *not* holding the newest one, so a cut while writing it
//!   leaves the previous one intact. The newest valid slot wins; bit 0 of `flags` marks the
//!   container complete.
//! - DATA: the container, from offset 0.
//!
//! ## Resume without nonce reuse on NOR flash
//! Flash cannot be overwritten without erasing a whole sector, and a crashed run may have
//! written chunks past its last checkpoint. The resumed run re-seals those chunks and writes
//! word by word, comparing first: a word equal to what is there is skipped, an erased word is
//! programmed, and any other word means the crashed run sealed *different* plaintext under
//! these keys (the source changed): the device then starts a new container with a fresh salt,
//! without ever programming the differing ciphertext. A checkpoint is recorded only when all
//! output is in flash (the word staging buffer is empty), after the data it covers.

use embedded_storage::nor_flash::NorFlash;
use keepsync_core::budget::{HEADER_LEN, packer_workspace_len};
use keepsync_core::checkpoint::{Checkpoint, SourceHasher};
use keepsync_core::compress::{Codec, Lz4Encoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, RustCryptoAesGcm, SecretKey};
use keepsync_core::stream::{Packer, ResumePoint};
use keepsync_core::wire::{Header, HeaderRepr, KeySource};

use crate::flash::{FlashError, Partition};
use crate::slots::{FLAG_COMPLETE, newest_slot, write_slot};

/// Chunk size on the device: 4 KiB (the smallest, for the smallest RAM).
pub const CHUNK_LOG2: u8 = 12;
/// Record a checkpoint after at least this many new chunks.
pub const CHECKPOINT_EVERY_CHUNKS: u64 = 2;
/// Word staging buffer: output is written in whole flash words.
const STAGE: usize = 256;
/// The packer's workspace at [`CHUNK_LOG2`]: 8,649 bytes on a 32-bit target.
pub const PACK_WORKSPACE: usize = packer_workspace_len(1 << CHUNK_LOG2);

/// The RAM packing borrows: the workspace and the LZ4 encoder (16 KiB of hash table), about
/// 25 KiB together. Lend them from statics: on the stack they would be most of a small
/// device's RAM, and the `Packer` borrows them rather than holding them, so it stays small
/// (docs/EMBEDDED.md, "Keep the codec state out of the state objects").
pub struct PackRam<'a> {
    /// The packer's workspace.
    pub workspace: &'a mut [u8; PACK_WORKSPACE],
    /// The encoder's state.
    pub lz4: &'a mut Lz4Encoder,
}

/// Where the device's plaintext comes from (a sensor ring buffer in a real device). It must
/// be re-readable from any offset after a reboot.
pub trait Source {
    /// Total bytes to pack.
    fn len(&self) -> u64;
    /// Whether there is nothing to pack.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Fills `buf` with the bytes at `offset`.
    fn read(&self, offset: u64, buf: &mut [u8]);
}

/// Partition plan (sector-aligned offsets into the flash), as in `memory-x/`.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// CHECKPOINT partition start (two sectors).
    pub checkpoint: u32,
    /// DATA partition start.
    pub data: u32,
    /// DATA partition length.
    pub data_len: u32,
}

/// Why a boot did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceError {
    /// Power was cut; reboot and call [`boot_and_pack`] again.
    PowerCut,
    /// The container does not fit the DATA partition.
    DataFull,
    /// A flash access was out of bounds (a layout bug).
    Flash,
    /// The random number generator returned the salt of the container being replaced: it is
    /// broken, and using it would reuse nonces. Nothing was written.
    RngFailure,
    /// The host could not be reached, or every connection broke before making progress,
    /// [`MAX_FRUITLESS_CONNECTIONS`](crate::net::MAX_FRUITLESS_CONNECTIONS) times in a row.
    LinkDown,
    /// The host refused the transfer (a path it does not serve, a block size or codec this
    /// device does not support, a file larger than its partition).
    Refused,
}

impl From<FlashError> for DeviceError {
    fn from(e: FlashError) -> Self {
        match e {
            FlashError::PowerCut => Self::PowerCut,
            FlashError::Bounds(_) => Self::Flash,
        }
    }
}

/// What a completed boot did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Length of the finished container at DATA offset 0.
    pub container_len: u64,
    /// Plaintext offset this boot resumed at (`None`: started a container, or found it done).
    pub resumed_at: Option<u64>,
    /// This boot started a new container (fresh salt): no usable checkpoint, or the source
    /// no longer matched what was already written.
    pub started_fresh: bool,
    /// The container was already complete at boot.
    pub already_complete: bool,
}

/// Internal stop reasons.
enum Stop {
    Device(DeviceError),
    /// A word in flash differs from the re-sealed one: the source changed.
    SourceChanged,
}

impl From<FlashError> for Stop {
    fn from(e: FlashError) -> Self {
        Self::Device(e.into())
    }
}

/// Appends container bytes to DATA in whole words, comparing with what is already there.
struct DataWriter<'p, 'f, F> {
    part: &'p mut Partition<'f, F>,
    /// Bytes programmed (or found identical), always whole words.
    flushed: u32,
    stage: [u8; STAGE],
    staged: usize,
}

impl<F: NorFlash<Error = FlashError>> DataWriter<'_, '_, F> {
    fn put(&mut self, mut bytes: &[u8]) -> Result<(), Stop> {
        while !bytes.is_empty() {
            let n = bytes.len().min(STAGE - self.staged);
            self.stage[self.staged..self.staged + n].copy_from_slice(&bytes[..n]);
            self.staged += n;
            bytes = &bytes[n..];
            let words = self.staged / F::WRITE_SIZE * F::WRITE_SIZE;
            self.program(words)?;
        }
        Ok(())
    }

    /// Programs the first `len` staged bytes (whole words), comparing before writing.
    fn program(&mut self, len: usize) -> Result<(), Stop> {
        if len == 0 {
            return Ok(());
        }
        if self.flushed as usize + len > self.part.len() as usize {
            return Err(Stop::Device(DeviceError::DataFull));
        }
        let mut there = [0u8; STAGE];
        self.part.read(self.flushed, &mut there[..len])?;
        let w = F::WRITE_SIZE;
        let mut run: Option<usize> = None; // start of a run of words to program
        for i in (0..len).step_by(w).chain(core::iter::once(len)) {
            let program = i < len && there[i..i + w] != self.stage[i..i + w];
            if program && there[i..i + w].iter().any(|&b| b != 0xFF) {
                return Err(Stop::SourceChanged);
            }
            match (program, run) {
                (true, None) => run = Some(i),
                (false, Some(start)) => {
                    self.part.write(self.flushed + start as u32, &self.stage[start..i])?;
                    run = None;
                }
                _ => {}
            }
        }
        self.flushed += len as u32;
        self.stage.copy_within(len..self.staged, 0);
        self.staged -= len;
        Ok(())
    }

    /// Pads the last partial word with `0xFF` (which programs nothing) and writes it.
    fn finish(&mut self) -> Result<u64, Stop> {
        let len = self.flushed as u64 + self.staged as u64;
        let padded = self.staged.next_multiple_of(F::WRITE_SIZE);
        self.stage[self.staged..padded].fill(0xFF);
        self.staged = padded;
        self.program(padded)?;
        Ok(len)
    }
}

/// The packer as the device runs it: codec state borrowed from [`PackRam`].
type DevicePacker<'a> = Packer<'a, RustCryptoAesGcm, &'a mut Lz4Encoder>;

fn drain<F: NorFlash<Error = FlashError>>(
    packer: &mut DevicePacker<'_>,
    out: &mut DataWriter<'_, '_, F>,
) -> Result<(), Stop> {
    loop {
        let bytes = packer.output();
        if bytes.is_empty() {
            return Ok(());
        }
        let n = bytes.len();
        out.put(bytes)?;
        packer.consume(n);
    }
}

/// A tiny PRNG standing in for the device's TRNG (seeded per boot by the simulation).
pub(crate) struct Trng(u64);

impl Trng {
    /// Seeds through splitmix64 so that distinct seeds give distinct streams.
    pub(crate) fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            *b = (self.0 >> 32) as u8;
        }
    }
}

/// One boot of the device: finish the container in DATA, resuming from the newest valid
/// checkpoint when the container and the source still match it.
pub fn boot_and_pack<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
    key: &SecretKey,
    trng_seed: u64,
    source: &impl Source,
    ram: &mut PackRam<'_>,
) -> Result<Report, DeviceError> {
    let mut trng = Trng::new(trng_seed);
    let mut may_resume = true;
    loop {
        match attempt(flash, layout, key, &mut trng, source, may_resume, ram) {
            Ok(report) => return Ok(report),
            // Start a new container (fresh salt) without writing the differing ciphertext.
            Err(Stop::SourceChanged) => may_resume = false,
            Err(Stop::Device(e)) => return Err(e),
        }
    }
}

/// Length of the complete container in DATA, or `None` while there is none (never packed,
/// or a pack was interrupted): what the device may upload.
pub fn finished_container<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
) -> Result<Option<u64>, DeviceError> {
    let sectors = 2 * F::ERASE_SIZE as u32;
    let newest = newest_slot(&mut Partition::new(flash, layout.checkpoint, sectors))?;
    Ok(newest.and_then(|(_, _, flags, ckpt)| (flags & FLAG_COMPLETE != 0).then_some(ckpt.sealed_offset)))
}

fn attempt<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
    key: &SecretKey,
    trng: &mut Trng,
    source: &impl Source,
    may_resume: bool,
    ram: &mut PackRam<'_>,
) -> Result<Report, Stop> {
    let sectors = 2 * F::ERASE_SIZE as u32;
    let newest = newest_slot(&mut Partition::new(flash, layout.checkpoint, sectors))?;
    let seq = newest.as_ref().map_or(0, |(_, s, _, _)| *s);
    if let Some((_, _, flags, ckpt)) = &newest
        && flags & FLAG_COMPLETE != 0
        && may_resume
    {
        return Ok(Report {
            container_len: ckpt.sealed_offset,
            resumed_at: None,
            started_fresh: false,
            already_complete: true,
        });
    }
    let resume = match newest {
        Some((_, _, _, ckpt)) if may_resume => resume_point(flash, layout, key, source, &ckpt)?,
        _ => None,
    };
    let (ws, lz4) = (&mut ram.workspace[..], &mut *ram.lz4);
    let mut data = Partition::new(flash, layout.data, layout.data_len);
    let (mut packer, resumed_at, fresh) = match resume {
        Some((repr, keys, point)) => {
            let at = point.plain_offset;
            let start = point.sealed_offset as u32;
            let p = Packer::resume(&RustCrypto, &keys, &repr, lz4, ws, point);
            (p.expect("workspace sized for the chunk"), Some(at), start)
        }
        None => {
            let mut file_salt = [0u8; 32];
            trng.fill(&mut file_salt);
            // Defense in depth: a TRNG that repeats the replaced container's salt would make
            // every nonce repeat. Refuse before erasing anything.
            let mut old = [0u8; HEADER_LEN];
            data.read(0, &mut old)?;
            if Header::new_checked(&old[..]).and_then(|h| h.parse()).is_ok_and(|h| h.file_salt == file_salt) {
                return Err(Stop::Device(DeviceError::RngFailure));
            }
            data.erase(0, layout.data_len)?;
            let repr = HeaderRepr {
                key_source: KeySource::RawKey,
                chunk_log2: CHUNK_LOG2,
                codec_hint: Codec::Lz4,
                file_salt,
            };
            let keys = FileKeys::derive(key, &file_salt);
            let p = Packer::new(&RustCrypto, &keys, &repr, lz4, ws).map(Packer::track_source);
            (p.expect("workspace sized for the chunk"), None, 0)
        }
    };
    let mut out = DataWriter { part: &mut data, flushed: fresh, stage: [0; STAGE], staged: 0 };
    let mut offset = resumed_at.unwrap_or(0);
    let mut seq = seq;
    let mut last_ckpt_chunks = packer.chunks_sealed();
    let mut buf = [0u8; 256];
    while offset < source.len() {
        let n = (source.len() - offset).min(buf.len() as u64) as usize;
        source.read(offset, &mut buf[..n]);
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let taken = packer.write(rest).expect("packer not finished");
            rest = &rest[taken..];
            drain(&mut packer, &mut out)?;
        }
        offset += n as u64;
        // Checkpoint when enough chunks are durable and no partial word waits in RAM.
        let due = out.staged == 0 && packer.chunks_sealed() >= last_ckpt_chunks + CHECKPOINT_EVERY_CHUNKS;
        // Only build a checkpoint (it finalizes the source hash) when one is due.
        if let Some(ckpt) = due.then(|| packer.checkpoint()).flatten() {
            seq += 1;
            write_slot(&mut Partition::new(out.part.flash_mut(), layout.checkpoint, sectors), seq, 0, &ckpt)?;
            last_ckpt_chunks = packer.chunks_sealed();
        }
    }
    packer.finish();
    while !packer.is_done() {
        drain(&mut packer, &mut out)?;
    }
    let container_len = out.finish()?;
    let done = Checkpoint {
        header_mac: [0; 32],
        chunks_done: packer.chunks_sealed(),
        plain_offset: source.len(),
        sealed_offset: container_len,
        source_hash: [0; 32],
    };
    write_slot(
        &mut Partition::new(out.part.flash_mut(), layout.checkpoint, sectors),
        seq + 1,
        FLAG_COMPLETE,
        &done,
    )?;
    Ok(Report { container_len, resumed_at, started_fresh: resumed_at.is_none(), already_complete: false })
}

/// Checks that the container in DATA is the one `ckpt` describes and that the source's first
/// `plain_offset` bytes are unchanged; returns where to resume.
fn resume_point<F: NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
    key: &SecretKey,
    source: &impl Source,
    ckpt: &Checkpoint,
) -> Result<Option<(HeaderRepr, FileKeys, ResumePoint)>, Stop> {
    let mut header = [0u8; HEADER_LEN];
    Partition::new(flash, layout.data, layout.data_len).read(0, &mut header)?;
    let Ok(repr) = Header::new_checked(&header[..]).and_then(|h| h.parse()) else { return Ok(None) };
    let keys = FileKeys::derive(key, &repr.file_salt);
    let aligned = ckpt.sealed_offset.is_multiple_of(F::WRITE_SIZE as u64);
    if keys.verify_header(&Header::new_unchecked(&header[..])).is_err()
        || header[HEADER_LEN - 32..] != ckpt.header_mac
        || repr.chunk_log2 != CHUNK_LOG2
        || !aligned
        || ckpt.plain_offset > source.len()
    {
        return Ok(None);
    }
    let mut hasher = SourceHasher::new();
    let mut buf = [0u8; 256];
    let mut offset = 0;
    while offset < ckpt.plain_offset {
        let n = (ckpt.plain_offset - offset).min(buf.len() as u64) as usize;
        source.read(offset, &mut buf[..n]);
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    if hasher.digest() != ckpt.source_hash {
        return Ok(None);
    }
    let point = ResumePoint {
        next_index: ckpt.chunks_done,
        plain_offset: ckpt.plain_offset,
        sealed_offset: ckpt.sealed_offset,
        source: hasher,
    };
    Ok(Some((repr, keys, point)))
}
