//! `keepsync sync` with a `ks://` side: connects (with backoff), proves the PSK, opens the
//! remote tree, and runs the sending end (push) or the receiving end (pull) over a pool of
//! connections. A push's connections share one work queue here; a pull's share one on the
//! server (they carry the same session id in `Open`). A connection that fails is retried;
//! the receiver's durable partials make the retry resume where the data stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::{CloseCode, Direction, Kind, Message, ProtoError};
use serde::Serialize;
use tokio::net::TcpStream;

use super::driver::{App, Link, LinkStats, drive, proto};
use super::effort::SyncCodec;
use super::parts::SharedParts;
use super::recv::{CHECKPOINT_EVERY, DirMeta, RecvApp, RecvOptions, RecvSummary, apply_dirs};
use super::send::{Queue, SendApp, SendSummary, split_large_files, total_bytes, walk};
use super::{
    Conn, HostReceiver, HostSender, RX_BUFFER, RateLimiter, Remote, TX_BUFFER, block_on, connection_thread,
    fresh_random, join_connection, now_ms,
};
use crate::error::{Error, Result};
use crate::index::{HashIndex, SharedIndex};

/// Consecutive failed attempts of one connection before the run gives up.
const MAX_ATTEMPTS: u32 = 5;

/// Settings of a network sync.
pub struct RemoteSync {
    /// The remote side.
    pub remote: Remote,
    /// The local side (SRC for a push, DEST for a pull).
    pub local: PathBuf,
    /// Push (local → remote) or pull (remote → local).
    pub direction: Direction,
    /// `--delete`.
    pub delete: bool,
    /// `--checksum`.
    pub checksum: bool,
    /// The pre-shared key.
    pub psk: SecretKey,
    /// `--limit-rate`.
    pub limit: RateLimiter,
    /// `--connections`.
    pub connections: usize,
    /// `--codec` (pushes; the server compresses a pull with `auto`).
    pub codec: SyncCodec,
    /// `--dry-run`: the receiving side changes nothing and says what it would do.
    pub dry_run: bool,
    /// `--part-size`: with several connections, files larger than this are sent as parts
    /// of this size over several connections at once.
    pub part_size: u64,
}

/// What a network sync did (the `--json` output).
#[derive(Debug, Default, Serialize)]
pub struct RemoteSummary {
    /// `push` or `pull`.
    pub direction: &'static str,
    /// Regular files sent or received.
    pub files_transferred: u64,
    /// Regular files already up to date.
    pub files_skipped: u64,
    /// Files resumed from a durable partial (pulls; a push's resumes are on the server).
    pub files_resumed: u64,
    /// Bytes that crossed the link this run from the sending to the receiving side.
    pub bytes_sent: u64,
    /// Bytes that crossed the link this run in both directions.
    pub link_bytes: u64,
    /// File bytes carried by data messages, before compression (pushes).
    pub data_bytes: u64,
    /// Compression each connection ended on (pushes; `auto` follows the bottleneck).
    pub codecs: Vec<String>,
    /// Entries removed by `--delete` (in a dry run: that would be), on whichever side receives.
    pub deleted: u64,
    /// Connections used.
    pub connections: usize,
    /// Connections re-established after a failure.
    pub reconnects: u32,
    /// Pushes: the shortest round trip measured (offer to the receiver's answer), in ms.
    pub rtt_ms: Option<f64>,
    /// Pushes: the most files one connection ended up keeping in flight (the window widens
    /// on a long link).
    pub files_in_flight: usize,
    /// Entries that were not synced, with the reason.
    pub problems: Vec<String>,
    /// Nothing was changed (`--dry-run`).
    pub dry_run: bool,
    /// With `--dry-run`: what would be done, one line per entry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Sends `Open` once the handshake is done, then waits for `Opened`.
struct OpenClient {
    request: (String, Direction, bool, bool),
    dry_run: bool,
    session: [u8; 16],
    part_size: u64,
    /// When `Open` was queued (on a fresh connection: nothing ahead of it).
    sent_at: Option<std::time::Instant>,
    /// The server's `max_files`, once it answered `Opened`.
    opened: Option<u16>,
    /// `Open` to `Opened`: a round trip with nothing queued on either side.
    rtt: Option<Duration>,
}

impl App<Conn> for OpenClient {
    fn produce(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        if conn.is_open() && self.sent_at.is_none() {
            let (path, direction, delete, checksum) = &self.request;
            let open = Message::Open {
                path,
                direction: *direction,
                delete: *delete,
                checksum: *checksum,
                dry_run: self.dry_run,
                max_files: super::files_in_flight(),
                session: self.session,
                part_size: self.part_size,
            };
            self.sent_at = conn.send(now, &open).is_ok().then(Instant::now);
        }
        Ok(())
    }

