//! The unpacker: container bytes in (after the header), authenticated plaintext out.

use super::chunk::{OpenedChunk, open_chunk};
use crate::budget::{RECORD_HEADER_LEN, unpacker_workspace_len};
use crate::compress::Decoder;
use crate::crypto::{ChunkCipher, CryptoProvider, FileKeys};
use crate::error::{FormatError, UsageError};
use crate::wire::{HeaderRepr, Record, RecordRepr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    None,
    Record { pos: usize, end: usize },
    Plain { pos: usize, end: usize },
}

/// Turns the chunk records that follow a header back into plaintext.
///
/// It buffers one record, authenticates it and only then releases its plaintext: no byte of a
/// chunk leaves the unpacker before the whole chunk authenticated. Record lengths are checked
/// against the chunk size before a single body byte is buffered. Errors are sticky.
pub struct Unpacker<'w, C: ChunkCipher, D: Decoder> {
    cipher: C,
    decoder: D,
    chunk_size: usize,
    record: &'w mut [u8],
    plain: &'w mut [u8],
    have: usize,
    repr: Option<RecordRepr>,
    ready: Ready,
    next_index: u64,
    plain_offset: u64,
    final_seen: bool,
    failed: Option<FormatError>,
}

impl<'w, C: ChunkCipher, D: Decoder> Unpacker<'w, C, D> {
    /// An unpacker for the container whose opened header is `repr`, starting at chunk 0.
    ///
    /// `workspace` must hold [`unpacker_workspace_len`]`(repr.chunk_size())` bytes.
    #[inline(always)]
    pub fn new<P: CryptoProvider<Cipher = C>>(
        provider: &P,
        keys: &FileKeys,
        repr: &HeaderRepr,
        decoder: D,
        workspace: &'w mut [u8],
    ) -> Result<Self, UsageError> {
        let chunk_size = repr.chunk_size();
        let required = unpacker_workspace_len(chunk_size);
        if workspace.len() < required {
            return Err(UsageError::InsufficientSize { required });
        }
        let (plain, record) = workspace[..required].split_at_mut(chunk_size);
        Ok(Self {
            cipher: keys.payload_cipher(provider),
            decoder,
            chunk_size,
            record,
            plain,
            have: 0,
            repr: None,
            ready: Ready::None,
            next_index: 0,
            plain_offset: 0,
            final_seen: false,
            failed: None,
        })
    }

    /// Starts at chunk `index` instead of 0, for a reader that seeked to that chunk's record
    /// (records are found by hopping over their length prefixes).
    pub fn starting_at(mut self, index: u64) -> Self {
        self.next_index = index;
        self.plain_offset = index * self.chunk_size as u64;
        self
    }

    /// Takes container bytes. Returns how many were taken: 0 means "drain output first".
    pub fn write(&mut self, input: &[u8]) -> Result<usize, FormatError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if input.is_empty() || self.ready != Ready::None {
            return Ok(0);
        }
        if self.final_seen {
            return self.fail(FormatError::TrailingData);
        }
        let mut taken = 0;
        while taken < input.len() && self.ready == Ready::None {
            let need = match self.repr {
                None => RECORD_HEADER_LEN,
                Some(r) => r.record_len(),
            };
            let n = (need - self.have).min(input.len() - taken);
            self.record[self.have..self.have + n].copy_from_slice(&input[taken..taken + n]);
            self.have += n;
            taken += n;
            if self.have < need {
                break;
            }
            match self.repr {
                None => {
                    let parsed = Record::new_checked(&self.record[..RECORD_HEADER_LEN])
                        .and_then(|r| r.parse(self.next_index, self.chunk_size));
                    match parsed {
                        Ok(r) => self.repr = Some(r),
                        Err(e) => return self.fail(e),
                    }
                }
                Some(r) => {
                    if let Err(e) = self.open(r) {
                        return self.fail(e);
                    }
                }
            }
        }
        if self.final_seen && self.ready == Ready::None && taken < input.len() {
            return self.fail(FormatError::TrailingData);
        }
        Ok(taken)
    }

    /// Declares the end of the container. Fails if the final chunk was not seen.
    pub fn finish(&mut self) -> Result<(), FormatError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if self.final_seen { Ok(()) } else { self.fail(FormatError::Truncated) }
    }

    /// Authenticated plaintext ready to be written (empty when there is none right now).
    pub fn output(&self) -> &[u8] {
        match self.ready {
            Ready::None => &[],
            Ready::Record { pos, end } => &self.record[pos..end],
            Ready::Plain { pos, end } => &self.plain[pos..end],
        }
    }

    /// Marks `n` bytes of [`output`](Self::output) as written.
    pub fn consume(&mut self, n: usize) {
        self.ready = match self.ready {
            Ready::Record { pos, end } if pos + n < end => Ready::Record { pos: pos + n, end },
            Ready::Plain { pos, end } if pos + n < end => Ready::Plain { pos: pos + n, end },
            _ => Ready::None,
        };
    }

    /// Copies plaintext into `out`; returns the number of bytes copied.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = super::copy_out(self.output(), out);
        self.consume(n);
        n
    }

    /// True once the final chunk authenticated and its plaintext was consumed.
    pub fn is_done(&self) -> bool {
        self.final_seen && self.ready == Ready::None
    }

    /// Chunks authenticated so far.
    pub fn chunks_opened(&self) -> u64 {
        self.next_index
    }

    /// Plaintext bytes authenticated so far.
    pub fn plain_offset(&self) -> u64 {
        self.plain_offset
    }

    fn open(&mut self, repr: RecordRepr) -> Result<(), FormatError> {
        let index = self.next_index;
        let opened = open_chunk(
            &self.cipher,
            &mut self.decoder,
            index,
            &repr,
            &mut self.record[..repr.record_len()],
            self.plain,
        )?;
        self.ready = match opened {
            // The empty file's only chunk has nothing to release.
            OpenedChunk::InRecord(0) | OpenedChunk::InPlain(0) => Ready::None,
            OpenedChunk::InRecord(len) => {
                Ready::Record { pos: RECORD_HEADER_LEN, end: RECORD_HEADER_LEN + len }
            }
            OpenedChunk::InPlain(len) => Ready::Plain { pos: 0, end: len },
        };
        self.next_index += 1;
        self.plain_offset += repr.plain_len as u64;
        self.final_seen = repr.is_final;
        self.have = 0;
        self.repr = None;
        Ok(())
    }

    fn fail<T>(&mut self, e: FormatError) -> Result<T, FormatError> {
        self.failed = Some(e);
        self.ready = Ready::None;
        Err(e)
    }
}
