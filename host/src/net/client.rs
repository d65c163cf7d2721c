//! `keepsync sync` with a `ks://` side: connects (with backoff), proves the PSK, opens the
//! remote tree, and runs the sending end (push) or the receiving end (pull) over a pool of
//! connections. A push's connections share one [`Job`] here; a pull's share one on the server
//! (they carry the same session id in `Open`) and one [`Store`] here. A connection that fails
//! is retried; the receiver's durable partials make the retry resume where the data stopped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::{Direction, Kind, ProtoError};
use tokio::net::TcpStream;

use super::clock::{SharedClock, monotonic};
use super::driver::{Link, LinkStats, drive, tcp_link};
use super::open::{OpenClient, OpenRequest};
use super::{
    Conn, HostReceiver, HostSender, RX_BUFFER, RateLimiter, Remote, TX_BUFFER, block_on, connection_thread,
    fresh_random, join_connection,
};
use crate::error::{Error, Result};
use crate::index::HashIndex;
use crate::sync::NewRoot;
use crate::sync::dest::{CHECKPOINT_EVERY, Dest, DestOptions, DirMeta, Store};
use crate::sync::filter::Filter;
use crate::sync::recv::RecvApp;
use crate::sync::send::effort::SyncCodec;
use crate::sync::send::{Job, SendApp, part_log2};
use crate::sync::summary::{Problem, Summary};
use crate::sync::tree::Tree;
use crate::sync::walk::{Entry, walk};

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
    /// `--delete-excluded`: with `--delete`, the receiving side removes excluded entries too.
    pub delete_excluded: bool,
    /// What is left out: a push's walk here applies it, a pull's server gets its rules in
    /// `Open`; the receiving side's `--delete` keeps what it excludes.
    pub filter: Filter,
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
    /// of this size (rounded to a power of two) over several connections at once.
    pub part_size: u64,
}

struct Shared {
    opts: RemoteSync,
    /// The filter's rules as `Open` carries them.
    rules: Vec<u8>,
    clock: SharedClock,
}

/// An open session: the link, the connection, the server's `max_files` and the round trip
/// `Open` took.
struct Established {
    link: Link<TcpStream>,
    conn: Conn,
    server_max: u16,
    rtt: Option<Duration>,
}

/// Connects, runs the handshake and opens the tree (`session`: see `Open`).
async fn open(shared: &Shared, delete: bool, session: [u8; 16]) -> Result<Established> {
    let opts = &shared.opts;
    let addr = opts.remote.addr();
    let connect = tokio::time::timeout(Duration::from_secs(10), TcpStream::connect(&addr)).await;
    let stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(Error::Network { peer: addr, action: "connect to", source: e }),
        Err(_) => {
            let e = std::io::ErrorKind::TimedOut.into();
            return Err(Error::Network { peer: addr, action: "connect to", source: e });
        }
    };
    let mut link = tcp_link(stream, addr, true);
    let clock = &shared.clock;
    let mut conn = Conn::client(
        RustCrypto,
        opts.psk.clone(),
        fresh_random()?,
        clock.now_ms(),
        vec![0; RX_BUFFER],
        vec![0; TX_BUFFER],
    )
    .map_err(|e| Error::Internal(e.to_string()))?;
    let request = OpenRequest {
        path: opts.remote.path.clone(),
        direction: opts.direction,
        delete,
        replace: opts.delete,
        checksum: opts.checksum,
        dry_run: opts.dry_run,
        max_files: super::files_in_flight(),
        session,
        part_size: if session == [0; 16] { 0 } else { opts.part_size },
        delete_excluded: opts.delete_excluded,
        filters: shared.rules.clone(),
    };
    let mut app = OpenClient::new(request, Arc::clone(clock));
    drive(&mut link, &mut conn, &mut app, &opts.limit, clock.as_ref()).await?;
    Ok(Established { link, conn, server_max: app.opened.unwrap_or(0), rtt: app.rtt })
}

/// Failures worth another connection: the link, not the request, went wrong.
fn retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::Network { .. }
            | Error::Protocol {
                fault: ProtoError::TimedOut
                    | ProtoError::HandshakeTimedOut
                    | ProtoError::HungUpInHandshake
                    | ProtoError::FrameAuthFailed
                    | ProtoError::Closed,
                ..
            }
    )
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(250 << attempt.min(5))
}

#[derive(Default)]
struct WorkerResult {
    summary: Summary,
    stats: LinkStats,
    /// Directories a pull connection received, finished once every connection is done.
    dirs: Vec<DirMeta>,
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
                bar.suspend(|| crate::say::say(&format!("{e}; reconnecting")));
                tokio::time::sleep(backoff(self.failures)).await;
                Ok(false)
            }
            Err((e, _)) => Err(e),
        }
    }
}