    fn handle(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        if let Some(msg) = conn.poll_message(now) {
            match msg.map_err(|e| proto("the server", e))? {
                Message::Opened { max_files } => {
                    self.opened = Some(max_files);
                    self.rtt = self.sent_at.map(|at| at.elapsed());
                }
                Message::Close(CloseCode::Refused) => {
                    return Err(Error::Refused {
                        peer: "the server".into(),
                        reason: format!(
                            "{:?} is outside the served root, not a directory, or missing",
                            self.request.0
                        ),
                    });
                }
                _ => return Err(proto("the server", ProtoError::Unexpected("expected Opened"))),
            }
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.opened.is_some()
    }
}

struct Shared {
    opts: RemoteSync,
    addr: String,
    /// `--checksum` pushes: the source tree's hash index.
    index: Option<SharedIndex>,
    /// Pulls: verified parts of split files, shared by the connections.
    parts: SharedParts,
}

/// An open session: the link, the connection, the server's `max_files` and the round trip
/// `Open` took.
struct Established {
    link: Link,
    conn: Conn,
    server_max: u16,
    rtt: Option<Duration>,
}

/// Connects, runs the handshake and opens the tree (`session`: see [`Message::Open`]).
async fn open(shared: &Shared, delete: bool, session: [u8; 16]) -> Result<Established> {
    let opts = &shared.opts;
    let connect = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&shared.addr)).await;
    let stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return Err(Error::Network { peer: shared.addr.clone(), action: "connect to", source: e });
        }
        Err(_) => {
            let e = std::io::ErrorKind::TimedOut.into();
            return Err(Error::Network { peer: shared.addr.clone(), action: "connect to", source: e });
        }
    };
    let mut link = Link::new(stream, shared.addr.clone());
    let mut conn = Conn::client(
        RustCrypto,
        opts.psk.clone(),
        fresh_random()?,
        now_ms(),
        vec![0; RX_BUFFER],
        vec![0; TX_BUFFER],
    )
    .map_err(|e| Error::Usage(format!("internal error: {e}")))?;
    let mut app = OpenClient {
        request: (opts.remote.path.clone(), opts.direction, delete, opts.checksum),
        dry_run: opts.dry_run,
        session,
        part_size: opts.part_size,
        sent_at: None,
        opened: None,
        rtt: None,
    };
    drive(&mut link, &mut conn, &mut app, &opts.limit).await?;
    Ok(Established { link, conn, server_max: app.opened.unwrap_or(0), rtt: app.rtt })
}

/// Failures worth another connection: the link, not the request, went wrong.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Network { .. }
            | Error::Protocol {
                fault: ProtoError::TimedOut | ProtoError::FrameAuthFailed | ProtoError::Closed,
                ..
            }
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(5))
}

#[derive(Default)]
struct WorkerResult {
    send: SendSummary,
    recv: RecvSummary,
    stats: LinkStats,
    reconnects: u32,
    /// Directories a pull connection received, finished once every connection is done.
    dirs: Vec<DirMeta>,
}

