//! `unpack`: container → plaintext. A file output is renamed into place only after the final
//! chunk authenticated; on any error nothing is left behind.

use std::io::{BufWriter, Read, Write};
use std::time::Instant;

use indicatif::ProgressBar;
use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, unpacker_workspace_len};
use keepsync_core::compress::CoreDecoder;
use keepsync_core::crypto::{FileKeys, RustCrypto};
use keepsync_core::stream::Unpacker;
use keepsync_core::wire::{Header, HeaderRepr, MAGIC, VERSION};

const VERSION_OFFSET: usize = MAGIC.len();
use serde::Serialize;

use crate::error::{Error, Result};
use crate::io::{Sink, Source, read_full};
use crate::keys::KeySpec;
use crate::output::AtomicFile;

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

/// Parses the header, obtains the master key and checks the header MAC.
pub fn open(reader: &mut dyn Read, input: &str, key: &KeySpec) -> Result<(HeaderRepr, FileKeys)> {
    let (header, repr) = read_header(reader, input)?;
    let master = key.for_header(&repr)?;
    let keys = FileKeys::derive(&master, &repr.file_salt);
    keys.verify_header(&Header::new_unchecked(&header[..]))
        .map_err(|fault| Error::Rejected { input: input.to_string(), fault })?;
    Ok((repr, keys))
}

/// Unpacks `source` into `sink`.
pub fn unpack(source: &Source, sink: &Sink, key: &KeySpec, progress: &ProgressBar) -> Result<UnpackSummary> {
    let started = Instant::now();
    let input = source.name();
    let (mut reader, len) = source.open()?;
    if let Some(len) = len {
        progress.set_length(len);
    }
    let (repr, keys) = open(&mut reader, &input, key)?;
    progress.inc(HEADER_LEN as u64);
    let atomic = match sink {
        Sink::File { path, force } => Some(AtomicFile::open(path, *force)?),
        Sink::Stdout => None,
    };
    let (out_name, writer): (String, Box<dyn Write + '_>) = match &atomic {
        Some(a) => {
            a.truncate()?;
            (a.partial().display().to_string(), Box::new(BufWriter::with_capacity(1 << 20, a.file())))
        }
        None => {
            ("standard output".into(), Box::new(BufWriter::with_capacity(1 << 20, std::io::stdout().lock())))
        }
    };
    let mut writer = writer;
    let mut ws = vec![0u8; unpacker_workspace_len(repr.chunk_size())];
    let mut unpacker = Unpacker::new(&RustCrypto, &keys, &repr, CoreDecoder::new(), &mut ws)
        .expect("workspace sized by unpacker_workspace_len");
    let reject = |fault| Error::Rejected { input: input.clone(), fault };
    let mut buf = vec![0u8; 1 << 18];
    let mut bytes_in = HEADER_LEN as u64;
    let mut bytes_out = 0u64;
    let mut drain = |u: &mut Unpacker<'_, _, _>, w: &mut dyn Write| -> Result<()> {
        loop {
            let out = u.output();
            if out.is_empty() {
                return Ok(());
            }
            let len = out.len();
            w.write_all(out).map_err(|e| Error::io("write", &out_name, e))?;
            bytes_out += len as u64;
            u.consume(len);
        }
    };
    loop {
        let n = read_full(&mut reader, &mut buf).map_err(|e| Error::io("read", &input, e))?;
        if n == 0 {
            break;
        }
        bytes_in += n as u64;
        progress.inc(n as u64);
        let mut rest = &buf[..n];
        while !rest.is_empty() {
            let taken = unpacker.write(rest).map_err(reject)?;
            rest = &rest[taken..];
            drain(&mut unpacker, &mut *writer)?;
        }
    }
    unpacker.finish().map_err(reject)?;
    drain(&mut unpacker, &mut *writer)?;
    writer.flush().map_err(|e| Error::io("write", sink.name(), e))?;
    drop(writer);
    if let Some(a) = atomic {
        a.commit(bytes_out)?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(UnpackSummary {
        input,
        output: sink.name(),
        bytes_in,
        bytes_out,
        chunks: unpacker.chunks_opened(),
        seconds,
        mb_per_s: if seconds > 0.0 { bytes_out as f64 / seconds / 1e6 } else { 0.0 },
    })
}
