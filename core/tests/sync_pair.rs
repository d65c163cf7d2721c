//! Two sync endpoints over an in-memory link with simulated time: clean transfers, block
//! deltas, resume after a broken link, and a seeded faulty link (loss, duplication,
//! reordering, corruption) that must end in either a clean failure or the right bytes.

use std::collections::{BTreeMap, VecDeque};

use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::{
    Bytes, Connection, FileMeta, Have, Kind, Layout, Message, ProtoError, Receiver, ReceiverEvent, SendError,
    Sender, SenderEvent, Status,
};
use keepsync_core::wire::frame::{HelloRepr, PROTO_VERSION};

const BLOCK_LOG2: u8 = 10;
const BLOCK: usize = 1 << BLOCK_LOG2;
const BUF: usize = 4 + 4096;

type Conn = Connection<RustCrypto, Vec<u8>>;

fn psk(b: u8) -> SecretKey {
    SecretKey::from_bytes([b; 32])
}

fn pair(client_psk: u8, server_psk: u8, seed: u8) -> (Conn, Conn) {
    let c =
        Connection::client(RustCrypto, psk(client_psk), [seed; 32], 0, vec![0; BUF], vec![0; BUF]).unwrap();
    let s = Connection::server(RustCrypto, psk(server_psk), [seed ^ 0xff; 32], 0, vec![0; BUF], vec![0; BUF])
        .unwrap();
    (c, s)
}

fn hash(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// A whole regular file `path` of `size` bytes, as a sender offers it.
fn regular(id: u32, path: &str, size: u64) -> FileMeta<'_> {
    FileMeta {
        id,
        path,
        kind: Kind::File,
        size,
        mtime: 0,
        mtime_nsec: 0,
        mode: 0o644,
        target: "",
        hash: None,
        version: [0; 16],
        layout: Layout::Whole,
    }
}

/// A byte link with seeded faults applied per segment.
struct Link {
    seed: u64,
    fault_per_mille: u64,
    queue: VecDeque<Vec<u8>>,
}

impl Link {
    fn new(seed: u64, fault_per_mille: u64) -> Self {
        Self { seed: seed | 1, fault_per_mille, queue: VecDeque::new() }
    }

    fn rand(&mut self) -> u64 {
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        self.seed
    }

    fn push(&mut self, mut segment: Vec<u8>) {
        if self.rand() % 1000 < self.fault_per_mille {
            match self.rand() % 4 {
                0 => return,                                // lost
                1 => self.queue.push_back(segment.clone()), // duplicated
                2 => {
                    // reordered: goes in front of the last queued segment
                    let at = self.queue.len().saturating_sub(1);
                    self.queue.insert(at, segment);
                    return;
                }
                _ => {
                    let i = (self.rand() as usize) % segment.len();
                    segment[i] ^= 1 << (self.rand() % 8);
                }
            }
        }
        self.queue.push_back(segment);
    }
}

/// Moves every queued byte of `from` through `link` into `to`. Returns an error when `to`
/// rejects the input.
fn pump(
    from: &mut Conn,
    link: &mut Link,
    to: &mut dyn FnMut(&[u8]) -> Result<(), ProtoError>,
) -> Result<bool, ProtoError> {
    let mut moved = false;
    let mut buf = [0u8; 700];
    loop {
        let n = from.poll_transmit(&mut buf);
        if n == 0 {
            break;
        }
        link.push(buf[..n].to_vec());
        moved = true;
    }
    while let Some(segment) = link.queue.pop_front() {
        to(&segment)?;
        moved = true;
    }
    Ok(moved)
}

#[test]
fn handshake_opens_both_sides_and_messages_flow_both_ways() {
    let (mut c, mut s) = pair(1, 1, 7);
    let mut link = Link::new(1, 0);
    let input = |conn: &mut Conn, bytes: &[u8]| -> Result<(), ProtoError> {
        let mut at = 0;
        while at < bytes.len() {
            at += conn.handle_input(0, &bytes[at..])?;
            if let Some(m) = conn.poll_message(0) {
                let m = m?;
                assert_eq!(m, Message::Opened { max_files: 32 });
            }
        }
        Ok(())
    };
    pump(&mut c, &mut link, &mut |b| input(&mut s, b)).unwrap();
    pump(&mut s, &mut link, &mut |b| input(&mut c, b)).unwrap();
    assert!(c.is_open());
    pump(&mut c, &mut link, &mut |b| input(&mut s, b)).unwrap();
    assert!(s.is_open());
    s.send(1, &Message::Opened { max_files: 32 }).unwrap();
    pump(&mut s, &mut link, &mut |b| input(&mut c, b)).unwrap();
    c.send(1, &Message::Opened { max_files: 32 }).unwrap();
    pump(&mut c, &mut link, &mut |b| input(&mut s, b)).unwrap();
}

/// Runs the handshake; returns the first error of either side.
fn handshake(c: &mut Conn, s: &mut Conn) -> Result<(), ProtoError> {
    for _ in 0..3 {
        let mut out = [0u8; 200];
        let n = c.poll_transmit(&mut out);
        let mut at = 0;
        while at < n {
            at += s.handle_input(0, &out[at..n])?;
        }
        let n = s.poll_transmit(&mut out);
        let mut at = 0;
        while at < n {
            at += c.handle_input(0, &out[at..n])?;
        }
    }
    Ok(())
}

#[test]
fn wrong_psk_is_refused_by_the_client_before_it_proves_anything() {
    let (mut c, mut s) = pair(1, 2, 7);
    assert_eq!(handshake(&mut c, &mut s), Err(ProtoError::PeerNotAuthenticated));
    assert!(c.is_closed());
    assert!(!s.is_open());
    assert_eq!(c.send(0, &Message::Finished), Err(SendError::Closed));
}

#[test]
fn a_client_without_the_psk_is_refused_by_the_server() {
    // A forged client proof: the server must not open.
    let (mut c, mut s) = pair(1, 1, 9);
    let mut out = [0u8; 200];
    let n = c.poll_transmit(&mut out);
    assert_eq!(s.handle_input(0, &out[..n]), Ok(n));
    let _ = s.poll_transmit(&mut out);
    // A hang-up now is a client that could not check the server's proof.
    assert_eq!(s.hung_up(), ProtoError::HungUpBeforeProof);
    assert_eq!(pair(1, 1, 9).1.hung_up(), ProtoError::HungUpInHandshake);
    let mut forged = [0u8; 36];
    forged[..4].copy_from_slice(&32u32.to_le_bytes());
    assert_eq!(s.handle_input(0, &forged), Err(ProtoError::PeerNotAuthenticated));
    assert!(!s.is_open());
    assert_eq!(s.hung_up(), ProtoError::PeerNotAuthenticated, "the first fault is the one told");
}

