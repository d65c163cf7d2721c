//! The async loop that runs one connection: socket bytes in and out of the core's state
//! machine, full duplex, timers from `poll_timeout`, writes paced by the rate limiter.
//!
//! The file work (reading, hashing, compressing, writing) happens in the [`App`] callbacks,
//! on the connection's own thread (see [`super::connection_thread`]): it blocks no other
//! connection.

use std::time::Duration;

use keepsync_core::sync::ProtoError;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::{Conn, HostReceiver, HostSender, RateLimiter, now_ms};
use crate::error::{Error, Result};

/// Anything that wraps a host [`Conn`]: the bare connection (handshake, `Open`), or a
/// sender or receiver over it.
pub trait Endpoint {
    /// The connection.
    fn conn(&mut self) -> &mut Conn;
}

impl Endpoint for Conn {
    fn conn(&mut self) -> &mut Conn {
        self
    }
}

impl Endpoint for HostSender {
    fn conn(&mut self) -> &mut Conn {
        self
    }
}

impl Endpoint for HostReceiver {
    fn conn(&mut self) -> &mut Conn {
        self
    }
}

/// What runs on a connection.
pub trait App<E> {
    /// Queues what can be sent now, until the send queue is full.
    fn produce(&mut self, ep: &mut E, now: u64) -> Result<()>;
    /// Handles every complete message.
    fn handle(&mut self, ep: &mut E, now: u64) -> Result<()>;
    /// More input may be taken now (false while replies are queued).
    fn wants_input(&self) -> bool {
        true
    }
    /// The work on this connection is over (the driver still flushes what is queued).
    fn is_done(&self) -> bool;
}

/// Bytes that crossed one connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    /// Bytes this end wrote to the socket.
    pub written: u64,
    /// Bytes this end read from the socket.
    pub read: u64,
}

/// Maps a core error to a host error naming the peer.
pub fn proto(peer: &str, fault: ProtoError) -> Error {
    Error::Protocol { peer: peer.to_owned(), fault }
}

fn net(peer: &str, action: &'static str, source: std::io::Error) -> Error {
    Error::Network { peer: peer.to_owned(), action, source }
}

/// A TCP connection and the input read from it but not yet consumed (which carries over
/// from one phase of a connection to the next, e.g. from `Open` to the file transfer).
pub struct Link {
    stream: TcpStream,
    /// The peer, for messages (`host:port`).
    pub peer: String,
    rbuf: Vec<u8>,
    rlen: usize,
    rat: usize,
    /// Bytes that crossed this link so far.
    pub stats: LinkStats,
}

impl Link {
    /// Wraps a connected stream: no Nagle delay, TCP keep-alive on.
    pub fn new(stream: TcpStream, peer: String) -> Self {
        let _ = stream.set_nodelay(true);
        let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
        Self { stream, peer, rbuf: vec![0u8; 256 << 10], rlen: 0, rat: 0, stats: LinkStats::default() }
    }

    /// The peer is on this host (a loopback address).
    pub fn peer_is_loopback(&self) -> bool {
        self.stream.peer_addr().is_ok_and(|a| a.ip().is_loopback())
    }

    /// Writes out everything `ep` has queued (e.g. a `Close` before hanging up).
    pub async fn flush<E: Endpoint>(&mut self, ep: &mut E) {
        while !ep.conn().pending_transmit().is_empty() {
            if self.stream.writable().await.is_err() {
                return;
            }
            match self.stream.try_write(ep.conn().pending_transmit()) {
                Ok(n) => {
                    ep.conn().consume_transmit(n);
                    self.stats.written += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => return,
            }
        }
    }
}

/// Runs `app` on `ep` over `link` until the app is done and everything queued is written.
pub async fn drive<E: Endpoint, A: App<E>>(
    link: &mut Link,
    ep: &mut E,
    app: &mut A,
    limit: &RateLimiter,
) -> Result<()> {
    let peer = link.peer.clone();
    let peer = peer.as_str();
    loop {
        let now = now_ms();
        app.produce(ep, now)?;
        let pending = !ep.conn().pending_transmit().is_empty();
        if app.is_done() && !pending {
            return Ok(());
        }
        // Input read earlier and not yet consumed goes in first.
        if link.rat < link.rlen && app.wants_input() && !app.is_done() {
            link.rat += feed(ep, app, peer, now, &link.rbuf[link.rat..link.rlen])?;
            continue;
        }
        let mut interest = if app.wants_input() && !app.is_done() { Some(Interest::READABLE) } else { None };
        let mut pace = None;
        if pending {
            match limit.wait_for(ep.conn().pending_transmit().len()) {
                Duration::ZERO => {
                    interest = Some(interest.map_or(Interest::WRITABLE, |i| i | Interest::WRITABLE))
                }
                wait => pace = Some(wait),
            }
        }
        let deadline = ep.conn().poll_timeout().map(|t| Duration::from_millis(t.saturating_sub(now)));
        let sleep = match (deadline, pace) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(Duration::from_secs(3600)),
        };
        let ready = match interest {
            Some(i) => match tokio::time::timeout(sleep, link.stream.ready(i)).await {
                Ok(r) => Some(r.map_err(|e| net(peer, "talk to", e))?),
                Err(_) => None,
            },
            None => {
                tokio::time::sleep(sleep.min(Duration::from_millis(50))).await;
                None
            }
        };
        let now = now_ms();
        let Some(ready) = ready else {
            ep.conn().handle_timeout(now).map_err(|e| proto(peer, e))?;
            continue;
        };
        if ready.is_writable() && pending {
            let want = ep.conn().pending_transmit().len();
            if let Ok(allowed) = limit.grant(want) {
                match link.stream.try_write(&ep.conn().pending_transmit()[..allowed]) {
                    Ok(n) => {
                        ep.conn().consume_transmit(n);
                        link.stats.written += n as u64;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(net(peer, "write to", e)),
                }
            }
        }
        if ready.is_readable() && link.rat >= link.rlen {
            match link.stream.try_read(&mut link.rbuf) {
                Ok(0) => {
                    return if app.is_done() {
                        Ok(())
                    } else if !ep.conn().is_open() && !ep.conn().is_closed() {
                        // Hanging up mid-handshake is what a peer does when our proof fails.
                        Err(proto(peer, ProtoError::PeerNotAuthenticated))
                    } else {
                        Err(net(peer, "keep talking to", std::io::ErrorKind::UnexpectedEof.into()))
                    };
                }
                Ok(n) => {
                    link.stats.read += n as u64;
                    link.rlen = n;
                    link.rat = feed(ep, app, peer, now, &link.rbuf[..n])?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(net(peer, "read from", e)),
            }
        }
    }
}

/// Feeds `data` until it is used up, the app wants no more, or the app is done; returns
/// the bytes used.
fn feed<E: Endpoint, A: App<E>>(ep: &mut E, app: &mut A, peer: &str, now: u64, data: &[u8]) -> Result<usize> {
    let mut at = 0;
    while at < data.len() && app.wants_input() && !app.is_done() {
        let used = ep.conn().handle_input(now, &data[at..]).map_err(|e| proto(peer, e))?;
        at += used;
        app.handle(ep, now)?;
    }
    Ok(at)
}