fn add_send(into: &mut SendSummary, from: SendSummary) {
    into.files_transferred += from.files_transferred;
    into.files_skipped += from.files_skipped;
    into.other_entries += from.other_entries;
    into.data_bytes += from.data_bytes;
    into.data_bytes_compressed += from.data_bytes_compressed;
    into.codec = from.codec;
    into.rtt = match (into.rtt, from.rtt) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    into.window = into.window.max(from.window);
    into.planned.extend(from.planned);
    into.deleted += from.deleted;
    into.problems.extend(from.problems);
}

fn add_recv(into: &mut RecvSummary, from: RecvSummary) {
    into.files_received += from.files_received;
    into.files_skipped += from.files_skipped;
    into.files_resumed += from.files_resumed;
    into.parts_received += from.parts_received;
    into.deleted += from.deleted;
    into.problems.extend(from.problems);
    into.planned.extend(from.planned);
}

fn add_stats(into: &mut LinkStats, from: LinkStats) {
    into.written += from.written;
    into.read += from.read;
}

/// Why one connection ended: `Ok`, or the error and whether it came before the session
/// opened on the very first try (a server that cannot be reached at all is reported at once,
/// not retried).
type Attempt = std::result::Result<(), (Error, bool)>;

/// The reconnect policy of a worker: after a retryable failure, back off and try again, at
/// most [`MAX_ATTEMPTS`] connections in all.
#[derive(Default)]
struct Reconnect {
    failures: u32,
}

impl Reconnect {
    /// Whether the next attempt is the first.
    fn first(&self) -> bool {
        self.failures == 0
    }

    /// After an attempt: `Ok(true)` when it finished, `Ok(false)` to try again (after the
    /// backoff, counted in `reconnects`), the error when it is final.
    async fn after(&mut self, attempt: Attempt, bar: &ProgressBar, reconnects: &mut u32) -> Result<bool> {
        match attempt {
            Ok(()) => Ok(true),
            Err((e, false)) if retryable(&e) && self.failures + 1 < MAX_ATTEMPTS => {
                self.failures += 1;
                *reconnects += 1;
                bar.suspend(|| eprintln!("keepsync: {e}; reconnecting"));
                tokio::time::sleep(backoff(self.failures)).await;
                Ok(false)
            }
            Err((e, _)) => Err(e),
        }
    }
}

/// One connection of a push: takes entries from `queue` until it is empty.
async fn push_worker(
    shared: Arc<Shared>,
    queue: Queue,
    bar: ProgressBar,
    delete: bool,
) -> Result<WorkerResult> {
    let mut out = WorkerResult::default();
    let mut retry = Reconnect::default();
    loop {
        let mut app =
            SendApp::with_queue(queue.clone(), shared.index.clone(), shared.opts.codec, bar.clone())
                .dry_run(shared.opts.dry_run);
        let first = retry.first();
        let attempt = async {
            let Established { mut link, conn, server_max, rtt } =
                open(&shared, delete, [0; 16]).await.map_err(|e| (e, first))?;
            app.peer_on_loopback(link.peer_is_loopback());
            app.seed_rtt(rtt);
            let mut ep = HostSender::with_table(conn);
            ep.limit_in_flight(server_max);
            let r = drive(&mut link, &mut ep, &mut app, &shared.opts.limit).await;
            add_stats(&mut out.stats, link.stats);
            r.map_err(|e| (e, false))
        }
        .await;
        // What this connection did not finish goes back to the shared queue.
        app.requeue_unfinished();
        add_send(&mut out.send, std::mem::take(&mut app.summary));
        if retry.after(attempt, &bar, &mut out.reconnects).await? {
            return Ok(out);
        }
    }
}

