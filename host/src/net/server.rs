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
use keepsync_core::sync::open;
use keepsync_core::sync::{Direction, ProtoError};
use keepsync_core::wire::frame::KEY_ID_LEN;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use super::app::{App, proto};
use super::clients::{Client, Clients, Mode};
use super::clock::{SharedClock, monotonic};
use super::driver::{Link, drive, tcp_link};
use super::open::{AwaitOpen, OpenRequest};
use keepsync_core::budget::{FRAME_HEADER_LEN, MAX_OPEN_LEN, MIN_FRAME_BODY, TAG_LEN};

use super::{
    Conn, HostReceiver, HostSender, RX_BUFFER, RateLimiter, TX_BUFFER, files_in_flight, fresh_random,
};
use crate::error::{Error, Result};
use crate::index::HashIndex;
use crate::say::say;
use crate::sync::dest::{Dest, DestOptions, Store};
use crate::sync::filter::Filter;
use crate::sync::recv::RecvApp;
use crate::sync::send::effort::SyncCodec;
use crate::sync::send::{Job, SendApp, part_log2};
use crate::sync::tree::{EntryKind, Tree};
use crate::sync::walk::walk;

/// Settings of `keepsync serve`.
pub struct ServeOptions {
    /// The served root: every path is confined to it.
    pub root: PathBuf,
    /// Address to listen on.
    pub listen: String,
    /// Who may connect: one pre-shared key with full rights, or a clients file.
    pub keys: ServeKeys,
    /// Bandwidth limit across all connections.
    pub limit: RateLimiter,
    /// Bytes between durable checkpoints of a received file.
    pub checkpoint_every: u64,
    /// Connections served at once; more wait to be accepted until one ends.
    pub max_connections: usize,
}

