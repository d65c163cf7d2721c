//! `pack`: plaintext → container, single-threaded, checkpointed and resumable.
//!
//! Packing a file into a file writes through [`AtomicFile`] and, every
//! [`PackOptions::checkpoint_every`] bytes, makes the output durable and records a
//! [`Checkpoint`] beside it. A later run with the same source, destination and key resumes at
//! the last durable chunk. Resuming never seals different plaintext under a nonce already used:
//! - the source's first `plain_offset` bytes must hash to the checkpoint's `source_hash`;
//! - bytes the interrupted run wrote past the checkpoint must equal, byte for byte, what the
//!   resumed run seals at the same offsets (same key, nonce and plaintext give the same bytes);
//!   they are compared *before* anything is written over them.
//!
//! Otherwise the run starts over with a fresh salt, hence fresh keys.

use std::collections::BTreeMap;
use std::io::{BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use indicatif::ProgressBar;
use keepsync_core::budget::{FILE_SALT_LEN, HEADER_LEN, packer_workspace_len};
use keepsync_core::checkpoint::{Checkpoint, SourceHasher};
use keepsync_core::compress::{Codec, Encoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, RustCryptoAesGcm};
use keepsync_core::stream::{Packer, ResumePoint};
use keepsync_core::wire::{Header, HeaderRepr};
use serde::Serialize;

use crate::codec::{CodecChoice, HostEncoder};
use crate::error::{Error, Result};
use crate::io::{Sink, Source, open_file, read_full};
use crate::keys::{KeySpec, random_bytes};
use crate::output::{AtomicFile, checkpoint_path, write_small_file_atomically};

/// Settings of one pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Codec choice.
    pub codec: CodecChoice,
    /// log2 of the chunk size.
    pub chunk_log2: u8,
    /// Resume from an interrupted run's checkpoint when possible.
    pub resume: bool,
    /// Write a checkpoint after this many container bytes.
    pub checkpoint_every: u64,
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            codec: CodecChoice::Auto,
            chunk_log2: keepsync_core::budget::DEFAULT_CHUNK_LOG2,
            resume: true,
            checkpoint_every: 64 << 20,
        }
    }
}

/// What a pack did (also the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct PackSummary {
    /// Input name.
    pub input: String,
    /// Output name.
    pub output: String,
    /// Plaintext bytes.
    pub bytes_in: u64,
    /// Container bytes.
    pub bytes_out: u64,
    /// `bytes_out / bytes_in`.
    pub ratio: f64,
    /// Chunks in the container.
    pub chunks: u64,
    /// Chunks sealed in this run, by codec name.
    pub codec_chunks: BTreeMap<&'static str, u64>,
    /// Plaintext offset this run resumed at (0 for a fresh run).
    pub resumed_at: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Plaintext MB/s (10^6 bytes) of this run.
    pub mb_per_s: f64,
}

/// Why a run stopped early.
enum Stop {
    Failed(Error),
    /// Resumed output diverged from what the interrupted run wrote: the source changed.
    SourceChanged,
}

impl From<Error> for Stop {
    fn from(e: Error) -> Self {
        Self::Failed(e)
    }
}

/// Receives container bytes.
trait ContainerSink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Stop>;
}

struct StdoutSink(BufWriter<std::io::StdoutLock<'static>>);

impl ContainerSink for StdoutSink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.0.write_all(bytes).map_err(|e| Error::io("write", "standard output", e).into())
    }
}

/// Positioned writes into the partial file; bytes below `stale_until` were written by an
/// interrupted run and must be identical to what is written over them.
struct PartialSink<'a> {
    out: &'a AtomicFile,
    pos: u64,
    stale_until: u64,
    scratch: Vec<u8>,
}

impl ContainerSink for PartialSink<'_> {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        let path = self.out.partial();
        if self.pos < self.stale_until {
            let overlap = (self.stale_until - self.pos).min(bytes.len() as u64) as usize;
            self.scratch.resize(overlap, 0);
            self.out
                .file()
                .read_exact_at(&mut self.scratch, self.pos)
                .map_err(|e| Error::io("read", path, e))?;
            if self.scratch[..] != bytes[..overlap] {
                return Err(Stop::SourceChanged);
            }
        }
        self.out.file().write_all_at(bytes, self.pos).map_err(|e| Error::io("write", path, e))?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
}

type HostPacker<'w> = Packer<'w, RustCryptoAesGcm, HostEncoder>;

/// Durable checkpoints for a file output.
struct Checkpointer<'a> {
    out: &'a AtomicFile,
    path: std::path::PathBuf,
    every: u64,
    last: u64,
}

impl Checkpointer<'_> {
    fn maybe(&mut self, packer: &HostPacker<'_>) -> Result<()> {
        if packer.sealed_offset() < self.last + self.every {
            return Ok(());
        }
        let Some(ckpt) = packer.checkpoint() else { return Ok(()) };
        // The data must be durable before the record that points past it.
        self.out.sync_data()?;
        let mut buf = [0u8; Checkpoint::MAX_ENCODED_LEN];
        let bytes = ckpt.encode(&mut buf).expect("buffer is MAX_ENCODED_LEN");
        write_small_file_atomically(&self.path, bytes)?;
        self.last = packer.sealed_offset();
        Ok(())
    }
}