#[test]
fn a_server_for_many_clients_asks_for_the_key_the_client_names() {
    use keepsync_core::crypto::session::key_id;
    let server =
        || Connection::server_for_clients(RustCrypto, [9; 32], 0, vec![0; BUF], vec![0; BUF]).unwrap();
    let client =
        |k: u8| Connection::client(RustCrypto, psk(k), [k; 32], 0, vec![0; BUF], vec![0; BUF]).unwrap();
    // The client's id names its key; the server goes on once the host gave that key.
    let (mut c, mut s): (Conn, Conn) = (client(1), server());
    let mut out = [0u8; 200];
    let n = c.poll_transmit(&mut out);
    assert_eq!(n, 4 + 52);
    assert_eq!(s.handle_input(0, &out[..n]), Ok(n));
    assert_eq!(s.key_request(), Some(key_id(&psk(1))));
    assert_ne!(key_id(&psk(1)), key_id(&psk(2)));
    assert!(s.pending_transmit().is_empty(), "nothing is said before the key is known");
    assert_eq!(s.handle_input(0, &[0; 8]), Ok(0), "and nothing more is read");
    s.set_key(0, psk(1)).unwrap();
    assert!(s.set_key(0, psk(1)).is_err(), "once");
    assert_eq!(s.key_request(), None);
    handshake(&mut c, &mut s).unwrap();
    assert!(c.is_open() && s.is_open());
    // An unknown id gets a random key: the client fails the server's proof, as with a wrong
    // key, and the server sees it hang up before proving anything.
    let (mut c, mut s): (Conn, Conn) = (client(3), server());
    let n = c.poll_transmit(&mut out);
    assert_eq!(s.handle_input(0, &out[..n]), Ok(n));
    s.set_key(0, SecretKey::from_bytes([0x5a; 32])).unwrap();
    assert_eq!(handshake(&mut c, &mut s), Err(ProtoError::PeerNotAuthenticated));
    assert_eq!(s.hung_up(), ProtoError::HungUpBeforeProof);
}

#[test]
fn entries_end_once_and_finished_comes_last() {
    // One frame from one connection into the other (the caller polls what it caused).
    fn carry(from: &mut Conn, to: &mut Conn) -> Vec<u8> {
        let mut out = vec![0u8; BUF];
        let n = from.poll_transmit(&mut out);
        out.truncate(n);
        let mut at = 0;
        while at < out.len() {
            at += to.handle_input(0, &out[at..]).unwrap();
        }
        out
    }
    let open = || {
        let (mut c, mut s) = pair(5, 5, 2);
        handshake(&mut c, &mut s).unwrap();
        (c, s)
    };
    // A receiver refuses Finished while an entry is in flight, and a File after Finished.
    let (mut c, s) = open();
    let mut r = Receiver::new(s);
    c.send(0, &Message::File(regular(1, "a", 10))).unwrap();
    carry(&mut c, &mut r);
    assert!(matches!(r.poll_event(0), Some(Ok(ReceiverEvent::File(_)))));
    c.send(0, &Message::Finished).unwrap();
    carry(&mut c, &mut r);
    assert!(matches!(r.poll_event(0), Some(Err(ProtoError::Unexpected(_)))));
    let (mut c, s) = open();
    let mut r = Receiver::new(s);
    c.send(0, &Message::Finished).unwrap();
    carry(&mut c, &mut r);
    assert!(matches!(r.poll_event(0), Some(Ok(ReceiverEvent::Finished))));
    c.send(0, &Message::File(regular(2, "b", 10))).unwrap();
    carry(&mut c, &mut r);
    assert!(matches!(r.poll_event(0), Some(Err(ProtoError::Unexpected(_)))));
    // A sender will not send Finished with an entry in flight, and refuses a `Have(Skip)` for
    // a file whose data it already sent and ended (it once took that as `Done(Ok)`).
    let (c, mut s) = open();
    let mut snd = Sender::new(c);
    snd.offer(0, &regular(1, "a", 10)).unwrap();
    assert!(snd.finish(0).is_err(), "an entry is in flight");
    let need = Have::Need { resume_from: 0, block_log2: 10, blocks: 0 };
    s.send(0, &Message::Have { id: 1, have: need }).unwrap();
    carry(&mut s, &mut snd);
    assert!(matches!(snd.poll_event(0), Some(Ok(SenderEvent::Have { id: 1, .. }))));
    snd.send_data(0, 1, 0, 0, 10, &[7; 10]).unwrap();
    snd.end_file(0, 1, [0; 32]).unwrap();
    s.send(0, &Message::Have { id: 1, have: Have::Skip }).unwrap();
    carry(&mut s, &mut snd);
    assert!(matches!(snd.poll_event(0), Some(Err(ProtoError::Unexpected(_)))));
}

#[test]
fn version_mismatch_and_foreign_peers_are_refused() {
    let (_, mut s) = pair(1, 1, 3);
    let mut hello = [0u8; 48];
    hello[..4].copy_from_slice(&44u32.to_le_bytes());
    hello[4..8].copy_from_slice(b"KSYN");
    // A client that speaks only versions after this build's.
    let (min, max) = (PROTO_VERSION + 1, PROTO_VERSION + 2);
    hello[8] = min;
    hello[9] = max;
    hello[12..16].copy_from_slice(&4096u32.to_le_bytes());
    assert_eq!(s.handle_input(0, &hello), Err(ProtoError::UnsupportedVersion { min, max }));
    // The server answers with a ServerHello that carries its own range and no proof, so a
    // client of another version can say which versions the server speaks.
    let mut out = [0u8; 200];
    let n = s.poll_transmit(&mut out);
    assert_eq!(n, 4 + 76);
    let reply = HelloRepr::parse(&out[4..n]).unwrap();
    assert_eq!((reply.version_min, reply.version_max), (PROTO_VERSION, PROTO_VERSION));
    assert_eq!(HelloRepr::server_proof(&out[4..n]), Some([0; 32]));
    // Anything else that is not a hello is named as such, by the frame it announces.
    let (_, mut s) = pair(1, 1, 3);
    assert_eq!(s.handle_input(0, b"GET / HTTP/1.1\r\n\r\n"), Err(ProtoError::MalformedHello));
    let (_, mut s) = pair(1, 1, 3);
    assert_eq!(s.handle_input(0, &u32::MAX.to_le_bytes()), Err(ProtoError::MalformedHello));
    let (_, mut s) = pair(1, 1, 3);
    let mut bad = hello;
    bad[8] = PROTO_VERSION;
    bad[9] = PROTO_VERSION;
    bad[10] = 1; // reserved
    assert_eq!(s.handle_input(0, &bad), Err(ProtoError::MalformedHello));
}

