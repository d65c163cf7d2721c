//! The host side of a simulated sync: a mock clock, a seeded lossy [`Link`] pair per
//! connection, and a host endpoint (std, like `keepsync serve`) that answers each connection
//! the device makes. [`Sim`] is the device's [`Transport`]: the device's loop drives the host
//! whenever it waits, so the whole run is single-threaded and deterministic per seed.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::{BTreeMap, VecDeque};
use std::ops::DerefMut;

use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, MAX_FILES_IN_FLIGHT, unpacker_workspace_len};
use keepsync_core::compress::{CoreDecoder, Encoder, Lz4Encoder};
use keepsync_core::crypto::{RustCrypto, SecretKey, open_header};
use keepsync_core::stream::Unpacker;
use keepsync_core::sync::open;
use keepsync_core::sync::{
    CloseCode, Connection, FileMeta, Have, Kind, Message, Millis, ProtoError, Receiver, ReceiverEvent,
    SendError, Sender, SenderEvent, Status,
};
use keepsync_firmware_sim::device::{self, DeviceError, Layout, PACK_WORKSPACE, PackRam, Report, Source};
use keepsync_firmware_sim::flash::FlashError;
use keepsync_firmware_sim::link::{Link, LinkConfig, LinkStats};
use keepsync_firmware_sim::net::{LinkError, Transport};

pub const PSK: [u8; 32] = [0x5A; 32];
/// The device's container master key.
pub const KEY: [u8; 32] = [0x42; 32];
/// Host buffers: like `keepsync serve`, larger than the device's (frames follow the smaller).
const HOST_BUF: usize = 4 + 70_000;
/// Segments in flight per direction (with 512-byte segments: a 32 KiB window).
pub type SimLink = Link<64, 512>;

pub type HostConn = Connection<RustCrypto, Vec<u8>>;