/// One connection of a pull, in `session` (all zero: alone, the whole tree); a retry reopens
/// the session and resumes from the partials. With `defer_dirs`, the directories it received
/// are returned rather than finished.
async fn pull_worker(
    shared: Arc<Shared>,
    bar: ProgressBar,
    session: [u8; 16],
    delete: bool,
    defer_dirs: bool,
) -> Result<WorkerResult> {
    let mut out = WorkerResult::default();
    let mut retry = Reconnect::default();
    let root = shared.opts.local.clone();
    loop {
        let opts = RecvOptions {
            delete,
            checksum: shared.opts.checksum,
            checkpoint_every: CHECKPOINT_EVERY,
            dry_run: shared.opts.dry_run,
            defer_dirs,
        };
        let mut app =
            RecvApp::new(root.clone(), opts).with_progress(bar.clone()).with_parts(Arc::clone(&shared.parts));
        let first = retry.first();
        let attempt = async {
            let Established { mut link, conn, .. } =
                open(&shared, delete, session).await.map_err(|e| (e, first))?;
            let mut ep = HostReceiver::with_table(conn);
            let r = drive(&mut link, &mut ep, &mut app, &shared.opts.limit).await;
            if r.is_err() {
                app.save_in_flight();
            }
            add_stats(&mut out.stats, link.stats);
            r.map_err(|e| (e, false))
        }
        .await;
        add_recv(&mut out.recv, std::mem::take(&mut app.summary));
        out.dirs.extend(app.take_dirs());
        if retry.after(attempt, &bar, &mut out.reconnects).await? {
            return Ok(out);
        }
    }
}

/// A pull over `n` connections sharing one listing on the server. With several, directories
/// are finished after all of them, and `--delete` runs as a last pass over one connection
/// that lists the whole tree.
fn pull(shared: Arc<Shared>, bar: ProgressBar, n: usize) -> Result<WorkerResult> {
    let delete = shared.opts.delete;
    if n == 1 {
        return block_on(pull_worker(shared, bar, [0; 16], delete, false));
    }
    let mut session = [0u8; 16];
    session.copy_from_slice(&fresh_random()?[..16]);
    let mut threads = Vec::new();
    for _ in 0..n {
        threads.push(connection_thread(pull_worker(Arc::clone(&shared), bar.clone(), session, false, true))?);
    }
    let mut out = WorkerResult::default();
    for t in threads {
        let r = join_connection(t)?;
        add_recv(&mut out.recv, r.recv);
        add_stats(&mut out.stats, r.stats);
        out.reconnects += r.reconnects;
        out.dirs.extend(r.dirs);
    }
    apply_dirs(std::mem::take(&mut out.dirs));
    if delete {
        let r = block_on(pull_worker(shared, ProgressBar::hidden(), [0; 16], true, false))?;
        // Metadata only: what it finds up to date was counted by the data pass.
        out.recv.deleted += r.recv.deleted;
        out.recv.problems.extend(r.recv.problems);
        out.recv.files_received += r.recv.files_received;
        add_stats(&mut out.stats, r.stats);
        out.reconnects += r.reconnects;
    }
    Ok(out)
}

