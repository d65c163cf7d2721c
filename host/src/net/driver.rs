//! The async loop that runs one connection: bytes in and out of the core's state machine,
//! full duplex, over any `AsyncRead + AsyncWrite` (a TCP socket, or `tokio::io::duplex` in
//! tests), with timers from the core and the app and writes paced by the rate limiter.
//!
//! The file work (reading, hashing, compressing, writing) happens in the [`App`] callbacks, on
//! the connection's own thread (see [`super::connection_thread`]): it blocks no other
//! connection.

use std::future::poll_fn;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::RateLimiter;
use super::app::{App, Endpoint, earliest, feed, proto};
use super::clock::Clock;
use crate::error::{Error, Result};

/// Bytes that crossed one connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    /// Bytes this end wrote.
    pub written: u64,
    /// Bytes this end read.
    pub read: u64,
}

fn net(peer: &str, action: &'static str, source: std::io::Error) -> Error {
    Error::Network { peer: peer.to_owned(), action, source }
}

/// Bytes a server's link reads at once before the peer proved the key.
const READ_START: usize = 4 << 10;

/// Bytes a link reads at once after.
const READ_FULL: usize = 256 << 10;

/// A byte stream to the peer and the input read from it but not yet consumed (which carries
/// over from one phase of a connection to the next, e.g. from `Open` to the file transfer).
pub struct Link<S> {
    io: S,
    /// The peer, for messages (`host:port`).
    pub peer: String,
    loopback: bool,
    rbuf: Vec<u8>,
    rlen: usize,
    rat: usize,
    /// Bytes that crossed this link so far.
    pub stats: LinkStats,
}

impl<S> Link<S> {
    /// The same link over another stream made from this one (e.g. the socket moved to
    /// another runtime), with the input not yet consumed.
    pub fn map_io<T>(self, f: impl FnOnce(S) -> std::io::Result<T>) -> std::io::Result<Link<T>> {
        let Self { io, peer, loopback, rbuf, rlen, rat, stats } = self;
        Ok(Link { io: f(io)?, peer, loopback, rbuf, rlen, rat, stats })
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    /// Wraps a connected stream to `peer`; `loopback`: the peer is reached over a loopback
    /// address. Reads in large pieces.
    pub fn new(io: S, peer: String, loopback: bool) -> Self {
        Self::reading(io, peer, loopback, READ_FULL)
    }

    /// The same for a peer that has proved nothing yet (a server's new connection): reads in
    /// small pieces until [`grow`](Self::grow), so such a connection holds only a few KiB.
    pub fn unproven(io: S, peer: String, loopback: bool) -> Self {
        Self::reading(io, peer, loopback, READ_START)
    }

    fn reading(io: S, peer: String, loopback: bool, len: usize) -> Self {
        Self { io, peer, loopback, rbuf: vec![0u8; len], rlen: 0, rat: 0, stats: LinkStats::default() }
    }

    /// Reads in large pieces from now on (once the peer proved the key).
    pub fn grow(&mut self) {
        if self.rbuf.len() < READ_FULL {
            self.rbuf.resize(READ_FULL, 0);
        }
    }

    /// The peer is reached over a loopback address (this host, or a tunnel's near end).
    pub fn peer_is_loopback(&self) -> bool {
        self.loopback
    }

    /// Writes out everything `ep` has queued (e.g. a `Close` before hanging up); best effort.
    pub async fn flush<E: Endpoint>(&mut self, ep: &mut E) {
        while !ep.conn().pending_transmit().is_empty() {
            let io = &mut self.io;
            let out = ep.conn().pending_transmit();
            match poll_fn(|cx| Pin::new(&mut *io).poll_write(cx, out)).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    ep.conn().consume_transmit(n);
                    self.stats.written += n as u64;
                }
            }
        }
    }
}

/// A TCP connection as a [`Link`]: no Nagle delay, TCP keep-alive on. `proven`: the peer is
/// trusted already (a client's server); a server's new connection starts [`Link::unproven`].
pub fn tcp_link(stream: TcpStream, peer: String, proven: bool) -> Link<TcpStream> {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
    let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&keepalive);
    let loopback = stream.peer_addr().is_ok_and(|a| a.ip().is_loopback());
    if proven { Link::new(stream, peer, loopback) } else { Link::unproven(stream, peer, loopback) }
}

