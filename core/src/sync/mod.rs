//! The sync protocol as sans-IO state machines (see `docs/PROTOCOL.md`).
//!
//! - [`Connection`]: PSK handshake, then sealed, ordered frames; keep-alive and timeouts.
//! - [`Sender`] and [`Receiver`]: the file-transfer rules on top of a connection, with a fixed
//!   table of [`MAX_FILES_IN_FLIGHT`](crate::budget::MAX_FILES_IN_FLIGHT) files per connection.
//! - [`open`]: the `Open`/`Opened` exchange that starts a session, for both sides.
//! - [`filter`]: the `--include` / `--exclude` rules `Open` carries, bounded.
//! - [`message`]: what the frames carry.
//!
//! The same code drives a TCP socket on a host (`keepsync serve` / `keepsync sync ks://...`)
//! and a UART or radio on a device: the caller moves bytes and passes the time in.

mod conn;
pub mod filter;
pub mod message;
pub mod open;
mod transfer;

pub use conn::{Connection, Role};
pub use filter::{FilterError, FilterRules, RuleKind};
pub use message::{
    Bytes, CloseCode, Direction, FileMeta, Have, Kind, Layout, MAX_PART_LOG2, MIN_PART_LOG2, Message, Status,
};
pub use transfer::{Receiver, ReceiverEvent, Sender, SenderEvent};

/// Milliseconds on the caller's clock (any epoch; only differences matter).
pub type Millis = u64;

/// A connection that has sent nothing for this long sends a `Ping`.
pub const KEEPALIVE_MS: Millis = 15_000;

/// A connection that has received nothing for this long fails with [`ProtoError::TimedOut`].
pub const IDLE_TIMEOUT_MS: Millis = 60_000;

/// The handshake must finish within this time.
pub const HANDSHAKE_TIMEOUT_MS: Millis = 10_000;

/// The peer or the link broke the protocol; the connection is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ProtoError {
    /// The peer does not speak the KeepSync sync protocol (bad magic).
    NotKeepSync,
    /// No protocol version in common; the peer speaks `min..=max`.
    UnsupportedVersion {
        /// Lowest version the peer speaks.
        min: u8,
        /// Highest version the peer speaks.
        max: u8,
    },
    /// The peer did not prove the pre-shared key: the two sides use different PSK files (or
    /// the proof was replayed or forged).
    PeerNotAuthenticated,
    /// A hello or proof frame has the wrong length or a field out of range.
    MalformedHello,
    /// The peer hung up before the handshake finished (reported by the driver, which sees
    /// the transport end, through [`Connection::hung_up`]).
    HungUpInHandshake,
    /// A client hung up after the server's hello instead of proving the key: what a client
    /// with a different PSK file does once the server's proof failed.
    HungUpBeforeProof,
    /// The handshake did not finish within [`HANDSHAKE_TIMEOUT_MS`].
    HandshakeTimedOut,
    /// A frame announced more bytes than this end accepts.
    FrameTooLarge {
        /// Announced body length.
        len: u32,
        /// Largest accepted.
        max: u32,
    },
    /// A frame is shorter than its kind allows.
    FrameTooShort {
        /// Announced body length.
        len: u32,
    },
    /// A sealed frame failed authentication: altered, replayed, reordered or lost in transit.
    FrameAuthFailed,
    /// A frame authenticated but its message does not decode, or a field is out of range.
    Malformed,
    /// A message arrived that the protocol does not allow now (names the rule broken).
    Unexpected(&'static str),
    /// The peer was silent past the timeout.
    TimedOut,
    /// The connection is closed.
    Closed,
}

impl core::fmt::Display for ProtoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::NotKeepSync => f.write_str("the peer is not a KeepSync sync endpoint (bad magic)"),
            Self::UnsupportedVersion { min, max } => {
                write!(
                    f,
                    "no protocol version in common (the peer speaks {min}..={max}, this build {})",
                    crate::wire::frame::PROTO_VERSION
                )
            }
            Self::PeerNotAuthenticated => f.write_str(
                "the peer did not prove the pre-shared key (a different PSK file, or a replayed or forged proof)",
            ),
            Self::MalformedHello => f.write_str("the peer sent a malformed hello or proof"),
            Self::HungUpInHandshake => f.write_str("the peer hung up during the handshake"),
            Self::HungUpBeforeProof => f.write_str(
                "the peer hung up without proving the pre-shared key (a client with a different PSK file does this)",
            ),
            Self::HandshakeTimedOut => {
                write!(f, "the handshake did not finish within {} s", HANDSHAKE_TIMEOUT_MS / 1000)
            }
            Self::FrameTooLarge { len, max } => {
                write!(f, "the peer sent a {len}-byte frame; at most {max} bytes are accepted")
            }
            Self::FrameTooShort { len } => write!(f, "the peer sent a frame of only {len} bytes"),
            Self::FrameAuthFailed => f.write_str(
                "a frame failed authentication: data was altered, replayed, reordered or lost in transit",
            ),
            Self::Malformed => f.write_str("the peer sent a message that does not decode"),
            Self::Unexpected(rule) => write!(f, "the peer broke the protocol: {rule}"),
            Self::TimedOut => f.write_str("the peer stopped answering (timed out)"),
            Self::Closed => f.write_str("the connection is closed"),
        }
    }
}

impl core::error::Error for ProtoError {}

/// A message could not be queued. Caused by the caller, never by input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SendError {
    /// The send queue is too full now: write out `poll_transmit` and try again.
    Blocked,
    /// The message does not fit in one frame for this peer (or in the lent `tx` buffer).
    TooLarge,
    /// The handshake is not finished.
    NotOpen,
    /// The connection is closed or failed.
    Closed,
    /// The call breaks the transfer rules (names which).
    Usage(&'static str),
}

impl core::fmt::Display for SendError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Blocked => f.write_str("send queue full: transmit first"),
            Self::TooLarge => f.write_str("message larger than a frame"),
            Self::NotOpen => f.write_str("handshake not finished"),
            Self::Closed => f.write_str("connection closed"),
            Self::Usage(rule) => write!(f, "transfer rule broken by the caller: {rule}"),
        }
    }
}

impl core::error::Error for SendError {}