/// Who may connect to a server.
pub enum ServeKeys {
    /// One pre-shared key (`--psk-file`): one client with full rights on the whole root.
    One(SecretKey),
    /// A clients file (`--clients`), each client with its own key, subtree and mode; read
    /// again on SIGHUP.
    Clients(PathBuf),
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
    keys: Keys,
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

/// The keys a server proves, as it holds them.
enum Keys {
    One(Arc<Client>),
    Clients {
        path: PathBuf,
        now: Mutex<Arc<Clients>>,
        /// Bumped on every reload: connections look again whether their client is still in.
        reloaded: tokio::sync::watch::Sender<u64>,
    },
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

/// Bytes a connection's receive buffer holds until its `Open` was accepted: one sealed frame
/// with the longest `Open` (`MAX_OPEN_LEN`: the longest path and filter rule list), which
/// also holds every handshake frame. The full buffers (about 5 MiB) are lent only after the
/// proof and the `Open`, so a connection that proves nothing costs a few KiB.
pub const HANDSHAKE_RX: usize = FRAME_HEADER_LEN + MAX_OPEN_LEN + TAG_LEN;

/// Bytes a connection's send buffer holds until its `Open` was accepted: the ServerHello,
/// and `Opened` or the refusal (the smallest buffer a connection takes).
pub const HANDSHAKE_TX: usize = FRAME_HEADER_LEN + MIN_FRAME_BODY;

/// Connections still in their handshake (or waiting for `Open`) held at once; beyond it
/// the oldest is dropped. Each costs about 30 KiB and no thread, and may take at most
/// the core's handshake timeout (10 s) to prove the PSK.
pub const MAX_HANDSHAKES: usize = 256;

impl Served {
    /// Serves the tree at `root` (which must be a directory) to the clients `keys` names.
    pub fn new(
        root: &std::path::Path,
        keys: ServeKeys,
        limit: RateLimiter,
        checkpoint_every: u64,
        clock: SharedClock,
    ) -> Result<Arc<Self>> {
        let tree = Tree::open(root).map_err(|e| Error::io("open", root, e))?;
        let keys = match keys {
            ServeKeys::One(psk) => Keys::One(Arc::new(Client::whole_root(psk))),
            ServeKeys::Clients(path) => Keys::Clients {
                now: Mutex::new(Arc::new(Clients::load(&path)?)),
                path,
                reloaded: tokio::sync::watch::Sender::new(0),
            },
        };
        Ok(Arc::new(Self {
            store: Store::new(tree),
            keys,
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
            keys: Keys::One(Arc::new(Client::whole_root(psk))),
            limit: RateLimiter::unlimited(),
            checkpoint_every,
            sessions: Mutex::default(),
            clock,
            inline: true,
            log: false,
        })
    }

    /// Reads the clients file again (on SIGHUP): new clients may connect at once, and the
    /// connections of clients removed or changed end. A file that does not load changes
    /// nothing. Returns what to log.
    pub fn reload(&self) -> String {
        let Keys::Clients { path, now, reloaded } = &self.keys else {
            return "SIGHUP: no --clients file to read again".into();
        };
        match Clients::load(path) {
            Ok(clients) => {
                let n = clients.len();
                *now.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(clients);
                reloaded.send_modify(|g| *g += 1);
                format!("read {n} clients from {} again", path.display())
            }
            Err(e) => format!("kept the clients as they were: {e}"),
        }
    }

    /// Returns once `client` is no longer allowed (removed or changed by a reload); never
    /// for the one client of `--psk-file`.
    pub async fn revoked(&self, client: &Client) {
        let Keys::Clients { now, reloaded, .. } = &self.keys else {
            return std::future::pending().await;
        };
        let mut changes = reloaded.subscribe();
        loop {
            if !now.lock().unwrap_or_else(|e| e.into_inner()).still_has(client) {
                return;
            }
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
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
        client: &Client,
        peer: &str,
        loopback: bool,
    ) -> std::result::Result<Session, String> {
        let base = client.base(&req.path)?;
        let who = client.shown();
        match (req.direction, client.mode) {
            (Direction::Push, Mode::ReadOnly) => {
                return Err(format!("{who}is read-only: it may pull, not push"));
            }
            (Direction::Push, Mode::AppendOnly) if req.delete || req.replace => {
                return Err(format!(
                    "{who}is append-only: --delete (removing or replacing entries) is refused"
                ));
            }
            _ => {}
        }
        // The client's rules: a pull's listing leaves out what they exclude, and a push's
        // --delete keeps it.
        let filter = req.filter().map_err(|e| e.to_string())?;
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
                    append_only: client.mode == Mode::AppendOnly,
                };
                let dest = Dest::new(Arc::clone(&self.store), &base, opts);
                let keep = (!req.delete_excluded).then_some(filter);
                let mut app = RecvApp::new(dest, req.checksum, Arc::clone(&self.clock)).keeping(keep);
                if self.log {
                    app = app.log_problems_as(peer.to_owned());
                }
                Ok(Session::Recv(Box::new(app)))
            }
            Direction::Pull => {
                let job = self.pull_job(req, &base, &filter)?;
                let mut app = SendApp::new(job, SyncCodec::Auto, req.dry_run);
                app.peer_on_loopback(loopback);
                Ok(Session::Send(Box::new(app)))
            }
        }
    }

