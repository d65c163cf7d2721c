//! Phase 9 of the self-test: the device uploads its finished container over the sync protocol
//! with `keepsync_firmware_sim::uplink::upload` (the same code the host-side simulation tests
//! run), to a host peer that lives in this image.
//!
//! The peer is a `keepsync-core` server [`Connection`] and [`Receiver`] with its own buffers
//! (like `keepsync serve`, but storing into RAM). It is the device's [`Transport`]: the
//! device's loop runs it whenever it waits, so the whole exchange is single-threaded and
//! deterministic. On the first connection the peer hangs up once two blocks are durable; the
//! device reconnects with a fresh random and resumes at the peer's durable prefix.
//!
//! **Stack measurement.** The peer runs nested inside the device's calls (`connect`, `wait`),
//! so its frames would count as the device's. Before running it, each such call records the
//! high-water mark so far (the device's own depth, the transport call's frame included), and
//! afterwards repaints the stack below itself, erasing the peer's marks. The device's figure
//! is the largest of those records and the mark at the end.

use embedded_storage::nor_flash::{ErrorType, ReadNorFlash, check_read};
use keepsync_core::budget::MAX_FILES_IN_FLIGHT;
use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::open;
use keepsync_core::sync::{
    CloseCode, Connection, Have, Millis, ProtoError, Receiver, ReceiverEvent, SendError, Status,
};
use keepsync_firmware_sim::flash::FlashError;
use keepsync_firmware_sim::net::{BLOCK, BLOCK_LOG2, LinkError, SYNC_BUF, SyncBuffers, Transport};
use keepsync_firmware_sim::uplink::{FlashFile, UploadReport, upload};

use crate::{CONTAINER_MAX, stack};

/// The pre-shared key of the device and the host.
const PSK: [u8; 32] = [0x5A; 32];
/// The name the device gives its container on the host.
pub const PATH: &str = "sensor-log.ks";
/// The host's frame buffers: the same as the device's (frames follow the smaller side).
const HOST_BUF: usize = SYNC_BUF;
/// Bytes in flight per direction between the device and the peer.
const PIPE: usize = 2048;
/// The peer hangs up on the first connection once this much is durable (two blocks).
const HANG_UP_AT: usize = 2 * BLOCK;

type HostConn = Connection<RustCrypto, [u8; HOST_BUF]>;
type HostReceiver = Receiver<RustCrypto, [u8; HOST_BUF]>;

/// What the upload did, as the device and the host saw it.
pub struct Outcome {
    /// The device's report.
    pub report: UploadReport,
    /// The offset the host answered each offer with, in order.
    pub resumes: [u64; 4],
    /// How many of `resumes` are set.
    pub offers: usize,
    /// The device's stack high-water mark (the peer's frames excluded).
    pub device_stack: usize,
}

/// Uploads `container` (the start of DATA) through the peer; the peer checks what it stored
/// against `container` before this returns.
#[inline(never)]
pub fn run(peer: &mut Peer, buffers: &mut SyncBuffers, container: &[u8]) -> Outcome {
    let file = FlashFile { path: PATH, start: 0, len: container.len() as u32, mtime: 1_764_000_000 };
    let mut flash = ReadOnlyFlash(container);
    let psk = SecretKey::from_bytes(PSK);
    stack::repaint();
    let report = upload(&mut flash, &[file], "device-1", &psk, 0x5EED_0001, peer, buffers)
        .unwrap_or_else(|e| panic!("upload: {e:?}"));
    let device_stack = peer.device_stack.max(stack::high_water());
    let stored = peer.host.complete.map(|len| &peer.host.store[..len]);
    assert!(stored == Some(container), "the host's copy differs from the container");
    Outcome { report, resumes: peer.host.resumes, offers: peer.host.offers, device_stack }
}

/// DATA, read-only, as the `embedded-storage` flash the uplink reads files from.
struct ReadOnlyFlash<'a>(&'a [u8]);

impl ErrorType for ReadOnlyFlash<'_> {
    type Error = FlashError;
}

