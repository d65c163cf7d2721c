//! [`Connection`]: the PSK handshake and the sealed, ordered frame channel, sans-IO.
//!
//! Bytes from the transport go in through [`Connection::handle_input`]; decoded messages come
//! out of [`Connection::poll_message`]; messages to send go in through [`Connection::send`] and
//! the bytes to write come out of [`Connection::poll_transmit`]. Time is a number of
//! milliseconds the caller passes in ([`Millis`]); [`Connection::poll_timeout`] says when to
//! call [`Connection::handle_timeout`] next. No sockets, threads, clocks or heap.
//!
//! ```text
//!   client                                   server
//!   ClientHello (versions, max_body, random) ─►
//!                 ◄─ ServerHello (version, max_body, random, server proof)
//!   checks the proof; ClientProof ─►            checks the proof
//!   sealed frames ◄────────────────────────────► sealed frames
//! ```
//!
//! Every frame after the handshake is AES-256-GCM under the direction's key with an implicit
//! counter as the nonce: a changed, dropped, replayed or reordered frame fails to open and
//! closes the connection. A reliable transport (TCP) never does that by itself; a lossy link
//! ends the connection and the driver reconnects and resumes from the receiver's checkpoint.

use sha2::{Digest, Sha256};

use super::message::{CloseCode, Message};
use super::{HANDSHAKE_TIMEOUT_MS, IDLE_TIMEOUT_MS, KEEPALIVE_MS, Millis, ProtoError, SendError};
use crate::UsageError;
use crate::budget::{FRAME_HEADER_LEN, MAX_FRAME_BODY, MIN_FRAME_BODY, TAG_LEN};
use crate::crypto::session::{SessionSecrets, frame_nonce, key_id, proofs_equal};
use crate::crypto::{ChunkCipher, CryptoProvider, SecretKey};
use crate::wire::frame::{
    CLIENT_HELLO_LEN, FrameHeader, HELLO_LEN, HelloRepr, KEY_ID_LEN, OLD_CLIENT_HELLO_LEN, PROOF_LEN,
    PROTO_VERSION, RANDOM_LEN, SERVER_HELLO_LEN,
};

/// Which end of the handshake this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Role {
    /// Opens the connection and speaks first.
    Client,
    /// Accepts connections.
    Server,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    ClientAwaitServerHello,
    ServerAwaitClientHello,
    /// A server with many clients' keys waits for the host to look up the client's key id.
    ServerAwaitKey,
    ServerAwaitProof,
    Open,
    Closed,
}

/// One end of a sync connection. `B` is a lent buffer (`&mut [u8; N]` on a device, `Vec<u8>`
/// on a host): `rx` bounds the largest frame accepted, `tx` the bytes queued for sending.
pub struct Connection<P: CryptoProvider, B> {
    provider: P,
    role: Role,
    phase: Phase,
    psk: Option<SecretKey>,
    random: [u8; RANDOM_LEN],
    /// A server's: the client's random and key id, kept while the host looks up the key.
    peer_random: [u8; RANDOM_LEN],
    key_id: [u8; KEY_ID_LEN],
    transcript: Sha256,
    expected_proof: [u8; PROOF_LEN],
    seal: Option<P::Cipher>,
    open: Option<P::Cipher>,
    tx_counter: u64,
    rx_counter: u64,
    rx: B,
    rx_fill: usize,
    rx_body: Option<usize>,
    rx_ready: Option<usize>,
    rx_delivered: bool,
    tx: B,
    tx_start: usize,
    tx_end: usize,
    local_max_body: usize,
    peer_max_body: usize,
    started: Millis,
    last_rx: Millis,
    last_tx: Millis,
    failure: Option<ProtoError>,
}

impl<P: CryptoProvider, B> core::fmt::Debug for Connection<P, B> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("role", &self.role)
            .field("phase", &self.phase)
            .field("peer_max_body", &self.peer_max_body)
            .finish_non_exhaustive()
    }
}

/// What a decoded frame turned out to be, before it is handed out (see `poll_message`).
enum Class {
    Ping,
    Pong,
    Close(CloseCode),
    Other,
}

impl<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>> Connection<P, B> {
    /// Smallest `rx` and `tx` buffers a connection accepts.
    pub const MIN_BUFFER: usize = FRAME_HEADER_LEN + MIN_FRAME_BODY;