/// Pumps `reader` through `packer` into `sink`.
fn run(
    packer: &mut HostPacker<'_>,
    reader: &mut dyn Read,
    input_name: &str,
    sink: &mut dyn ContainerSink,
    mut checkpointer: Option<&mut Checkpointer<'_>>,
    progress: &ProgressBar,
) -> Result<u64, Stop> {
    let mut buf = vec![0u8; 1 << 18];
    let mut bytes_in = 0u64;
    loop {
        let n = read_full(reader, &mut buf).map_err(|e| Error::io("read", input_name, e))?;
        if n == 0 {
            break;
        }
        bytes_in += n as u64;
        progress.inc(n as u64);
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let taken = packer.write(rest).expect("packer is not finished");
            rest = &rest[taken..];
            drain(packer, sink)?;
        }
        if let Some(c) = checkpointer.as_deref_mut() {
            c.maybe(packer)?;
        }
    }
    packer.finish();
    while !packer.is_done() {
        drain(packer, sink)?;
    }
    Ok(bytes_in)
}

fn drain(packer: &mut HostPacker<'_>, sink: &mut dyn ContainerSink) -> Result<(), Stop> {
    loop {
        let out = packer.output();
        if out.is_empty() {
            return Ok(());
        }
        let len = out.len();
        sink.put(out)?;
        packer.consume(len);
    }
}

fn fresh_header(key: &KeySpec, opts: &PackOptions) -> Result<(HeaderRepr, FileKeys)> {
    let master = key.for_new_container()?;
    let mut file_salt = [0u8; FILE_SALT_LEN];
    random_bytes(&mut file_salt)?;
    let repr = HeaderRepr {
        key_source: master.source,
        chunk_log2: opts.chunk_log2,
        codec_hint: opts.codec.encoder().hint(),
        file_salt,
    };
    let keys = FileKeys::derive(&master.key, &file_salt);
    Ok((repr, keys))
}

fn summary(
    source: &Source,
    sink: &Sink,
    packer: &HostPacker<'_>,
    bytes_in: u64,
    resumed_at: u64,
    started: Instant,
) -> PackSummary {
    let seconds = started.elapsed().as_secs_f64();
    let total_in = resumed_at + bytes_in;
    let bytes_out = packer.sealed_offset();
    let codec_chunks = Codec::ALL
        .iter()
        .zip(packer.codec_chunks())
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (c.name(), n))
        .collect();
    PackSummary {
        input: source.name(),
        output: sink.name(),
        bytes_in: total_in,
        bytes_out,
        ratio: if total_in == 0 { 1.0 } else { bytes_out as f64 / total_in as f64 },
        chunks: packer.chunks_sealed(),
        codec_chunks,
        resumed_at,
        seconds,
        mb_per_s: if seconds > 0.0 { bytes_in as f64 / seconds / 1e6 } else { 0.0 },
    }
}

/// Packs `source` into `sink`. `notice` receives one-line status messages (resume decisions).
pub fn pack(
    source: &Source,
    target: &Sink,
    key: &KeySpec,
    opts: &PackOptions,
    progress: &ProgressBar,
    notice: &dyn Fn(&str),
) -> Result<PackSummary> {
    let started = Instant::now();
    let Sink::File { path: dest, force } = target else {
        let (repr, keys) = fresh_header(key, opts)?;
        let (mut reader, len) = source.open()?;
        if let Some(len) = len {
            progress.set_length(len);
        }
        let mut ws = vec![0u8; packer_workspace_len(repr.chunk_size())];
        let mut packer = Packer::new(&RustCrypto, &keys, &repr, opts.codec.encoder(), &mut ws)
            .expect("workspace sized by packer_workspace_len");
        let mut out = StdoutSink(BufWriter::with_capacity(1 << 20, std::io::stdout().lock()));
        let bytes_in = match run(&mut packer, &mut reader, &source.name(), &mut out, None, progress) {
            Ok(n) => n,
            Err(Stop::Failed(e)) => return Err(e),
            Err(Stop::SourceChanged) => unreachable!("stdout has no stale bytes"),
        };
        out.0.flush().map_err(|e| Error::io("write", "standard output", e))?;
        return Ok(summary(source, target, &packer, bytes_in, 0, started));
    };

    let out = AtomicFile::open(dest, *force)?;
    let ckpt_path = checkpoint_path(dest);
    let mut try_resume = opts.resume && matches!(source, Source::File(_));
    loop {
        let plan = if try_resume { resume_plan(source, &out, &ckpt_path, key, opts, notice)? } else { None };
        let (repr, keys, mut reader, len, at, stale_until) = match plan {
            Some(p) => (p.repr, p.keys, p.reader, p.len, Some(p.point), p.stale_until),
            None => {
                out.truncate()?;
                let _ = std::fs::remove_file(&ckpt_path);
                let (repr, keys) = fresh_header(key, opts)?;
                let (reader, len) = source.open()?;
                (repr, keys, reader, len, None, 0)
            }
        };
        let resumed_at = at.as_ref().map_or(0, |p| p.plain_offset);
        let pos = at.as_ref().map_or(0, |p| p.sealed_offset);
        let mut ws = vec![0u8; packer_workspace_len(repr.chunk_size())];
        let encoder = opts.codec.encoder();
        let packer = match at {
            Some(point) => Packer::resume(&RustCrypto, &keys, &repr, encoder, &mut ws, point),
            None => Packer::new(&RustCrypto, &keys, &repr, encoder, &mut ws).map(Packer::track_source),
        };
        let mut packer = packer.expect("workspace sized by packer_workspace_len");
        progress.set_length(len.unwrap_or(0));
        progress.set_position(resumed_at);
        let mut sink = PartialSink { out: &out, pos, stale_until, scratch: Vec::new() };
        let mut ckpt =
            Checkpointer { out: &out, path: ckpt_path.clone(), every: opts.checkpoint_every, last: pos };
        match run(&mut packer, &mut reader, &source.name(), &mut sink, Some(&mut ckpt), progress) {
            Ok(bytes_in) => {
                let result = summary(source, target, &packer, bytes_in, resumed_at, started);
                out.commit(packer.sealed_offset())?;
                let _ = std::fs::remove_file(&ckpt_path);
                return Ok(result);
            }
            Err(Stop::SourceChanged) => {
                notice("the source changed after the interrupted run: starting over with a fresh salt");
                try_resume = false;
            }
            Err(Stop::Failed(e)) => {
                let _ = std::fs::remove_file(&ckpt_path);
                return Err(e);
            }
        }
    }
}

