//! Both ends of a network sync in one thread, in memory: a deterministic simulator of the
//! production code (quinn-proto's `Pair`, TigerBeetle's simulator).
//!
//! A [`Pair`] is one connection: the real handshake and `Open` exchange, then the real
//! [`SendApp`] and [`RecvApp`], with the server's side built by [`Served::accept`] exactly as
//! `keepsync serve` builds it. The caller moves bytes (as many as it likes each step, none at
//! all, or cuts the connection), passes the time of a [`SimClock`], and kills either side at
//! any step; the apps' file work runs on real directories. Nothing here decides anything about
//! files: it only moves bytes and calls what a socket's driver calls.
//!
//! [`SimClock`]: crate::net::clock::SimClock

use std::collections::VecDeque;
use std::sync::Arc;

use keepsync_core::crypto::{RustCrypto, SecretKey};

use super::recv::RecvApp;
use super::send::SendApp;
use crate::error::{Error, Result};
use crate::net::app::{App, Endpoint, feed};
use crate::net::clock::SharedClock;
use crate::net::open::{OpenClient, OpenRequest};
use crate::net::server::{Greeter, Running, Served};
use crate::net::{Conn, HostReceiver, HostSender, RX_BUFFER, TX_BUFFER};

/// What the client runs once the tree is open.
pub enum ClientApp {
    /// A push.
    Push(Box<SendApp>),
    /// A pull.
    Pull(Box<RecvApp>),
}

enum Client {
    Opening { conn: Conn, open: OpenClient, app: ClientApp },
    Push { ep: HostSender, app: Box<SendApp> },
    Pull { ep: HostReceiver, app: Box<RecvApp> },
    Gone,
}

enum Server {
    Opening { conn: Conn, open: Greeter },
    Recv { ep: HostReceiver, app: Box<RecvApp> },
    Send { ep: HostSender, app: Box<SendApp> },
    Refused { conn: Box<Conn> },
    Gone,
}

/// One connection between a client and a server, stepped by hand.
pub struct Pair {
    client: Client,
    server: Server,
    served: Arc<Served>,
    to_server: VecDeque<u8>,
    to_client: VecDeque<u8>,
    clock: SharedClock,
}

/// How a step left the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Still working.
    Running,
    /// Both ends finished their work.
    Done,
}

/// Runs one side: produce, send up to `budget` bytes, take up to `budget` bytes in, run the
/// timers.
fn run_side<E: Endpoint, A: App<E>>(
    ep: &mut E,
    app: &mut A,
    now: u64,
    inbox: &mut VecDeque<u8>,
    outbox: &mut VecDeque<u8>,
    budget: usize,
) -> Result<()> {
    app.produce(ep, now)?;
    let out = ep.conn().pending_transmit();
    let n = out.len().min(budget);
    outbox.extend(&out[..n]);
    ep.conn().consume_transmit(n);
    let take = inbox.len().min(budget);
    if take > 0 && app.wants_input() && !app.is_done() {
        let bytes: Vec<u8> = inbox.drain(..take).collect();
        let used = feed(ep, app, "the peer", now, &bytes)?;
        // What the app did not take yet stays first in line.
        for &b in bytes[used..].iter().rev() {
            inbox.push_front(b);
        }
    }
    if ep.conn().poll_timeout().is_some_and(|t| t <= now) {
        ep.conn().handle_timeout(now).map_err(|e| crate::net::app::proto("the peer", e))?;
    }
    app.produce(ep, now)
}

