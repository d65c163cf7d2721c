//! The network side of `keepsync sync`: a thin tokio driver around the core's sans-IO
//! [`Connection`], [`Sender`] and [`Receiver`] (see `docs/PROTOCOL.md`).
//!
//! - [`driver`]: one loop per TCP connection moves bytes between the socket and the state
//!   machine, full duplex, with the core's timers and a shared [`RateLimiter`]. Each
//!   connection runs on a thread of its own ([`connection_thread`]).
//! - [`send`] and [`recv`]: what each end does with files (reading, hashing and compressing
//!   blocks; confining paths, writing into `.keepsync-partial/`, checkpointing, verifying).
//! - [`server`] (`keepsync serve`) and [`client`] (`keepsync sync` with a `ks://` side).
//!
//! [`Sender`]: keepsync_core::sync::Sender
//! [`Receiver`]: keepsync_core::sync::Receiver

pub mod client;
pub mod driver;
pub mod effort;
pub mod limit;
pub mod parts;
pub mod recv;
pub mod send;
pub mod server;

use std::time::{SystemTime, UNIX_EPOCH};

use keepsync_core::budget::{FRAME_HEADER_LEN, MAX_FILES_IN_FLIGHT, frame_body_for_block};
use keepsync_core::crypto::RustCrypto;
pub use keepsync_core::sync::Connection;
use keepsync_core::sync::{Receiver, Sender};

pub use limit::RateLimiter;

use crate::error::{Error, Result};

/// The connection type the host uses: RustCrypto AES-GCM (zeroized keys), heap buffers.
pub type Conn = Connection<RustCrypto, Vec<u8>>;

/// Files in flight per connection on a host at most: the size of its tables (both ends
/// announce what they take in `Open`/`Opened`, see [`files_in_flight`]; a device's 32 caps
/// it). A receiver commits what it verified when nothing is mid-transfer, with one filesystem
/// flush, and answers `Done` only then, so the window is the batch, and a batch costs two
/// round trips (`File` → `Have`, data → `Done`). A sender starts at
/// [`send::INITIAL_WINDOW`] and widens its window on a long link (see `send.rs`): at 50 ms
/// of round trip, 10,000 small files took 6.5-8 s at 128 and 2.5 s at 512.
pub const FILES_IN_FLIGHT: usize = 1024;

/// The host's sending end.
pub type HostSender = Sender<RustCrypto, Vec<u8>, FILES_IN_FLIGHT>;

/// The host's receiving end.
pub type HostReceiver = Receiver<RustCrypto, Vec<u8>, FILES_IN_FLIGHT>;

/// Raises the soft limit on open files to the hard one: a receiver holds a partial file open
/// per file in flight, on every connection, and a soft limit of 1,024 is still common.
pub fn raise_open_file_limit() {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
    }
}

/// The files in flight this process accepts per connection when it receives, as announced in
/// `Open`/`Opened`: [`FILES_IN_FLIGHT`], less where the open-file limit could not hold a
/// partial file per file in flight on eight connections.
pub fn files_in_flight() -> u16 {
    use rustix::process::{Resource, getrlimit};
    let open_files = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let per_connection = open_files.saturating_sub(256) / 8;
    per_connection.clamp(MAX_FILES_IN_FLIGHT as u64, FILES_IN_FLIGHT as u64) as u16
}

/// Block size for a new file when the receiver's frames are too small for 1 MiB blocks (a
/// device's), and a sender's placeholder until the receiver chose: 64 KiB. Against an old
/// copy the receiver sizes blocks to it ([`delta_block_log2`]).
pub const BLOCK_LOG2: u8 = 16;

/// The delta block size for an old copy of `len` bytes: the power of two nearest √(32·len).
/// One changed spot costs a block of data and the receiver sends 32 bytes of hash per block,
/// so `len / b · 32 + b` is least at `b = √(32·len)`: 2 KiB for a 100 KB file, 16 KiB for
/// 7 MiB, 64 KiB for 128 MiB, 1 MiB (the largest) from 32 GiB on. A fixed 64 KiB sent most
/// of a small document for one changed byte, and 26 MB of hashes for a 50 GiB image.
pub fn delta_block_log2(len: u64) -> u8 {
    use keepsync_core::budget::{MAX_BLOCK_LOG2, MIN_BLOCK_LOG2};
    let ideal = (32.0 * len as f64).sqrt().max(1.0);
    (ideal.log2().round() as u8).clamp(MIN_BLOCK_LOG2, MAX_BLOCK_LOG2)
}

/// Block size for a file the receiver has no copy of: 1 MiB, for fewer messages and a better
/// compression ratio (each block is compressed on its own).
pub const NEW_FILE_BLOCK_LOG2: u8 = 20;

/// Receive buffer: room for the largest block (1 MiB) a peer may choose.
pub const RX_BUFFER: usize = FRAME_HEADER_LEN + frame_body_for_block(keepsync_core::budget::MAX_BLOCK_LOG2);