impl ReadNorFlash for ReadOnlyFlash<'_> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), FlashError> {
        check_read(self, offset, bytes.len()).map_err(FlashError::Bounds)?;
        let at = offset as usize;
        bytes.copy_from_slice(&self.0[at..at + bytes.len()]);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.0.len()
    }
}

/// A byte pipe of `N` bytes (one direction of the link).
struct Pipe<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
}

impl<const N: usize> Pipe<N> {
    fn clear(&mut self) {
        (self.head, self.len) = (0, 0);
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends what fits of `bytes`; returns how many.
    fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(N - self.len);
        for (i, &b) in bytes[..n].iter().enumerate() {
            self.buf[(self.head + self.len + i) % N] = b;
        }
        self.len += n;
        n
    }

    /// The oldest bytes, as one contiguous slice.
    fn peek(&self) -> &[u8] {
        &self.buf[self.head..(self.head + self.len).min(N)]
    }

    fn pop(&mut self, n: usize) {
        let n = n.min(self.len);
        self.head = (self.head + n) % N;
        self.len -= n;
    }

    /// Moves the oldest bytes into `out`; returns how many.
    fn pop_into(&mut self, out: &mut [u8]) -> usize {
        let mut moved = 0;
        while moved < out.len() && !self.is_empty() {
            let chunk = self.peek();
            let n = chunk.len().min(out.len() - moved);
            out[moved..moved + n].copy_from_slice(&chunk[..n]);
            self.pop(n);
            moved += n;
        }
        moved
    }
}

#[allow(clippy::large_enum_variant, reason = "lives in a static; there is no heap to box into")]
enum Stage {
    /// Handshake, until the device's `Open`.
    Handshake(HostConn),
    /// Receiving files.
    Open(HostReceiver),
}

fn stage_conn(stage: &mut Option<Stage>) -> Option<&mut HostConn> {
    match stage.as_mut()? {
        Stage::Handshake(c) => Some(c),
        Stage::Open(r) => Some(r),
    }
}

/// A reply the host owes the device, queued while the receiver's send queue is full.
#[derive(Clone, Copy)]
enum Reply {
    Have(u32, Have),
    Done(u32, Status),
}

/// The host's storage and per-connection state.
pub struct UploadHost {
    /// The file as assembled so far; its first `durable` bytes survive a broken connection.
    store: [u8; CONTAINER_MAX],
    durable: usize,
    /// Length of the verified file, once its whole-file BLAKE3 matched.
    complete: Option<usize>,
    /// The file in flight on this connection: (id, size).
    incoming: Option<(u32, usize)>,
    replies: [Option<Reply>; 4],
    resumes: [u64; 4],
    offers: usize,
    /// Hang up once `durable` reaches this (once).
    hang_up_at: Option<usize>,
}

impl UploadHost {
    fn queue(&mut self, reply: Reply) -> Result<(), ProtoError> {
        let free = self
            .replies
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(ProtoError::Unexpected("too many replies"))?;
        *free = Some(reply);
        Ok(())
    }