    fn new(
        provider: P,
        role: Role,
        psk: Option<SecretKey>,
        random: [u8; RANDOM_LEN],
        now: Millis,
        rx: B,
        tx: B,
    ) -> Result<Self, UsageError> {
        let short = rx.as_ref().len().min(tx.as_ref().len());
        if short < Self::MIN_BUFFER {
            return Err(UsageError::InsufficientSize { required: Self::MIN_BUFFER });
        }
        let local_max_body = (rx.as_ref().len() - FRAME_HEADER_LEN).min(MAX_FRAME_BODY);
        Ok(Self {
            provider,
            role,
            phase: match role {
                Role::Client => Phase::ClientAwaitServerHello,
                Role::Server => Phase::ServerAwaitClientHello,
            },
            psk,
            random,
            peer_random: [0; RANDOM_LEN],
            key_id: [0; KEY_ID_LEN],
            transcript: Sha256::new(),
            expected_proof: [0; PROOF_LEN],
            seal: None,
            open: None,
            tx_counter: 0,
            rx_counter: 0,
            rx,
            rx_fill: 0,
            rx_body: None,
            rx_ready: None,
            rx_delivered: false,
            tx,
            tx_start: 0,
            tx_end: 0,
            local_max_body,
            peer_max_body: MIN_FRAME_BODY,
            started: now,
            last_rx: now,
            last_tx: now,
            failure: None,
        })
    }

    /// A client: queues its ClientHello at once. `random` must be fresh random bytes.
    pub fn client(
        provider: P,
        psk: SecretKey,
        random: [u8; RANDOM_LEN],
        now: Millis,
        rx: B,
        tx: B,
    ) -> Result<Self, UsageError> {
        let id = key_id(&psk);
        let mut conn = Self::new(provider, Role::Client, Some(psk), random, now, rx, tx)?;
        let hello = conn.own_hello();
        conn.transcript.update(hello);
        conn.transcript.update(id);
        conn.queue_clear(&[&hello, &id]);
        Ok(conn)
    }

    /// A server: waits for a ClientHello. `random` must be fresh random bytes.
    pub fn server(
        provider: P,
        psk: SecretKey,
        random: [u8; RANDOM_LEN],
        now: Millis,
        rx: B,
        tx: B,
    ) -> Result<Self, UsageError> {
        Self::new(provider, Role::Server, Some(psk), random, now, rx, tx)
    }

    /// A server that holds many clients' keys: once the ClientHello arrived,
    /// [`key_request`](Self::key_request) names the client's key id and the host answers
    /// with [`set_key`](Self::set_key) (for an unknown id, a fresh random key: the client
    /// then fails the server's proof, as with a wrong key, and learns nothing more).
    pub fn server_for_clients(
        provider: P,
        random: [u8; RANDOM_LEN],
        now: Millis,
        rx: B,
        tx: B,
    ) -> Result<Self, UsageError> {
        Self::new(provider, Role::Server, None, random, now, rx, tx)
    }

    /// The key id the client named, while this server waits for its key.
    pub fn key_request(&self) -> Option<[u8; KEY_ID_LEN]> {
        (self.phase == Phase::ServerAwaitKey && self.failure.is_none()).then_some(self.key_id)
    }

    /// Answers [`key_request`](Self::key_request): the handshake goes on with `key`.
    pub fn set_key(&mut self, now: Millis, key: SecretKey) -> Result<(), UsageError> {
        if self.key_request().is_none() {
            return Err(UsageError::NotNow("a key is set once the client named its key id"));
        }
        self.psk = Some(key);
        self.answer_hello(now);
        Ok(())
    }

    /// A server: advertises `max_body` in its hello although `rx` is smaller for now, so a
    /// host can hold small buffers until the client proved the PSK and lend the full ones
    /// with [`lend_buffers`](Self::lend_buffers) only then. Until it does, a frame larger
    /// than `rx` fails the connection ([`ProtoError::FrameTooLarge`]), never overruns it.
    pub fn promise_max_body(&mut self, max_body: usize) -> Result<(), UsageError> {
        if self.role != Role::Server || self.phase != Phase::ServerAwaitClientHello {
            return Err(UsageError::NotNow("a server promises its frame limit before the client's hello"));
        }
        self.local_max_body = max_body.clamp(MIN_FRAME_BODY, MAX_FRAME_BODY);
        Ok(())
    }