/// One connection of a push: takes entries from `job` until it is empty.
async fn push_worker(
    shared: Arc<Shared>,
    job: Arc<Job>,
    bar: ProgressBar,
    delete: bool,
) -> Result<WorkerResult> {
    let mut out = WorkerResult::default();
    let mut retry = Reconnect::default();
    loop {
        let mut app = SendApp::new(Arc::clone(&job), shared.opts.codec, shared.opts.dry_run);
        let first = retry.first();
        let attempt = async {
            let Established { mut link, conn, server_max, rtt } =
                open(&shared, delete, [0; 16]).await.map_err(|e| (e, first))?;
            app.peer_on_loopback(link.peer_is_loopback());
            app.seed_rtt(rtt);
            let mut ep = HostSender::with_table(conn);
            ep.limit_in_flight(server_max);
            let r = drive(&mut link, &mut ep, &mut app, &shared.opts.limit, shared.clock.as_ref()).await;
            add_stats(&mut out.stats, link.stats);
            r.map_err(|e| (e, false))
        }
        .await;
        // What this connection did not finish goes back to the shared queue.
        app.requeue_unfinished();
        out.summary.absorb(std::mem::take(&mut app.summary));
        let mut reconnects = 0;
        let done = retry.after(attempt, &bar, &mut reconnects).await;
        out.summary.reconnects += reconnects;
        if done? {
            return Ok(out);
        }
    }
}

fn add_stats(into: &mut LinkStats, from: LinkStats) {
    into.written += from.written;
    into.read += from.read;
}

/// One connection of a pull, in `session` (all zero: alone, the whole tree); a retry reopens
/// the session and resumes from the partials. With `defer_dirs`, the directories it received
/// are returned rather than finished.
async fn pull_worker(
    shared: Arc<Shared>,
    store: Arc<Store>,
    bar: ProgressBar,
    session: [u8; 16],
    delete: bool,
    defer_dirs: bool,
) -> Result<WorkerResult> {
    let mut out = WorkerResult::default();
    let mut retry = Reconnect::default();
    loop {
        let opts = DestOptions {
            delete,
            replace: shared.opts.delete,
            dry_run: shared.opts.dry_run,
            checkpoint_every: CHECKPOINT_EVERY,
            append_only: false,
        };
        let dest = Dest::new(Arc::clone(&store), "", opts);
        let keep = (!shared.opts.delete_excluded).then(|| shared.opts.filter.clone());
        let mut app = RecvApp::new(dest, shared.opts.checksum, Arc::clone(&shared.clock))
            .with_progress(bar.clone())
            .keeping(keep);
        if defer_dirs {
            app = app.defer_dirs();
        }
        let first = retry.first();
        let attempt = async {
            let Established { mut link, conn, .. } =
                open(&shared, delete, session).await.map_err(|e| (e, first))?;
            let mut ep = HostReceiver::with_table(conn);
            let r = drive(&mut link, &mut ep, &mut app, &shared.opts.limit, shared.clock.as_ref()).await;
            if r.is_err() {
                app.save_in_flight();
            }
            add_stats(&mut out.stats, link.stats);
            r.map_err(|e| (e, false))
        }
        .await;
        out.summary.absorb(std::mem::take(&mut app.summary));
        out.dirs.extend(app.take_dirs());
        let mut reconnects = 0;
        let done = retry.after(attempt, &bar, &mut reconnects).await;
        out.summary.reconnects += reconnects;
        if done? {
            return Ok(out);
        }
    }
}

/// A pull over `n` connections sharing one listing on the server. With several, directories
/// are finished after all of them, and `--delete` runs as a last pass over one connection
/// that lists the whole tree.
fn pull(shared: Arc<Shared>, store: Arc<Store>, bar: ProgressBar, n: usize) -> Result<WorkerResult> {
    let delete = shared.opts.delete;
    if n == 1 {
        return block_on(pull_worker(shared, store, bar, [0; 16], delete, false));
    }
    let mut session = [0u8; 16];
    session.copy_from_slice(&fresh_random()?[..16]);
    let mut threads = Vec::new();
    for _ in 0..n {
        let w = pull_worker(Arc::clone(&shared), Arc::clone(&store), bar.clone(), session, false, true);
        threads.push(connection_thread(w)?);
    }
    let mut out = WorkerResult::default();
    for t in threads {
        let r = join_connection(t)?;
        out.summary.absorb(r.summary);
        add_stats(&mut out.stats, r.stats);
        out.dirs.extend(r.dirs);
    }
    let dest = Dest::new(Arc::clone(&store), "", DestOptions::default());
    dest.finish_dirs(std::mem::take(&mut out.dirs));
    if delete {
        let r = block_on(pull_worker(shared, store, ProgressBar::hidden(), [0; 16], true, false))?;
        out.summary.absorb_last_pass(r.summary);
        add_stats(&mut out.stats, r.stats);
    }
    Ok(out)
}