/// Send queue: a few of the largest frames, so the socket always has something to write.
pub const TX_BUFFER: usize = 4 * RX_BUFFER;

/// The default TCP port of `keepsync serve`.
pub const DEFAULT_PORT: u16 = 7373;

/// Milliseconds since the Unix epoch: the clock the core's timers run on.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `ks://HOST[:PORT]/PATH`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Tree under the server's root (relative, `/`-separated; empty for the root itself).
    pub path: String,
}

impl Remote {
    /// Parses `ks://HOST[:PORT]/PATH`; `None` when `arg` does not start with `ks://`.
    pub fn parse(arg: &str) -> Option<Result<Self>> {
        let rest = arg.strip_prefix("ks://")?;
        let bad = |why: &str| {
            Some(Err(Error::Usage(format!(
                "{arg}: {why}; write ks://HOST[:PORT]/PATH, e.g. ks://backup.lan:{DEFAULT_PORT}/photos"
            ))))
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse::<u16>() {
                Ok(port) if port > 0 => (h, port),
                _ => return bad("the port is not a number between 1 and 65535"),
            },
            _ => (authority, DEFAULT_PORT),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return bad("the host is missing");
        }
        Some(Ok(Self { host: host.to_owned(), port, path: path.trim_matches('/').to_owned() }))
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ks://{}:{}/{}", self.host, self.port, self.path)
    }
}

/// Runs one connection's `work` on a thread of its own, under a single-threaded runtime for
/// its socket and timers.
///
/// A connection's file work (reading, hashing, compressing, writing, flushing) blocks. Run on
/// a shared multi-threaded runtime, every such call had to go through `block_in_place`,
/// which hands the worker's place to another thread each time: thousands of hand-offs per
/// run, and a server that had served 20 runs held 91 threads and 70 MiB, since the
/// allocator keeps an arena per thread. One thread per connection, as rsync's daemon forks
/// one process per connection, costs a thread start per connection and nothing per call.
pub fn connection_thread<T, F>(work: F) -> Result<std::thread::JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    std::thread::Builder::new()
        .name("keepsync-conn".into())
        .spawn(move || block_on(work))
        .map_err(|e| Error::Usage(format!("cannot start a thread for a connection: {e}")))
}

/// Waits for a connection thread's result.
pub fn join_connection<T>(handle: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    handle.join().unwrap_or_else(|_| {
        Err(Error::Usage("internal error: a connection thread panicked; please report this as a bug".into()))
    })
}

/// Runs `work` to the end on the calling thread, under a single-threaded runtime.
pub fn block_on<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(format!("cannot start the network runtime: {e}")))?
        .block_on(work)
}

/// Feeds bytes `from..to` of `file` to `hasher`, by positioned reads (another handle's
/// position, and writes through it, are not disturbed), `buf.len()` bytes at a time.
pub fn hash_file_range(
    hasher: &mut blake3::Hasher,
    file: &std::fs::File,
    (from, to): (u64, u64),
    buf: &mut [u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

/// Fresh random bytes for a handshake.
pub fn fresh_random() -> Result<[u8; 32]> {
    let mut r = [0u8; 32];
    crate::keys::random_bytes(&mut r)?;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_blocks_grow_with_the_square_root_of_the_old_copy() {
        let kib = |log2: u8| 1u64 << (log2 - 10);
        assert_eq!(kib(delta_block_log2(0)), 1, "the smallest block");
        assert_eq!(kib(delta_block_log2(100_000)), 2);
        assert_eq!(kib(delta_block_log2(3 << 20)), 8);
        assert_eq!(kib(delta_block_log2(7 << 20)), 16);
        assert_eq!(kib(delta_block_log2(128 << 20)), 64);
        assert_eq!(kib(delta_block_log2(32 << 30)), 1024);
        assert_eq!(kib(delta_block_log2(u64::MAX)), 1024, "the largest block");
    }

    #[test]
    fn remote_urls_parse_and_bad_ones_explain() {
        let r = Remote::parse("ks://host:9000/a/b/").unwrap().unwrap();
        assert_eq!((r.host.as_str(), r.port, r.path.as_str()), ("host", 9000, "a/b"));
        let r = Remote::parse("ks://10.0.0.1").unwrap().unwrap();
        assert_eq!((r.host.as_str(), r.port, r.path.as_str()), ("10.0.0.1", DEFAULT_PORT, ""));
        let r = Remote::parse("ks://[::1]:99/x").unwrap().unwrap();
        assert_eq!((r.host.as_str(), r.port), ("::1", 99));
        assert!(Remote::parse("/local/path").is_none());
        for bad in ["ks://host:0/x", "ks://host:http/x", "ks://:9/x", "ks:///x"] {
            let err = Remote::parse(bad).unwrap().unwrap_err().to_string();
            assert!(err.contains("ks://HOST"), "{bad}: {err}");
        }
    }
}
