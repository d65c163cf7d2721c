//! `keepsync serve`: accepts connections, proves the PSK, opens the requested tree under the
//! served root, and runs the receiving (push) or sending (pull) end on it. One thread per
//! connection, at most `--max-connections`; a failing connection is logged and never stops
//! the others.
//!
//! [`Served::accept`] decides, without any I/O on the connection, what runs on it once `Open`
//! arrived: the simulator ([`crate::sync::sim`]) calls it the same way the socket loop does.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};

use indicatif::ProgressBar;
use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::Direction;
use keepsync_core::sync::open;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::clock::{SharedClock, monotonic};
use super::driver::{Link, drive, tcp_link};
use super::open::{AwaitOpen, OpenRequest};
use keepsync_core::budget::{FRAME_HEADER_LEN, MAX_PATH_LEN};

use super::{
    Conn, HostReceiver, HostSender, RX_BUFFER, RateLimiter, TX_BUFFER, files_in_flight, fresh_random,
};
use crate::error::{Error, Result};
use crate::index::HashIndex;
use crate::say::say;
use crate::sync::dest::{Dest, DestOptions, Store};
use crate::sync::recv::RecvApp;
use crate::sync::send::effort::SyncCodec;
use crate::sync::send::{Job, SendApp, part_log2};
use crate::sync::tree::{EntryKind, Tree, check_rel};
use crate::sync::walk::walk;

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

/// Connections a server runs at once by default. Each holds its buffers (about 6 MiB) and a
/// thread; a client opens as many as its `--connections` (by default its cores, at most 4;
/// 64 at the most).
pub const MAX_CONNECTIONS: u16 = 128;

/// A pull session: the client's id and the tree it opened.
type SessionKey = ([u8; 16], String);

/// What every connection of a server shares.
pub struct Served {
    store: Arc<Store>,
    psk: SecretKey,
    limit: RateLimiter,
    checkpoint_every: u64,
    /// The listings of pulls running over several connections: every connection of a session
    /// takes entries from the same job, so each entry crosses once.
    sessions: Mutex<HashMap<SessionKey, Weak<Job>>>,
    clock: SharedClock,
    inline: bool,
    /// Print each problem as it happens (the server's log).
    log: bool,
}

/// What runs on a connection once its `Open` was accepted.
pub enum Session {
    /// A push: this end receives.
    Recv(Box<RecvApp>),
    /// A pull: this end sends.
    Send(Box<SendApp>),
}

/// An accepted connection: its endpoint (with the full buffers) and what runs on it.
pub enum Running {
    /// A push: this end receives.
    Recv(HostReceiver, Box<RecvApp>),
    /// A pull: this end sends.
    Send(HostSender, Box<SendApp>),
}

/// A refused `Open`: the connection with the refusal queued, and why.
pub struct Refusal {
    /// The connection; write out what it has queued, then hang up.
    pub conn: Box<Conn>,
    /// Why, for the log.
    pub why: String,
}

/// Bytes each of a connection's two buffers holds until the client proved the PSK: enough
/// for the handshake and an `Open` with the longest path. The full buffers (about 5 MiB)
/// are lent only after the proof, so a connection that proves nothing costs a few KiB.
pub const HANDSHAKE_BUFFER: usize = FRAME_HEADER_LEN + MAX_PATH_LEN + 512;

/// Connections still in their handshake (or waiting for `Open`) held at once; beyond it
/// the oldest is dropped. Each costs about 30 KiB and no thread, and may take at most
/// the core's handshake timeout (10 s) to prove the PSK.
pub const MAX_HANDSHAKES: usize = 256;

impl Served {
    /// Serves the tree at `root` (which must be a directory).
    pub fn new(
        root: &std::path::Path,
        psk: SecretKey,
        limit: RateLimiter,
        checkpoint_every: u64,
        clock: SharedClock,
    ) -> Result<Arc<Self>> {
        let tree = Tree::open(root).map_err(|e| Error::io("open", root, e))?;
        Ok(Arc::new(Self {
            store: Store::new(tree),
            psk,
            limit,
            checkpoint_every,
            sessions: Mutex::default(),
            clock,
            inline: false,
            log: true,
        }))
    }

