//! `keepsync serve`: accepts connections, proves the PSK, opens the requested tree under the
//! served root, and runs the receiving (push) or sending (pull) end on it. One thread per
//! connection, at most [`MAX_CONNECTIONS`]; a failing connection is logged and never stops
//! the others.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use indicatif::ProgressBar;
use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::{CloseCode, Direction, Message, ProtoError};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::driver::{App, Link, drive, proto};
use super::effort::SyncCodec;
use super::parts::SharedParts;
use super::recv::{RecvApp, RecvOptions, net_path};
use super::send::{Queue, SendApp, split_large_files, walk};
use super::{
    Conn, HostReceiver, HostSender, RX_BUFFER, RateLimiter, TX_BUFFER, files_in_flight, fresh_random, now_ms,
};
use crate::error::{Error, Result};
use crate::index::{HashIndex, SharedIndex};

/// What a client asked for in `Open`.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    /// Tree under the root.
    pub path: String,
    /// Push or pull.
    pub direction: Direction,
    /// `--delete`.
    pub delete: bool,
    /// `--checksum`.
    pub checksum: bool,
    /// `--dry-run`.
    pub dry_run: bool,
    /// Files the client accepts in flight when it receives (a pull).
    pub max_files: u16,
    /// The client's id for a pull over several connections (all zero: on its own).
    pub session: [u8; 16],
    /// A pull in a session: files larger than this go as parts (0: whole).
    pub part_size: u64,
}

/// What a pull sends from: the tree's entries and, with `--checksum`, its hash index.
#[derive(Clone)]
struct PullSource {
    queue: Queue,
    index: Option<SharedIndex>,
}

impl PullSource {
    fn new(req: &OpenRequest, tree: &Path, problems: &mut Vec<String>) -> Result<Self> {
        let mut entries = walk(tree, problems)?;
        // Only a session has other connections to share parts with.
        if req.session != [0; 16] && req.part_size > 0 && !req.dry_run {
            entries = split_large_files(entries, req.part_size);
        }
        let queue = Queue::new(entries);
        Ok(Self { queue, index: req.checksum.then(|| HashIndex::shared(tree)) })
    }
}

/// One pull's source, shared by the connections of its session: made by the first of them
/// to arrive, kept while any of them runs.
type Listing = Arc<ListingSlot>;

/// A session's listing, empty until its first connection walked the tree.
type ListingSlot = Mutex<Option<PullSource>>;

/// The listings of pulls running over several connections, by (session, tree). Every
/// connection of a session takes entries from the same queue, so each entry crosses once, and
/// a connection that fails puts what it had in flight back for the others (or its own retry).
#[derive(Default)]
struct Sessions(Mutex<HashMap<SessionKey, Weak<ListingSlot>>>);

/// A pull session: the client's id and the tree it opened.
type SessionKey = ([u8; 16], PathBuf);

impl Sessions {
    /// The listing of `session` on `tree`, empty until its first connection walks the tree.
    fn listing(&self, session: [u8; 16], tree: &Path) -> Listing {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Sessions whose connections all ended: their queues are gone.
        map.retain(|_, listing| listing.strong_count() > 0);
        let key = (session, tree.to_path_buf());
        if let Some(listing) = map.get(&key).and_then(Weak::upgrade) {
            return listing;
        }
        let listing = Arc::new(Mutex::new(None));
        map.insert(key, Arc::downgrade(&listing));
        listing
    }
}

/// What a pull connection sends from: its own walk of `tree`, or its session's (the
/// listing is returned too, to be held while the connection runs).
fn pull_source(
    sessions: &Sessions,
    req: &OpenRequest,
    tree: &Path,
    problems: &mut Vec<String>,
) -> Result<(PullSource, Option<Listing>)> {
    if req.session == [0; 16] {
        return Ok((PullSource::new(req, tree, problems)?, None));
    }
    let listing = sessions.listing(req.session, tree);
    let mut slot = listing.lock().unwrap_or_else(|e| e.into_inner());
    let source = match &*slot {
        Some(source) => source.clone(),
        None => slot.insert(PullSource::new(req, tree, problems)?).clone(),
    };
    drop(slot);
    Ok((source, Some(listing)))
}

/// Waits for the client's `Open`.
#[derive(Default)]
struct AwaitOpen {
    request: Option<OpenRequest>,
}

impl App<Conn> for AwaitOpen {
    fn produce(&mut self, _: &mut Conn, _: u64) -> Result<()> {
        Ok(())
    }