    /// Swaps in new buffers once the connection is open, with no frame half-received and no
    /// message waiting; bytes queued for sending move over. Returns the old buffers.
    pub fn lend_buffers(&mut self, mut rx: B, mut tx: B) -> Result<(B, B), UsageError> {
        let pending = self.tx_end - self.tx_start;
        let mid_frame = self.rx_fill > 0 && !self.rx_delivered;
        if !self.is_open() || mid_frame {
            return Err(UsageError::NotNow("buffers are lent once open, between frames"));
        }
        let required = FRAME_HEADER_LEN + self.local_max_body;
        if rx.as_ref().len() < required || tx.as_ref().len() < pending.max(Self::MIN_BUFFER) {
            return Err(UsageError::InsufficientSize { required });
        }
        tx.as_mut()[..pending].copy_from_slice(&self.tx.as_ref()[self.tx_start..self.tx_end]);
        (self.tx_start, self.tx_end) = (0, pending);
        (self.rx_fill, self.rx_body, self.rx_ready, self.rx_delivered) = (0, None, None, false);
        core::mem::swap(&mut self.rx, &mut rx);
        core::mem::swap(&mut self.tx, &mut tx);
        Ok((rx, tx))
    }

    /// What it means that the transport ended now (for a driver that saw it end).
    pub fn hung_up(&self) -> ProtoError {
        if let Some(error) = self.failure {
            return error;
        }
        match self.phase {
            Phase::ServerAwaitProof => ProtoError::HungUpBeforeProof,
            Phase::ClientAwaitServerHello | Phase::ServerAwaitClientHello | Phase::ServerAwaitKey => {
                ProtoError::HungUpInHandshake
            }
            Phase::Open | Phase::Closed => ProtoError::Closed,
        }
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The handshake is done and both sides proved the PSK.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open && self.failure.is_none()
    }

