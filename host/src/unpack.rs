//! `unpack`: container → plaintext. A file output is renamed into place only after the final
//! chunk authenticated; on any error nothing is left behind.

use std::io::{BufWriter, Read, Write};
use std::time::Instant;

use indicatif::ProgressBar;
use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, RECORD_HEADER_LEN, max_record_len};
use keepsync_core::crypto::FileKeys;
use keepsync_core::stream::{OpenedChunk, open_chunk};
use keepsync_core::wire::{Header, HeaderRepr, MAGIC, Record, RecordRepr, VERSION};

const VERSION_OFFSET: usize = MAGIC.len();
use serde::Serialize;

use crate::codec::HostDecoder;
use crate::crypto::CryptoChoice;
use crate::error::{Error, Result};
use crate::io::{Sink, Source, read_full};
use crate::keys::{KeySpec, SessionKeys};
use crate::output::{AtomicFile, Flusher};
use crate::pipeline::{PipelineStats, Pool, ordered_map, peak_rss_bytes, plan};

/// What an unpack did (also the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct UnpackSummary {
    /// Input name.
    pub input: String,
    /// Output name.
    pub output: String,
    /// Container bytes read.
    pub bytes_in: u64,
    /// Plaintext bytes written.
    pub bytes_out: u64,
    /// Chunks authenticated.
    pub chunks: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Plaintext MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// Peak resident memory of the process, in bytes (Linux).
    pub peak_rss_bytes: Option<u64>,
    /// The AES-256-GCM backend used.
    pub crypto: &'static str,
    /// How the parallel pipeline spent its time, and which stage set the pace.
    pub pipeline: PipelineStats,
}

/// Reads and validates the fixed header. A short input that does not start like a container
/// is reported as "not a container", which is what the user most likely needs to hear.
pub fn read_header(reader: &mut dyn Read, input: &str) -> Result<([u8; HEADER_LEN], HeaderRepr)> {
    let mut header = [0u8; HEADER_LEN];
    let n = read_full(reader, &mut header).map_err(|e| Error::io("read", input, e))?;
    let reject = |fault| Error::Rejected { input: input.to_string(), fault };
    // Magic first, then version, then length (docs/FORMAT.md, section 1).
    let m = n.min(MAGIC.len());
    if header[..m] != MAGIC[..m] || n == 0 {
        return Err(reject(FormatError::NotAContainer));
    }
    if n > VERSION_OFFSET && header[VERSION_OFFSET] != VERSION {
        return Err(reject(FormatError::UnsupportedVersion(header[VERSION_OFFSET])));
    }
    let repr = Header::new_checked(&header[..n]).and_then(|h| h.parse()).map_err(reject)?;
    Ok((header, repr))
}

/// Parses the header, obtains the master key (from the session's cache when an earlier
/// container used the same one) and checks the header MAC.
pub fn open(reader: &mut dyn Read, input: &str, keys: &mut SessionKeys) -> Result<(HeaderRepr, FileKeys)> {
    let (header, repr) = read_header(reader, input)?;
    let keys = keys.for_header(&repr)?;
    keys.verify_header(&Header::new_unchecked(&header[..]))
        .map_err(|fault| Error::Rejected { input: input.to_string(), fault })?;
    Ok((repr, keys))
}

struct OpenJob {
    index: u64,
    repr: RecordRepr,
    buf: ChunkBuf,
}

struct ChunkBuf {
    record: Vec<u8>,
    plain: Vec<u8>,
}

struct Opened {
    result: Result<OpenedChunk, FormatError>,
    record_len: u64,
    buf: ChunkBuf,
}

/// Unpacks `source` into `sink` with `threads` workers authenticating and decoding chunks.
/// To open several containers with one Argon2id run per passphrase session, use
/// [`unpack_with_session`].
pub fn unpack(
    source: &Source,
    sink: &Sink,
    key: &KeySpec,
    threads: usize,
    max_memory: Option<u64>,
    crypto: CryptoChoice,
    bar: &ProgressBar,
) -> Result<UnpackSummary> {
    let mut keys = SessionKeys::new(key.clone());
    unpack_with_session(source, sink, &mut keys, threads, max_memory, crypto, bar)
}

