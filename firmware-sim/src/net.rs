//! What the device's sync roles share: the [`Transport`] a board provides, the buffers it
//! lends ([`SyncBuffers`]), dialling the host (handshake, `Open`/`Opened`), moving bytes
//! between the transport and a [`Connection`], timers, and reconnecting with backoff.
//!
//! The device is always the client: it dials out (a device behind NAT or on a radio link
//! cannot be reached), sends `Open` with the direction, and each connection gets a fresh
//! random from the TRNG, hence fresh session keys. A broken connection (a frame that fails
//! authentication after corruption, a lost segment that ends in a timeout, a hang-up) is
//! dropped whole; the next one resumes at the receiver's durable prefix.

use keepsync_core::budget::{FRAME_HEADER_LEN, MAX_FILES_IN_FLIGHT, frame_body_for_block};
use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::{Connection, Direction, IDLE_TIMEOUT_MS, Millis, ProtoError, SendError};

use keepsync_core::sync::open::{OpenClient, OpenError, OpenParams};

use crate::device::{DeviceError, Trng};
use crate::flash::FlashError;

/// Sync block on the device: 4 KiB, one flash sector on most parts, so a received block is
/// one erase and one program.
pub const BLOCK_LOG2: u8 = 12;
/// Sync block size in bytes.
pub const BLOCK: usize = 1 << BLOCK_LOG2;
/// Each of `rx` and `tx`: one frame carrying a full block (4 + 4,176 = 4,180 bytes).
pub const SYNC_BUF: usize = FRAME_HEADER_LEN + frame_body_for_block(BLOCK_LOG2);
/// A role gives up after this many connections in a row that moved no file forward.
pub const MAX_FRUITLESS_CONNECTIONS: u32 = 200;
/// Bytes read from the transport at a time.
const INPUT_CHUNK: usize = 256;

/// The RAM a sync role borrows: receive and send buffers sized for [`BLOCK`]-byte blocks and
/// one block of plaintext. Put it in a `static` on a board (12,456 bytes).
pub struct SyncBuffers {
    /// Receive buffer: bounds the largest frame this device accepts (announced in its hello).
    pub rx: [u8; SYNC_BUF],
    /// Send queue: one sealed frame with a full block.
    pub tx: [u8; SYNC_BUF],
    /// One block read from or written to flash.
    pub block: [u8; BLOCK],
}

impl SyncBuffers {
    /// Zeroed buffers (`const`, so they can initialize a `static`).
    pub const fn new() -> Self {
        Self { rx: [0; SYNC_BUF], tx: [0; SYNC_BUF], block: [0; BLOCK] }
    }
}

impl Default for SyncBuffers {
    fn default() -> Self {
        Self::new()
    }
}

/// The transport ended the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkError {
    /// No connection could be made.
    Unreachable,
    /// The connection is gone (the peer hung up, or the radio lost its association).
    Closed,
}

/// A byte stream to the host and a clock, provided by the board (a UART or radio driver and a
/// timer) or by a simulation. Calls never block except [`wait`](Self::wait).
pub trait Transport {
    /// Milliseconds on the board's monotonic clock.
    fn now(&mut self) -> Millis;
    /// Opens a new connection to the host, dropping the current one.
    fn connect(&mut self) -> Result<(), LinkError>;
    /// Queues bytes for sending; returns how many were taken (0 when the link is full).
    fn write(&mut self, bytes: &[u8]) -> Result<usize, LinkError>;
    /// Copies received bytes into `buf`; returns how many (0 when none arrived).
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError>;
    /// Sleeps until bytes may have arrived or `deadline` passed (whichever is first).
    fn wait(&mut self, deadline: Millis);
    /// Drops the current connection.
    fn close(&mut self);
}

/// Why a connection ended before its work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Broken {
    /// The protocol failed: corruption, loss (timeout), or a peer breaking the rules.
    Proto(ProtoError),
    /// The transport dropped the connection.
    Link(LinkError),
    /// The device itself cannot go on (power cut, refusal): no reconnect.
    Device(DeviceError),
}

impl From<ProtoError> for Broken {
    fn from(e: ProtoError) -> Self {
        Self::Proto(e)
    }
}

impl From<LinkError> for Broken {
    fn from(e: LinkError) -> Self {
        Self::Link(e)
    }
}

impl From<FlashError> for Broken {
    fn from(e: FlashError) -> Self {
        Self::Device(e.into())
    }
}

impl From<SendError> for Broken {
    /// `Blocked` is handled where messages are queued; what reaches here is a closed
    /// connection (its cause comes out of the next poll) or a bug in the role.
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed | SendError::Blocked | SendError::NotOpen => Self::Proto(ProtoError::Closed),
            SendError::TooLarge | SendError::Usage(_) => Self::Device(DeviceError::Refused),
        }
    }
}

/// A device-side connection over lent buffers.
pub(crate) type DeviceConn<'b> = Connection<RustCrypto, &'b mut [u8]>;

/// Bytes read from the transport and not yet taken by the connection (it takes at most one
/// frame per call, and none while a decoded message waits to be polled).
pub(crate) struct Wire {
    input: [u8; INPUT_CHUNK],
    at: usize,
    len: usize,
}

impl Wire {
    pub(crate) fn new() -> Self {
        Self { input: [0; INPUT_CHUNK], at: 0, len: 0 }
    }

