//! `inspect`: what a container's header and record headers say, without the key.

use std::io::Read;

use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, RECORD_HEADER_LEN, TAG_LEN};
use keepsync_core::compress::Codec;
use keepsync_core::wire::{KeySource, Record};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::{Source, read_full};
use crate::unpack::read_header;

/// How the master key is obtained.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum KeyInfo {
    /// A key file.
    KeyFile,
    /// A passphrase with Argon2id.
    Passphrase {
        /// The Argon2id salt, hex: containers packed in one `keepsync pack` share it (and
        /// their stretched key).
        argon2id_salt: String,
        /// Memory in KiB.
        argon2id_memory_kib: u32,
        /// Passes.
        argon2id_passes: u32,
        /// Lanes.
        argon2id_lanes: u32,
    },
}

/// Use of one codec.
#[derive(Debug, Clone, Serialize)]
pub struct CodecUse {
    /// Codec name.
    pub codec: &'static str,
    /// Chunks using it.
    pub chunks: u64,
    /// Their plaintext bytes.
    pub plain_bytes: u64,
    /// Their stored body bytes.
    pub stored_bytes: u64,
    /// `stored_bytes / plain_bytes`.
    pub ratio: f64,
}

/// The inspection report (also the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Input name.
    pub file: String,
    /// Format version.
    pub format_version: u8,
    /// Key kind.
    pub key: KeyInfo,
    /// Chunk size in bytes.
    pub chunk_size: usize,
    /// The codec the writer was asked for.
    pub codec_requested: &'static str,
    /// The per-file salt, hex.
    pub file_salt: String,
    /// Chunks in the container.
    pub chunks: u64,
    /// Plaintext bytes.
    pub plaintext_bytes: u64,
    /// Container bytes.
    pub container_bytes: u64,
    /// `container_bytes / plaintext_bytes`.
    pub ratio: f64,
    /// Per-codec use.
    pub codecs: Vec<CodecUse>,
    /// Always false: inspect reads no key, so nothing was authenticated.
    pub authenticated: bool,
}

/// Walks the header and the record headers. Structural faults (truncation, trailing bytes,
/// malformed records) are errors; authenticity needs `unpack`.
pub fn inspect(source: &Source) -> Result<Report> {
    let input = source.name();
    let (mut reader, _) = source.open()?;
    let (header, repr) = read_header(&mut reader, &input)?;
    let reject = |fault| Error::Rejected { input: input.clone(), fault };
    let mut per_codec = [(0u64, 0u64, 0u64); 4];
    let mut chunks = 0u64;
    let mut plaintext = 0u64;
    let mut container = HEADER_LEN as u64;
    let mut record = [0u8; RECORD_HEADER_LEN];
    loop {
        let n = read_full(&mut reader, &mut record).map_err(|e| Error::io("read", &input, e))?;
        if n < RECORD_HEADER_LEN {
            return Err(reject(FormatError::Truncated));
        }
        let r = Record::new_checked(&record[..])
            .and_then(|r| r.parse(chunks, repr.chunk_size()))
            .map_err(reject)?;
        let skip = (r.body_len + TAG_LEN) as u64;
        let skipped = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink())
            .map_err(|e| Error::io("read", &input, e))?;
        if skipped < skip {
            return Err(reject(FormatError::Truncated));
        }
        let slot = &mut per_codec[usize::from(r.codec.id())];
        *slot = (slot.0 + 1, slot.1 + r.plain_len as u64, slot.2 + r.body_len as u64);
        chunks += 1;
        plaintext += r.plain_len as u64;
        container += r.record_len() as u64;
        if r.is_final {
            break;
        }
    }
    let mut probe = [0u8; 1];
    if read_full(&mut reader, &mut probe).map_err(|e| Error::io("read", &input, e))? > 0 {
        return Err(reject(FormatError::TrailingData));
    }
    let codecs = Codec::ALL
        .iter()
        .zip(per_codec)
        .filter(|(_, (n, _, _))| *n > 0)
        .map(|(c, (n, plain, stored))| CodecUse {
            codec: c.name(),
            chunks: n,
            plain_bytes: plain,
            stored_bytes: stored,
            ratio: if plain == 0 { 1.0 } else { stored as f64 / plain as f64 },
        })
        .collect();
    let key = match repr.key_source {
        KeySource::RawKey => KeyInfo::KeyFile,
        KeySource::Argon2id { salt, memory_kib, passes, lanes } => KeyInfo::Passphrase {
            argon2id_salt: hex::encode(salt),
            argon2id_memory_kib: memory_kib,
            argon2id_passes: passes,
            argon2id_lanes: lanes,
        },
    };
    Ok(Report {
        file: input,
        format_version: header[8],
        key,
        chunk_size: repr.chunk_size(),
        codec_requested: repr.codec_hint.name(),
        file_salt: hex::encode(repr.file_salt),
        chunks,
        plaintext_bytes: plaintext,
        container_bytes: container,
        ratio: if plaintext == 0 { 1.0 } else { container as f64 / plaintext as f64 },
        codecs,
        authenticated: false,
    })
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::units::human_bytes as h;
        writeln!(f, "file:          {}", self.file)?;
        writeln!(f, "format:        KeepSync container v{}", self.format_version)?;
        match &self.key {
            KeyInfo::KeyFile => writeln!(f, "key:           key file")?,
            KeyInfo::Passphrase { argon2id_salt, argon2id_memory_kib, argon2id_passes, argon2id_lanes } => {
                writeln!(
                    f,
                    "key:           passphrase (Argon2id: {}, {argon2id_passes} passes, {argon2id_lanes} lanes)",
                    h(u64::from(*argon2id_memory_kib) * 1024)
                )?;
                writeln!(f, "argon2id salt: {argon2id_salt} (shared by containers packed in one run)")?;
            }
        }
        writeln!(f, "chunk size:    {}", h(self.chunk_size as u64))?;
        writeln!(f, "codec asked:   {}", self.codec_requested)?;
        writeln!(f, "salt:          {}", self.file_salt)?;
        writeln!(f, "chunks:        {} (final chunk present)", self.chunks)?;
        writeln!(f, "plaintext:     {} ({} bytes)", h(self.plaintext_bytes), self.plaintext_bytes)?;
        writeln!(
            f,
            "container:     {} ({} bytes, {:.3} of plaintext)",
            h(self.container_bytes),
            self.container_bytes,
            self.ratio
        )?;
        for c in &self.codecs {
            writeln!(
                f,
                "codec {:<8} {} chunks, {} -> {} ({:.3})",
                format!("{}:", c.codec),
                c.chunks,
                h(c.plain_bytes),
                h(c.stored_bytes),
                c.ratio
            )?;
        }
        write!(f, "authenticity:  not checked (inspect reads no key; unpack verifies every chunk)")
    }
}