    /// The same over `store` (simulations: a store that hashes in line), on `clock`.
    pub fn over(store: Arc<Store>, psk: SecretKey, checkpoint_every: u64, clock: SharedClock) -> Arc<Self> {
        Arc::new(Self {
            store,
            psk,
            limit: RateLimiter::unlimited(),
            checkpoint_every,
            sessions: Mutex::default(),
            clock,
            inline: true,
            log: false,
        })
    }

    /// The pre-shared key.
    pub fn psk(&self) -> &SecretKey {
        &self.psk
    }

    /// The store of the served root.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Checks `req` and builds what runs on the connection from `peer` (on `loopback`);
    /// `Err` says why it is refused.
    pub fn accept(
        &self,
        req: &OpenRequest,
        peer: &str,
        loopback: bool,
    ) -> std::result::Result<Session, String> {
        let base = match req.path.as_str() {
            "." => String::new(),
            "" => {
                return Err(
                    "the request names no tree (a client asking for the whole served root writes `.`)".into(),
                );
            }
            path => {
                check_rel(path)?;
                path.to_owned()
            }
        };
        let tree = self.store.tree();
        match req.direction {
            Direction::Push => {
                if !req.dry_run {
                    // Created under the tree's lock, never through a symlink.
                    let _lock = tree.lock().map_err(|e| format!("cannot lock the served tree: {e}"))?;
                    tree.make_dirs(&base)
                        .map_err(|e| format!("{}: cannot open it as a directory ({e})", req.path))?;
                } else if let Ok(Some(s)) = tree.lstat(&base)
                    && s.kind != EntryKind::Dir
                {
                    return Err(format!("{}: not a directory", req.path));
                }
                if !req.dry_run {
                    self.store.expire();
                }
                let opts = DestOptions {
                    delete: req.delete,
                    replace: req.replace || req.delete,
                    dry_run: req.dry_run,
                    checkpoint_every: self.checkpoint_every,
                };
                let dest = Dest::new(Arc::clone(&self.store), &base, opts);
                let mut app = RecvApp::new(dest, req.checksum, Arc::clone(&self.clock));
                if self.log {
                    app = app.log_problems_as(peer.to_owned());
                }
                Ok(Session::Recv(Box::new(app)))
            }
            Direction::Pull => {
                let job = self.pull_job(req, &base)?;
                let mut app = SendApp::new(job, SyncCodec::Auto, req.dry_run);
                app.peer_on_loopback(loopback);
                Ok(Session::Send(Box::new(app)))
            }
        }
    }

    /// What a pull connection sends from: its own walk of the tree, or its session's.
    fn pull_job(&self, req: &OpenRequest, base: &str) -> std::result::Result<Arc<Job>, String> {
        let make = || -> std::result::Result<Arc<Job>, String> {
            let subtree = self
                .store
                .tree()
                .subtree(base)
                .map_err(|e| format!("{}: no such directory ({e})", req.path))?;
            let subtree = Arc::new(subtree);
            let mut problems = Vec::new();
            let entries =
                walk(&subtree, &mut problems).map_err(|e| format!("{}: cannot read it ({e})", req.path))?;
            for p in problems.iter().filter(|_| self.log) {
                say(&format!("pull of {:?}: {p}", req.path));
            }
            // Only a session has other connections to share parts with.
            let split = (req.session != [0; 16] && req.part_size > 0 && !req.dry_run)
                .then(|| part_log2(req.part_size));
            let index = req.checksum.then(|| HashIndex::shared(subtree.path()));
            let job =
                Job::new(subtree, entries, split, index, ProgressBar::hidden(), Arc::clone(&self.clock));
            Ok(if self.inline { job.inline() } else { job })
        };
        if req.session == [0; 16] {
            return make();
        }
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        // Sessions whose connections all ended: their jobs are gone.
        sessions.retain(|_, job| job.strong_count() > 0);
        let key = (req.session, base.to_owned());
        if let Some(job) = sessions.get(&key).and_then(Weak::upgrade) {
            return Ok(job);
        }
        let job = make()?;
        sessions.insert(key, Arc::downgrade(&job));
        Ok(job)
    }

