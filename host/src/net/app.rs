//! What runs on a connection: an [`App`] over an [`Endpoint`], and the sans-IO step that feeds
//! it received bytes. The tokio driver ([`super::driver`]) and the in-memory simulator
//! ([`crate::sync::sim`]) both move bytes with these, so a simulated connection runs exactly
//! the code a socket runs.

use keepsync_core::sync::ProtoError;

use super::{Conn, HostReceiver, HostSender};
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

/// What runs on a connection. `now` is the connection's clock in milliseconds.
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
    /// When [`App::produce`] must run again at the latest, with no input (a batch to close, a
    /// retry to make), if ever.
    fn poll_timeout(&self) -> Option<u64> {
        None
    }
}

/// Maps a core error to a host error naming the peer.
pub fn proto(peer: &str, fault: ProtoError) -> Error {
    Error::Protocol { peer: peer.to_owned(), fault }
}

/// Feeds `data` until it is used up, the app wants no more, or the app is done; returns the
/// bytes used.
pub fn feed<E: Endpoint, A: App<E>>(
    ep: &mut E,
    app: &mut A,
    peer: &str,
    now: u64,
    data: &[u8],
) -> Result<usize> {
    let mut at = 0;
    while at < data.len() && app.wants_input() && !app.is_done() {
        let used = ep.conn().handle_input(now, &data[at..]).map_err(|e| proto(peer, e))?;
        at += used;
        app.handle(ep, now)?;
    }
    Ok(at)
}

/// The earliest of two optional deadlines.
pub fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
