//! The `Open` exchange that starts every session after the handshake: the client names the
//! tree and the direction, the server answers `Opened` (or refuses with `Close(Refused)`).

use std::time::Duration;

use keepsync_core::sync::{CloseCode, Direction, Message, ProtoError};

use super::Conn;
use super::app::{App, proto};
use super::clock::SharedClock;
use crate::error::{Error, Result};

/// What a client asks for in `Open`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenRequest {
    /// The tree under the served root (`.` for the root itself).
    pub path: String,
    /// Push or pull.
    pub direction: Direction,
    /// `--delete`: remove what the sender did not list (a connection that lists everything).
    pub delete: bool,
    /// `--delete`: remove entries of another kind in the way of what the sender offers.
    pub replace: bool,
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

/// The client's side: sends `Open` once the handshake is done, then waits for `Opened`.
pub struct OpenClient {
    request: OpenRequest,
    clock: SharedClock,
    sent_at: Option<Duration>,
    /// The server's `max_files`, once it answered `Opened`.
    pub opened: Option<u16>,
    /// `Open` to `Opened`: a round trip with nothing queued on either side.
    pub rtt: Option<Duration>,
}

impl OpenClient {
    /// Will ask for `request`.
    pub fn new(request: OpenRequest, clock: SharedClock) -> Self {
        Self { request, clock, sent_at: None, opened: None, rtt: None }
    }
}

impl App<Conn> for OpenClient {
    fn produce(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        if conn.is_open() && self.sent_at.is_none() {
            let r = &self.request;
            let open = Message::Open {
                path: &r.path,
                direction: r.direction,
                delete: r.delete,
                replace: r.replace,
                checksum: r.checksum,
                dry_run: r.dry_run,
                max_files: r.max_files,
                session: r.session,
                part_size: r.part_size,
            };
            if conn.send(now, &open).is_ok() {
                self.sent_at = Some(self.clock.now());
            }
        }
        Ok(())
    }

    fn handle(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        if let Some(msg) = conn.poll_message(now) {
            match msg.map_err(|e| proto("the server", e))? {
                Message::Opened { max_files } => {
                    self.opened = Some(max_files);
                    self.rtt = self.sent_at.map(|at| self.clock.now().saturating_sub(at));
                }
                Message::Close(CloseCode::Refused) => {
                    return Err(Error::Refused {
                        peer: "the server".into(),
                        reason: format!(
                            "{:?} is outside the served root, not a directory, or missing",
                            self.request.path
                        ),
                    });
                }
                _ => return Err(proto("the server", ProtoError::Unexpected("expected Opened"))),
            }
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.opened.is_some()
    }
}

/// The server's side: waits for the client's `Open`.
#[derive(Default)]
pub struct AwaitOpen {
    /// The request, once it arrived.
    pub request: Option<OpenRequest>,
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
                    replace,
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
                        replace,
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
