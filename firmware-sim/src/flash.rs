//! A NOR flash twin (embassy's `MemFlash` idea) with power-cut injection.
//!
//! Semantics of real NOR flash: erased bytes read `0xFF`; programming can only clear bits
//! (the result is `old & new`); erase works on whole sectors; writes are whole words.
//! A power cut stops the device in the middle of an operation: a write programs only some of
//! its words, an erase erases only some sectors and leaves the interrupted one scrambled.

use embedded_storage::nor_flash::{
    ErrorType, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash, check_erase, check_read, check_write,
};

/// Flash errors, including the simulated power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlashError {
    /// Misaligned or out-of-bounds access.
    Bounds(NorFlashErrorKind),
    /// Power was cut during (or before) this operation; the device is off until rebooted.
    PowerCut,
}

impl NorFlashError for FlashError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            Self::Bounds(k) => *k,
            Self::PowerCut => NorFlashErrorKind::Other,
        }
    }
}

/// `SIZE` bytes of flash with `ERASE`-byte sectors and `WRITE`-byte words.
pub struct MemFlash<const SIZE: usize, const ERASE: usize, const WRITE: usize> {
    mem: [u8; SIZE],
    /// Flash operations (writes and erases) that may still complete; `None` = no cut planned.
    budget: Option<u64>,
    /// Operations completed since power-on.
    ops: u64,
    powered: bool,
    /// Drives which part of an interrupted operation lands.
    tear_seed: u64,
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> MemFlash<SIZE, ERASE, WRITE> {
    /// A fully erased flash.
    pub fn new() -> Self {
        Self { mem: [0xFF; SIZE], budget: None, ops: 0, powered: true, tear_seed: 1 }
    }

    /// Plans a power cut: `ops` more operations complete, the next one is torn.
    pub fn cut_power_after(&mut self, ops: u64, tear_seed: u64) {
        self.budget = Some(ops);
        self.tear_seed = tear_seed | 1;
    }

    /// Powers the device back on, with no cut planned. Contents persist.
    pub fn reboot(&mut self) {
        self.budget = None;
        self.powered = true;
        self.ops = 0;
    }

    /// Operations completed since power-on.
    pub fn ops(&self) -> u64 {
        self.ops
    }

    /// Whether the planned power cut happened.
    pub fn power_was_cut(&self) -> bool {
        !self.powered
    }

    /// The raw contents (what an attacker reading the chip would see).
    pub fn contents(&self) -> &[u8] {
        &self.mem
    }

    fn next_tear(&mut self, n: usize) -> usize {
        self.tear_seed ^= self.tear_seed << 13;
        self.tear_seed ^= self.tear_seed >> 7;
        self.tear_seed ^= self.tear_seed << 17;
        (self.tear_seed % (n as u64 + 1)) as usize
    }

    /// Charges one operation; `Some(torn)` when this operation is the one the cut hits.
    fn charge(&mut self) -> Result<bool, FlashError> {
        if !self.powered {
            return Err(FlashError::PowerCut);
        }
        match self.budget {
            Some(0) => {
                self.powered = false;
                Ok(true)
            }
            Some(ref mut b) => {
                *b -= 1;
                self.ops += 1;
                Ok(false)
            }
            None => {
                self.ops += 1;
                Ok(false)
            }
        }
    }
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> Default for MemFlash<SIZE, ERASE, WRITE> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> ErrorType for MemFlash<SIZE, ERASE, WRITE> {
    type Error = FlashError;
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> ReadNorFlash
    for MemFlash<SIZE, ERASE, WRITE>
{
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len()).map_err(FlashError::Bounds)?;
        if !self.powered {
            return Err(FlashError::PowerCut);
        }
        let o = offset as usize;
        bytes.copy_from_slice(&self.mem[o..o + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        SIZE
    }
}

impl<const SIZE: usize, const ERASE: usize, const WRITE: usize> NorFlash for MemFlash<SIZE, ERASE, WRITE> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = ERASE;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), FlashError> {
        check_erase(self, from, to).map_err(FlashError::Bounds)?;
        let torn = self.charge()?;
        let (from, to) = (from as usize, to as usize);
        let sectors = (to - from) / ERASE;
        let done = if torn { self.next_tear(sectors) } else { sectors };
        self.mem[from..from + done * ERASE].fill(0xFF);
        if torn {
            // The interrupted sector is neither old nor erased.
            if done < sectors {
                let start = from + done * ERASE;
                for i in start..start + ERASE {
                    let noise = self.next_tear(255) as u8;
                    self.mem[i] &= noise | 0x0F;
                }
            }
            return Err(FlashError::PowerCut);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), FlashError> {
        check_write(self, offset, bytes.len()).map_err(FlashError::Bounds)?;
        let torn = self.charge()?;
        let words = bytes.len() / WRITE;
        let done = if torn { self.next_tear(words) } else { words };
        let o = offset as usize;
        for (m, b) in self.mem[o..o + done * WRITE].iter_mut().zip(bytes) {
            *m &= *b;
        }
        if torn { Err(FlashError::PowerCut) } else { Ok(()) }
    }
}

/// A window `[start, start + len)` of a flash, addressed from 0: one partition.
pub struct Partition<'f, F> {
    flash: &'f mut F,
    start: u32,
    len: u32,
}

impl<'f, F: NorFlash> Partition<'f, F> {
    /// The partition `[start, start + len)`; both must be sector-aligned.
    pub fn new(flash: &'f mut F, start: u32, len: u32) -> Self {
        debug_assert!(
            (start as usize).is_multiple_of(F::ERASE_SIZE) && (len as usize).is_multiple_of(F::ERASE_SIZE)
        );
        Self { flash, start, len }
    }

    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// Whether the partition is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads at a partition offset.
    pub fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), F::Error> {
        self.flash.read(self.start + offset, bytes)
    }

    /// Programs words at a partition offset.
    pub fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), F::Error> {
        self.flash.write(self.start + offset, bytes)
    }

    /// Erases `[from, to)` of the partition.
    pub fn erase(&mut self, from: u32, to: u32) -> Result<(), F::Error> {
        self.flash.erase(self.start + from, self.start + to)
    }

    /// The whole flash, to open another partition on it.
    pub fn flash_mut(&mut self) -> &mut F {
        self.flash
    }
}