/// [`unpack`] with master keys from `keys`, which keeps each one it derives: containers packed
/// in one session are opened with one Argon2id run.
pub fn unpack_with_session(
    source: &Source,
    sink: &Sink,
    keys: &mut SessionKeys,
    threads: usize,
    max_memory: Option<u64>,
    crypto: CryptoChoice,
    bar: &ProgressBar,
) -> Result<UnpackSummary> {
    let started = Instant::now();
    let input = source.name();
    let (mut reader, len) = source.open()?;
    bar.set_length(len.unwrap_or(0));
    let (repr, keys) = open(&mut reader, &input, keys)?;
    bar.inc(HEADER_LEN as u64);
    let atomic = match sink {
        Sink::File { path, force } => Some(AtomicFile::open(path, *force)?),
        Sink::Stdout | Sink::Stream(_) | Sink::Discard => None,
    };
    let (out_name, mut writer): (String, Box<dyn Write + '_>) = match (&atomic, sink.open_stream()?) {
        (Some(a), _) => {
            a.truncate()?;
            (a.partial().display().to_string(), Box::new(BufWriter::with_capacity(1 << 20, a.file())))
        }
        (None, Some(stream)) => (sink.name(), Box::new(BufWriter::with_capacity(1 << 20, stream))),
        (None, None) => unreachable!("a file sink is atomic"),
    };
    let mut flusher = atomic.as_ref().map(Flusher::start).transpose()?;
    let reject = |fault| Error::Rejected { input: input.clone(), fault };
    let chunk_size = repr.chunk_size();
    let cipher = crypto.cipher(&keys);
    let (threads, window) = plan(threads, chunk_size, max_memory).map_err(Error::Usage)?;
    let pool = Pool::new(
        (0..window)
            .map(|_| ChunkBuf { record: vec![0; max_record_len(chunk_size)], plain: vec![0; chunk_size] }),
    );
    let mut bytes_in = HEADER_LEN as u64;
    let mut bytes_out = 0u64;
    let mut chunks = 0u64;
    // Record headers are read and bounded in order on one thread; bodies are buffered only
    // after their lengths passed the checks.
    let produce = |emit: &mut dyn FnMut(OpenJob) -> bool| -> Result<()> {
        let mut index = 0u64;
        let read_err = |e| Error::io("read", &input, e);
        loop {
            let Some(mut buf) = pool.take() else { return Ok(()) };
            let head = &mut buf.record[..RECORD_HEADER_LEN];
            if read_full(&mut reader, head).map_err(read_err)? < RECORD_HEADER_LEN {
                return Err(reject(FormatError::Truncated));
            }
            let repr =
                Record::new_checked(&*head).and_then(|r| r.parse(index, chunk_size)).map_err(reject)?;
            let body = &mut buf.record[RECORD_HEADER_LEN..repr.record_len()];
            if read_full(&mut reader, body).map_err(read_err)? < body.len() {
                return Err(reject(FormatError::Truncated));
            }
            bar.inc(repr.record_len() as u64);
            let is_final = repr.is_final;
            if !emit(OpenJob { index, repr, buf }) {
                return Ok(());
            }
            if is_final {
                let mut probe = [0u8; 1];
                if read_full(&mut reader, &mut probe).map_err(read_err)? > 0 {
                    return Err(reject(FormatError::TrailingData));
                }
                return Ok(());
            }
            index += 1;
        }
    };
    let work = |decoder: &mut HostDecoder, mut job: OpenJob| {
        let len = job.repr.record_len();
        let result = open_chunk(
            &cipher,
            decoder,
            job.index,
            &job.repr,
            &mut job.buf.record[..len],
            &mut job.buf.plain,
        );
        Opened { result, record_len: len as u64, buf: job.buf }
    };
    let consume = |opened: Opened| -> Result<()> {
        let plaintext = match opened.result.map_err(reject)? {
            OpenedChunk::InRecord(n) => &opened.buf.record[RECORD_HEADER_LEN..RECORD_HEADER_LEN + n],
            OpenedChunk::InPlain(n) => &opened.buf.plain[..n],
        };
        writer.write_all(plaintext).map_err(|e| Error::io("write", &out_name, e))?;
        bytes_out += plaintext.len() as u64;
        bytes_in += opened.record_len;
        chunks += 1;
        if let Some(f) = flusher.as_mut() {
            f.wrote(bytes_out);
        }
        pool.give(opened.buf);
        Ok(())
    };
    let pipeline = ordered_map(threads, &pool, produce, HostDecoder::new, work, consume)?;
    writer.flush().map_err(|e| Error::io("write", sink.name(), e))?;
    drop(writer);
    if let Some(f) = flusher {
        f.finish()?;
    }
    if let Some(a) = atomic {
        a.commit(bytes_out)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(UnpackSummary {
        input,
        output: sink.name(),
        bytes_in,
        bytes_out,
        chunks,
        seconds,
        mb_per_s: if seconds > 0.0 { bytes_out as f64 / seconds / 1e6 } else { 0.0 },
        peak_rss_bytes: peak_rss_bytes(),
        crypto: crypto.provider_name(),
        pipeline,
    })
}
