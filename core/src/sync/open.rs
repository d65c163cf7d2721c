//! The `Open` exchange that starts every session once the handshake is done: the client names
//! the tree and the direction, the server answers `Opened` or refuses with `Close(Refused)`.
//!
//! One implementation for every endpoint (host client and server, the simulated device, the
//! image on the emulated Cortex-M4): [`OpenClient`] on the client's side, [`poll_open`],
//! [`accept`] and [`refuse`] on the server's. Time is passed in; nothing here allocates.

use super::message::{CloseCode, Direction, Message};
use super::{Connection, Millis, ProtoError, SendError};
use crate::crypto::CryptoProvider;

/// What a client asks for in `Open`, besides the tree's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OpenParams {
    /// Which way files move.
    pub direction: Direction,
    /// After `Finished`, the receiver removes what the sender did not list.
    pub delete: bool,
    /// An entry of another kind in the way of one offered is removed first.
    pub replace: bool,
    /// Compare content hashes rather than size and mtime.
    pub checksum: bool,
    /// The receiver changes nothing.
    pub dry_run: bool,
    /// Files the client accepts in flight when it receives.
    pub max_files: u16,
    /// A pull over several connections: the client's id for its run (all zero: alone).
    pub session: [u8; 16],
    /// A pull in a session: the size of the parts large files go as (0: whole).
    pub part_size: u64,
}

impl OpenParams {
    /// A request to move files `direction`, with nothing else asked for, and `max_files` in
    /// flight.
    pub const fn new(direction: Direction, max_files: u16) -> Self {
        Self {
            direction,
            delete: false,
            replace: false,
            checksum: false,
            dry_run: false,
            max_files,
            session: [0; 16],
            part_size: 0,
        }
    }

    fn message<'a>(&self, path: &'a str) -> Message<'a> {
        Message::Open {
            path,
            direction: self.direction,
            delete: self.delete,
            replace: self.replace,
            checksum: self.checksum,
            dry_run: self.dry_run,
            max_files: self.max_files,
            session: self.session,
            part_size: self.part_size,
        }
    }
}

/// The server's answer, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Opened {
    /// Files the server accepts in flight when it receives.
    pub max_files: u16,
    /// Milliseconds from sending `Open` to `Opened`: a round trip with nothing queued on
    /// either side.
    pub rtt: Millis,
}

/// Why a session did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum OpenError {
    /// The server refused the request (the path is outside its root, not a directory, ...).
    Refused,
    /// The server broke the protocol.
    Proto(ProtoError),
}

impl From<ProtoError> for OpenError {
    fn from(e: ProtoError) -> Self {
        Self::Proto(e)
    }
}

/// The client's side of the exchange.
#[derive(Debug, Default, Clone, Copy)]
pub struct OpenClient {
    sent_at: Option<Millis>,
}

impl OpenClient {
    /// Nothing sent yet.
    pub const fn new() -> Self {
        Self { sent_at: None }
    }

    /// `Open` is queued.
    pub fn sent(&self) -> bool {
        self.sent_at.is_some()
    }

    /// Queues `Open` for the tree `path` once the handshake is done; call again after input
    /// until [`OpenClient::sent`]. Nothing happens before the connection is open, or once sent.
    pub fn poll_send<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        conn: &mut Connection<P, B>,
        now: Millis,
        path: &str,
        params: &OpenParams,
    ) -> Result<(), SendError> {
        if self.sent_at.is_none() && conn.is_open() {
            conn.send(now, &params.message(path))?;
            self.sent_at = Some(now);
        }
        Ok(())
    }

    /// The server's answer, once a message arrived: `Opened`, a refusal, or a protocol
    /// violation (anything else).
    #[must_use]
    pub fn poll_opened<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        conn: &mut Connection<P, B>,
        now: Millis,
    ) -> Option<Result<Opened, OpenError>> {
        let msg = match conn.poll_message(now)? {
            Ok(msg) => msg,
            Err(e) => return Some(Err(e.into())),
        };
        Some(match (msg, self.sent_at) {
            (Message::Opened { max_files }, Some(at)) => {
                Ok(Opened { max_files, rtt: now.saturating_sub(at) })
            }
            (Message::Close(CloseCode::Refused), _) => Err(OpenError::Refused),
            _ => Err(OpenError::Proto(ProtoError::Unexpected("expected Opened"))),
        })
    }
}

/// A client's `Open`, as the server received it (the path borrows the receive buffer until the
/// next input).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenRequest<'a> {
    /// The tree under the served root (`.` for the root itself).
    pub path: &'a str,
    /// The rest of the request.
    pub params: OpenParams,
}

/// The server's side: the first message after the handshake, which must be `Open`.
#[must_use]
pub fn poll_open<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>>(
    conn: &mut Connection<P, B>,
    now: Millis,
) -> Option<Result<OpenRequest<'_>, ProtoError>> {
    let msg = match conn.poll_message(now)? {
        Ok(msg) => msg,
        Err(e) => return Some(Err(e)),
    };
    Some(match msg {
        Message::Open {
            path,
            direction,
            delete,
            replace,
            checksum,
            dry_run,
            max_files,
            session,
            part_size,
        } => Ok(OpenRequest {
            path,
            params: OpenParams {
                direction,
                delete,
                replace,
                checksum,
                dry_run,
                max_files,
                session,
                part_size,
            },
        }),
        _ => Err(ProtoError::Unexpected("the first message must be Open")),
    })
}

/// Accepts the request: answers `Opened`, saying the server takes `max_files` in flight.
pub fn accept<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>>(
    conn: &mut Connection<P, B>,
    now: Millis,
    max_files: u16,
) -> Result<(), SendError> {
    conn.send(now, &Message::Opened { max_files })
}

/// Refuses the request: `Close(Refused)`, and the connection is over.
pub fn refuse<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>>(conn: &mut Connection<P, B>, now: Millis) {
    conn.close(now, CloseCode::Refused);
}