/// Runs a network sync to the end.
pub fn sync_remote(opts: RemoteSync, bar: &ProgressBar) -> Result<RemoteSummary> {
    let started = Instant::now();
    super::raise_open_file_limit();
    let addr = format!("{}:{}", opts.remote.host, opts.remote.port);
    let mut summary = RemoteSummary::default();
    let direction = opts.direction;
    let (delete, local, dry_run) = (opts.delete, opts.local.clone(), opts.dry_run);
    let mut problems = Vec::new();
    let connections = opts.connections.max(1);
    let index = (opts.checksum && direction == Direction::Push).then(|| HashIndex::shared(&local));
    let shared = Arc::new(Shared { opts, addr, index, parts: SharedParts::default() });
    match direction {
        Direction::Push => {
            summary.direction = "push";
            let mut entries = walk(&local, &mut problems)?;
            // Several connections share a large file's bytes as parts (a dry run moves none).
            if connections > 1 && !dry_run {
                entries = split_large_files(entries, shared.opts.part_size);
            }
            bar.set_length(total_bytes(&entries));
            // Enough files for every connection to matter (a part of a large file is enough
            // on its own); otherwise fewer connections.
            let parts = entries.iter().filter(|e| e.is_part()).count();
            let n = connections.min(entries.len().div_ceil(4).max(parts).max(1));
            // A dry run moves no data: one connection lists everything (and --delete inline).
            let n = if dry_run { 1 } else { n };
            summary.connections = n;
            // The directories this listing carries, for the last pass below.
            let dirs: Vec<_> = entries.iter().filter(|e| e.kind() == Kind::Dir).cloned().collect();
            let queue = Queue::new(entries);
            // With several connections, --delete needs the whole listing on one: it runs as
            // a last, metadata-only pass after the data moved.
            let delete_inline = delete && n == 1;
            let mut threads = Vec::new();
            for _ in 0..n {
                let w = push_worker(Arc::clone(&shared), queue.clone(), bar.clone(), delete_inline);
                threads.push(connection_thread(w)?);
            }
            let results = threads.into_iter().map(join_connection).collect::<Result<Vec<_>>>()?;
            // With several connections, a directory is finished by the one that carried it
            // while others may still write into it: a last, metadata-only connection lists
            // the whole tree for --delete, or the directories again for their mtimes.
            let last = if delete && !delete_inline {
                Some(walk(&local, &mut Vec::new())?)
            } else if n > 1 && !dry_run && !dirs.is_empty() {
                Some(dirs)
            } else {
                None // (one connection, or no directories: nothing to finish again)
            };
            let last_pass = match last {
                Some(entries) => Some(block_on(push_worker(
                    Arc::clone(&shared),
                    Queue::new(entries),
                    ProgressBar::hidden(),
                    delete,
                ))?),
                None => None,
            };
            for r in results {
                summary.codecs.push(r.send.codec.clone());
                summary.files_transferred += r.send.files_transferred;
                summary.files_skipped += r.send.files_skipped;
                summary.data_bytes += r.send.data_bytes;
                problems.extend(r.send.problems);
                summary.deleted += r.send.deleted;
                summary.planned.extend(r.send.planned);
                summary.bytes_sent += r.stats.written;
                summary.link_bytes += r.stats.written + r.stats.read;
                summary.reconnects += r.reconnects;
                if let Some(rtt) = r.send.rtt {
                    let ms = rtt.as_secs_f64() * 1e3;
                    summary.rtt_ms = Some(summary.rtt_ms.map_or(ms, |m| m.min(ms)));
                }
                summary.files_in_flight = summary.files_in_flight.max(r.send.window);
            }
            if let Some(r) = last_pass {
                // Metadata only: what it finds up to date was counted by the data pass.
                summary.deleted += r.send.deleted;
                summary.planned.extend(r.send.planned.into_iter().filter(|p| p.starts_with("delete")));
                summary.files_transferred += r.send.files_transferred;
                summary.data_bytes += r.send.data_bytes;
                problems.extend(r.send.problems);
                summary.bytes_sent += r.stats.written;
                summary.link_bytes += r.stats.written + r.stats.read;
                summary.reconnects += r.reconnects;
            }
        }
        Direction::Pull => {
            summary.direction = "pull";
            // A dry run moves no data: one connection lists everything.
            let n = if dry_run { 1 } else { connections };
            summary.connections = n;
            if !local.exists() && !dry_run {
                std::fs::create_dir_all(&local).map_err(|e| Error::io("create", &local, e))?;
            }
            let r = pull(Arc::clone(&shared), bar.clone(), n)?;
            summary.files_transferred = r.recv.files_received;
            summary.files_skipped = r.recv.files_skipped;
            summary.files_resumed = r.recv.files_resumed;
            summary.deleted = r.recv.deleted;
            summary.bytes_sent = r.stats.read;
            summary.link_bytes = r.stats.written + r.stats.read;
            summary.reconnects = r.reconnects;
            problems.extend(r.recv.problems);
            summary.planned = r.recv.planned;
            summary.deleted = r.recv.deleted;
        }
    }
    if let Some(index) = &shared.index {
        index.lock().unwrap_or_else(|e| e.into_inner()).save();
    }
    summary.problems = problems;
    summary.dry_run = dry_run;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