    /// A new server-side connection, with the small buffers of the handshake (see
    /// [`HANDSHAKE_BUFFER`]); [`Served::open`] lends it the full ones.
    pub fn connection(&self) -> Result<Conn> {
        let internal = |e: keepsync_core::UsageError| Error::Internal(e.to_string());
        let mut conn = Conn::server(
            RustCrypto,
            self.psk.clone(),
            fresh_random()?,
            self.clock.now_ms(),
            vec![0; HANDSHAKE_BUFFER],
            vec![0; HANDSHAKE_BUFFER],
        )
        .map_err(internal)?;
        conn.promise_max_body(RX_BUFFER - FRAME_HEADER_LEN).map_err(internal)?;
        Ok(conn)
    }

    /// Answers the client's `req` on `conn` (from `peer`, on `loopback`): `Opened`, the full
    /// buffers and what runs next; or the refusal queued on `conn` and why.
    pub fn open(
        &self,
        mut conn: Conn,
        req: &OpenRequest,
        peer: &str,
        loopback: bool,
    ) -> std::result::Result<Running, Refusal> {
        let refuse = |conn, why| Refusal { conn: Box::new(conn), why };
        let now = self.clock.now_ms();
        let session = match self.accept(req, peer, loopback) {
            Ok(session) => session,
            Err(why) => {
                open::refuse(&mut conn, now);
                return Err(refuse(conn, why));
            }
        };
        if let Err(e) = conn.lend_buffers(vec![0; RX_BUFFER], vec![0; TX_BUFFER]) {
            return Err(refuse(conn, format!("internal error: {e}")));
        }
        if let Err(e) = open::accept(&mut conn, now, files_in_flight()) {
            return Err(refuse(conn, format!("internal error: {e}")));
        }
        Ok(match session {
            Session::Recv(app) => Running::Recv(HostReceiver::with_table(conn), app),
            Session::Send(app) => {
                let mut ep = HostSender::with_table(conn);
                ep.limit_in_flight(req.max_files);
                Running::Send(ep, app)
            }
        })
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
        say(&format!("serving {} on {addr}", root.display()));
    }
    let served = Served::new(&root, opts.psk, opts.limit, opts.checkpoint_every, monotonic())?;
    // A connection costs a task and a few KiB until its client proved the PSK and named a
    // tree (at most `MAX_HANDSHAKES` of them, the oldest dropped beyond); only then does it
    // take one of `max_connections` places, a thread of its own and its full buffers.
    let max_connections = opts.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max_connections));
    let greeting = Arc::new(Greeting::default());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                say(&format!("accept failed: {e}"));
                continue;
            }
        };
        let (served, slots, greeting2) = (Arc::clone(&served), Arc::clone(&slots), Arc::clone(&greeting));
        let id = greeting.next_id();
        let task = tokio::spawn(async move {
            let mut link = tcp_link(stream, peer.to_string());
            let greeted = greet(&mut link, &served).await;
            greeting2.done(id);
            let (conn, req) = match greeted {
                Ok(x) => x,
                Err(e) => {
                    if log {
                        say(&about(&peer.to_string(), &e));
                    }
                    return;
                }
            };
            let slot = match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => slot,
                Err(_) => {
                    if log {
                        say(&format!(
                            "{max_connections} connections are open; new ones wait for one to end \
                             (see --max-connections)"
                        ));
                    }
                    Arc::clone(&slots).acquire_owned().await.expect("the semaphore is never closed")
                }
            };
            // The socket moves to the connection's own thread and runtime.
            let link = match link.map_io(|io| io.into_std()) {
                Ok(link) => link,
                Err(e) => return say(&format!("{peer}: cannot take the connection over: {e}")),
            };
            let started = super::connection_thread(async move {
                let _slot = slot;
                let mut link = link.map_io(tokio::net::TcpStream::from_std).map_err(|e| Error::Network {
                    peer: peer.to_string(),
                    action: "take over the connection to",
                    source: e,
                })?;
                match run(&mut link, conn, &req, &served).await {
                    Ok(what) if log => say(&format!("{peer}: {what}")),
                    Ok(_) => {}
                    Err(e) => say(&about(&peer.to_string(), &e)),
                }
                Ok(())
            });
            if let Err(e) = started {
                say(&format!("{peer}: {e}"));
            }
        });
        if let Some(dropped) = greeting.admit(id, task.abort_handle())
            && log
        {
            say(&format!(
                "{MAX_HANDSHAKES} connections are still in their handshake: dropped the oldest ({dropped})"
            ));
        }
    }
}