#[test]
fn a_server_holds_small_buffers_until_the_client_proved_the_psk() {
    let c = Connection::client(RustCrypto, psk(1), [2; 32], 0, vec![0; BUF * 4], vec![0; BUF * 4]);
    let mut c: Conn = c.unwrap();
    let small = Conn::MIN_BUFFER;
    let s = Connection::server(RustCrypto, psk(1), [3; 32], 0, vec![0; small], vec![0; small]);
    let mut s: Conn = s.unwrap();
    // Too early once open, and before: the promise is made before the hello, the loan after.
    assert!(s.lend_buffers(vec![0; BUF * 4], vec![0; BUF * 4]).is_err());
    s.promise_max_body(BUF * 4 - 4).unwrap();
    handshake(&mut c, &mut s).unwrap();
    assert!(s.promise_max_body(BUF).is_err(), "the hello already went out");
    assert_eq!(c.peer_max_body(), BUF * 4 - 4, "the client was promised the full frame");
    // A frame larger than the small buffer is refused, not written past it.
    let big = vec![0u8; BUF * 2];
    c.send(0, &Message::Deleted { path: std::str::from_utf8(&big[..BUF * 2 - 64]).unwrap() }).unwrap();
    let frame = c.pending_transmit().to_vec();
    let (_, mut s2) = {
        let mut c2 =
            Connection::client(RustCrypto, psk(1), [2; 32], 0, vec![0; BUF * 4], vec![0; BUF * 4]).unwrap();
        let mut s2: Conn =
            Connection::server(RustCrypto, psk(1), [3; 32], 0, vec![0; small], vec![0; small]).unwrap();
        s2.promise_max_body(BUF * 4 - 4).unwrap();
        handshake(&mut c2, &mut s2).unwrap();
        (c2, s2)
    };
    assert!(matches!(s2.handle_input(0, &frame), Err(ProtoError::FrameTooLarge { .. })));
    // Too small a loan is refused; the full one is taken and the frame then arrives.
    assert!(s.lend_buffers(vec![0; small], vec![0; small]).is_err());
    let (old_rx, _) = s.lend_buffers(vec![0; BUF * 4], vec![0; BUF * 4]).unwrap();
    assert_eq!(old_rx.len(), small);
    let mut at = 0;
    while at < frame.len() {
        at += s.handle_input(0, &frame[at..]).unwrap();
    }
    assert!(matches!(s.poll_message(0), Some(Ok(Message::Deleted { path })) if path.len() == BUF * 2 - 64));
}

#[test]
fn oversized_tampered_replayed_and_reordered_frames_are_rejected() {
    let open = || {
        let (mut c, mut s) = pair(5, 5, 1);
        handshake(&mut c, &mut s).unwrap();
        (c, s)
    };
    // Oversized length prefix: refused from its 4 bytes, nothing buffered.
    let (_, mut s) = open();
    assert_eq!(
        s.handle_input(0, &u32::MAX.to_le_bytes()),
        Err(ProtoError::FrameTooLarge { len: u32::MAX, max: 4096 })
    );

    let frames = |c: &mut Conn| {
        let mut frames = Vec::new();
        for msg in [Message::Finished, Message::Opened { max_files: 32 }] {
            c.send(0, &msg).unwrap();
            let mut out = [0u8; 100];
            let n = c.poll_transmit(&mut out);
            frames.push(out[..n].to_vec());
        }
        frames
    };
    let feed = |s: &mut Conn, bytes: &[u8]| -> Result<(), ProtoError> {
        let mut at = 0;
        while at < bytes.len() {
            at += s.handle_input(0, &bytes[at..])?;
            if let Some(m) = s.poll_message(0) {
                m?;
            }
        }
        Ok(())
    };
    // Every single bit flip of a frame is caught.
    let (mut c, _) = open();
    let f = frames(&mut c);
    for i in 0..f[0].len() {
        let (_, mut s) = open();
        let mut bad = f[0].clone();
        bad[i] ^= 0x10;
        assert!(feed(&mut s, &bad).is_err(), "flip at byte {i} accepted");
    }
    // Replay: the same frame twice.
    let (mut c, mut s) = open();
    let f = frames(&mut c);
    feed(&mut s, &f[0]).unwrap();
    assert_eq!(feed(&mut s, &f[0]), Err(ProtoError::FrameAuthFailed));
    // Reorder: the second frame first.
    let (mut c, mut s) = open();
    let f = frames(&mut c);
    assert_eq!(feed(&mut s, &f[1]), Err(ProtoError::FrameAuthFailed));
    // Reflection: a client's frame sent back to it.
    let (mut c, _) = open();
    let f = frames(&mut c);
    assert_eq!(feed(&mut c, &f[0]), Err(ProtoError::FrameAuthFailed));
}

