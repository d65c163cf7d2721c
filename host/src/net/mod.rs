//! The network side of `keepsync sync`: a thin tokio driver around the core's sans-IO
//! [`Connection`], [`Sender`] and [`Receiver`] (see `docs/PROTOCOL.md`), and the client and
//! server that set sessions up. What each end does with files lives in [`crate::sync`].
//!
//! - [`app`]: the [`App`](app::App) trait a connection runs, and the sans-IO feeding step.
//! - [`driver`]: one loop per connection over any `AsyncRead + AsyncWrite`.
//! - [`open`]: the `Open`/`Opened` exchange; [`client`] and [`server`] (`keepsync serve`).
//! - [`clock`]: the monotonic clock every timer runs on; [`limit`]: `--limit-rate`.
//!
//! [`Sender`]: keepsync_core::sync::Sender
//! [`Receiver`]: keepsync_core::sync::Receiver

pub mod app;
pub mod client;
pub mod clients;
pub mod clock;
pub mod driver;
pub mod limit;
pub mod open;
pub mod server;

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
/// it). A receiver commits what it verified in batches (when nothing is mid-transfer, or when
/// a batch is full or old enough) with one filesystem flush, and answers `Done` only then. A
/// sender starts at [`crate::sync::send::INITIAL_WINDOW`] and widens its window on a long
/// link: at 50 ms of round trip, 10,000 small files took 6.5-8 s at 128 and 2.5 s at 512.
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

/// `ks://HOST[:PORT]/PATH`, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Tree under the server's root, `/`-separated; `.` names the served root itself.
    pub path: String,
}

impl Remote {
    /// Parses `ks://HOST[:PORT]/PATH`; `None` when `arg` does not start with `ks://`. A URL
    /// without a path is refused: it would name the whole served root, which other clients
    /// share (write `ks://HOST/.` to mean it).
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
        let path = path.trim_matches('/');
        if path.is_empty() {
            return Some(Err(Error::Usage(format!(
                "{arg} names no tree: a server's root is shared by all its clients. Name a tree under it \
                 (ks://{host}:{port}/photos), or write ks://{host}:{port}/. to mean the whole served root"
            ))));
        }
        let path = if path == "." { ".".to_owned() } else { path.to_owned() };
        if path != "."
            && let Err(why) = crate::sync::tree::check_rel(&path)
        {
            return bad(&why);
        }
        Some(Ok(Self { host: host.to_owned(), port, path }))
    }

    /// The served root itself (`ks://HOST/.`).
    pub fn is_root(&self) -> bool {
        self.path == "."
    }

    /// `host:port`, to connect to.
    pub fn addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl std::fmt::Display for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ks://{}/{}", self.addr(), self.path)
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
        .map_err(|e| Error::Internal(format!("cannot start a thread for a connection: {e}")))
}

/// Waits for a connection thread's result.
pub fn join_connection<T>(handle: std::thread::JoinHandle<Result<T>>) -> Result<T> {
    handle.join().unwrap_or_else(|_| Err(Error::Internal("a connection thread panicked".into())))
}

/// Runs `work` to the end on the calling thread, under a single-threaded runtime.
pub fn block_on<T>(work: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the network runtime: {e}")))?
        .block_on(work)
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
        let r = Remote::parse("ks://[::1]:99/x").unwrap().unwrap();
        assert_eq!((r.host.as_str(), r.port, r.addr().as_str()), ("::1", 99, "[::1]:99"));
        let r = Remote::parse("ks://10.0.0.1/.").unwrap().unwrap();
        assert!(r.is_root());
        assert!(Remote::parse("/local/path").is_none());
        for bad in [
            "ks://host:0/x",
            "ks://host:http/x",
            "ks://:9/x",
            "ks:///x",
            "ks://h/a/../b",
            "ks://h/.keepsync-partial",
        ] {
            let err = Remote::parse(bad).unwrap().unwrap_err().to_string();
            assert!(err.contains("ks://HOST"), "{bad}: {err}");
        }
        // No path: the whole served root, which is never meant by accident.
        for bare in ["ks://host", "ks://host:7000", "ks://host/", "ks://host:7000//"] {
            let err = Remote::parse(bare).unwrap().unwrap_err().to_string();
            assert!(err.contains("names no tree") && err.contains("/."), "{bare}: {err}");
        }
    }
}
