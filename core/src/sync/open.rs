//! The `Open` exchange that starts every session once the handshake is done: the client names
//! the tree and the direction, the server answers `Opened` or refuses with `Close(Refused)`.
//!
//! One implementation for every endpoint (host client and server, the simulated device, the
//! image on the emulated Cortex-M4): [`OpenClient`] on the client's side, [`poll_open`],
//! [`accept`] and [`refuse`] on the server's. Time is passed in; nothing here allocates.

use super::filter::FilterRules;
use super::message::{CloseCode, Direction, Message};
use super::{Connection, Millis, ProtoError, SendError};
use crate::crypto::CryptoProvider;

/// What a client asks for in `Open`, besides the tree's path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct OpenParams<'a> {
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
    /// With `delete`, also remove what the filter rules exclude.
    pub delete_excluded: bool,
    /// `--include` / `--exclude` rules, in order.
    pub filters: FilterRules<'a>,
}

impl<'a> OpenParams<'a> {
    /// A request to move files `direction`, with nothing else asked for (no filter rules), and
    /// `max_files` in flight.
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
            delete_excluded: false,
            filters: FilterRules::EMPTY,
        }
    }

    /// The `Open` message asking for the tree `path` with these parameters.
    pub fn message<'p>(&self, path: &'p str) -> Message<'p>
    where
        'a: 'p,
    {
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
            delete_excluded: self.delete_excluded,
            filters: self.filters,
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
        params: &OpenParams<'_>,
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
    /// The rest of the request (the filter rules borrow the receive buffer too).
    pub params: OpenParams<'a>,
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
            delete_excluded,
            filters,
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
                delete_excluded,
                filters,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{MAX_FILTER_LEN, MAX_OPEN_LEN, MAX_PATH_LEN};
    use crate::sync::filter::RuleKind;

    fn encode<'b>(params: &OpenParams<'_>, path: &str, buf: &'b mut [u8]) -> &'b [u8] {
        postcard::to_slice(&params.message(path), buf).unwrap()
    }

    #[test]
    fn the_longest_open_fits_max_open_len() {
        let path = core::str::from_utf8(&[b'p'; MAX_PATH_LEN]).unwrap();
        // The longest rule list: one pattern filling every byte.
        let pattern = [b'x'; MAX_FILTER_LEN - 3];
        let pattern = core::str::from_utf8(&pattern).unwrap();
        let mut rules = [0u8; MAX_FILTER_LEN];
        let filters = FilterRules::encode([(RuleKind::Exclude, pattern)], &mut rules).unwrap();
        assert_eq!(filters.as_bytes().len(), MAX_FILTER_LEN);
        let params = OpenParams {
            delete: true,
            replace: true,
            checksum: true,
            dry_run: true,
            max_files: u16::MAX,
            session: [0xff; 16],
            part_size: u64::MAX,
            delete_excluded: true,
            filters,
            ..OpenParams::new(Direction::Pull, 0)
        };
        let mut buf = [0u8; MAX_OPEN_LEN + 64];
        assert_eq!(encode(&params, path, &mut buf).len(), MAX_OPEN_LEN);
    }

    #[test]
    fn an_open_with_too_many_rules_does_not_decode() {
        let mut rules = [0u8; MAX_FILTER_LEN];
        let filters = FilterRules::encode([(RuleKind::Include, "*.txt")], &mut rules).unwrap();
        let params = OpenParams { filters, ..OpenParams::new(Direction::Pull, 32) };
        let mut buf = [0u8; 256];
        let n = encode(&params, "t", &mut buf).len();
        let decoded = postcard::from_bytes::<Message<'_>>(&buf[..n]).unwrap();
        assert_eq!(decoded, params.message("t"));
        // The same Open with one valid rule of MAX_FILTER_LEN + 1 bytes in place of its list
        // (the last 8 bytes: a 1-byte length and one 7-byte rule): refused on the length.
        let mut long = [b'x'; 256 + MAX_FILTER_LEN];
        long[..n - 8].copy_from_slice(&buf[..n - 8]);
        let rule = [0x81, 0x40, 0x00, 0xfe, 0x3f]; // 8193 bytes: Exclude, 8190 bytes of x
        long[n - 8..n - 3].copy_from_slice(&rule);
        let end = n - 3 + 8190;
        assert!(postcard::from_bytes::<Message<'_>>(&long[..end]).is_err());
        // One byte less of pattern and of list is within the bound, and decodes.
        long[n - 8..n - 3].copy_from_slice(&[0x80, 0x40, 0x00, 0xfd, 0x3f]);
        assert!(postcard::from_bytes::<Message<'_>>(&long[..end - 1]).is_ok());
    }
}