/// A push over `n` connections: `entries` of `tree`, then, with several connections, a last
/// metadata-only pass (the whole listing for `--delete`, or the directories for their mtimes).
fn push(
    shared: Arc<Shared>,
    tree: Arc<Tree>,
    entries: Vec<Entry>,
    bar: &ProgressBar,
    summary: &mut Summary,
) -> Result<()> {
    let opts = &shared.opts;
    let connections = opts.connections.max(1);
    // Several connections share a large file's bytes as parts (a dry run moves none).
    let split = (connections > 1 && !opts.dry_run).then(|| part_log2(opts.part_size));
    let index = opts.checksum.then(|| HashIndex::shared(tree.path()));
    let dirs: Vec<Entry> = entries.iter().filter(|e| e.kind == Kind::Dir).cloned().collect();
    let job =
        Job::new(Arc::clone(&tree), entries, split, index.clone(), bar.clone(), Arc::clone(&shared.clock));
    let items = job.len();
    // Enough items for every connection to matter (a part of a large file is enough on its
    // own); a dry run moves no data: one connection lists everything (and --delete inline).
    let n = if opts.dry_run { 1 } else { connections.min(items.div_ceil(4).max(job.parts()).max(1)) };
    summary.connections = n;
    let delete_inline = opts.delete && n == 1;
    let mut threads = Vec::new();
    for _ in 0..n {
        threads.push(connection_thread(push_worker(
            Arc::clone(&shared),
            Arc::clone(&job),
            bar.clone(),
            delete_inline,
        ))?);
    }
    let mut stats = LinkStats::default();
    for t in threads {
        let r = join_connection(t)?;
        summary.absorb(r.summary);
        add_stats(&mut stats, r.stats);
    }
    // With several connections, a directory is finished by the one that carried it while
    // others may still write into it: a last, metadata-only connection lists the whole tree
    // for --delete, or the directories again for their mtimes.
    let last = if opts.delete && !delete_inline {
        let mut problems = Vec::new();
        Some(walk(&tree, &opts.filter, &mut problems)?.entries)
    } else if n > 1 && !opts.dry_run && !dirs.is_empty() {
        Some(dirs)
    } else {
        None
    };
    if let Some(entries) = last {
        let job = Job::new(
            Arc::clone(&tree),
            entries,
            None,
            index.clone(),
            ProgressBar::hidden(),
            Arc::clone(&shared.clock),
        );
        let r = block_on(push_worker(Arc::clone(&shared), job, ProgressBar::hidden(), opts.delete))?;
        summary.absorb_last_pass(r.summary);
        add_stats(&mut stats, r.stats);
    }
    if let Some(index) = &index {
        index.lock().unwrap_or_else(|e| e.into_inner()).save();
    }
    summary.bytes_sent = stats.written;
    summary.link_bytes = stats.written + stats.read;
    Ok(())
}

/// Runs a network sync to the end.
pub fn sync_remote(opts: RemoteSync, bar: &ProgressBar) -> Result<Summary> {
    let started = Instant::now();
    super::raise_open_file_limit();
    let direction = opts.direction;
    let (local, dry_run, connections) = (opts.local.clone(), opts.dry_run, opts.connections.max(1));
    // Refused here, before anything connects, if the rules do not fit in `Open`.
    let rules = opts.filter.to_wire().map_err(Error::Filter)?;
    let shared = Arc::new(Shared { opts, rules, clock: monotonic() });
    let mut summary = Summary { dry_run, ..Summary::default() };
    match direction {
        Direction::Push => {
            summary.direction = "push";
            let tree = Arc::new(Tree::open(&local).map_err(|e| Error::io("open", &local, e))?);
            let mut problems = Vec::new();
            let listing = walk(&tree, &shared.opts.filter, &mut problems)?;
            summary.excluded = Some(listing.excluded);
            problems.into_iter().for_each(|p: Problem| summary.problem(p));
            push(Arc::clone(&shared), tree, listing.entries, bar, &mut summary)?;
        }
        Direction::Pull => {
            summary.direction = "pull";
            // A dry run moves no data: one connection lists everything.
            let n = if dry_run { 1 } else { connections };
            summary.connections = n;
            let made = (!local.exists() && !dry_run).then(|| NewRoot::create(&local)).transpose()?;
            // A dry run into a DEST that does not exist yet compares with an empty tree.
            let empty = (dry_run && !local.exists()).then(crate::sync::EmptyDir::new).transpose()?;
            let root = empty.as_ref().map_or(local.as_path(), |e| e.path());
            let pulled = Tree::open(root).map_err(|e| Error::io("open", &local, e)).and_then(|tree| {
                let store = Store::new(tree);
                if !dry_run {
                    store.expire();
                }
                pull(Arc::clone(&shared), store, bar.clone(), n)
            });
            let r = match pulled {
                Ok(r) => r,
                Err(e) => {
                    if let Some(made) = made {
                        made.undo();
                    }
                    return Err(e);
                }
            };
            let stats = r.stats;
            summary.absorb(r.summary);
            summary.bytes_sent = stats.read;
            summary.link_bytes = stats.written + stats.read;
        }
    }
    summary.finish();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
