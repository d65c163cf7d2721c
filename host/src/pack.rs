//! `pack`: plaintext → container, single-threaded, checkpointed and resumable.
//!
//! Packing a file into a file writes through [`AtomicFile`] and, every
//! [`PackOptions::checkpoint_every`] bytes of input, makes the output durable and records a
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
use keepsync_core::budget::{FILE_SALT_LEN, HEADER_LEN, RECORD_HEADER_LEN, TAG_LEN, compress_bound};
use keepsync_core::checkpoint::{Checkpoint, SourceHasher};
use keepsync_core::compress::{Codec, Encoder};
use keepsync_core::crypto::FileKeys;
use keepsync_core::stream::seal_chunk;
use keepsync_core::wire::{Header, HeaderRepr, RecordRepr};
use serde::Serialize;

use crate::codec::{CodecChoice, CodecPlan, HostEncoder, detect_compressed};
use crate::crypto::{CryptoChoice, HostCipher};
use crate::error::{Error, Result};
use crate::io::{Sink, Source, open_file, read_full};
use crate::keys::{KeySpec, SessionKeys, random_bytes};
use crate::output::{AtomicFile, Flusher, checkpoint_path};
use crate::pipeline::{PipelineStats, Pool, ordered_map, peak_rss_bytes, plan};

/// Settings of one pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Codec plan (choice, zstd level, device compatibility).
    pub codec: CodecPlan,
    /// log2 of the chunk size.
    pub chunk_log2: u8,
    /// Resume from an interrupted run's checkpoint when possible.
    pub resume: bool,
    /// Write a checkpoint after this many bytes of input.
    pub checkpoint_every: u64,
    /// Worker threads sealing chunks.
    pub threads: usize,
    /// Memory budget for the pipeline (workers and chunks in flight shrink to fit).
    pub max_memory: Option<u64>,
    /// AES-256-GCM backend.
    pub crypto: CryptoChoice,
}