    /// The connection ended (closed by either side, or failed).
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed || self.failure.is_some()
    }

    /// Largest frame body the peer accepts (known once the handshake is done).
    pub fn peer_max_body(&self) -> usize {
        self.peer_max_body
    }

    /// Largest frame body this end accepts (its `rx` buffer).
    pub fn local_max_body(&self) -> usize {
        self.local_max_body
    }

    /// This end's hello (the first 44 bytes of either hello): the one version this build
    /// speaks, its frame limit and its random.
    fn own_hello(&self) -> [u8; HELLO_LEN] {
        let mut hello = [0u8; HELLO_LEN];
        HelloRepr {
            version_min: PROTO_VERSION,
            version_max: PROTO_VERSION,
            max_body: self.local_max_body as u32,
            random: self.random,
        }
        .emit(&mut hello);
        hello
    }

    fn fail(&mut self, error: ProtoError) -> ProtoError {
        self.failure.get_or_insert(error);
        error
    }

    /// Appends a clear (handshake) frame made of `parts`. Only called with an empty `tx`,
    /// which `new` made large enough.
    fn queue_clear(&mut self, parts: &[&[u8]]) {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let tx = self.tx.as_mut();
        let mut at = self.tx_end;
        tx[at..at + FRAME_HEADER_LEN].copy_from_slice(&FrameHeader { body_len: len }.emit());
        at += FRAME_HEADER_LEN;
        for part in parts {
            tx[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        self.tx_end = at;
    }

    /// Feeds bytes received from the transport. Returns how many were consumed: fewer than
    /// `data.len()` when a frame completed and its message waits in [`poll_message`]; call
    /// again with the rest after polling.
    ///
    /// [`poll_message`]: Self::poll_message
    pub fn handle_input(&mut self, now: Millis, data: &[u8]) -> Result<usize, ProtoError> {
        if let Some(error) = self.failure {
            return Err(error);
        }
        if self.phase == Phase::Closed {
            return Err(ProtoError::Closed);
        }
        if self.rx_delivered {
            self.rx_fill = 0;
            self.rx_body = None;
            self.rx_ready = None;
            self.rx_delivered = false;
        }
        if self.rx_ready.is_some() || self.phase == Phase::ServerAwaitKey {
            return Ok(0);
        }
        let mut used = 0;
        if self.rx_body.is_none() {
            let take = (FRAME_HEADER_LEN - self.rx_fill).min(data.len());
            self.rx.as_mut()[self.rx_fill..self.rx_fill + take].copy_from_slice(&data[..take]);
            self.rx_fill += take;
            used += take;
            if self.rx_fill < FRAME_HEADER_LEN {
                return Ok(used);
            }
            let (min, max) = match self.phase {
                Phase::ClientAwaitServerHello => (SERVER_HELLO_LEN, SERVER_HELLO_LEN),
                Phase::ServerAwaitClientHello => (OLD_CLIENT_HELLO_LEN, CLIENT_HELLO_LEN),
                Phase::ServerAwaitProof | Phase::ServerAwaitKey => (PROOF_LEN, PROOF_LEN),
                // What this end advertised, and never more than `rx` holds now (a server may
                // advertise more than its handshake buffer: see `promise_max_body`).
                Phase::Open | Phase::Closed => {
                    (TAG_LEN, self.local_max_body.min(self.rx.as_ref().len() - FRAME_HEADER_LEN))
                }
            };
            let mut header = [0u8; FRAME_HEADER_LEN];
            header.copy_from_slice(&self.rx.as_ref()[..FRAME_HEADER_LEN]);
            match FrameHeader::parse(header, min, max) {
                Ok(h) => self.rx_body = Some(h.body_len),
                Err(_) if self.phase != Phase::Open => return Err(self.fail(ProtoError::MalformedHello)),
                Err(e) => return Err(self.fail(e)),
            }
        }
        let frame_len = FRAME_HEADER_LEN + self.rx_body.unwrap_or(0);
        let take = (frame_len - self.rx_fill).min(data.len() - used);
        self.rx.as_mut()[self.rx_fill..self.rx_fill + take].copy_from_slice(&data[used..used + take]);
        self.rx_fill += take;
        used += take;
        // Once open, any byte of a frame shows the peer alive: on a link slower than a frame
        // per idle timeout (1 MiB in 60 s is 17 KiB/s) a frame still arriving is no silence.
        // (The handshake keeps its own deadline from the start.)
        if self.phase == Phase::Open && used > 0 {
            self.last_rx = now;
        }
        if self.rx_fill < frame_len {
            return Ok(used);
        }
        self.last_rx = now;
        match self.phase {
            Phase::Open => self.open_frame(frame_len)?,
            _ => {
                self.handshake_frame(now, frame_len)?;
                self.rx_fill = 0;
                self.rx_body = None;
            }
        }
        Ok(used)
    }

    fn open_frame(&mut self, frame_len: usize) -> Result<(), ProtoError> {
        let Some(cipher) = self.open.as_ref() else { return Err(self.fail(ProtoError::Closed)) };
        let (header, body) = self.rx.as_mut()[..frame_len].split_at_mut(FRAME_HEADER_LEN);
        let (ciphertext, tag) = body.split_at_mut(body.len() - TAG_LEN);
        let mut tag_bytes = [0u8; TAG_LEN];
        tag_bytes.copy_from_slice(tag);
        let nonce = frame_nonce(self.rx_counter);
        if cipher.open_in_place(&nonce, header, ciphertext, &tag_bytes).is_err() {
            return Err(self.fail(ProtoError::FrameAuthFailed));
        }
        self.rx_counter += 1;
        self.rx_ready = Some(ciphertext.len());
        Ok(())
    }

    fn handshake_frame(&mut self, now: Millis, frame_len: usize) -> Result<(), ProtoError> {
        let mut body = [0u8; SERVER_HELLO_LEN];
        let body_len = frame_len - FRAME_HEADER_LEN;
        body[..body_len].copy_from_slice(&self.rx.as_ref()[FRAME_HEADER_LEN..frame_len]);
        let body = &body[..body_len];
        match self.phase {
            Phase::ServerAwaitClientHello => {
                let hello = HelloRepr::parse(body).map_err(|e| self.fail(e))?;
                if !(hello.version_min..=hello.version_max).contains(&PROTO_VERSION) {
                    // The client learns this end's range from a ServerHello with no proof,
                    // then the connection ends.
                    self.queue_clear(&[&self.own_hello(), &[0; PROOF_LEN]]);
                    let e = ProtoError::UnsupportedVersion { min: hello.version_min, max: hello.version_max };
                    return Err(self.fail(e));
                }
                // A client of this version names its key.
                let Some(id) = HelloRepr::key_id(body).filter(|_| body.len() == CLIENT_HELLO_LEN) else {
                    return Err(self.fail(ProtoError::MalformedHello));
                };
                self.peer_max_body = (hello.max_body as usize).min(MAX_FRAME_BODY);
                self.transcript.update(body);
                self.peer_random = hello.random;
                self.key_id = id;
                self.phase = Phase::ServerAwaitKey;
                if self.psk.is_some() {
                    self.answer_hello(now);
                }
            }
            Phase::ServerAwaitProof => {
                let mut proof = [0u8; PROOF_LEN];
                proof.copy_from_slice(body);
                if !proofs_equal(&proof, &self.expected_proof) {
                    return Err(self.fail(ProtoError::PeerNotAuthenticated));
                }
                self.psk = None;
                self.phase = Phase::Open;
            }
            Phase::ClientAwaitServerHello => {
                let hello = HelloRepr::parse(body).map_err(|e| self.fail(e))?;
                if hello.version_min != PROTO_VERSION || hello.version_max != PROTO_VERSION {
                    let e = ProtoError::UnsupportedVersion { min: hello.version_min, max: hello.version_max };
                    return Err(self.fail(e));
                }
                self.peer_max_body = (hello.max_body as usize).min(MAX_FRAME_BODY);
                self.transcript.update(&body[..HELLO_LEN]);
                let secrets = self.derive(&self.random.clone(), &hello.random);
                let claimed = HelloRepr::server_proof(body).unwrap_or([0; PROOF_LEN]);
                if !proofs_equal(&claimed, &secrets.server_proof) {
                    return Err(self.fail(ProtoError::PeerNotAuthenticated));
                }
                self.seal = Some(self.provider.aes256gcm(&SecretKey::from_bytes(secrets.c2s)));
                self.open = Some(self.provider.aes256gcm(&SecretKey::from_bytes(secrets.s2c)));
                self.queue_clear(&[&secrets.client_proof]);
                self.last_tx = now;
                self.psk = None;
                self.phase = Phase::Open;
            }
            Phase::ServerAwaitKey | Phase::Open | Phase::Closed => return Err(self.fail(ProtoError::Closed)),
        }
        Ok(())
    }

    /// The server's answer to the ClientHello, once its key is known: ServerHello and proof.
    fn answer_hello(&mut self, now: Millis) {
        let reply = self.own_hello();
        self.transcript.update(reply);
        let secrets = self.derive(&self.peer_random.clone(), &self.random.clone());
        self.expected_proof = secrets.client_proof;
        self.open = Some(self.provider.aes256gcm(&SecretKey::from_bytes(secrets.c2s)));
        self.seal = Some(self.provider.aes256gcm(&SecretKey::from_bytes(secrets.s2c)));
        self.queue_clear(&[&reply, &secrets.server_proof]);
        self.last_tx = now;
        self.phase = Phase::ServerAwaitProof;
    }

    fn derive(&self, client_random: &[u8; 32], server_random: &[u8; 32]) -> SessionSecrets {
        let transcript: [u8; 32] = self.transcript.clone().finalize().into();
        let psk = self.psk.as_ref().expect("the PSK is kept until the handshake ends");
        SessionSecrets::derive(psk, client_random, server_random, &transcript)
    }

    fn classify(&self, len: usize) -> Result<Class, ProtoError> {
        let body = &self.rx.as_ref()[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
        match postcard::from_bytes::<Message<'_>>(body) {
            Ok(Message::Ping) => Ok(Class::Ping),
            Ok(Message::Pong) => Ok(Class::Pong),
            Ok(Message::Close(code)) => Ok(Class::Close(code)),
            Ok(_) => Ok(Class::Other),
            Err(_) => Err(ProtoError::Malformed),
        }
    }

    /// The next message from the peer, if a frame is complete. Pings are answered here and
    /// not returned. A `Close` is returned once; the connection is closed after it. The
    /// message borrows the receive buffer until the next [`handle_input`](Self::handle_input).
    #[must_use]
    pub fn poll_message(&mut self, now: Millis) -> Option<Result<Message<'_>, ProtoError>> {
        let len = self.rx_ready?;
        if self.rx_delivered {
            return None;
        }
        self.rx_delivered = true;
        match self.classify(len) {
            Err(e) => Some(Err(self.fail(e))),
            Ok(Class::Ping) => {
                // A full send queue already keeps the link busy: a lost Pong costs nothing.
                let _ = self.send(now, &Message::Pong);
                None
            }
            Ok(Class::Pong) => None,
            Ok(Class::Close(code)) => {
                self.phase = Phase::Closed;
                Some(Ok(Message::Close(code)))
            }
            Ok(Class::Other) => {
                let body = &self.rx.as_ref()[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len];
                Some(postcard::from_bytes(body).map_err(|_| ProtoError::Malformed))
            }
        }
    }

    /// Seals `msg` into the send queue.
    ///
    /// [`SendError::Blocked`] means the queue is too full for it now: write out
    /// [`poll_transmit`](Self::poll_transmit) and try again.
    pub fn send(&mut self, now: Millis, msg: &Message<'_>) -> Result<(), SendError> {
        if self.failure.is_some() || self.phase == Phase::Closed {
            return Err(SendError::Closed);
        }
        if self.phase != Phase::Open {
            return Err(SendError::NotOpen);
        }
        let Some(cipher) = self.seal.as_ref() else { return Err(SendError::NotOpen) };
        let tx = self.tx.as_mut();
        if self.tx_start > 0 {
            tx.copy_within(self.tx_start..self.tx_end, 0);
            self.tx_end -= self.tx_start;
            self.tx_start = 0;
        }
        let pending = self.tx_end > 0;
        let free = tx.len() - self.tx_end;
        // Not even room for a header and a tag: the queue must drain first.
        if free < FRAME_HEADER_LEN + TAG_LEN {
            return Err(if pending { SendError::Blocked } else { SendError::TooLarge });
        }
        let cap = (free - FRAME_HEADER_LEN - TAG_LEN).min(self.peer_max_body - TAG_LEN);
        let body_at = self.tx_end + FRAME_HEADER_LEN;
        let n = match postcard::to_slice(msg, &mut tx[body_at..body_at + cap]) {
            Ok(encoded) => encoded.len(),
            Err(_) if pending => return Err(SendError::Blocked),
            Err(_) => return Err(SendError::TooLarge),
        };
        let (header, rest) = tx[self.tx_end..].split_at_mut(FRAME_HEADER_LEN);
        header.copy_from_slice(&FrameHeader { body_len: n + TAG_LEN }.emit());
        let tag = cipher.seal_in_place(&frame_nonce(self.tx_counter), header, &mut rest[..n]);
        rest[n..n + TAG_LEN].copy_from_slice(&tag);
        self.tx_counter += 1;
        self.tx_end += FRAME_HEADER_LEN + n + TAG_LEN;
        self.last_tx = now;
        Ok(())
    }

    /// Sends `Close(code)` (best effort) and ends the connection; queued bytes can still be
    /// drained with [`poll_transmit`](Self::poll_transmit).
    pub fn close(&mut self, now: Millis, code: CloseCode) {
        if self.is_open() {
            let _ = self.send(now, &Message::Close(code));
        }
        self.phase = Phase::Closed;
    }

    /// Bytes waiting to be written to the transport.
    pub fn pending_transmit(&self) -> &[u8] {
        &self.tx.as_ref()[self.tx_start..self.tx_end]
    }

    /// Marks `n` bytes of [`pending_transmit`](Self::pending_transmit) as written.
    pub fn consume_transmit(&mut self, n: usize) {
        self.tx_start = (self.tx_start + n).min(self.tx_end);
        if self.tx_start == self.tx_end {
            self.tx_start = 0;
            self.tx_end = 0;
        }
    }

    /// Copies waiting bytes into `buf` and returns how many; write them to the transport.
    #[must_use]
    pub fn poll_transmit(&mut self, buf: &mut [u8]) -> usize {
        let pending = self.pending_transmit();
        let n = pending.len().min(buf.len());
        buf[..n].copy_from_slice(&pending[..n]);
        self.consume_transmit(n);
        n
    }

    /// When [`handle_timeout`](Self::handle_timeout) should run next, if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Millis> {
        match self.phase {
            _ if self.failure.is_some() => None,
            Phase::Closed => None,
            Phase::Open => Some((self.last_tx + KEEPALIVE_MS).min(self.last_rx + IDLE_TIMEOUT_MS)),
            _ => Some(self.started + HANDSHAKE_TIMEOUT_MS),
        }
    }

    /// Runs the timers: a handshake that takes too long fails the connection with
    /// [`ProtoError::HandshakeTimedOut`], a peer silent for too long with
    /// [`ProtoError::TimedOut`]; an idle send side queues a `Ping`.
    pub fn handle_timeout(&mut self, now: Millis) -> Result<(), ProtoError> {
        if let Some(error) = self.failure {
            return Err(error);
        }
        match self.phase {
            Phase::Closed => Ok(()),
            Phase::Open => {
                if now >= self.last_rx + IDLE_TIMEOUT_MS {
                    return Err(self.fail(ProtoError::TimedOut));
                }
                if now >= self.last_tx + KEEPALIVE_MS {
                    // Blocked means frames are queued anyway; they keep the peer's timer alive.
                    let _ = self.send(now, &Message::Ping);
                }
                Ok(())
            }
            _ if now >= self.started + HANDSHAKE_TIMEOUT_MS => Err(self.fail(ProtoError::HandshakeTimedOut)),
            _ => Ok(()),
        }
    }
}