/// A log line about `peer` saying `e` (which may name the peer already).
fn about(peer: &str, e: &Error) -> String {
    let line = e.to_string();
    if line.starts_with(peer) { line } else { format!("{peer}: {line}") }
}

/// The connections still in their handshake, oldest first, so the oldest can be dropped.
#[derive(Default)]
struct Greeting {
    next: std::sync::atomic::AtomicU64,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    tasks: std::collections::VecDeque<(u64, tokio::task::AbortHandle)>,
    /// Tasks that finished their handshake before they were admitted.
    early: std::collections::HashSet<u64>,
}

impl Greeting {
    fn next_id(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Holds `task` as pending; beyond [`MAX_HANDSHAKES`], aborts the oldest and says how
    /// many were dropped.
    fn admit(&self, id: u64, task: tokio::task::AbortHandle) -> Option<usize> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.early.remove(&id) {
            return None;
        }
        pending.tasks.push_back((id, task));
        let mut dropped = 0;
        while pending.tasks.len() > MAX_HANDSHAKES {
            if let Some((_, oldest)) = pending.tasks.pop_front() {
                oldest.abort();
                dropped += 1;
            }
        }
        (dropped > 0).then_some(dropped)
    }

    /// The connection `id` finished its handshake (or failed it).
    fn done(&self, id: u64) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let before = pending.tasks.len();
        pending.tasks.retain(|(i, _)| *i != id);
        if pending.tasks.len() == before {
            // Finished before the accept loop admitted it.
            pending.early.insert(id);
        }
    }
}

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
                checkpoint_every: crate::sync::dest::CHECKPOINT_EVERY,
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
            say(&format!("loopback server: {e}"));
        }
    });
    Ok(addr)
}

/// One connection, start to end. Returns a line for the log.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    served: &Served,
) -> Result<String> {
    let (conn, req) = greet(link, served).await?;
    run(link, conn, &req, served).await
}

/// The handshake and the client's `Open`, with the small buffers of the handshake.
pub async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    served: &Served,
) -> Result<(Conn, OpenRequest)> {
    let clock = served.clock.as_ref();
    let mut conn = served.connection()?;
    let mut open = AwaitOpen::default();
    let greeted = drive(link, &mut conn, &mut open, &served.limit, clock).await;
    if greeted.is_err() {
        // A client of another version learns this end's from the hello queued for it.
        link.flush(&mut conn).await;
    }
    greeted?;
    let req = open.request.expect("drive returns once Open arrived");
    Ok((conn, req))
}

/// Answers `req` on the greeted `conn` and runs the push or pull to its end.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    conn: Conn,
    req: &OpenRequest,
    served: &Served,
) -> Result<String> {
    let clock = served.clock.as_ref();
    let running = match served.open(conn, req, &link.peer, link.peer_is_loopback()) {
        Ok(running) => running,
        Err(Refusal { mut conn, why }) => {
            link.flush(conn.as_mut()).await;
            return Err(Error::Refused { peer: link.peer.clone(), reason: why });
        }
    };
    link.grow();
    let dry = if req.dry_run { "dry run of a " } else { "" };
    match running {
        Running::Recv(mut ep, mut app) => {
            let result = drive(link, &mut ep, app.as_mut(), &served.limit, clock).await;
            if result.is_err() {
                app.save_in_flight();
            }
            let s = &app.summary;
            let verb = if req.dry_run { "to receive" } else { "received" };
            result.map(|()| {
                format!(
                    "{dry}push into {:?} done: {} files {verb} ({} resumed, {} parts of split files), {} up to date, {} deleted, {} problems",
                    req.path,
                    s.files_transferred,
                    s.files_resumed,
                    app.parts_received,
                    s.files_skipped,
                    s.deleted,
                    s.problems.len()
                )
            })
        }
        Running::Send(mut ep, mut app) => {
            let result = drive(link, &mut ep, app.as_mut(), &served.limit, clock).await;
            if result.is_err() {
                app.requeue_unfinished();
            }
            let s = &app.summary;
            let verb = if req.dry_run { "to send" } else { "sent" };
            result.map(|()| {
                format!(
                    "{dry}pull of {:?} done: {} files {verb}, {} up to date, {} problems",
                    req.path,
                    s.files_transferred,
                    s.files_skipped,
                    s.problems.len()
                )
            })
        }
    }
}
