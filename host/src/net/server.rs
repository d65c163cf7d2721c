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
use super::{
    Conn, HostReceiver, HostSender, RX_BUFFER, RateLimiter, TX_BUFFER, files_in_flight, fresh_random,
};
use crate::error::{Error, Result};
use crate::index::HashIndex;
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
                eprintln!("keepsync: pull of {:?}: {p}", req.path);
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

    /// A new server-side connection.
    pub fn connection(&self) -> Result<Conn> {
        Conn::server(
            RustCrypto,
            self.psk.clone(),
            fresh_random()?,
            self.clock.now_ms(),
            vec![0; RX_BUFFER],
            vec![0; TX_BUFFER],
        )
        .map_err(|e| Error::Internal(e.to_string()))
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
    let served = Served::new(&root, opts.psk, opts.limit, opts.checkpoint_every, monotonic())?;
    // Each connection runs on a thread of its own, at most `max_connections` at once: beyond
    // that, new ones wait in the listen backlog until one ends.
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
        let served = Arc::clone(&served);
        let started = super::connection_thread(async move {
            let _slot = slot;
            let stream = match tokio::net::TcpStream::from_std(stream) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("keepsync: {peer}: cannot take the connection over: {e}");
                    return Ok(());
                }
            };
            let mut link = tcp_link(stream, peer.to_string());
            match session(&mut link, &served).await {
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
            eprintln!("keepsync: loopback server: {e}");
        }
    });
    Ok(addr)
}

/// One connection, start to end. Returns a line for the log.
pub async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    link: &mut Link<S>,
    served: &Served,
) -> Result<String> {
    let clock = served.clock.as_ref();
    let mut conn = served.connection()?;
    let mut open = AwaitOpen::default();
    drive(link, &mut conn, &mut open, &served.limit, clock).await?;
    let req = open.request.expect("drive returns once Open arrived");
    let app = match served.accept(&req, &link.peer, link.peer_is_loopback()) {
        Ok(app) => app,
        Err(why) => {
            open::refuse(&mut conn, clock.now_ms());
            link.flush(&mut conn).await;
            return Err(Error::Refused { peer: link.peer.clone(), reason: why });
        }
    };
    open::accept(&mut conn, clock.now_ms(), files_in_flight()).map_err(|e| Error::Internal(e.to_string()))?;
    match app {
        Session::Recv(mut app) => {
            let mut ep = HostReceiver::with_table(conn);
            let result = drive(link, &mut ep, app.as_mut(), &served.limit, clock).await;
            if result.is_err() {
                app.save_in_flight();
            }
            let s = &app.summary;
            result.map(|()| {
                format!(
                    "push into {:?} done: {} files received ({} resumed, {} parts of split files), {} up to date, {} deleted, {} problems",
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
        Session::Send(mut app) => {
            let mut ep = HostSender::with_table(conn);
            ep.limit_in_flight(req.max_files);
            let result = drive(link, &mut ep, app.as_mut(), &served.limit, clock).await;
            if result.is_err() {
                app.requeue_unfinished();
            }
            let s = &app.summary;
            result.map(|()| {
                format!(
                    "pull of {:?} done: {} files sent, {} up to date, {} problems",
                    req.path,
                    s.files_transferred,
                    s.files_skipped,
                    s.problems.len()
                )
            })
        }
    }
}