    fn handle(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        if let Some(msg) = conn.poll_message(now) {
            match msg.map_err(|e| proto("the client", e))? {
                Message::Open {
                    path,
                    direction,
                    delete,
                    checksum,
                    dry_run,
                    max_files,
                    session,
                    part_size,
                } => {
                    self.request = Some(OpenRequest {
                        path: path.to_owned(),
                        direction,
                        delete,
                        checksum,
                        dry_run,
                        max_files,
                        session,
                        part_size,
                    });
                }
                _ => {
                    return Err(proto(
                        "the client",
                        ProtoError::Unexpected("the first message must be Open"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.request.is_some()
    }
}

/// Settings of `keepsync serve`.
pub struct ServeOptions {
    /// The served root: every path is confined to it.
    pub root: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// The pre-shared key.
    pub psk: SecretKey,
    /// Bandwidth limit across all connections.
    pub limit: RateLimiter,
    /// Bytes between durable checkpoints of a received file.
    pub checkpoint_every: u64,
    /// Connections served at once; more wait to be accepted until one ends.
    pub max_connections: usize,
}

/// Where request `path` lives under `root`; for a push it is created when missing.
fn open_tree(root: &Path, req: &OpenRequest) -> std::result::Result<PathBuf, String> {
    if req.path.is_empty() {
        return Ok(root.to_path_buf());
    }
    let tree = net_path(root, &req.path, !req.dry_run)?;
    match std::fs::symlink_metadata(&tree) {
        Ok(m) if m.is_dir() => Ok(tree),
        Ok(_) => Err(format!("{}: not a directory", req.path)),
        // A dry run creates nothing: the tree it would make is simply empty.
        Err(_) if req.direction == Direction::Push && req.dry_run => Ok(tree),
        Err(_) if req.direction == Direction::Push => match std::fs::create_dir(&tree) {
            Ok(()) => Ok(tree),
            // Another connection of the same push made it a moment ago.
            Err(_) if std::fs::symlink_metadata(&tree).is_ok_and(|m| m.is_dir()) => Ok(tree),
            Err(e) => Err(format!("{}: {e}", req.path)),
        },
        Err(_) => Err(format!("{}: no such directory", req.path)),
    }
}

/// Serves until killed.
pub async fn serve(opts: ServeOptions) -> Result<()> {
    let listener = TcpListener::bind(&opts.listen).await.map_err(|e| Error::Network {
        peer: opts.listen.clone(),
        action: "listen on",
        source: e,
    })?;
    serve_on(listener, opts, true).await
}

/// Serves connections from `listener` until the process ends; `log` prints a line per
/// connection on stderr.
pub async fn serve_on(listener: TcpListener, opts: ServeOptions, log: bool) -> Result<()> {
    let root = std::fs::canonicalize(&opts.root).map_err(|e| Error::io("open", &opts.root, e))?;
    if !root.is_dir() {
        return Err(Error::Usage(format!("--root {}: not a directory", opts.root.display())));
    }
    super::raise_open_file_limit();
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_else(|_| opts.listen.clone());
    if log {
        eprintln!("keepsync: serving {} on {addr}", root.display());
    }
    let shared = Arc::new(Served {
        root,
        psk: opts.psk,
        limit: opts.limit,
        checkpoint_every: opts.checkpoint_every,
        sessions: Sessions::default(),
        parts: SharedParts::default(),
    });
    // Each connection runs on a thread of its own, at most `max_connections` at once: beyond
    // that, new ones wait in the listen backlog until one ends (a client's handshake times out
    // if the wait is long).
    let max_connections = opts.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if log {
                    eprintln!(
                        "keepsync: {max_connections} connections are open; new ones wait for one to end \
                         (see --max-connections)"
                    );
                }
                Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed")
            }
        };
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                eprintln!("keepsync: accept failed: {e}");
                continue;
            }
        };
        let stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                eprintln!("keepsync: {peer}: cannot take the connection over: {e}");
                continue;
            }
        };
        let shared = Arc::clone(&shared);
        let started = super::connection_thread(async move {
            let _slot = slot;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("keepsync: {peer}: cannot take the connection over: {e}");
                    return Ok(());
                }
            };
            let mut link = Link::new(stream, peer.to_string());
            match session(&mut link, &shared).await {
                Ok(what) if log => eprintln!("keepsync: {peer}: {what}"),
                Ok(_) => {}
                Err(e) => eprintln!("keepsync: {peer}: {e}"),
            }
            Ok(())
        });
        if let Err(e) = started {
            eprintln!("keepsync: {peer}: {e}");
        }
    }
}

/// Connections a server runs at once by default. Each holds its buffers (about 6 MiB) and a
/// thread; a client opens as many as its `--connections` (by default its cores, at most 4;
/// 64 at the most).
pub const MAX_CONNECTIONS: u16 = 128;