/// What woke the loop: a write and a read may both be ready, and both are taken each time (a
/// loop that stopped at the first would starve reads while the socket keeps taking writes, and
/// a sender would not hear the receiver say stop).
struct Wake {
    wrote: Option<std::io::Result<usize>>,
    read: Option<std::io::Result<usize>>,
}

/// Runs `app` on `ep` over `link` until the app is done and everything queued is written.
pub async fn drive<S, E, A>(
    link: &mut Link<S>,
    ep: &mut E,
    app: &mut A,
    limit: &RateLimiter,
    clock: &dyn Clock,
) -> Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: Endpoint,
    A: App<E>,
{
    let peer = link.peer.clone();
    let peer = peer.as_str();
    // Writes that went through in a row while reading found nothing: the runtime learns that a
    // socket became readable only when this task yields, and a socket that always takes more
    // writes never makes it yield (a sender streamed 150 MB before it heard the receiver's
    // early "disk full"). After a few, it yields so the reader's readiness is seen.
    let mut writes_unread = 0u32;
    loop {
        let now = clock.now_ms();
        app.produce(ep, now)?;
        let pending = ep.conn().pending_transmit().len();
        if app.is_done() && pending == 0 {
            return Ok(());
        }
        // Input read earlier and not yet consumed goes in first.
        if link.rat < link.rlen && app.wants_input() && !app.is_done() {
            link.rat += feed(ep, app, peer, now, &link.rbuf[link.rat..link.rlen])?;
            continue;
        }
        let want_read = app.wants_input() && !app.is_done();
        let mut allowed = 0;
        let mut pace = None;
        if pending > 0 {
            match limit.grant(pending) {
                Ok(n) => allowed = n,
                Err(wait) => pace = Some(wait),
            }
        }
        let deadline = earliest(ep.conn().poll_timeout(), app.poll_timeout())
            .map(|t| Duration::from_millis(t.saturating_sub(now)));
        let mut sleep = match (deadline, pace) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(Duration::from_secs(3600)),
        };
        if !want_read && allowed == 0 {
            // Waiting on the app or the rate alone: look again soon.
            sleep = sleep.min(Duration::from_millis(50));
        }
        let timer = tokio::time::sleep(sleep);
        tokio::pin!(timer);
        let (io, rbuf) = (&mut link.io, &mut link.rbuf);
        let out = &ep.conn().pending_transmit()[..allowed];
        let wake = poll_fn(|cx| {
            let mut wake = Wake { wrote: None, read: None };
            if !out.is_empty()
                && let Poll::Ready(r) = Pin::new(&mut *io).poll_write(cx, out)
            {
                wake.wrote = Some(r);
            }
            if want_read {
                let mut rb = ReadBuf::new(rbuf);
                if let Poll::Ready(r) = Pin::new(&mut *io).poll_read(cx, &mut rb) {
                    wake.read = Some(r.map(|()| rb.filled().len()));
                }
            }
            if wake.wrote.is_some() || wake.read.is_some() {
                return Poll::Ready(Some(wake));
            }
            timer.as_mut().poll(cx).map(|()| None)
        })
        .await;
        let written = match &wake {
            Some(Wake { wrote: Some(Ok(n)), .. }) => *n,
            _ => 0,
        };
        limit.refund(allowed - written.min(allowed));
        let now = clock.now_ms();
        let Some(wake) = wake else {
            ep.conn().handle_timeout(now).map_err(|e| proto(peer, e))?;
            continue;
        };
        match wake.wrote {
            Some(Ok(n)) => {
                ep.conn().consume_transmit(n);
                link.stats.written += n as u64;
            }
            Some(Err(e)) => return Err(net(peer, "write to", e)),
            None => {}
        }
        if wake.read.is_some() || !want_read {
            writes_unread = 0;
        } else {
            writes_unread += 1;
            if writes_unread >= 4 {
                writes_unread = 0;
                tokio::task::yield_now().await;
            }
        }
        match wake.read {
            Some(Ok(0)) => {
                return if app.is_done() {
                    Ok(())
                } else if !ep.conn().is_open() && !ep.conn().is_closed() {
                    Err(proto(peer, ep.conn().hung_up()))
                } else {
                    Err(net(peer, "keep talking to", std::io::ErrorKind::UnexpectedEof.into()))
                };
            }
            Some(Ok(n)) => {
                link.stats.read += n as u64;
                link.rlen = n;
                link.rat = feed(ep, app, peer, now, &link.rbuf[..n])?;
            }
            Some(Err(e)) => return Err(net(peer, "read from", e)),
            None => {}
        }
    }
}