    /// Sends queued replies, then handles the receiver's events. `Ok(false)`: hang up.
    fn step(&mut self, r: &mut HostReceiver, now: Millis) -> Result<bool, ProtoError> {
        for slot in &mut self.replies {
            let Some(reply) = *slot else { continue };
            let sent = match reply {
                Reply::Have(id, have) => r.have(now, id, have),
                Reply::Done(id, status) => r.done(now, id, status),
            };
            match sent {
                Ok(()) => *slot = None,
                Err(SendError::Blocked) => return Ok(true),
                Err(_) => return Err(ProtoError::Closed),
            }
        }
        while let Some(event) = r.poll_event(now) {
            match event? {
                ReceiverEvent::File(meta) => {
                    if meta.path != PATH || meta.size > CONTAINER_MAX as u64 {
                        return Err(ProtoError::Unexpected("not the file the host expects"));
                    }
                    let size = meta.size as usize;
                    let have = match self.complete {
                        Some(len) if meta.hash == Some(*blake3::hash(&self.store[..len]).as_bytes()) => {
                            Have::Skip
                        }
                        _ => {
                            // Whole blocks only: a torn last block is sent again.
                            let resume = (self.durable / BLOCK * BLOCK).min(size);
                            self.durable = resume;
                            self.incoming = Some((meta.id, size));
                            Have::Need { resume_from: resume as u64, block_log2: BLOCK_LOG2, blocks: 0 }
                        }
                    };
                    if let Some(at) = self.resumes.get_mut(self.offers) {
                        *at = match have {
                            Have::Need { resume_from, .. } => resume_from,
                            Have::Skip => meta.size,
                        };
                    }
                    self.offers += 1;
                    self.queue(Reply::Have(meta.id, have))?;
                }
                ReceiverEvent::Data { id, offset, codec, body, .. } => {
                    let Some((want, size)) = self.incoming else {
                        return Err(ProtoError::Unexpected("no file"));
                    };
                    let end = self.durable + body.len();
                    if id != want || codec != 0 || offset != self.durable as u64 || end > size {
                        return Err(ProtoError::Unexpected("data out of order"));
                    }
                    self.store[self.durable..end].copy_from_slice(body);
                    self.durable = end;
                    if self.hang_up_at.is_some_and(|at| self.durable >= at) {
                        self.hang_up_at = None;
                        return Ok(false);
                    }
                }
                ReceiverEvent::End { id, hash } => {
                    let Some((want, size)) = self.incoming.take() else {
                        return Err(ProtoError::Unexpected("no file"));
                    };
                    let ok = id == want
                        && self.durable == size
                        && *blake3::hash(&self.store[..size]).as_bytes() == hash;
                    self.complete = ok.then_some(size);
                    self.durable = 0;
                    self.queue(Reply::Done(id, if ok { Status::Ok } else { Status::HashMismatch }))?;
                }
                ReceiverEvent::Finished => r.close(now, CloseCode::Done),
                ReceiverEvent::Closed(_) => {}
            }
        }
        Ok(true)
    }
}

/// The host peer and the link to it: the device's [`Transport`].
pub struct Peer {
    now: Millis,
    stage: Option<Stage>,
    /// Device to host.
    up: Pipe<PIPE>,
    /// Host to device.
    down: Pipe<PIPE>,
    connections: u64,
    host: UploadHost,
    device_stack: usize,
}

impl Peer {
    /// Builds the peer in place (it is ~30 KiB: never on the stack).
    pub fn init(slot: &mut core::mem::MaybeUninit<Peer>) -> &mut Peer {
        let p = slot.as_mut_ptr();
        // SAFETY: every field is written before the reference is made; the arrays are filled
        // in place through raw pointers, so no 30 KiB temporary is built on the stack.
        unsafe {
            (&raw mut (*p).now).write(0);
            (&raw mut (*p).stage).write(None);
            for pipe in [&raw mut (*p).up, &raw mut (*p).down] {
                (&raw mut (*pipe).buf).cast::<u8>().write_bytes(0, PIPE);
                (&raw mut (*pipe).head).write(0);
                (&raw mut (*pipe).len).write(0);
            }
            (&raw mut (*p).connections).write(0);
            let host = &raw mut (*p).host;
            (&raw mut (*host).store).cast::<u8>().write_bytes(0, CONTAINER_MAX);
            (&raw mut (*host).durable).write(0);
            (&raw mut (*host).complete).write(None);
            (&raw mut (*host).incoming).write(None);
            (&raw mut (*host).replies).write([None; 4]);
            (&raw mut (*host).resumes).write([0; 4]);
            (&raw mut (*host).offers).write(0);
            (&raw mut (*host).hang_up_at).write(Some(HANG_UP_AT));
            (&raw mut (*p).device_stack).write(0);
            slot.assume_init_mut()
        }
    }

    /// Records the device's stack depth so far, before the peer's code runs nested.
    fn enter_peer(&mut self) {
        self.device_stack = self.device_stack.max(stack::high_water());
    }

    /// Erases the peer's stack marks below the caller.
    fn leave_peer(&mut self) {
        stack::repaint();
    }