#[test]
fn timers_ping_an_idle_link_and_fail_a_silent_peer() {
    let (_, mut s) = pair(4, 4, 4);
    assert_eq!(s.poll_timeout(), Some(keepsync_core::sync::HANDSHAKE_TIMEOUT_MS));
    assert_eq!(
        s.handle_timeout(keepsync_core::sync::HANDSHAKE_TIMEOUT_MS),
        Err(ProtoError::HandshakeTimedOut)
    );
    let (mut c2, mut s2) = pair(4, 4, 4);
    handshake(&mut c2, &mut s2).unwrap();
    let t = c2.poll_timeout().unwrap();
    assert_eq!(t, keepsync_core::sync::KEEPALIVE_MS);
    c2.handle_timeout(t).unwrap();
    assert!(!c2.pending_transmit().is_empty(), "an idle side sends a ping");
    // The server answers the ping with a pong and returns no message.
    let mut out = [0u8; 100];
    let n = c2.poll_transmit(&mut out);
    assert_eq!(s2.handle_input(t, &out[..n]), Ok(n));
    assert!(s2.poll_message(t).is_none());
    assert!(!s2.pending_transmit().is_empty(), "pong queued");
    assert_eq!(c2.handle_timeout(keepsync_core::sync::IDLE_TIMEOUT_MS), Err(ProtoError::TimedOut));
}

#[test]
fn a_frame_arriving_slower_than_the_idle_timeout_is_not_silence() {
    use keepsync_core::sync::IDLE_TIMEOUT_MS;
    let (mut c, mut s) = pair(5, 5, 5);
    handshake(&mut c, &mut s).unwrap();
    let body = vec![0x5a; 3000];
    let data = Message::Data { id: 1, offset: 0, codec: 0, raw_len: 3000, body: Bytes(&body) };
    c.send(0, &data).unwrap();
    let mut out = vec![0u8; BUF];
    let n = c.poll_transmit(&mut out);
    // 100 bytes every third of the idle timeout: the frame takes ten timeouts to arrive.
    let mut now = 0;
    for chunk in out[..n].chunks(100) {
        now += IDLE_TIMEOUT_MS / 3;
        assert_eq!(s.handle_timeout(now), Ok(()), "a peer still sending at {now} ms is alive");
        assert_eq!(s.handle_input(now, chunk), Ok(chunk.len()));
    }
    assert!(now > 10 * IDLE_TIMEOUT_MS);
    assert_eq!(s.poll_message(now).unwrap().unwrap(), data);
    // Silence after it still times out.
    assert_eq!(s.handle_timeout(now + IDLE_TIMEOUT_MS), Err(ProtoError::TimedOut));
}

// ---- file transfers -------------------------------------------------------------------

/// The receiving side's storage: finished files, the old copies it had, and durable
/// partial prefixes left by broken connections.
#[derive(Default)]
struct Store {
    files: BTreeMap<String, Vec<u8>>,
    partial: BTreeMap<String, Vec<u8>>,
}

struct Incoming {
    path: String,
    size: u64,
    data: Vec<u8>,
}

#[derive(Default)]
struct Outgoing {
    hashes: Vec<[u8; 32]>,
    resume_from: u64,
    next_block: usize,
    ready: bool,
    ended: bool,
}

/// What one connection achieved.
struct Run {
    /// Data body bytes sent.
    sent: u64,
    /// Every file was answered and the connection ended cleanly.
    ok: bool,
    /// Files the receiver refused because the assembled bytes did not hash right.
    mismatches: usize,
}

/// Runs one connection until all files are done or the connection fails.
fn run_connection(src: &BTreeMap<String, Vec<u8>>, store: &mut Store, link_seed: u64, faults: u64) -> Run {
    let (c, s) = pair(8, 8, link_seed as u8);
    let mut sender = Sender::new(c);
    let mut receiver = Receiver::new(s);
    let mut up = Link::new(link_seed, faults);
    let mut down = Link::new(link_seed.wrapping_mul(31), faults);
    let names: Vec<&String> = src.keys().filter(|k| store.files.get(*k) != src.get(*k)).collect();
    let mut queue: VecDeque<(u32, &String)> = names.iter().enumerate().map(|(i, n)| (i as u32, *n)).collect();
    let mut out: BTreeMap<u32, Outgoing> = BTreeMap::new();
    let mut inc: BTreeMap<u32, Incoming> = BTreeMap::new();
    let mut sent = 0u64;
    let mut done = 0usize;
    let mut now = 0;
    let mut finished_sent = false;
    let mut mismatches = 0;
    for _round in 0..100_000 {
        now += 1;
        // Sender: offer, then stream blocks of files whose hashes are complete.
        while sender.is_open() && sender.can_offer() {
            let Some(&(id, name)) = queue.front() else { break };
            let meta = regular(id, name, src[name].len() as u64);
            match sender.offer(now, &meta) {
                Ok(()) => {
                    queue.pop_front();
                    out.insert(id, Outgoing::default());
                }
                Err(SendError::Blocked) => break,
                Err(e) => panic!("offer: {e}"),
            }
        }
        if sender.is_open() && queue.is_empty() && !finished_sent {
            finished_sent = sender.finish(now).is_ok();
        }
        let ids: Vec<u32> = out.keys().copied().collect();
        'files: for id in ids {
            let name = names[id as usize];
            let content = &src[name];
            let o = out.get_mut(&id).unwrap();
            if !o.ready || o.ended {
                continue;
            }
            let blocks = content.len().div_ceil(BLOCK);
            while o.next_block < blocks {
                let i = o.next_block;
                let block = &content[i * BLOCK..((i + 1) * BLOCK).min(content.len())];
                if (i as u64 * BLOCK as u64) < o.resume_from || o.hashes.get(i) == Some(&hash(block)) {
                    o.next_block += 1;
                    continue;
                }
                match sender.send_data(now, id, (i * BLOCK) as u64, 0, block.len() as u32, block) {
                    Ok(()) => {
                        sent += block.len() as u64;
                        o.next_block += 1;
                    }
                    Err(SendError::Blocked) => break 'files,
                    Err(e) => panic!("send_data: {e}"),
                }
            }
            match sender.end_file(now, id, hash(content)) {
                Ok(()) => o.ended = true,
                Err(SendError::Blocked) => break,
                Err(e) => panic!("end_file: {e}"),
            }
        }
        // Sender → receiver.
        let mut failed = false;
        let moved_up = pump(&mut sender, &mut up, &mut |bytes| {
            let mut at = 0;
            while at < bytes.len() {
                at += receiver.handle_input(now, &bytes[at..])?;
                while let Some(ev) = receiver.poll_event(now) {
                    // Copy what the event borrows so the receiver can answer.
                    let owned = ev_owned(ev?);
                    receive(&mut receiver, store, &mut inc, now, owned);
                }
            }
            Ok(())
        });
        failed |= moved_up.is_err();
        // Receiver → sender.
        let moved_down = pump(&mut receiver, &mut down, &mut |bytes| {
            let mut at = 0;
            while at < bytes.len() {
                at += sender.handle_input(now, &bytes[at..])?;
                while let Some(ev) = sender.poll_event(now) {
                    match ev? {
                        SenderEvent::Have { id, have: Have::Skip } => {
                            out.remove(&id);
                            done += 1;
                        }
                        SenderEvent::Have { id, have: Have::Need { resume_from, blocks, .. } } => {
                            let o = out.get_mut(&id).unwrap();
                            o.resume_from = resume_from;
                            o.ready = blocks == 0;
                        }
                        SenderEvent::Hashes { id, hashes, complete, .. } => {
                            let o = out.get_mut(&id).unwrap();
                            o.hashes.extend(hashes.chunks(32).map(|h| <[u8; 32]>::try_from(h).unwrap()));
                            o.ready = complete;
                        }
                        SenderEvent::Done { id, status } => {
                            mismatches += usize::from(status == Status::HashMismatch);
                            out.remove(&id);
                            done += 1;
                        }
                        SenderEvent::Closed(_) | SenderEvent::Deleted(_) => {}
                    }
                }
            }
            Ok(())
        });
        failed |= moved_down.is_err();
        if failed {
            return Run { sent, ok: false, mismatches };
        }
        if done == names.len() && finished_sent {
            return Run { sent, ok: mismatches == 0, mismatches };
        }
        if !moved_up.unwrap()
            && !moved_down.unwrap()
            && sender.is_open()
            && receiver.is_open()
            && out.is_empty()
            && queue.is_empty()
        {
            return Run { sent, ok: done == names.len() && mismatches == 0, mismatches };
        }
        if !moved_up_any(&sender, &receiver) && now > 1000 {
            // Nothing moves: a lost segment stalls the stream; the link is declared dead.
            return Run { sent, ok: false, mismatches };
        }
    }
    Run { sent, ok: false, mismatches }
}

