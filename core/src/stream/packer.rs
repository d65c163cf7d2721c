//! The packer: plaintext in, container bytes out.

use super::chunk::seal_chunk;
use crate::budget::{HEADER_LEN, packer_workspace_len};
use crate::checkpoint::{Checkpoint, SourceHasher};
use crate::compress::Encoder;
use crate::crypto::{ChunkCipher, CryptoProvider, FileKeys};
use crate::error::UsageError;
use crate::wire::HeaderRepr;
use crate::wire::header::MAC_LEN;

/// Where a resumed packer starts: taken from a [`Checkpoint`] whose source prefix the caller
/// has re-hashed and found unchanged.
#[derive(Debug, Clone)]
pub struct ResumePoint {
    /// Index of the next chunk to seal.
    pub next_index: u64,
    /// Plaintext bytes already sealed (the caller continues reading the source here).
    pub plain_offset: u64,
    /// Container bytes already durable (the caller continues writing here).
    pub sealed_offset: u64,
    /// Hash state over `plain_offset` bytes of source, continued for the next checkpoints.
    pub source: SourceHasher,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Filling,
    Finishing,
    Done,
}

/// Turns plaintext into a container, one chunk at a time, in a caller-lent workspace.
///
/// ```
/// use keepsync_core::{budget, compress::Lz4Encoder, crypto::{FileKeys, RustCrypto, SecretKey}};
/// use keepsync_core::{stream::Packer, wire::{HeaderRepr, KeySource}, compress::Codec};
///
/// let master = SecretKey::from_bytes([7; 32]);
/// let repr = HeaderRepr { key_source: KeySource::RawKey, chunk_log2: 12, codec_hint: Codec::Lz4, file_salt: [1; 32] };
/// let keys = FileKeys::derive(&master, &repr.file_salt);
/// let mut ws = [0u8; budget::packer_workspace_len(4096)];
/// let mut packer = Packer::new(&RustCrypto, &keys, &repr, Lz4Encoder::new(), &mut ws).unwrap();
/// let mut input: &[u8] = b"hello hello hello hello";
/// let mut container = Vec::new();
/// loop {
///     let n = packer.write(input).unwrap();
///     input = &input[n..];
///     let out = packer.output();
///     if out.is_empty() && input.is_empty() { break; }
///     let len = out.len();
///     container.extend_from_slice(out);
///     packer.consume(len);
/// }
/// packer.finish();
/// while !packer.is_done() {
///     let out = packer.output();
///     let len = out.len();
///     container.extend_from_slice(out);
///     packer.consume(len);
/// }
/// assert_eq!(&container[..8], b"\x89KSYNC\r\n");
/// ```
pub struct Packer<'w, C: ChunkCipher, E: Encoder> {
    cipher: C,
    encoder: E,
    chunk_size: usize,
    plain: &'w mut [u8],
    record: &'w mut [u8],
    header: [u8; HEADER_LEN],
    header_mac: [u8; MAC_LEN],
    header_pos: usize,
    filled: usize,
    record_pos: usize,
    record_len: usize,
    next_index: u64,
    plain_offset: u64,
    sealed_offset: u64,
    state: State,
    source: Option<SourceHasher>,
    codec_chunks: [u64; 4],
}

impl<'w, C: ChunkCipher, E: Encoder> Packer<'w, C, E> {
    /// A packer for a new container: its first output is the sealed header.
    ///
    /// `workspace` must hold [`packer_workspace_len`]`(repr.chunk_size())` bytes.
    #[inline(always)]
    pub fn new<P: CryptoProvider<Cipher = C>>(
        provider: &P,
        keys: &FileKeys,
        repr: &HeaderRepr,
        encoder: E,
        workspace: &'w mut [u8],
    ) -> Result<Self, UsageError> {
        let header = keys.seal_header(repr);
        let mut p = Self::build(provider, keys, repr, encoder, workspace, header)?;
        p.sealed_offset = HEADER_LEN as u64;
        Ok(p)
    }

    /// A packer that continues a container whose header and first chunks are already durable.
    ///
    /// The caller must have checked, with [`Checkpoint`]'s `source_hash`, that the source's
    /// first `plain_offset` bytes are unchanged, and must feed the source from there.
    #[inline(always)]
    pub fn resume<P: CryptoProvider<Cipher = C>>(
        provider: &P,
        keys: &FileKeys,
        repr: &HeaderRepr,
        encoder: E,
        workspace: &'w mut [u8],
        at: ResumePoint,
    ) -> Result<Self, UsageError> {
        let header = keys.seal_header(repr);
        let mut p = Self::build(provider, keys, repr, encoder, workspace, header)?;
        p.header_pos = HEADER_LEN;
        p.next_index = at.next_index;
        p.plain_offset = at.plain_offset;
        p.sealed_offset = at.sealed_offset;
        p.source = Some(at.source);
        Ok(p)
    }