    /// Writes what the connection queued and feeds it what arrived. Returns whether any byte
    /// moved; the caller polls messages after every call.
    pub(crate) fn pump(&mut self, conn: &mut DeviceConn<'_>, t: &mut impl Transport) -> Result<bool, Broken> {
        let mut moved = false;
        let pending = conn.pending_transmit();
        if !pending.is_empty() {
            let n = t.write(pending)?;
            conn.consume_transmit(n);
            moved |= n > 0;
        }
        if self.at == self.len {
            self.at = 0;
            self.len = t.read(&mut self.input)?;
        }
        if self.at < self.len {
            let n = conn.handle_input(t.now(), &self.input[self.at..self.len])?;
            self.at += n;
            moved |= n > 0;
        }
        Ok(moved)
    }

    /// Nothing moved: sleeps until the connection's next timer (or input), then runs timers.
    pub(crate) fn idle(&mut self, conn: &mut DeviceConn<'_>, t: &mut impl Transport) -> Result<(), Broken> {
        let now = t.now();
        let deadline = conn.poll_timeout().unwrap_or(now + IDLE_TIMEOUT_MS);
        t.wait(deadline);
        let now = t.now();
        if conn.poll_timeout().is_some_and(|due| now >= due) {
            conn.handle_timeout(now)?;
        }
        Ok(())
    }

    /// Sends what is still queued (a `Close`) before hanging up, as far as the link takes it.
    pub(crate) fn flush(&mut self, conn: &mut DeviceConn<'_>, t: &mut impl Transport) {
        while !conn.pending_transmit().is_empty() {
            match t.write(conn.pending_transmit()) {
                Ok(0) => {
                    // The link is full: give it a moment to drain, but do not wait for a peer
                    // that may be gone (the connection is ending anyway).
                    let now = t.now();
                    t.wait(now + 100);
                    if t.now() == now {
                        return;
                    }
                }
                Ok(n) => conn.consume_transmit(n),
                Err(_) => return,
            }
        }
    }
}

/// Connects, runs the handshake with a fresh random and asks the host for `path` in
/// `direction`; returns an open connection once the host answered `Opened`.
pub(crate) fn dial<'b>(
    t: &mut impl Transport,
    wire: &mut Wire,
    buffers: (&'b mut [u8], &'b mut [u8]),
    psk: &SecretKey,
    trng: &mut Trng,
    path: &str,
    direction: Direction,
) -> Result<DeviceConn<'b>, Broken> {
    t.connect()?;
    // A fresh random per connection: fresh session keys, so frame counters may restart at 0.
    let mut random = [0u8; 32];
    trng.fill(&mut random);
    let (rx, tx) = buffers;
    let mut conn = Connection::client(RustCrypto, psk.clone(), random, t.now(), rx, tx)
        .map_err(|_| Broken::Device(DeviceError::Refused))?;
    // The device's tables hold MAX_FILES_IN_FLIGHT files whatever the host takes; it compares
    // contents by hash (it knows each file's).
    let params = OpenParams { checksum: true, ..OpenParams::new(direction, MAX_FILES_IN_FLIGHT as u16) };
    let mut open = OpenClient::new();
    loop {
        match open.poll_opened(&mut conn, t.now()) {
            Some(Ok(_)) => return Ok(conn),
            Some(Err(OpenError::Refused)) => return Err(Broken::Device(DeviceError::Refused)),
            Some(Err(OpenError::Proto(e))) => return Err(Broken::Proto(e)),
            None => {}
        }
        open.poll_send(&mut conn, t.now(), path, &params)?;
        if !wire.pump(&mut conn, t)? {
            wire.idle(&mut conn, t)?;
        }
    }
}

/// How a role's connections went, as seen from the device.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// Connections made, the successful one included.
    pub made: u32,
    /// Broken by a frame that failed authentication (corruption, reordering, duplication).
    pub auth_failed: u32,
    /// Broken by silence (a lost segment stalls the stream until the idle timeout).
    pub timed_out: u32,
    /// Broken by the host hanging up, or by a malformed or unexpected frame.
    pub other: u32,
}

/// Runs `connection` until it reports the work done, reconnecting after every broken link with
/// exponential backoff (0.5 s doubling to 8 s). `connection` returns whether it moved a file
/// forward before it broke; too many fruitless connections in a row end in `LinkDown`.
pub(crate) fn with_reconnects<T: Transport>(
    t: &mut T,
    mut connection: impl FnMut(&mut T, &mut bool) -> Result<(), Broken>,
) -> Result<Connections, DeviceError> {
    let mut fruitless = 0;
    let mut stats = Connections::default();
    loop {
        stats.made += 1;
        let mut progressed = false;
        let result = connection(t, &mut progressed);
        t.close();
        match result {
            Ok(()) => return Ok(stats),
            Err(Broken::Device(e)) => return Err(e),
            Err(Broken::Proto(ProtoError::FrameAuthFailed)) => stats.auth_failed += 1,
            Err(Broken::Proto(ProtoError::TimedOut | ProtoError::HandshakeTimedOut)) => stats.timed_out += 1,
            Err(Broken::Proto(_) | Broken::Link(_)) => stats.other += 1,
        }
        fruitless = if progressed { 0 } else { fruitless + 1 };
        if fruitless >= MAX_FRUITLESS_CONNECTIONS {
            return Err(DeviceError::LinkDown);
        }
        let backoff = 500u64 << fruitless.min(4);
        let now = t.now();
        t.wait(now + backoff);
    }
}