fn moved_up_any(s: &Sender<RustCrypto, Vec<u8>>, r: &Receiver<RustCrypto, Vec<u8>>) -> bool {
    !s.pending_transmit().is_empty() || !r.pending_transmit().is_empty()
}

/// An owned copy of a receiver event.
enum Ev {
    File { id: u32, path: String, size: u64 },
    Data { id: u32, offset: u64, body: Vec<u8> },
    End { id: u32, hash: [u8; 32] },
    Other,
}

fn ev_owned(ev: ReceiverEvent<'_>) -> Ev {
    match ev {
        ReceiverEvent::File(m) => Ev::File { id: m.id, path: m.path.to_owned(), size: m.size },
        ReceiverEvent::Data { id, offset, body, codec, .. } => {
            assert_eq!(codec, 0);
            Ev::Data { id, offset, body: body.to_vec() }
        }
        ReceiverEvent::End { id, hash } => Ev::End { id, hash },
        ReceiverEvent::Finished | ReceiverEvent::Closed(_) => Ev::Other,
    }
}

fn receive(
    r: &mut Receiver<RustCrypto, Vec<u8>>,
    store: &mut Store,
    inc: &mut BTreeMap<u32, Incoming>,
    now: u64,
    ev: Ev,
) {
    match ev {
        Ev::File { id, path, size } => {
            let old = store.files.get(&path).cloned().unwrap_or_default();
            // The durable prefix stays until the file lands: a link that breaks before the
            // next block must not cost it.
            let partial = store.partial.get(&path).cloned().unwrap_or_default();
            let resume = (partial.len() / BLOCK * BLOCK).min(size as usize);
            let hashes: Vec<u8> = old.chunks(BLOCK).flat_map(hash).collect();
            r.have(
                now,
                id,
                Have::Need {
                    resume_from: resume as u64,
                    block_log2: BLOCK_LOG2,
                    blocks: (hashes.len() / 32) as u32,
                },
            )
            .unwrap();
            for (i, chunk) in hashes.chunks(32 * 64).enumerate() {
                r.hashes(now, id, (i * 64) as u32, chunk).unwrap();
            }
            inc.insert(id, Incoming { path, size, data: partial[..resume].to_vec() });
        }
        Ev::Data { id, offset, body } => {
            let i = inc.get_mut(&id).unwrap();
            let old = store.files.get(&i.path).cloned().unwrap_or_default();
            // Unsent blocks before this one are unchanged: copy them from the old copy.
            let from = i.data.len();
            if (offset as usize) > from {
                i.data.extend_from_slice(&old[from..offset as usize]);
            }
            i.data.extend_from_slice(&body);
            store.partial.insert(i.path.clone(), i.data.clone()); // "durable" after each block
        }
        Ev::End { id, hash: want } => {
            let mut i = inc.remove(&id).unwrap();
            let old = store.files.get(&i.path).cloned().unwrap_or_default();
            let from = i.data.len();
            if from < i.size as usize {
                i.data.extend_from_slice(&old[from..i.size as usize]);
            }
            let status = if hash(&i.data) == want {
                store.partial.remove(&i.path);
                store.files.insert(i.path, i.data);
                Status::Ok
            } else {
                // A partial that assembles wrong is from another version: drop it.
                store.partial.remove(&i.path);
                Status::HashMismatch
            };
            r.done(now, id, status).unwrap();
        }
        Ev::Other => {}
    }
}

fn sample(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 3 == 0 { b'a' + (x % 7) as u8 } else { x as u8 }
        })
        .collect()
}

fn tree() -> BTreeMap<String, Vec<u8>> {
    let mut src = BTreeMap::new();
    for (i, len) in [0usize, 1, 1023, 1024, 1025, 10_000, 50_000, 3 * 1024].iter().enumerate() {
        src.insert(format!("dir/file-{i}.bin"), sample(*len, i as u64 + 1));
    }
    for i in 0..20 {
        src.insert(format!("many/{i}"), sample(100 + i * 37, 100 + i as u64));
    }
    src
}