/// Starts a quiet server for `root` on a free loopback port in a background thread (for
/// `keepsync bench`'s loopback workload) and returns its address.
pub fn spawn_loopback(root: PathBuf, psk: SecretKey) -> Result<std::net::SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| Error::Network { peer: "127.0.0.1:0".into(), action: "listen on", source: e })?;
    let addr = listener.local_addr().map_err(|e| Error::Network {
        peer: "127.0.0.1:0".into(),
        action: "listen on",
        source: e,
    })?;
    // The accept loop's thread (each connection gets one of its own).
    std::thread::spawn(move || {
        let served = super::block_on(async move {
            let opts = ServeOptions {
                root,
                listen: addr.to_string(),
                psk,
                limit: RateLimiter::unlimited(),
                checkpoint_every: super::recv::CHECKPOINT_EVERY,
                max_connections: usize::from(MAX_CONNECTIONS),
            };
            let listener = TcpListener::from_std(listener).map_err(|e| Error::Network {
                peer: addr.to_string(),
                action: "listen on",
                source: e,
            })?;
            serve_on(listener, opts, false).await
        });
        if let Err(e) = served {
            eprintln!("keepsync: loopback server: {e}");
        }
    });
    Ok(addr)
}

/// What every connection of a server shares.
struct Served {
    root: PathBuf,
    psk: SecretKey,
    limit: RateLimiter,
    checkpoint_every: u64,
    sessions: Sessions,
    /// Verified parts of split files, shared by every push into this server.
    parts: SharedParts,
}

/// One connection, start to end. Returns a line for the log.
async fn session(link: &mut Link, served: &Served) -> Result<String> {
    let Served { root, psk, limit, checkpoint_every, sessions, parts } = served;
    let mut conn = Conn::server(
        RustCrypto,
        psk.clone(),
        fresh_random()?,
        now_ms(),
        vec![0; RX_BUFFER],
        vec![0; TX_BUFFER],
    )
    .map_err(|e| Error::Usage(format!("internal error: {e}")))?;
    let mut open = AwaitOpen::default();
    drive(link, &mut conn, &mut open, limit).await?;
    let req = open.request.expect("drive returns once Open arrived");
    let tree = match open_tree(root, &req) {
        Ok(t) => t,
        Err(why) => {
            conn.close(now_ms(), CloseCode::Refused);
            link.flush(&mut conn).await;
            return Err(Error::Refused { peer: link.peer.clone(), reason: why });
        }
    };
    conn.send(now_ms(), &Message::Opened { max_files: files_in_flight() })
        .map_err(|e| Error::Usage(format!("internal error: {e}")))?;
    match req.direction {
        Direction::Push => {
            let mut ep = HostReceiver::with_table(conn);
            let opts = RecvOptions {
                delete: req.delete,
                checksum: req.checksum,
                checkpoint_every: *checkpoint_every,
                dry_run: req.dry_run,
                // Each connection of a push finishes its own directories; the client sends
                // them again on a last connection when it used several.
                defer_dirs: false,
            };
            let mut app =
                RecvApp::new(tree, opts).log_problems_as(link.peer.clone()).with_parts(Arc::clone(parts));
            let result = drive(link, &mut ep, &mut app, limit).await;
            if result.is_err() {
                app.save_in_flight();
            }
            let s = &app.summary;
            result.map(|()| {
                format!(
                    "push into {:?} done: {} files received ({} resumed, {} parts of split files), {} up to date, {} deleted, {} problems",
                    req.path,
                    s.files_received,
                    s.files_resumed,
                    s.parts_received,
                    s.files_skipped,
                    s.deleted,
                    s.problems.len()
                )
            })
        }
        Direction::Pull => {
            let mut problems = Vec::new();
            let (source, _listing) = pull_source(sessions, &req, &tree, &mut problems)?;
            let mut ep = HostSender::with_table(conn);
            ep.limit_in_flight(req.max_files);
            let index = source.index.clone();
            let mut app =
                SendApp::with_queue(source.queue, source.index, SyncCodec::Auto, ProgressBar::hidden());
            // Its round trip, from the client's first answers, tells this host from a tunnel.
            app.peer_on_loopback(link.peer_is_loopback());
            let result = drive(link, &mut ep, &mut app, limit).await;
            if let Some(index) = index {
                // The hashes this connection computed serve the next `--checksum` pull.
                index.lock().unwrap_or_else(|e| e.into_inner()).save();
            }
            if let Err(e) = result {
                // The session's other connections (or the client's retry) send these.
                app.requeue_unfinished();
                return Err(e);
            }
            let s = &app.summary;
            Ok(format!(
                "pull of {:?} done: {} files sent, {} up to date, {} problems",
                req.path,
                s.files_transferred,
                s.files_skipped,
                s.problems.len() + problems.len()
            ))
        }
    }
}