/// Worker threads by default: the cores this process may use.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for PackOptions {
    fn default() -> Self {
        Self {
            codec: CodecPlan::new(CodecChoice::Auto),
            chunk_log2: keepsync_core::budget::DEFAULT_CHUNK_LOG2,
            resume: true,
            checkpoint_every: 64 << 20,
            threads: default_threads(),
            max_memory: None,
            crypto: CryptoChoice::Auto,
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
    /// Set when the input was recognized as already compressed, so every chunk was stored.
    pub stored_format: Option<&'static str>,
    /// Peak resident memory of the process, in bytes (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// The AES-256-GCM backend used.
    pub crypto: &'static str,
    /// How the parallel pipeline spent its time, and which stage set the pace.
    pub pipeline: Option<PipelineStats>,
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

/// Standard output, a device or a FIFO.
struct StreamSink {
    out: BufWriter<Box<dyn Write>>,
    name: String,
}

impl ContainerSink for StreamSink {
    fn put(&mut self, bytes: &[u8]) -> Result<(), Stop> {
        self.out.write_all(bytes).map_err(|e| Error::io("write", &self.name, e).into())
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

/// One chunk's buffers, reused through the pipeline's pool.
struct ChunkBuf {
    plain: Vec<u8>,
    record: Vec<u8>,
}

struct SealJob {
    index: u64,
    is_final: bool,
    buf: ChunkBuf,
}

struct Sealed {
    repr: RecordRepr,
    buf: ChunkBuf,
}

/// Where a run starts and what it has done so far, in container order.
#[derive(Debug, Clone)]
struct Progress {
    next_index: u64,
    plain_offset: u64,
    sealed_offset: u64,
    source: SourceHasher,
    codec_chunks: [u64; 4],
}

impl Progress {
    fn fresh() -> Self {
        Self {
            next_index: 0,
            plain_offset: 0,
            sealed_offset: HEADER_LEN as u64,
            source: SourceHasher::new(),
            codec_chunks: [0; 4],
        }
    }

    fn checkpoint(&self, header_mac: [u8; 32]) -> Checkpoint {
        Checkpoint {
            header_mac,
            chunks_done: self.next_index,
            plain_offset: self.plain_offset,
            sealed_offset: self.sealed_offset,
            source_hash: self.source.digest(),
        }
    }
}

/// Durable checkpoints for a file output, recorded by a background [`Flusher`] so the
/// pipeline never waits for an fsync.
struct Checkpointer {
    flusher: Flusher,
    path: std::path::PathBuf,
    header_mac: [u8; 32],
    every: u64,
    last: u64,
}

impl Checkpointer {
    /// Called after each chunk reached the file.
    fn wrote(&mut self, progress: &Progress) {
        if progress.plain_offset < self.last.saturating_add(self.every) {
            self.flusher.wrote(progress.sealed_offset);
            return;
        }
        let mut buf = [0u8; Checkpoint::MAX_ENCODED_LEN];
        let bytes = progress.checkpoint(self.header_mac).encode(&mut buf).expect("buffer is MAX_ENCODED_LEN");
        // The flusher syncs the data before it writes the record that points past it. When it
        // is busy, the next chunk asks again.
        if self.flusher.request(Some((self.path.clone(), bytes.to_vec()))) {
            self.last = progress.plain_offset;
        }
    }
}

/// Seals `reader` in parallel and hands the records, in order, to `sink`.
///
/// Chunks are sealed by `opts.threads` workers with [`seal_chunk`], the same primitive the
/// core's `Packer` uses, so the bytes equal a single-threaded run's. At most `window` chunks
/// are in flight, each with one reused plaintext and one record buffer.
#[allow(clippy::too_many_arguments)]
fn seal_stream(
    reader: &mut (dyn Read + Send),
    input_name: &str,
    cipher: &HostCipher,
    chunk_size: usize,
    opts: &PackOptions,
    progress: &mut Progress,
    sink: &mut dyn ContainerSink,
    mut checkpointer: Option<&mut Checkpointer>,
    bar: &ProgressBar,
) -> Result<PipelineStats, Stop> {
    let (threads, window) = plan(opts.threads, chunk_size, opts.max_memory).map_err(Error::Usage)?;
    let record_room = RECORD_HEADER_LEN + compress_bound(chunk_size) + TAG_LEN;
    let pool = Pool::new(
        (0..window).map(|_| ChunkBuf { plain: Vec::with_capacity(chunk_size), record: vec![0; record_room] }),
    );
    let first_index = progress.next_index;
    let produce = |emit: &mut dyn FnMut(SealJob) -> bool| -> Result<(), Stop> {
        let mut index = first_index;
        let mut send = |buf, is_final| {
            let job = SealJob { index, is_final, buf };
            index += 1;
            emit(job)
        };
        // The last full chunk read waits here until the next read tells whether it is final.
        let mut pending: Option<ChunkBuf> = None;
        loop {
            let Some(mut buf) = pool.take() else { return Ok(()) };
            buf.plain.resize(chunk_size, 0);
            let n = read_full(reader, &mut buf.plain).map_err(|e| Error::io("read", input_name, e))?;
            buf.plain.truncate(n);
            bar.inc(n as u64);
            if n == chunk_size {
                if let Some(prev) = pending.replace(buf)
                    && !send(prev, false)
                {
                    return Ok(());
                }
                continue;
            }
            // read_full is short only at the end of the input.
            match pending.take() {
                Some(prev) if n == 0 => {
                    pool.give(buf);
                    send(prev, true);
                }
                Some(prev) => {
                    if send(prev, false) {
                        send(buf, true);
                    }
                }
                // Only chunk 0 may be empty. A resumed run whose source now ends exactly at
                // the checkpoint would need to re-mark an already sealed chunk as final.
                None if n == 0 && first_index > 0 => return Err(Stop::SourceChanged),
                None => {
                    send(buf, true);
                }
            }
            return Ok(());
        }
    };
    let work = |encoder: &mut HostEncoder, mut job: SealJob| {
        let repr = seal_chunk(cipher, encoder, job.index, job.is_final, &job.buf.plain, &mut job.buf.record);
        Sealed { repr, buf: job.buf }
    };
    let consume = |sealed: Sealed| -> Result<(), Stop> {
        let len = sealed.repr.record_len();
        sink.put(&sealed.buf.record[..len])?;
        // The source hash only backs checkpoints; streams (stdout) have none.
        if checkpointer.is_some() {
            progress.source.update(&sealed.buf.plain);
        }
        progress.codec_chunks[usize::from(sealed.repr.codec.id())] += 1;
        progress.next_index += 1;
        progress.plain_offset += sealed.buf.plain.len() as u64;
        progress.sealed_offset += len as u64;
        pool.give(sealed.buf);
        // After the final chunk the run commits; a checkpoint there could only describe a
        // finished container, which a resume must not extend.
        if let Some(c) = checkpointer.as_deref_mut().filter(|_| !sealed.repr.is_final) {
            c.wrote(progress);
        }
        Ok(())
    };
    ordered_map(threads, &pool, produce, || opts.codec.encoder(), work, consume)
}

/// A new header: the session's key source (shared by its containers) and a fresh file salt
/// (this container's own keys).
fn fresh_header(keys: &mut SessionKeys, opts: &PackOptions) -> Result<(HeaderRepr, FileKeys)> {
    let mut file_salt = [0u8; FILE_SALT_LEN];
    random_bytes(&mut file_salt)?;
    let (key_source, file_keys) = keys.for_new_container(&file_salt)?;
    let repr = HeaderRepr {
        key_source,
        chunk_log2: opts.chunk_log2,
        codec_hint: opts.codec.encoder().hint(),
        file_salt,
    };
    Ok((repr, file_keys))
}

fn summary(
    source: &Source,
    sink: &Sink,
    progress: &Progress,
    resumed_at: u64,
    started: Instant,
) -> PackSummary {
    let seconds = started.elapsed().as_secs_f64();
    let total_in = progress.plain_offset;
    let bytes_in = total_in - resumed_at;
    let bytes_out = progress.sealed_offset;
    let codec_chunks = Codec::ALL
        .iter()
        .zip(progress.codec_chunks)
        .filter(|(_, n)| *n > 0)
        .map(|(c, n)| (c.name(), n))
        .collect();
    PackSummary {
        input: source.name(),
        output: sink.name(),
        bytes_in: total_in,
        bytes_out,
        ratio: if total_in == 0 { 1.0 } else { bytes_out as f64 / total_in as f64 },
        chunks: progress.next_index,
        codec_chunks,
        resumed_at,
        stored_format: None,
        peak_rss_bytes: peak_rss_bytes(),
        crypto: "",
        pipeline: None,
        seconds,
        mb_per_s: if seconds > 0.0 { bytes_in as f64 / seconds / 1e6 } else { 0.0 },
    }
}

/// Packs `source` into `target`. `notice` receives one-line status messages (resume decisions).
/// To pack several files with one master key (one Argon2id run), use [`pack_with_session`].
pub fn pack(
    source: &Source,
    target: &Sink,
    key: &KeySpec,
    opts: &PackOptions,
    bar: &ProgressBar,
    notice: &dyn Fn(&str),
) -> Result<PackSummary> {
    pack_with_session(source, target, &mut SessionKeys::new(key.clone()), opts, bar, notice)
}

/// [`pack`] with the master key from `keys`: containers packed in one session share its
/// master key (for a passphrase: one Argon2id salt, one run), but each draws its own file
/// salt, hence its own keys.
pub fn pack_with_session(
    source: &Source,
    target: &Sink,
    keys: &mut SessionKeys,
    opts: &PackOptions,
    bar: &ProgressBar,
    notice: &dyn Fn(&str),
) -> Result<PackSummary> {
    let started = Instant::now();
    let mut opts = opts.clone();
    if let Source::File(path) = source {
        let mut head = [0u8; 16];
        let n = open_file(path)?.read_at(&mut head, 0).unwrap_or(0);
        opts.codec.stored_format = detect_compressed(&head[..n], Some(path));
    }
    let opts = &opts;
    let with_format = |mut s: PackSummary, stats: PipelineStats| {
        s.crypto = opts.crypto.provider_name();
        s.pipeline = Some(stats);
        if opts.codec.choice == CodecChoice::Auto {
            s.stored_format = opts.codec.stored_format;
        }
        s
    };
    let Sink::File { path: dest, force } = target else {
        let (repr, file_keys) = fresh_header(keys, opts)?;
        let (mut reader, len) = source.open()?;
        bar.set_length(len.unwrap_or(0));
        let stream = target.open_stream()?.expect("not a file sink");
        let mut out = StreamSink { out: BufWriter::with_capacity(1 << 20, stream), name: target.name() };
        out.put(&file_keys.seal_header(&repr)).map_err(expect_failed)?;
        let mut progress = Progress::fresh();
        let cipher = opts.crypto.cipher(&file_keys);
        let stats = seal_stream(
            &mut reader,
            &source.name(),
            &cipher,
            repr.chunk_size(),
            opts,
            &mut progress,
            &mut out,
            None,
            bar,
        )
        .map_err(expect_failed)?;
        out.out.flush().map_err(|e| Error::io("write", &out.name, e))?;
        return Ok(with_format(summary(source, target, &progress, 0, started), stats));
    };

    let out = AtomicFile::open(dest, *force)?;
    let ckpt_path = checkpoint_path(dest);
    let mut try_resume = opts.resume && matches!(source, Source::File(_));
    loop {
        let plan = if try_resume { resume_plan(source, &out, &ckpt_path, keys, opts, notice)? } else { None };
        let (repr, file_keys, mut reader, len, mut progress, stale_until) = match plan {
            Some(p) => (p.repr, p.keys, p.reader, p.len, p.progress, p.stale_until),
            None => {
                out.truncate()?;
                let _ = std::fs::remove_file(&ckpt_path);
                let (repr, file_keys) = fresh_header(keys, opts)?;
                let (reader, len) = source.open()?;
                (repr, file_keys, reader, len, Progress::fresh(), 0)
            }
        };
        let header = file_keys.seal_header(&repr);
        let resumed_at = progress.plain_offset;
        bar.set_length(len.unwrap_or(0));
        bar.set_position(resumed_at);
        let mut sink = PartialSink { out: &out, pos: 0, stale_until, scratch: Vec::new() };
        let written = if resumed_at == 0 { sink.put(&header) } else { Ok(()) };
        sink.pos = progress.sealed_offset;
        let mut header_mac = [0u8; 32];
        header_mac.copy_from_slice(&header[HEADER_LEN - 32..]);
        let mut ckpt = Checkpointer {
            flusher: Flusher::start(&out)?,
            path: ckpt_path.clone(),
            header_mac,
            every: opts.checkpoint_every,
            last: progress.plain_offset,
        };
        let cipher = opts.crypto.cipher(&file_keys);
        let run = written.and_then(|()| {
            seal_stream(
                &mut reader,
                &source.name(),
                &cipher,
                repr.chunk_size(),
                opts,
                &mut progress,
                &mut sink,
                Some(&mut ckpt),
                bar,
            )
        });
        let run = run.and_then(|stats| ckpt.flusher.finish().map(|()| stats).map_err(Stop::from));
        match run {
            Ok(stats) => {
                out.commit(progress.sealed_offset)?;
                let _ = std::fs::remove_file(&ckpt_path);
                return Ok(with_format(summary(source, target, &progress, resumed_at, started), stats));
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

/// Streams have no stale bytes, so only real failures stop them.
fn expect_failed(stop: Stop) -> Error {
    match stop {
        Stop::Failed(e) => e,
        Stop::SourceChanged => unreachable!("only resumed file outputs compare stale bytes"),
    }
}

/// A resume that passed every check.
struct ResumePlan {
    repr: HeaderRepr,
    keys: FileKeys,
    progress: Progress,
    reader: Box<dyn Read + Send>,
    len: Option<u64>,
    stale_until: u64,
}

/// Decides whether the interrupted run's partial output can be continued. `Ok(None)` means
/// "start over" (the notice says why); errors are real failures (unreadable source, bad key).
fn resume_plan(
    source: &Source,
    out: &AtomicFile,
    ckpt_path: &Path,
    keys: &mut SessionKeys,
    opts: &PackOptions,
    notice: &dyn Fn(&str),
) -> Result<Option<ResumePlan>> {
    let Source::File(src_path) = source else { return Ok(None) };
    let start_over = |why: &str| {
        notice(&format!("cannot resume the interrupted pack ({why}): starting over"));
        Ok(None)
    };
    let partial_len = out.file().metadata().map_err(|e| Error::io("read", out.partial(), e))?.len();
    let Ok(ckpt_bytes) = std::fs::read(ckpt_path) else {
        if partial_len == 0 {
            return Ok(None);
        }
        return start_over(&format!(
            "it wrote {} but stopped before its first checkpoint, due after {} of input; \
             a smaller --checkpoint-every loses less",
            crate::units::human_bytes(partial_len),
            crate::units::human_bytes(opts.checkpoint_every)
        ));
    };
    let Ok(ckpt) = Checkpoint::decode(&ckpt_bytes) else { return start_over("its checkpoint is damaged") };
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
    let keys = keys.for_header(&repr)?;
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
    let progress = Progress {
        next_index: ckpt.chunks_done,
        plain_offset: ckpt.plain_offset,
        sealed_offset: ckpt.sealed_offset,
        source: hasher,
        codec_chunks: [0; 4],
    };
    let reader: Box<dyn Read + Send> = Box::new(file);
    Ok(Some(ResumePlan { repr, keys, progress, reader, len, stale_until: partial_len }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepsync_core::budget::packer_workspace_len;
    use keepsync_core::crypto::{RustCrypto, SecretKey};
    use keepsync_core::stream::Packer;
    use keepsync_core::wire::KeySource;
    use proptest::prelude::*;

    impl ContainerSink for Vec<u8> {
        fn put(&mut self, bytes: &[u8]) -> Result<(), Stop> {
            self.extend_from_slice(bytes);
            Ok(())
        }
    }

    /// The checkpoint interval is counted in input bytes, as `--checkpoint-every` says: a
    /// file that compresses well is checkpointed as often as one that does not.
    #[test]
    fn checkpoints_follow_input_bytes_not_container_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let out = AtomicFile::open(&dir.path().join("c.ks"), false).unwrap();
        let path = dir.path().join("ckpt");
        let mut ckpt = Checkpointer {
            flusher: Flusher::start(&out).unwrap(),
            path: path.clone(),
            header_mac: [0; 32],
            every: 100,
            last: 0,
        };
        let at = |plain_offset, sealed_offset| Progress { plain_offset, sealed_offset, ..Progress::fresh() };
        // Much output for little input: not due.
        ckpt.wrote(&at(99, 5000));
        assert_eq!(ckpt.last, 0);
        // Little output for the interval's input: due (the flusher may be busy: ask again).
        while ckpt.last == 0 {
            ckpt.wrote(&at(150, 10));
            std::thread::yield_now();
        }
        assert_eq!(ckpt.last, 150);
        ckpt.flusher.finish().unwrap();
        let saved = Checkpoint::decode(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!((saved.plain_offset, saved.sealed_offset), (150, 10));
    }

    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                // Runs of text-like bytes with random stretches: some chunks compress, some not.
                if (i / 3000) % 3 == 0 { (x >> 56) as u8 } else { b"keepsync "[i % 9] }
            })
            .collect()
    }

    /// The core's single-threaded Packer, the reference for the bytes.
    fn reference(repr: &HeaderRepr, keys: &FileKeys, codec: CodecPlan, input: &[u8]) -> Vec<u8> {
        let mut ws = vec![0u8; packer_workspace_len(repr.chunk_size())];
        let mut p = Packer::new(&RustCrypto, keys, repr, codec.encoder(), &mut ws).unwrap();
        let mut out = Vec::new();
        let mut rest = input;
        loop {
            let n = p.write(rest).unwrap();
            rest = &rest[n..];
            let o = p.output();
            let len = o.len();
            out.extend_from_slice(o);
            p.consume(len);
            if rest.is_empty() && len == 0 {
                break;
            }
        }
        p.finish();
        while !p.is_done() {
            let o = p.output();
            let len = o.len();
            out.extend_from_slice(o);
            p.consume(len);
        }
        out
    }

    fn parallel(
        repr: &HeaderRepr,
        keys: &FileKeys,
        codec: CodecPlan,
        threads: usize,
        input: &[u8],
    ) -> Vec<u8> {
        let opts = PackOptions { codec, chunk_log2: repr.chunk_log2, threads, ..PackOptions::default() };
        let mut out = keys.seal_header(repr).to_vec();
        let mut progress = Progress::fresh();
        let cipher = opts.crypto.cipher(keys);
        let mut reader: &[u8] = input;
        seal_stream(
            &mut reader,
            "test",
            &cipher,
            repr.chunk_size(),
            &opts,
            &mut progress,
            &mut out,
            None,
            &ProgressBar::hidden(),
        )
        .map_err(|_| "sealing failed")
        .unwrap();
        assert_eq!(progress.sealed_offset, out.len() as u64);
        assert_eq!(progress.plain_offset, input.len() as u64);
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Parallel output is byte-identical to the core's single-threaded Packer for the
        /// same salt, whatever the thread count, chunk size, codec and length.
        #[test]
        fn parallel_output_equals_the_single_threaded_packer(
            len in prop_oneof![0usize..3, 4090usize..4100, 0usize..200_000],
            seed in any::<u64>(),
            threads in 1usize..9,
            chunk_log2 in 12u8..15,
            codec in prop_oneof![
                Just(CodecChoice::Auto), Just(CodecChoice::None), Just(CodecChoice::Deflate),
                Just(CodecChoice::Lz4), Just(CodecChoice::Zstd),
            ].prop_map(CodecPlan::new),
        ) {
            let repr = HeaderRepr { key_source: KeySource::RawKey, chunk_log2, codec_hint: codec.encoder().hint(), file_salt: [seed as u8; 32] };
            let keys = FileKeys::derive(&SecretKey::from_bytes([3; 32]), &repr.file_salt);
            let input = data(len, seed);
            prop_assert_eq!(parallel(&repr, &keys, codec, threads, &input), reference(&repr, &keys, codec, &input));
        }
    }
}