#[test]
fn a_tree_transfers_and_a_second_run_sends_only_changed_blocks() {
    let src = tree();
    let mut store = Store::default();
    let Run { sent, ok, .. } = run_connection(&src, &mut store, 1, 0);
    assert!(ok);
    assert_eq!(store.files, src);
    assert_eq!(sent, src.values().map(|v| v.len() as u64).sum::<u64>());

    // Change one block in the middle of the 50,000-byte file and append to another.
    let mut changed = src.clone();
    changed.get_mut("dir/file-6.bin").unwrap()[20_000] ^= 0xff;
    changed.get_mut("dir/file-5.bin").unwrap().extend_from_slice(b"appended");
    let Run { sent, ok, .. } = run_connection(&changed, &mut store, 2, 0);
    assert!(ok);
    assert_eq!(store.files, changed);
    // One changed block, and the last (partial) block of the appended file plus its tail.
    assert_eq!(sent, BLOCK as u64 + (10_000 % BLOCK) as u64 + 8);
}

#[test]
fn a_broken_link_resumes_from_the_durable_prefix() {
    let src: BTreeMap<String, Vec<u8>> = [("big".to_string(), sample(64 * BLOCK, 5))].into();
    let mut store = Store::default();
    // Half the file reached the receiver before the link died.
    store.partial.insert("big".into(), src["big"][..32 * BLOCK + 100].to_vec());
    let Run { sent, ok, .. } = run_connection(&src, &mut store, 3, 0);
    assert!(ok);
    assert_eq!(store.files, src);
    assert_eq!(sent, 32 * BLOCK as u64, "only the missing half is sent");
    assert!(store.partial.is_empty());
}

#[test]
fn a_stale_partial_is_caught_by_the_whole_file_hash_and_never_lands() {
    let src: BTreeMap<String, Vec<u8>> = [("f".to_string(), sample(8 * BLOCK, 6))].into();
    let mut store = Store::default();
    store.partial.insert("f".into(), sample(4 * BLOCK, 99)); // from another version of the file
    let run = run_connection(&src, &mut store, 4, 0);
    assert_eq!(run.mismatches, 1, "the mismatch is reported to the sender");
    assert!(!store.files.contains_key("f"), "a wrong assembly never lands");
    // The partial was consumed; a second run sends the whole file and lands it.
    let Run { sent, ok, .. } = run_connection(&src, &mut store, 5, 0);
    assert!(ok);
    assert_eq!(sent, 8 * BLOCK as u64);
    assert_eq!(store.files, src);
}

#[test]
fn a_faulty_link_ends_in_the_right_bytes_or_a_clean_failure_and_reconnects_finish() {
    let src = tree();
    let mut failed_runs = 0;
    for seed in 1..40u64 {
        let mut store = Store::default();
        let mut runs = 0;
        loop {
            runs += 1;
            // 5% of segments lost, duplicated, reordered or corrupted while runs fail; the
            // retries eventually get a clean run (faults are drawn per segment).
            let faults = if runs > 30 { 0 } else { 50 };
            let ok = run_connection(&src, &mut store, seed * 1000 + runs, faults).ok;
            for (name, data) in &store.files {
                assert_eq!(data, &src[name], "seed {seed}: wrong bytes landed for {name}");
            }
            for (name, data) in &store.partial {
                assert_eq!(
                    data[..],
                    src[name][..data.len()],
                    "seed {seed}: a wrong durable prefix for {name}"
                );
            }
            if ok {
                break;
            }
            failed_runs += 1;
        }
        assert_eq!(store.files, src, "seed {seed}");
    }
    assert!(failed_runs > 39, "the faults must break connections ({failed_runs} broke)");
}

/// Offers small files until the sender refuses; returns how many it took, after delivering
/// each offer to the receiver (whose error, if any, is returned too).
fn offer_until_full<const S: usize, const R: usize>(
    s: &mut Sender<RustCrypto, Vec<u8>, S>,
    r: &mut Receiver<RustCrypto, Vec<u8>, R>,
) -> (u32, Result<(), ProtoError>) {
    let mut id = 0;
    loop {
        if s.offer(0, &regular(id, "f", 1)).is_err() {
            return (id, Ok(()));
        }
        id += 1;
        let mut buf = [0u8; 700];
        let n = s.poll_transmit(&mut buf);
        let mut at = 0;
        while at < n {
            match r.handle_input(0, &buf[at..n]) {
                Ok(k) => at += k,
                Err(e) => return (id, Err(e)),
            }
            while let Some(ev) = r.poll_event(0) {
                if let Err(e) = ev {
                    return (id, Err(e));
                }
            }
        }
    }
}

#[test]
fn files_in_flight_follow_the_smaller_table_and_a_receiver_enforces_its_own() {
    let open = |seed| {
        let (mut c, mut s) = pair(1, 1, seed);
        handshake(&mut c, &mut s).unwrap();
        (c, s)
    };
    // A big sender offers the protocol's floor (32) until told the receiver takes more...
    let (c, s) = open(11);
    let (mut big, mut small) = (Sender::<_, _, 100>::with_table(c), Receiver::new(s));
    assert_eq!(offer_until_full(&mut big, &mut small), (32, Ok(())));
    // ...and the receiver's announcement caps it: 32 when a device answers 32.
    let (c, s) = open(12);
    let (mut big, mut small) = (Sender::<_, _, 100>::with_table(c), Receiver::new(s));
    big.limit_in_flight(32);
    assert_eq!(big.window(), 32);
    assert_eq!(offer_until_full(&mut big, &mut small), (32, Ok(())));
    // Two hosts: the smaller table (64) wins, and a value below the floor reads as the floor.
    let (c, s) = open(13);
    let (mut big, mut host) = (Sender::<_, _, 100>::with_table(c), Receiver::<_, _, 64>::with_table(s));
    big.limit_in_flight(64);
    assert_eq!(offer_until_full(&mut big, &mut host), (64, Ok(())));
    big.limit_in_flight(3);
    assert_eq!(big.window(), 32);
    // A sender that ignores the receiver's limit is caught by the receiver's table.
    let (c, s) = open(14);
    let (mut rude, mut small) = (Sender::<_, _, 100>::with_table(c), Receiver::new(s));
    rude.limit_in_flight(100);
    let (offered, result) = offer_until_full(&mut rude, &mut small);
    assert_eq!(offered, 33);
    assert!(matches!(result, Err(ProtoError::Unexpected(_))), "{result:?}");
}

