//! The `Open` exchange that starts every session after the handshake: the client names the
//! tree and the direction, the server answers `Opened` (or refuses with `Close(Refused)`).

use std::time::Duration;

use keepsync_core::sync::open::{self, OpenError, OpenParams};
use keepsync_core::sync::{Direction, FilterRules};

use super::Conn;
use super::app::{App, proto};
use super::clock::SharedClock;
use crate::error::{Error, Result};
use crate::sync::filter::{Filter, FilterError};

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
    /// `--delete-excluded`: with `delete`, remove what the filter excludes too.
    pub delete_excluded: bool,
    /// The `--include` / `--exclude` rules, as `Open` encodes them
    /// ([`Filter::to_wire`]; empty: none).
    pub filters: Vec<u8>,
}

impl OpenRequest {
    /// The request's fields besides the path, as the core sends them; `Err` when the rules
    /// exceed what `Open` carries.
    pub fn params(&self) -> std::result::Result<OpenParams<'_>, FilterError> {
        Ok(OpenParams {
            direction: self.direction,
            delete: self.delete,
            replace: self.replace,
            checksum: self.checksum,
            dry_run: self.dry_run,
            max_files: self.max_files,
            session: self.session,
            part_size: self.part_size,
            delete_excluded: self.delete_excluded,
            filters: FilterRules::parse(&self.filters).map_err(FilterError::TooBig)?,
        })
    }

    /// The filter the rules make (the receiving or listing end's, with its own
    /// `.keepsyncignore` files).
    pub fn filter(&self) -> std::result::Result<Filter, FilterError> {
        Filter::from_wire(&FilterRules::parse(&self.filters).map_err(FilterError::TooBig)?)
    }

    fn from_core(req: &open::OpenRequest<'_>) -> Self {
        let p = req.params;
        Self {
            path: req.path.to_owned(),
            direction: p.direction,
            delete: p.delete,
            replace: p.replace,
            checksum: p.checksum,
            dry_run: p.dry_run,
            max_files: p.max_files,
            session: p.session,
            part_size: p.part_size,
            delete_excluded: p.delete_excluded,
            filters: p.filters.as_bytes().to_vec(),
        }
    }
}

/// The client's side: sends `Open` once the handshake is done, then waits for `Opened`
/// (the core's [`open::OpenClient`], timed on the host's clock).
pub struct OpenClient {
    request: OpenRequest,
    core: open::OpenClient,
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
        Self { request, core: open::OpenClient::new(), clock, sent_at: None, opened: None, rtt: None }
    }
}

impl App<Conn> for OpenClient {
    fn produce(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        let sent = self.core.sent();
        let params = self.request.params().map_err(Error::Filter)?;
        self.core
            .poll_send(conn, now, &self.request.path, &params)
            .map_err(|e| Error::Internal(format!("cannot send Open ({e})")))?;
        if !sent && self.core.sent() {
            self.sent_at = Some(self.clock.now());
        }
        Ok(())
    }

    fn handle(&mut self, conn: &mut Conn, now: u64) -> Result<()> {
        match self.core.poll_opened(conn, now) {
            None => Ok(()),
            Some(Ok(opened)) => {
                self.opened = Some(opened.max_files);
                self.rtt = self.sent_at.map(|at| self.clock.now().saturating_sub(at));
                Ok(())
            }
            Some(Err(OpenError::Refused)) => Err(Error::Refused {
                peer: "the server".into(),
                reason: format!(
                    "it would not open {:?}: outside the served root, not a directory, missing, or not \
                     writable there (a read-only or full disk, permissions); the server's log says which",
                    self.request.path
                ),
            }),
            Some(Err(OpenError::Proto(e))) => Err(proto("the server", e)),
        }
    }

    fn is_done(&self) -> bool {
        self.opened.is_some()
    }
}

/// The server's side: waits for the client's `Open` (the core's [`open::poll_open`]).
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
        if let Some(req) = open::poll_open(conn, now) {
            self.request = Some(OpenRequest::from_core(&req.map_err(|e| proto("the client", e))?));
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.request.is_some()
    }
}