/// A resume that passed every check.
struct ResumePlan {
    repr: HeaderRepr,
    keys: FileKeys,
    point: ResumePoint,
    reader: Box<dyn Read>,
    len: Option<u64>,
    stale_until: u64,
}

/// Decides whether the interrupted run's partial output can be continued. `Ok(None)` means
/// "start over" (the notice says why); errors are real failures (unreadable source, bad key).
fn resume_plan(
    source: &Source,
    out: &AtomicFile,
    ckpt_path: &Path,
    key: &KeySpec,
    opts: &PackOptions,
    notice: &dyn Fn(&str),
) -> Result<Option<ResumePlan>> {
    let Source::File(src_path) = source else { return Ok(None) };
    let Ok(ckpt_bytes) = std::fs::read(ckpt_path) else { return Ok(None) };
    let start_over = |why: &str| {
        notice(&format!("cannot resume the interrupted pack ({why}): starting over"));
        Ok(None)
    };
    let Ok(ckpt) = Checkpoint::decode(&ckpt_bytes) else { return start_over("its checkpoint is damaged") };
    let partial_len = out.file().metadata().map_err(|e| Error::io("read", out.partial(), e))?.len();
    if partial_len < ckpt.sealed_offset || ckpt.sealed_offset < HEADER_LEN as u64 {
        return start_over("the partial output is shorter than its checkpoint");
    }
    let mut header = [0u8; HEADER_LEN];
    out.file().read_exact_at(&mut header, 0).map_err(|e| Error::io("read", out.partial(), e))?;
    let Ok(repr) = Header::new_checked(&header[..]).and_then(|h| h.parse()) else {
        return start_over("the partial output's header is damaged");
    };
    if repr.chunk_log2 != opts.chunk_log2 {
        return start_over("the chunk size changed");
    }
    let master = key.for_header(&repr)?;
    let keys = FileKeys::derive(&master, &repr.file_salt);
    if keys.verify_header(&Header::new_unchecked(&header[..])).is_err()
        || header[HEADER_LEN - 32..] != ckpt.header_mac
    {
        return start_over("it was made with another key");
    }
    let mut file = open_file(src_path)?;
    let len = file.metadata().ok().map(|m| m.len());
    let mut hasher = SourceHasher::new();
    let mut remaining = ckpt.plain_offset;
    let mut buf = vec![0u8; 1 << 20];
    while remaining > 0 {
        let want = remaining.min(buf.len() as u64) as usize;
        let n = read_full(&mut file, &mut buf[..want]).map_err(|e| Error::io("read", src_path, e))?;
        if n == 0 {
            return start_over("the source is shorter than before");
        }
        hasher.update(&buf[..n]);
        remaining -= n as u64;
    }
    if hasher.digest() != ckpt.source_hash {
        return start_over("the source changed");
    }
    notice(&format!(
        "resuming the interrupted pack at {} (chunk {}); the source's first bytes are unchanged",
        crate::units::human_bytes(ckpt.plain_offset),
        ckpt.chunks_done
    ));
    let point = ResumePoint {
        next_index: ckpt.chunks_done,
        plain_offset: ckpt.plain_offset,
        sealed_offset: ckpt.sealed_offset,
        source: hasher,
    };
    let reader: Box<dyn Read> = Box::new(file);
    Ok(Some(ResumePlan { repr, keys, point, reader, len, stale_until: partial_len }))
}