#[test]
fn deleted_is_refused_before_finished_and_delivered_after() {
    let (mut c, mut s) = pair(1, 1, 21);
    handshake(&mut c, &mut s).unwrap();
    let (mut sender, mut receiver) = (Sender::new(c), Receiver::new(s));
    // The receiver may not report deletions before the sender said it listed everything.
    assert!(matches!(receiver.deleted(0, "old"), Err(SendError::Usage(_))));
    sender.finish(0).unwrap();
    let mut buf = [0u8; 700];
    let n = sender.poll_transmit(&mut buf);
    assert_eq!(receiver.handle_input(0, &buf[..n]).unwrap(), n);
    assert!(matches!(receiver.poll_event(0), Some(Ok(ReceiverEvent::Finished))));
    receiver.deleted(0, "old/file").unwrap();
    let n = receiver.poll_transmit(&mut buf);
    assert_eq!(sender.handle_input(0, &buf[..n]).unwrap(), n);
    match sender.poll_event(0) {
        Some(Ok(SenderEvent::Deleted(path))) => assert_eq!(path, "old/file"),
        other => panic!("{other:?}"),
    }

    // A receiver that sends Deleted before Finished breaks the protocol at the sender.
    let (mut c, mut s) = pair(1, 1, 22);
    handshake(&mut c, &mut s).unwrap();
    let mut sender = Sender::new(c);
    s.send(0, &Message::Deleted { path: "x" }).unwrap();
    let n = s.poll_transmit(&mut buf);
    sender.handle_input(0, &buf[..n]).unwrap();
    assert!(matches!(sender.poll_event(0), Some(Err(ProtoError::Unexpected(_)))));
}

/// Moves what `from` has queued into `to`.
fn carry(from: &mut Conn, to: &mut Conn) {
    let mut buf = vec![0u8; BUF];
    let n = from.poll_transmit(&mut buf);
    assert_eq!(to.handle_input(0, &buf[..n]).unwrap(), n, "one message at a time");
}

#[test]
fn a_part_keeps_its_offer_resume_and_data_inside_its_range() {
    const MIB: u64 = 1 << 20;
    let meta = |id, layout| FileMeta { layout, ..regular(id, "big", 3 * MIB + 5) };
    let part = |log2, index| Layout::Part { log2, index };
    let (mut c, mut s) = pair(1, 1, 31);
    handshake(&mut c, &mut s).unwrap();
    let (mut sender, mut receiver) = (Sender::new(c), Receiver::new(s));
    // Parts below 1 MiB, past the file, of a file no larger than one part, and assemblies
    // without the file's hash: refused before anything is sent.
    let assemble = Layout::Assemble { log2: 20 };
    for bad in [part(19, 0), part(20, 4), part(22, 0), part(41, 0), Layout::Assemble { log2: 22 }, assemble] {
        assert!(matches!(sender.offer(0, &meta(1, bad)), Err(SendError::Usage(_))), "{bad:?}");
    }
    let dir = FileMeta { kind: Kind::Dir, ..meta(1, part(20, 0)) };
    assert!(matches!(sender.offer(0, &dir), Err(SendError::Usage(_))));
    // The file's last part ends at the file's end.
    sender.offer(0, &meta(1, part(20, 3))).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(matches!(
        receiver.poll_event(0),
        Some(Ok(ReceiverEvent::File(m))) if m.layout == part(20, 3) && m.range() == Some((3 * MIB, 3 * MIB + 5))
    ));
    sender.offer(0, &meta(2, part(20, 1))).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(matches!(receiver.poll_event(0), Some(Ok(ReceiverEvent::File(_)))));
    // The receiver cannot resume a part before its start.
    let need = |resume_from| Have::Need { resume_from, block_log2: BLOCK_LOG2, blocks: 0 };
    assert!(matches!(receiver.have(0, 2, need(0)), Err(SendError::Usage(_))));
    receiver.have(0, 2, need(MIB + 4096)).unwrap();
    carry(&mut receiver, &mut sender);
    assert!(matches!(sender.poll_event(0), Some(Ok(SenderEvent::Have { id: 2, .. }))));
    // Data before the resume offset or past the part's end is refused at the sender...
    let block = [7u8; BLOCK];
    assert!(matches!(sender.send_data(0, 2, MIB, 0, BLOCK as u32, &block), Err(SendError::Usage(_))));
    assert!(matches!(sender.send_data(0, 2, 2 * MIB, 0, BLOCK as u32, &block), Err(SendError::Usage(_))));
    sender.send_data(0, 2, 2 * MIB - BLOCK as u64, 0, BLOCK as u32, &block).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(
        matches!(receiver.poll_event(0), Some(Ok(ReceiverEvent::Data { offset, .. })) if offset == 2 * MIB - BLOCK as u64)
    );
    sender.end_file(0, 2, hash(&block)).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(matches!(receiver.poll_event(0), Some(Ok(ReceiverEvent::End { id: 2, .. }))));

    // An assembly carries the file's hash and is answered with Done alone.
    let whole = FileMeta { hash: Some([9; 32]), ..meta(3, assemble) };
    sender.offer(0, &whole).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(
        matches!(receiver.poll_event(0), Some(Ok(ReceiverEvent::File(m))) if m.range() == Some((m.size, m.size)))
    );
    assert!(matches!(receiver.have(0, 3, need(3 * MIB + 5)), Err(SendError::Usage(_))));
    receiver.done(0, 3, Status::Ok).unwrap();
    carry(&mut receiver, &mut sender);
    assert!(matches!(sender.poll_event(0), Some(Ok(SenderEvent::Done { id: 3, status: Status::Ok }))));

    // ...and at a receiver, from a sender that skips the rules, a protocol violation.
    receiver.have(0, 1, need(3 * MIB)).unwrap();
    carry(&mut receiver, &mut sender);
    let _ = sender.poll_event(0);
    let past = Message::Data { id: 1, offset: 3 * MIB + 5, codec: 0, raw_len: 1, body: Bytes(&[0]) };
    sender.send(0, &past).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(matches!(receiver.poll_event(0), Some(Err(ProtoError::Unexpected(_)))));
    let (mut c, mut s) = pair(1, 1, 32);
    handshake(&mut c, &mut s).unwrap();
    let mut receiver = Receiver::new(s);
    c.send(0, &Message::File(meta(1, part(20, 9)))).unwrap();
    carry(&mut c, &mut receiver);
    assert!(matches!(receiver.poll_event(0), Some(Err(ProtoError::Unexpected(_)))));
}