pub fn blake3(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// What the host does on a connection once the device's `Open` was answered.
pub trait HostRole {
    /// The endpoint type wrapping the connection.
    type Ep: DerefMut<Target = HostConn>;
    /// Wraps a freshly opened connection (per-connection state starts over here).
    fn wrap(&mut self, conn: HostConn) -> Self::Ep;
    /// Handles the endpoint's events and queues what the host sends. `Err`: hang up.
    fn step(&mut self, ep: &mut Self::Ep, now: Millis) -> Result<(), ProtoError>;
}

enum Stage<E> {
    /// Boxed: a connection is large and the other variant (generic) may be small.
    Handshake(Box<HostConn>),
    Open(E),
}

fn stage_conn<E: DerefMut<Target = HostConn>>(stage: &mut Option<Stage<E>>) -> Option<&mut HostConn> {
    match stage.as_mut()? {
        Stage::Handshake(c) => Some(c),
        Stage::Open(e) => Some(&mut **e),
    }
}

/// The simulated network and host, as the device's transport.
pub struct Sim<H: HostRole> {
    pub host: H,
    pub now: Millis,
    config: LinkConfig,
    up: SimLink,
    down: SimLink,
    stage: Option<Stage<H::Ep>>,
    host_in: VecDeque<u8>,
    host_rng: u64,
    /// First bytes the device wrote on the current connection (its ClientHello).
    hello: Vec<u8>,
    /// The device's handshake random of every connection, in order.
    pub client_randoms: Vec<[u8; 32]>,
    /// The host's handshake random of every connection.
    pub server_randoms: Vec<[u8; 32]>,
    /// Why the host hung up on each connection it ended.
    pub host_errors: Vec<ProtoError>,
    /// Faults the links injected over all connections.
    pub faults: LinkStats,
}

impl<H: HostRole> Sim<H> {
    pub fn new(host: H, config: LinkConfig) -> Self {
        Self {
            host,
            now: 0,
            config,
            up: SimLink::new(config),
            down: SimLink::new(config),
            stage: None,
            host_in: VecDeque::new(),
            host_rng: config.seed ^ 0x5EED,
            hello: Vec::new(),
            client_randoms: Vec::new(),
            server_randoms: Vec::new(),
            host_errors: Vec::new(),
            faults: LinkStats::default(),
        }
    }

    pub fn connections(&self) -> usize {
        self.client_randoms.len()
    }

    fn host_random(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for b in &mut out {
            self.host_rng = self.host_rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            *b = (self.host_rng >> 33) as u8;
        }
        out
    }

    fn hang_up(&mut self, error: ProtoError) {
        self.host_errors.push(error);
        self.stage = None;
    }

    fn conn_mut(&mut self) -> Option<&mut HostConn> {
        stage_conn(&mut self.stage)
    }

    /// Runs the host at `self.now`: takes arrived segments, handles them, runs its timers and
    /// queues its output on the down link.
    fn host_tick(&mut self) {
        let mut segment = [0u8; 512];
        loop {
            let n = self.up.recv(self.now, &mut segment);
            if n == 0 {
                break;
            }
            if self.stage.is_some() {
                self.host_in.extend(&segment[..n]);
            }
        }
        if let Err(e) = self.host_work() {
            self.hang_up(e);
        }
        let now = self.now;
        if let Some(conn) = stage_conn(&mut self.stage) {
            loop {
                let n = self.down.send(now, conn.pending_transmit());
                if n == 0 {
                    break;
                }
                conn.consume_transmit(n);
            }
        }
    }

    fn host_work(&mut self) -> Result<(), ProtoError> {
        let now = self.now;
        loop {
            let Some(stage) = self.stage.as_mut() else { return Ok(()) };
            let mut progressed = false;
            let (first, second) = self.host_in.as_slices();
            let input = if first.is_empty() { second } else { first };
            match stage {
                Stage::Handshake(conn) => {
                    if !input.is_empty() {
                        let n = conn.handle_input(now, input)?;
                        self.host_in.drain(..n);
                        progressed |= n > 0;
                    }
                    if let Some(request) = open::poll_open(conn, now) {
                        request?;
                        open::accept(conn, now, MAX_FILES_IN_FLIGHT as u16)
                            .map_err(|_| ProtoError::Closed)?;
                        let Some(Stage::Handshake(conn)) = self.stage.take() else { unreachable!() };
                        self.stage = Some(Stage::Open(self.host.wrap(*conn)));
                        progressed = true;
                    }
                }
                Stage::Open(ep) => {
                    self.host.step(ep, now)?;
                    if !input.is_empty() {
                        let n = ep.handle_input(now, input)?;
                        self.host_in.drain(..n);
                        progressed |= n > 0;
                    }
                    self.host.step(ep, now)?;
                }
            }
            if !progressed {
                break;
            }
        }
        if let Some(conn) = self.conn_mut()
            && conn.poll_timeout().is_some_and(|t| now >= t)
        {
            conn.handle_timeout(now)?;
        }
        if self.conn_mut().is_some_and(|c| c.is_closed() && c.pending_transmit().is_empty()) {
            self.stage = None;
        }
        Ok(())
    }
}

impl<H: HostRole> Transport for Sim<H> {
    fn now(&mut self) -> Millis {
        self.now
    }

    fn connect(&mut self) -> Result<(), LinkError> {
        self.close();
        let n = self.client_randoms.len() as u64 + 1;
        // Each connection gets links of its own, with faults drawn from the seed and its number.
        let config =
            LinkConfig { seed: self.config.seed.wrapping_mul(1_000_003).wrapping_add(n), ..self.config };
        self.up = SimLink::new(config);
        self.down = SimLink::new(LinkConfig { seed: config.seed ^ 0xD0_0D, ..config });
        let random = self.host_random();
        self.server_randoms.push(random);
        let conn = Connection::server(
            RustCrypto,
            SecretKey::from_bytes(PSK),
            random,
            self.now,
            vec![0; HOST_BUF],
            vec![0; HOST_BUF],
        )
        .expect("buffers large enough");
        self.stage = Some(Stage::Handshake(Box::new(conn)));
        self.host_in.clear();
        self.hello.clear();
        self.client_randoms.push([0; 32]);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> Result<usize, LinkError> {
        if self.stage.is_none() {
            return Err(LinkError::Closed);
        }
        let n = self.up.send(self.now, bytes);
        // The ClientHello is the first frame: 4 length bytes, 12 bytes of hello, the random.
        if self.hello.len() < 48 {
            let take = (48 - self.hello.len()).min(n);
            self.hello.extend_from_slice(&bytes[..take]);
            if self.hello.len() == 48 {
                let last = self.client_randoms.last_mut().expect("connected");
                last.copy_from_slice(&self.hello[16..48]);
            }
        }
        Ok(n)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        let n = self.down.recv(self.now, buf);
        // The host hung up: the device learns it once what was sent before has arrived.
        if n == 0 && self.stage.is_none() && self.down.next_due().is_none() {
            return Err(LinkError::Closed);
        }
        Ok(n)
    }

    fn wait(&mut self, deadline: Millis) {
        // A day of simulated time is thousands of reconnects: the device is stuck, not unlucky.
        assert!(
            self.now < 24 * 3_600_000,
            "simulated time ran away: {} connections, last host errors {:?}",
            self.client_randoms.len(),
            &self.host_errors[self.host_errors.len().saturating_sub(10)..]
        );
        loop {
            self.host_tick();
            if self.now >= deadline || self.down.next_due().is_some_and(|d| d <= self.now) {
                return;
            }
            let next =
                [self.up.next_due(), self.down.next_due(), self.conn_mut().and_then(|c| c.poll_timeout())]
                    .into_iter()
                    .flatten()
                    .fold(deadline, Millis::min);
            self.now = next.max(self.now + 1);
        }
    }

    fn close(&mut self) {
        let (up, down) = (self.up.stats(), self.down.stats());
        for s in [up, down] {
            self.faults.lost += s.lost;
            self.faults.duplicated += s.duplicated;
            self.faults.reordered += s.reordered;
            self.faults.corrupted += s.corrupted;
            self.faults.segments += s.segments;
            self.faults.bytes += s.bytes;
        }
        self.up = SimLink::new(self.config);
        self.down = SimLink::new(self.config);
        self.stage = None;
        self.host_in.clear();
    }
}

// ---- scenario 2: the host receives ----------------------------------------------------------

/// The host's storage for uploads: finished files and durable partial prefixes.
#[derive(Default)]
pub struct UploadHost {
    pub files: BTreeMap<String, Vec<u8>>,
    pub partial: BTreeMap<String, Vec<u8>>,
    incoming: Option<(u32, String, Vec<u8>)>,
    replies: VecDeque<Message<'static>>,
    pub mismatches: usize,
    /// Every offer's path and the offset the host answered it with, in order.
    pub resumes: Vec<(String, u64)>,
}

impl HostRole for UploadHost {
    type Ep = Receiver<RustCrypto, Vec<u8>>;

    fn wrap(&mut self, conn: HostConn) -> Self::Ep {
        self.incoming = None;
        self.replies.clear();
        Receiver::new(conn)
    }

    fn step(&mut self, r: &mut Self::Ep, now: Millis) -> Result<(), ProtoError> {
        while let Some(reply) = self.replies.front() {
            let sent = match *reply {
                Message::Have { id, have } => r.have(now, id, have),
                Message::Done { id, status } => r.done(now, id, status),
                _ => unreachable!("only Have and Done are queued"),
            };
            match sent {
                Ok(()) => drop(self.replies.pop_front()),
                Err(SendError::Blocked) => return Ok(()),
                Err(_) => return Err(ProtoError::Closed),
            }
        }
        while let Some(event) = r.poll_event(now) {
            match event? {
                ReceiverEvent::File(meta) => {
                    let path = meta.path.to_owned();
                    if meta.hash.is_some() && self.files.get(&path).map(|f| blake3(f)) == meta.hash {
                        self.replies.push_back(Message::Have { id: meta.id, have: Have::Skip });
                        continue;
                    }
                    // The partial stays durable until a block extends it (a connection that
                    // breaks before then must not lose it).
                    let partial = self.partial.get(&path).cloned().unwrap_or_default();
                    // Only whole blocks count as durable (a torn block is re-sent).
                    let resume = (partial.len() / 4096 * 4096).min(meta.size as usize);
                    let have = Have::Need { resume_from: resume as u64, block_log2: 12, blocks: 0 };
                    self.resumes.push((path.clone(), resume as u64));
                    self.replies.push_back(Message::Have { id: meta.id, have });
                    self.incoming = Some((meta.id, path, partial[..resume].to_vec()));
                }
                ReceiverEvent::Data { offset, codec, body, .. } => {
                    let (_, path, data) = self.incoming.as_mut().ok_or(ProtoError::Unexpected("no file"))?;
                    assert_eq!(codec, 0, "the device sends ciphertext stored");
                    assert_eq!(
                        offset,
                        data.len() as u64,
                        "the device sends blocks in order from resume_from"
                    );
                    data.extend_from_slice(body);
                    self.partial.insert(path.clone(), data.clone()); // durable after each block
                }
                ReceiverEvent::End { id, hash } => {
                    let (_, path, data) = self.incoming.take().ok_or(ProtoError::Unexpected("no file"))?;
                    self.partial.remove(&path);
                    let status = if blake3(&data) == hash {
                        self.files.insert(path, data);
                        Status::Ok
                    } else {
                        self.mismatches += 1;
                        Status::HashMismatch
                    };
                    self.replies.push_back(Message::Done { id, status });
                }
                ReceiverEvent::Finished => r.close(now, CloseCode::Done),
                ReceiverEvent::Closed(_) => {}
            }
        }
        Ok(())
    }
}

// ---- scenario 3: the host sends -------------------------------------------------------------

/// The host offering one file to the device.
pub struct DownloadHost {
    pub name: String,
    pub blob: Vec<u8>,
    pub mtime: i64,
    /// Announce this hash at `End` instead of the real one, once (a host that lies).
    pub wrong_end_hash_once: bool,
    /// Every `Done` status the device sent.
    pub results: Vec<Status>,
    lz4: Box<Lz4Encoder>,
    out: Vec<u8>,
    offered: bool,
    next: Option<(u64, usize)>,
    ended: bool,
    done: bool,
    finished: bool,
}

impl DownloadHost {
    pub fn new(name: &str, blob: Vec<u8>, mtime: i64) -> Self {
        Self {
            name: name.into(),
            blob,
            mtime,
            wrong_end_hash_once: false,
            results: Vec::new(),
            lz4: Box::new(Lz4Encoder::new()),
            out: vec![0; 8192],
            offered: false,
            next: None,
            ended: false,
            done: false,
            finished: false,
        }
    }
}

impl HostRole for DownloadHost {
    type Ep = Sender<RustCrypto, Vec<u8>>;

    fn wrap(&mut self, conn: HostConn) -> Self::Ep {
        (self.offered, self.next, self.ended, self.done, self.finished) = (false, None, false, false, false);
        Sender::new(conn)
    }

    fn step(&mut self, s: &mut Self::Ep, now: Millis) -> Result<(), ProtoError> {
        while let Some(event) = s.poll_event(now) {
            match event? {
                SenderEvent::Have { have: Have::Skip, .. } => self.done = true,
                SenderEvent::Have { have: Have::Need { resume_from, block_log2, blocks }, .. } => {
                    assert_eq!(blocks, 0, "the device sends no old-copy hashes");
                    self.next = Some((resume_from, 1 << block_log2));
                }
                SenderEvent::Hashes { .. } => unreachable!("no hashes announced"),
                SenderEvent::Done { status, .. } => {
                    self.results.push(status);
                    if status == Status::HashMismatch {
                        // The device dropped what it assembled: offer the file again.
                        (self.offered, self.next, self.ended) = (false, None, false);
                    } else {
                        self.done = true;
                    }
                }
                SenderEvent::Closed(_) | SenderEvent::Deleted(_) => {}
            }
        }
        if !self.offered {
            let meta = FileMeta {
                id: self.results.len() as u32,
                path: &self.name,
                kind: Kind::File,
                size: self.blob.len() as u64,
                mtime: self.mtime,
                mtime_nsec: 0,
                mode: 0o644,
                target: "",
                hash: Some(blake3(&self.blob)),
                version: [0; 16],
                layout: keepsync_core::sync::Layout::Whole,
            };
            match s.offer(now, &meta) {
                Ok(()) => self.offered = true,
                Err(SendError::Blocked) => return Ok(()),
                Err(_) => return Err(ProtoError::Closed),
            }
        }
        let id = self.results.len() as u32;
        while let Some((offset, block)) = self.next.filter(|_| !self.ended) {
            if offset as usize == self.blob.len() {
                let mut hash = blake3(&self.blob);
                if std::mem::take(&mut self.wrong_end_hash_once) {
                    hash[0] ^= 1;
                }
                match s.end_file(now, id, hash) {
                    Ok(()) => self.ended = true,
                    Err(SendError::Blocked) => return Ok(()),
                    Err(_) => return Err(ProtoError::Closed),
                }
                break;
            }
            let raw = &self.blob[offset as usize..(offset as usize + block).min(self.blob.len())];
            // Compressible blocks go as LZ4 (the device decodes them), others stored.
            let (codec, body) = match self.lz4.encode(raw, &mut self.out) {
                Some((codec, n)) => (codec.id(), &self.out[..n]),
                None => (0, raw),
            };
            match s.send_data(now, id, offset, codec, raw.len() as u32, body) {
                Ok(()) => self.next = Some((offset + raw.len() as u64, block)),
                Err(SendError::Blocked) => return Ok(()),
                Err(_) => return Err(ProtoError::Closed),
            }
        }
        if self.done && !self.finished {
            match s.finish(now) {
                Ok(()) => self.finished = true,
                Err(SendError::Blocked) => {}
                Err(_) => return Err(ProtoError::Closed),
            }
        }
        Ok(())
    }
}

// ---- device data ------------------------------------------------------------------------------

/// [`device::boot_and_pack`] with fresh packer RAM for this boot (boxed: the test's stack is no
/// device's; a board lends statics).
pub fn boot_and_pack<F: embedded_storage::nor_flash::NorFlash<Error = FlashError>>(
    flash: &mut F,
    layout: &Layout,
    key: &SecretKey,
    trng_seed: u64,
    source: &impl Source,
) -> Result<Report, DeviceError> {
    let mut workspace = Box::new([0u8; PACK_WORKSPACE]);
    let mut lz4 = Box::new(Lz4Encoder::new());
    let mut ram = PackRam { workspace: &mut workspace, lz4: &mut lz4 };
    device::boot_and_pack(flash, layout, key, trng_seed, source, &mut ram)
}

/// A sensor log of 32-byte records; `changed_from` makes later records differ (a new log).
pub struct SensorLog {
    pub records: u64,
    pub changed_from: Option<u64>,
}

impl SensorLog {
    fn record(&self, i: u64) -> [u8; 32] {
        let generation = u64::from(self.changed_from.is_some_and(|c| i >= c));
        let mut r = [b' '; 32];
        let line = format!("t={:06} temp={:+.1}C g{generation}", i * 10, 20.0 + (i % 37) as f64 / 10.0);
        r[..line.len().min(31)].copy_from_slice(&line.as_bytes()[..line.len().min(31)]);
        r[31] = b'\n';
        r
    }

    pub fn bytes(&self) -> Vec<u8> {
        (0..self.records).flat_map(|i| self.record(i)).collect()
    }
}

impl Source for SensorLog {
    fn len(&self) -> u64 {
        self.records * 32
    }
    fn read(&self, offset: u64, buf: &mut [u8]) {
        for (k, b) in buf.iter_mut().enumerate() {
            let pos = offset + k as u64;
            *b = self.record(pos / 32)[(pos % 32) as usize];
        }
    }
}

/// Opens a container with the core's `Unpacker`: every chunk must authenticate.
pub fn unpack(container: &[u8]) -> Result<Vec<u8>, FormatError> {
    let key = SecretKey::from_bytes(KEY);
    let (repr, keys) = open_header::<FormatError>(container, |_| Ok(key))?;
    let mut ws = vec![0u8; unpacker_workspace_len(repr.chunk_size())];
    let mut u = Unpacker::new(&RustCrypto, &keys, &repr, CoreDecoder::new(), &mut ws).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut input = &container[HEADER_LEN..];
    while !input.is_empty() {
        let n = u.write(input)?;
        input = &input[n..];
        loop {
            let m = u.read(&mut buf);
            if m == 0 {
                break;
            }
            out.extend_from_slice(&buf[..m]);
        }
    }
    u.finish()?;
    Ok(out)
}