    /// What a pull connection sends from: its own walk of the tree (through `filter`), or its
    /// session's.
    fn pull_job(
        &self,
        req: &OpenRequest,
        base: &str,
        filter: &Filter,
    ) -> std::result::Result<Arc<Job>, String> {
        let make = || -> std::result::Result<Arc<Job>, String> {
            let subtree = self
                .store
                .tree()
                .subtree(base)
                .map_err(|e| format!("{}: no such directory ({e})", req.path))?;
            let subtree = Arc::new(subtree);
            let mut problems = Vec::new();
            let entries = walk(&subtree, filter, &mut problems)
                .map_err(|e| format!("{}: cannot list it ({e})", req.path))?
                .entries;
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
    /// [`HANDSHAKE_RX`], [`HANDSHAKE_TX`]); [`Served::open`] lends it the full ones.
    pub fn connection(&self) -> Result<Conn> {
        let internal = |e: keepsync_core::UsageError| Error::Internal(e.to_string());
        let (random, now) = (fresh_random()?, self.clock.now_ms());
        let (rx, tx) = (vec![0; HANDSHAKE_RX], vec![0; HANDSHAKE_TX]);
        let mut conn = match &self.keys {
            Keys::One(client) => Conn::server(RustCrypto, client.key.clone(), random, now, rx, tx),
            Keys::Clients { .. } => Conn::server_for_clients(RustCrypto, random, now, rx, tx),
        }
        .map_err(internal)?;
        conn.promise_max_body(RX_BUFFER - FRAME_HEADER_LEN).map_err(internal)?;
        Ok(conn)
    }

    /// Answers `client`'s `req` on `conn` (from `peer`, on `loopback`): `Opened`, the full
    /// buffers and what runs next; or the refusal queued on `conn` and why.
    pub fn open(
        &self,
        mut conn: Conn,
        req: &OpenRequest,
        client: &Client,
        peer: &str,
        loopback: bool,
    ) -> std::result::Result<Running, Refusal> {
        let refuse = |conn, why| Refusal { conn: Box::new(conn), why };
        let now = self.clock.now_ms();
        let session = match self.accept(req, client, peer, loopback) {
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
    let served = Served::new(&root, opts.keys, opts.limit, opts.checkpoint_every, monotonic())?;
    if let Keys::Clients { now, .. } = &served.keys {
        if log {
            let n = now.lock().unwrap_or_else(|e| e.into_inner()).len();
            say(&format!("{n} clients, each confined to its subtree (kill -HUP reads the file again)"));
        }
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let mut hup = hup.map_err(|e| Error::Internal(format!("cannot watch for SIGHUP: {e}")))?;
        let served = Arc::clone(&served);
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                let said = served.reload();
                if log {
                    say(&said);
                }
            }
        });
    }
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
            let mut link = tcp_link(stream, peer.to_string(), false);
            let greeted = greet(&mut link, &served).await;
            greeting2.done(id);
            let (mut conn, req, client) = match greeted {
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
                    // Meanwhile the connection stays alive: pings are answered and sent, so a
                    // client can wait longer than its idle timeout.
                    let mut hold = Hold;
                    let (served2, peer2) = (Arc::clone(&served), peer.to_string());
                    tokio::select! {
                        slot = Arc::clone(&slots).acquire_owned() => slot.expect("the semaphore is never closed"),
                        held = drive(&mut link, &mut conn, &mut hold, &served2.limit, served2.clock.as_ref()) => {
                            if log {
                                let why = held.err().map_or("it hung up".to_owned(), |e| e.to_string());
                                say(&about(&peer2, &Error::Ended { peer: peer2.clone(), why: format!("gave up waiting for a place: {why}") }));
                            }
                            return;
                        }
                    }
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
                match run(&mut link, conn, &req, &client, &served).await {
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

/// What runs on an opened connection while it waits for a place: answers pings (the core
/// does) and sends its own when idle; anything else from the client breaks the protocol.
struct Hold;

impl App<Conn> for Hold {
    fn produce(&mut self, _: &mut Conn, _: u64) -> Result<()> {
        Ok(())
    }

    fn handle(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        match conn.poll_message(now) {
            None => Ok(()),
            Some(Ok(_)) => Err(proto("the client", ProtoError::Unexpected("a message before Opened"))),
            Some(Err(e)) => Err(proto("the client", e)),
        }
    }

    fn is_done(&self) -> bool {
        false
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
                keys: ServeKeys::One(psk),
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
    let (conn, req, client) = greet(link, served).await?;
    run(link, conn, &req, &client, served).await
}

/// The handshake and the client's `Open`, with the small buffers of the handshake: a
/// connection's first app. With a clients file it answers the client's key id with that
/// client's key, or with a random one for an unknown id.
pub struct Greeter {
    open: AwaitOpen,
    lookup: Lookup,
    /// The client, once its key id was looked up (at once with `--psk-file`).
    pub client: Option<Arc<Client>>,
    /// The key id no client has, if the client named one.
    pub unknown: Option<[u8; KEY_ID_LEN]>,
}

enum Lookup {
    One(Arc<Client>),
    Many(Arc<Clients>),
}

impl Greeter {
    /// The request and the client, once both are known.
    pub fn opened(&mut self) -> Option<(OpenRequest, Arc<Client>)> {
        Some((self.open.request.take()?, self.client.clone()?))
    }

    /// Why a failed handshake failed, for the log: an unknown key id, or `e`.
    pub fn explain(&self, peer: &str, e: Error) -> Error {
        match self.unknown {
            Some(id) => Error::Refused {
                peer: peer.to_owned(),
                reason: format!(
                    "unknown key id {}: no client in the clients file has that key",
                    hex::encode(id)
                ),
            },
            None => e,
        }
    }
}

impl App<Conn> for Greeter {
    fn produce(&mut self, _: &mut Conn, _: u64) -> Result<()> {
        Ok(())
    }

    fn handle(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        if let Some(id) = conn.key_request() {
            let found = match &self.lookup {
                Lookup::One(client) => Some(Arc::clone(client)),
                Lookup::Many(clients) => clients.get(&id).cloned(),
            };
            let key = match &found {
                Some(client) => client.key.clone(),
                None => {
                    self.unknown = Some(id);
                    SecretKey::from_bytes(fresh_random()?)
                }
            };
            self.client = found;
            conn.set_key(now, key).map_err(|e| Error::Internal(e.to_string()))?;
        }
        self.open.handle(conn, now)
    }

    fn is_done(&self) -> bool {
        self.open.is_done()
    }
}

impl Served {
    /// The first app of a new connection.
    pub fn greeter(&self) -> Greeter {
        let (lookup, client) = match &self.keys {
            Keys::One(client) => (Lookup::One(Arc::clone(client)), Some(Arc::clone(client))),
            Keys::Clients { now, .. } => {
                (Lookup::Many(Arc::clone(&now.lock().unwrap_or_else(|e| e.into_inner()))), None)
            }
        };
        Greeter { open: AwaitOpen::default(), lookup, client, unknown: None }
    }
}

/// The handshake and the client's `Open`, with the small buffers of the handshake.
pub async fn greet<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    served: &Served,
) -> Result<(Conn, OpenRequest, Arc<Client>)> {
    let clock = served.clock.as_ref();
    let mut conn = served.connection()?;
    let mut greeter = served.greeter();
    let greeted = drive(link, &mut conn, &mut greeter, &served.limit, clock).await;
    if let Err(e) = greeted {
        // A client of another version learns this end's from the hello queued for it.
        link.flush(&mut conn).await;
        return Err(greeter.explain(&link.peer, e));
    }
    let (req, client) = greeter.opened().expect("drive returns once Open arrived, after the key");
    Ok((conn, req, client))
}

/// Answers `req` on the greeted `conn` and runs the push or pull to its end.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    conn: Conn,
    req: &OpenRequest,
    client: &Client,
    served: &Served,
) -> Result<String> {
    let peer = link.peer.clone();
    tokio::select! {
        done = serve_request(link, conn, req, client, served) => done,
        () = served.revoked(client) => Err(Error::Ended {
            peer,
            why: format!("{}was revoked (clients file read again): connection ended", client.shown()),
        }),
    }
}

async fn serve_request<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    conn: Conn,
    req: &OpenRequest,
    client: &Client,
    served: &Served,
) -> Result<String> {
    let clock = served.clock.as_ref();
    let running = match served.open(conn, req, client, &link.peer, link.peer_is_loopback()) {
        Ok(running) => running,
        Err(Refusal { mut conn, why }) => {
            link.flush(conn.as_mut()).await;
            return Err(Error::Refused { peer: link.peer.clone(), reason: why });
        }
    };
    link.grow();
    let dry = if req.dry_run { "dry run of a " } else { "" };
    let who = client.shown();
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
                    "{who}{dry}push into {:?} done: {} files {verb} ({} resumed, {} parts of split files), {} up to date, {} deleted, {} problems",
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
                    "{who}{dry}pull of {:?} done: {} files {verb}, {} up to date, {} problems",
                    req.path,
                    s.files_transferred,
                    s.files_skipped,
                    s.problems.len()
                )
            })
        }
    }
}