impl Pair {
    /// A new connection from a client asking for `request` (then running `app`) to `served`.
    pub fn open(
        served: &Arc<Served>,
        request: OpenRequest,
        app: ClientApp,
        psk: SecretKey,
        clock: SharedClock,
    ) -> Result<Self> {
        let now = clock.now_ms();
        let conn = Conn::client(
            RustCrypto,
            psk,
            crate::net::fresh_random()?,
            now,
            vec![0; RX_BUFFER],
            vec![0; TX_BUFFER],
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        let open = OpenClient::new(request, Arc::clone(&clock));
        Ok(Self {
            client: Client::Opening { conn, open, app },
            server: Server::Opening { conn: served.connection()?, open: served.greeter() },
            served: Arc::clone(served),
            to_server: VecDeque::new(),
            to_client: VecDeque::new(),
            clock,
        })
    }

    /// Moves up to `budget` bytes each way and runs both ends at the clock's time. An error
    /// ends the connection: the caller then [`cut`](Self::cut)s it.
    pub fn step(&mut self, budget: usize) -> Result<State> {
        let now = self.clock.now_ms();
        self.step_client(now, budget)?;
        self.step_server(now, budget)?;
        let client_done = match &mut self.client {
            Client::Push { ep, app } => app.is_done() && ep.pending_transmit().is_empty(),
            Client::Pull { ep, app } => app.is_done() && ep.pending_transmit().is_empty(),
            Client::Opening { .. } => false,
            Client::Gone => true,
        };
        let server_done = match &mut self.server {
            Server::Recv { ep, app } => app.is_done() && ep.pending_transmit().is_empty(),
            Server::Send { ep, app } => app.is_done() && ep.pending_transmit().is_empty(),
            Server::Refused { conn } => conn.pending_transmit().is_empty(),
            Server::Opening { .. } => false,
            Server::Gone => true,
        };
        Ok(if client_done && server_done { State::Done } else { State::Running })
    }

    fn step_client(&mut self, now: u64, budget: usize) -> Result<()> {
        let (inbox, outbox) = (&mut self.to_client, &mut self.to_server);
        match &mut self.client {
            Client::Opening { conn, open, .. } => {
                run_side(conn, open, now, inbox, outbox, budget)?;
                if !open.is_done() {
                    return Ok(());
                }
            }
            Client::Push { ep, app } => return run_side(ep, app.as_mut(), now, inbox, outbox, budget),
            Client::Pull { ep, app } => return run_side(ep, app.as_mut(), now, inbox, outbox, budget),
            Client::Gone => return Ok(()),
        }
        let Client::Opening { conn, open, app } = std::mem::replace(&mut self.client, Client::Gone) else {
            unreachable!("matched above")
        };
        self.client = match app {
            ClientApp::Push(mut app) => {
                let mut ep = HostSender::with_table(conn);
                ep.limit_in_flight(open.opened.unwrap_or(0));
                app.seed_rtt(open.rtt);
                Client::Push { ep, app }
            }
            ClientApp::Pull(app) => Client::Pull { ep: HostReceiver::with_table(conn), app },
        };
        Ok(())
    }

    fn step_server(&mut self, now: u64, budget: usize) -> Result<()> {
        let (inbox, outbox) = (&mut self.to_server, &mut self.to_client);
        match &mut self.server {
            Server::Opening { conn, open } => {
                run_side(conn, open, now, inbox, outbox, budget)?;
                if !open.is_done() {
                    return Ok(());
                }
            }
            Server::Recv { ep, app } => return run_side(ep, app.as_mut(), now, inbox, outbox, budget),
            Server::Send { ep, app } => return run_side(ep, app.as_mut(), now, inbox, outbox, budget),
            Server::Refused { conn } => {
                let out = conn.pending_transmit();
                outbox.extend(out);
                let n = out.len();
                conn.consume_transmit(n);
                return Ok(());
            }
            Server::Gone => return Ok(()),
        }
        let Server::Opening { conn, mut open } = std::mem::replace(&mut self.server, Server::Gone) else {
            unreachable!("matched above")
        };
        let (req, client) = open.opened().expect("checked above");
        self.server = match self.served.open(conn, &req, &client, "sim", false) {
            Ok(Running::Recv(ep, app)) => Server::Recv { ep, app },
            Ok(Running::Send(ep, app)) => Server::Send { ep, app },
            Err(refused) => Server::Refused { conn: refused.conn },
        };
        Ok(())
    }

    /// The connection broke (the link failed, or an end gave up): each end does what its
    /// driver does then. The client's app is returned with what it did.
    pub fn cut(self) -> Option<ClientApp> {
        match self.server {
            Server::Recv { mut app, .. } => app.save_in_flight(),
            Server::Send { mut app, .. } => app.requeue_unfinished(),
            _ => {}
        }
        match self.client {
            Client::Push { mut app, .. } => {
                app.requeue_unfinished();
                Some(ClientApp::Push(app))
            }
            Client::Pull { mut app, .. } => {
                app.save_in_flight();
                Some(ClientApp::Pull(app))
            }
            Client::Opening { app, .. } => Some(app),
            Client::Gone => None,
        }
    }

    /// The server process died (`kill -9`): its end saves nothing. The client sees the
    /// connection break.
    pub fn kill_server(mut self) -> Option<ClientApp> {
        self.server = Server::Gone;
        self.cut()
    }

    /// The client process died: its end saves nothing; the server sees the connection break.
    pub fn kill_client(mut self) {
        self.client = Client::Gone;
        let _ = self.cut();
    }

    /// The client's app, once the connection is done.
    pub fn finish(self) -> Option<ClientApp> {
        match self.client {
            Client::Push { app, .. } => Some(ClientApp::Push(app)),
            Client::Pull { app, .. } => Some(ClientApp::Pull(app)),
            Client::Opening { app, .. } => Some(app),
            Client::Gone => None,
        }
    }
}