    #[inline(always)]
    fn build<P: CryptoProvider<Cipher = C>>(
        provider: &P,
        keys: &FileKeys,
        repr: &HeaderRepr,
        encoder: E,
        workspace: &'w mut [u8],
        header: [u8; HEADER_LEN],
    ) -> Result<Self, UsageError> {
        let chunk_size = repr.chunk_size();
        let required = packer_workspace_len(chunk_size);
        if workspace.len() < required {
            return Err(UsageError::InsufficientSize { required });
        }
        let (plain, record) = workspace[..required].split_at_mut(chunk_size);
        let mut header_mac = [0u8; MAC_LEN];
        header_mac.copy_from_slice(&header[HEADER_LEN - MAC_LEN..]);
        Ok(Self {
            cipher: keys.payload_cipher(provider),
            encoder,
            chunk_size,
            plain,
            record,
            header,
            header_mac,
            header_pos: 0,
            filled: 0,
            record_pos: 0,
            record_len: 0,
            next_index: 0,
            plain_offset: 0,
            sealed_offset: 0,
            state: State::Filling,
            source: None,
            codec_chunks: [0; 4],
        })
    }

    /// Hashes the plaintext of every sealed chunk so [`checkpoint`](Self::checkpoint) can bind
    /// a resume to the source. Costs one BLAKE3 pass over the input.
    #[inline(always)]
    pub fn track_source(mut self) -> Self {
        if self.source.is_none() && self.plain_offset == 0 {
            self.source = Some(SourceHasher::new());
        }
        self
    }

    /// Takes plaintext. Returns how many bytes were taken: 0 means "drain output first".
    pub fn write(&mut self, input: &[u8]) -> Result<usize, UsageError> {
        if self.state != State::Filling {
            return Err(UsageError::WriteAfterFinish);
        }
        if input.is_empty() {
            return Ok(0);
        }
        if self.filled == self.chunk_size {
            // More input follows a full chunk, so that chunk is not the final one.
            if self.record_pending() {
                return Ok(0);
            }
            self.seal(false);
        }
        let n = input.len().min(self.chunk_size - self.filled);
        self.plain[self.filled..self.filled + n].copy_from_slice(&input[..n]);
        self.filled += n;
        Ok(n)
    }

    /// Declares the end of input. The final chunk is sealed by the next [`output`](Self::output).
    pub fn finish(&mut self) {
        if self.state == State::Filling {
            self.state = State::Finishing;
        }
    }

    /// Container bytes ready to be written (empty when there are none right now).
    pub fn output(&mut self) -> &[u8] {
        if self.header_pos < HEADER_LEN {
            return &self.header[self.header_pos..];
        }
        if !self.record_pending() && self.state == State::Finishing {
            self.seal(true);
            self.state = State::Done;
        }
        &self.record[self.record_pos..self.record_len]
    }

    /// Marks `n` bytes of [`output`](Self::output) as written.
    pub fn consume(&mut self, n: usize) {
        if self.header_pos < HEADER_LEN {
            self.header_pos = (self.header_pos + n).min(HEADER_LEN);
        } else {
            self.record_pos = (self.record_pos + n).min(self.record_len);
        }
    }

    /// Copies output into `out`; returns the number of bytes copied.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = super::copy_out(self.output(), out);
        self.consume(n);
        n
    }

    /// True once the final chunk was sealed and all output consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done && !self.record_pending()
    }

    /// Chunks sealed so far.
    pub fn chunks_sealed(&self) -> u64 {
        self.next_index
    }

    /// Chunks sealed by this packer per codec, indexed by [`Codec::id`](crate::compress::Codec::id).
    pub fn codec_chunks(&self) -> [u64; 4] {
        self.codec_chunks
    }

    /// Container bytes produced so far (header included).
    pub fn sealed_offset(&self) -> u64 {
        self.sealed_offset
    }

    /// A checkpoint for the output consumed so far, or `None` while output is pending or when
    /// [`track_source`](Self::track_source) is off. Persist it only after the consumed output
    /// is durable.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        if self.header_pos < HEADER_LEN || self.record_pending() {
            return None;
        }
        let source = self.source.as_ref()?;
        Some(Checkpoint {
            header_mac: self.header_mac,
            chunks_done: self.next_index,
            plain_offset: self.plain_offset,
            sealed_offset: self.sealed_offset,
            source_hash: source.digest(),
        })
    }

    fn record_pending(&self) -> bool {
        self.record_pos < self.record_len
    }

    fn seal(&mut self, is_final: bool) {
        let plain = &self.plain[..self.filled];
        let sealed =
            seal_chunk(&self.cipher, &mut self.encoder, self.next_index, is_final, plain, self.record);
        let len = sealed.record_len();
        if let Some(source) = self.source.as_mut() {
            source.update(plain);
        }
        self.codec_chunks[usize::from(sealed.codec.id())] += 1;
        self.next_index += 1;
        self.plain_offset += self.filled as u64;
        self.sealed_offset += len as u64;
        self.filled = 0;
        self.record_pos = 0;
        self.record_len = len;
    }
}