    /// Runs the host on what arrived: handshake, `Open`, the transfer, timers, output.
    #[inline(never)]
    fn host_tick(&mut self) {
        if let Err(e) = self.host_work() {
            say!("host: hung up on the device: {:?}", e);
            self.stage = None;
            return;
        }
        let now = self.now;
        let Some(conn) = stage_conn(&mut self.stage) else { return };
        if conn.poll_timeout().is_some_and(|t| now >= t)
            && let Err(e) = conn.handle_timeout(now)
        {
            say!("host: connection timed out: {:?}", e);
            self.stage = None;
            return;
        }
        let Some(conn) = stage_conn(&mut self.stage) else { return };
        let n = self.down.push(conn.pending_transmit());
        conn.consume_transmit(n);
        if conn.is_closed() && conn.pending_transmit().is_empty() {
            self.stage = None;
        }
    }

    fn host_work(&mut self) -> Result<(), ProtoError> {
        let now = self.now;
        loop {
            let mut progressed = false;
            match self.stage.as_mut() {
                None => return Ok(()),
                Some(Stage::Handshake(conn)) => {
                    let input = self.up.peek();
                    if !input.is_empty() {
                        let n = conn.handle_input(now, input)?;
                        self.up.pop(n);
                        progressed |= n > 0;
                    }
                    if let Some(request) = open::poll_open(conn, now) {
                        request?;
                        open::accept(conn, now, MAX_FILES_IN_FLIGHT as u16).map_err(|_| ProtoError::Closed)?;
                        let Some(Stage::Handshake(conn)) = self.stage.take() else { unreachable!() };
                        self.stage = Some(Stage::Open(Receiver::new(conn)));
                        progressed = true;
                    }
                }
                Some(Stage::Open(r)) => {
                    if !self.host.step(r, now)? {
                        say!("host: hangs up with {} bytes durable (a dropped link)", self.host.durable);
                        self.stage = None;
                        return Ok(());
                    }
                    let input = self.up.peek();
                    if !input.is_empty() {
                        let n = r.handle_input(now, input)?;
                        self.up.pop(n);
                        progressed |= n > 0;
                    }
                    if !self.host.step(r, now)? {
                        self.stage = None;
                        return Ok(());
                    }
                }
            }
            if !progressed {
                return Ok(());
            }
        }
    }
}

impl Transport for Peer {
    fn now(&mut self) -> Millis {
        self.now
    }

    fn connect(&mut self) -> Result<(), LinkError> {
        self.enter_peer();
        self.connections += 1;
        let mut random = [0u8; 32];
        random[..8].copy_from_slice(&self.connections.to_le_bytes());
        random[8..].fill(0xA5);
        let conn = Connection::server(
            RustCrypto,
            SecretKey::from_bytes(PSK),
            random,
            self.now,
            [0; HOST_BUF],
            [0; HOST_BUF],
        );
        self.stage = conn.ok().map(Stage::Handshake);
        self.up.clear();
        self.down.clear();
        self.leave_peer();
        self.stage.as_ref().map(|_| ()).ok_or(LinkError::Unreachable)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        if self.stage.is_none() {
            return Err(LinkError::Closed);
        }
        Ok(self.up.push(bytes))
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        let n = self.down.pop_into(buf);
        // The host hung up: the device learns it once what was sent before has arrived.
        if n == 0 && self.stage.is_none() {
            return Err(LinkError::Closed);
        }
        Ok(n)
    }

    fn wait(&mut self, deadline: Millis) {
        self.enter_peer();
        loop {
            self.host_tick();
            if !self.down.is_empty() || self.now >= deadline {
                break;
            }
            // Nothing for the device yet: time passes until the next timer of either side.
            let next = stage_conn(&mut self.stage)
                .and_then(|c| c.poll_timeout())
                .map_or(deadline, |t| t.min(deadline));
            self.now = next.max(self.now + 1);
        }
        self.leave_peer();
    }

    fn close(&mut self) {
        self.enter_peer();
        self.stage = None;
        self.leave_peer();
    }
}