#[test]
fn an_early_failure_stops_the_data_and_the_end_closes_the_entry() {
    let (mut c, mut s) = pair(1, 1, 33);
    handshake(&mut c, &mut s).unwrap();
    let (mut sender, mut receiver) = (Sender::new(c), Receiver::new(s));
    sender.offer(0, &regular(1, "f", 8 * BLOCK as u64)).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(matches!(receiver.poll_event(0), Some(Ok(ReceiverEvent::File(_)))));
    // Not before the Have, and never an early Ok.
    assert!(matches!(receiver.done(0, 1, Status::NoSpace), Ok(())), "right after File, any status");
    carry(&mut receiver, &mut sender);
    assert!(matches!(sender.poll_event(0), Some(Ok(SenderEvent::Done { id: 1, status: Status::NoSpace }))));
    assert_eq!(sender.in_flight(), 0);

    sender.offer(0, &regular(2, "g", 8 * BLOCK as u64)).unwrap();
    carry(&mut sender, &mut receiver);
    let _ = receiver.poll_event(0);
    receiver.have(0, 2, Have::Need { resume_from: 0, block_log2: BLOCK_LOG2, blocks: 0 }).unwrap();
    carry(&mut receiver, &mut sender);
    let _ = sender.poll_event(0);
    let block = [3u8; BLOCK];
    sender.send_data(0, 2, 0, 0, BLOCK as u32, &block).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(matches!(receiver.poll_event(0), Some(Ok(ReceiverEvent::Data { .. }))));
    assert!(matches!(receiver.done(0, 2, Status::Ok), Err(SendError::Usage(_))), "Ok only after End");
    receiver.done(0, 2, Status::NoSpace).unwrap();
    // A block the sender queued before it heard: dropped at the receiver, no event.
    sender.send_data(0, 2, BLOCK as u64, 0, BLOCK as u32, &block).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(receiver.poll_event(0).is_none());
    carry(&mut receiver, &mut sender);
    assert!(matches!(sender.poll_event(0), Some(Ok(SenderEvent::Done { id: 2, status: Status::NoSpace }))));
    // The sender sends no more data, only the End, which frees both slots silently.
    let more = sender.send_data(0, 2, 2 * BLOCK as u64, 0, BLOCK as u32, &block);
    assert!(matches!(more, Err(SendError::Usage(_))));
    assert_eq!(sender.in_flight(), 1);
    sender.end_file(0, 2, [0; 32]).unwrap();
    assert_eq!(sender.in_flight(), 0);
    carry(&mut sender, &mut receiver);
    assert!(receiver.poll_event(0).is_none());
    assert_eq!(receiver.in_flight(), 0);
    // The id may be used again at once.
    sender.offer(0, &regular(2, "h", 1)).unwrap();
    carry(&mut sender, &mut receiver);
    assert!(matches!(receiver.poll_event(0), Some(Ok(ReceiverEvent::File(m))) if m.path == "h"));
}

#[test]
fn a_send_queue_filled_to_its_last_bytes_blocks_and_never_panics() {
    // Messages of every size from 1 to 300 body bytes, then pings, leave every possible
    // remainder of the queue free, down to fewer bytes than a frame header.
    for len in 1..300 {
        let (mut c, mut s) = pair(1, 1, 40);
        handshake(&mut c, &mut s).unwrap();
        let body = vec![0x5a; len];
        let data = Message::Data { id: 0, offset: 0, codec: 0, raw_len: len as u32, body: Bytes(&body) };
        while c.send(0, &data).is_ok() {}
        while c.send(0, &Message::Ping).is_ok() {}
        assert_eq!(c.send(0, &Message::Ping), Err(SendError::Blocked), "body {len}");
        // Draining makes room again.
        let mut out = vec![0u8; BUF];
        assert!(c.poll_transmit(&mut out) > 0);
        c.send(0, &Message::Ping).unwrap();
    }
}

#[test]
fn the_open_exchange_opens_refuses_and_insists_on_open_first() {
    use keepsync_core::sync::Direction;
    use keepsync_core::sync::open::{OpenClient, OpenError, OpenParams, accept, poll_open, refuse};
    let params = OpenParams { checksum: true, ..OpenParams::new(Direction::Pull, 32) };
    for answer in ["accept", "refuse"] {
        let (mut c, mut s) = pair(1, 1, 50);
        let mut client = OpenClient::new();
        // Nothing goes before the handshake is done.
        client.poll_send(&mut c, 0, "photos", &params).unwrap();
        assert!(!client.sent());
        handshake(&mut c, &mut s).unwrap();
        client.poll_send(&mut c, 10, "photos", &params).unwrap();
        assert!(client.sent());
        carry(&mut c, &mut s);
        let req = poll_open(&mut s, 12).unwrap().unwrap();
        assert_eq!((req.path, req.params), ("photos", params));
        if answer == "accept" {
            accept(&mut s, 12, 1024).unwrap();
        } else {
            refuse(&mut s, 12);
        }
        carry(&mut s, &mut c);
        match client.poll_opened(&mut c, 17).unwrap() {
            Ok(opened) => assert_eq!((answer, opened.max_files, opened.rtt), ("accept", 1024, 7)),
            Err(e) => assert_eq!((answer, e), ("refuse", OpenError::Refused)),
        }
    }
    // A server hears anything but Open first: a protocol violation; so does a client that
    // hears anything but Opened.
    let (mut c, mut s) = pair(1, 1, 51);
    handshake(&mut c, &mut s).unwrap();
    c.send(0, &Message::Finished).unwrap();
    carry(&mut c, &mut s);
    assert!(matches!(poll_open(&mut s, 0), Some(Err(ProtoError::Unexpected(_)))));
    let (mut c, mut s) = pair(1, 1, 52);
    handshake(&mut c, &mut s).unwrap();
    let mut client = OpenClient::new();
    client.poll_send(&mut c, 0, "x", &params).unwrap();
    s.send(0, &Message::Finished).unwrap();
    carry(&mut s, &mut c);
    assert!(matches!(client.poll_opened(&mut c, 0), Some(Err(OpenError::Proto(ProtoError::Unexpected(_))))));
}
