//! The sending end of a network sync: offers each entry of a [`Job`] (shared by the
//! connections of one run), streams the blocks the receiver does not have (compressed per
//! block, see [`effort`]), and decides what happens to each entry once the receiver is done
//! with it: counted, retried once (the source changed while read, or did not verify), put
//! off (the receiver is busy with the same file), or reported.
//!
//! A large file goes as parts of one power-of-two size, maybe over several connections; once
//! every part is in, an `Assemble` entry carries the whole file's BLAKE3 (merged from the
//! parts' chaining values, see [`crate::sync::dest::merge_parts`]) and the receiver places the
//! file only if its parts add up to it.

pub mod effort;
mod job;
mod outcome;

use job::{Broken, lock};
pub use job::{Item, Job, PART_SIZE, part_log2};

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keepsync_core::budget::compress_bound;
use keepsync_core::compress::Encoder;
use keepsync_core::sync::{CloseCode, FileMeta, Have, Kind, SendError, SenderEvent, Status};

use self::effort::{Effort, SyncCodec};
use super::dest::{hash_range, range_digest, range_hasher};
use super::plan::Action;
use super::summary::{Cause, Problem, Summary};
use super::tree::Stat;
use crate::codec::HostEncoder;
use crate::error::{Error, Result};
use crate::net::app::{App, proto};
use crate::net::{BLOCK_LOG2, HostSender};

/// Files a sender keeps in flight at first, if the receiver takes that many.
pub const INITIAL_WINDOW: usize = 128;

/// A round trip from which on a sender widens its window when it waits on the receiver. Below
/// it, two round trips per batch of `INITIAL_WINDOW` files allow more than the 13,000 small
/// files a second that two cores move over loopback; a LAN's round trip is well below.
const LONG_LINK: Duration = Duration::from_millis(5);

/// A loopback peer whose round trip is below this runs on this very host; the near end of a
/// tunnel to another host answers with that host's round trip. Loopback here answers in
/// 0.1-0.4 ms (release and debug builds).
const SAME_HOST_RTT: Duration = Duration::from_millis(1);

/// Entries at least this long are hashed on a thread of their own (one per connection at a
/// time), beside the reading, encoding and sending: a resumed entry then starts sending at
/// once from where the receiver stopped, rather than after re-reading its durable prefix.
const HASH_ASIDE_MIN: u64 = 8 << 20;

/// An entry offered on this connection.
struct Outgoing {
    /// When it was offered, if nothing was queued ahead of it: its `Have` is a round-trip
    /// sample.
    offered: Option<Duration>,
    item: Item,
    hashes: Vec<[u8; 32]>,
    resume_from: u64,
    block_log2: u8,
    /// The receiver asked for data (`Have(Need)`).
    needed: bool,
    file: Option<File>,
    offset: u64,
    /// BLAKE3 of the bytes read so far, in order (an entry hashed in line).
    hasher: blake3::Hasher,
    /// An entry hashed on a thread of its own: its digest, if the file read whole.
    aside: Option<std::thread::JoinHandle<Option<[u8; 32]>>>,
    /// The digest `End` carries, once taken.
    hash: Option<[u8; 32]>,
    broken: Option<Broken>,
    /// `End` was sent.
    ended: bool,
    /// The receiver's early `Done`: the `End` still has to go.
    aborted: Option<Status>,
    /// Every hash the receiver announced is in: data may go (or, stopped, the `End`).
    streaming: bool,
    /// The receiver's tree cannot take more (its disk is full): no more data goes, the `End`
    /// closes the entry, and it counts as not sent for that reason.
    stopped: Option<Status>,
}

impl Outgoing {
    /// The digest for `End` (waiting for its thread, if it has one); all zero, which the
    /// receiver refuses, if the file vanished or changed under the sender.
    fn end_hash(&mut self) -> [u8; 32] {
        let part = self.item.is_part();
        *self.hash.get_or_insert_with(|| match self.aside.take() {
            _ if self.broken.is_some() => [0; 32],
            Some(thread) => thread.join().ok().flatten().unwrap_or([0; 32]),
            None => range_digest(&self.hasher, part),
        })
    }
}

/// Hashes `range` of `file` on a thread of its own (a part: as its subtree).
fn hash_aside(file: File, range: (u64, u64), part: bool) -> std::thread::JoinHandle<Option<[u8; 32]>> {
    std::thread::spawn(move || {
        let mut hasher = range_hasher(range.0, part);
        hash_range(&mut hasher, &file, range, &mut vec![0u8; 1 << 20]).ok()?;
        Some(range_digest(&hasher, part))
    })
}

struct Pending {
    id: u32,
    offset: u64,
    codec: u8,
    raw_len: u32,
    len: usize,
}

/// The sending application on one connection.
pub struct SendApp {
    job: Arc<Job>,
    next_id: u32,
    flying: HashMap<u32, Outgoing>,
    /// Parts among the entries in flight.
    parts_flying: usize,
    /// Entries the receiver ended early, whose `End` is still to go.
    aborted: Vec<u32>,
    ready: VecDeque<u32>,
    pending: Option<Pending>,
    finished: bool,
    closed: bool,
    effort: Effort,
    dry_run: bool,
    /// When the send queue was last found full (the wait until the next call is idle time).
    blocked_at: Option<Instant>,
    /// Since when every file in flight is sent and the window is full: waiting on the receiver.
    waiting_since: Option<Instant>,
    /// Files this sender lets be in flight (within what the receiver takes).
    window: usize,
    /// The receiver is reached over a loopback address.
    loopback: bool,
    /// When the window last widened.
    widened_at: Option<Duration>,
    rtt: Option<Duration>,
    encoder: HostEncoder,
    block: Vec<u8>,
    out: Vec<u8>,
    /// What happened so far.
    pub summary: Summary,
}

fn internal(e: SendError) -> Error {
    Error::Internal(format!("the sync sender broke a transfer rule ({e})"))
}

impl SendApp {
    /// Sends entries of `job` with `codec`.
    pub fn new(job: Arc<Job>, codec: SyncCodec, dry_run: bool) -> Self {
        let effort = Effort::new(codec);
        Self {
            job,
            next_id: 0,
            flying: HashMap::new(),
            parts_flying: 0,
            aborted: Vec::new(),
            ready: VecDeque::new(),
            pending: None,
            finished: false,
            closed: false,
            encoder: effort.encoder(),
            summary: Summary {
                codecs: vec![effort.name()],
                files_in_flight: INITIAL_WINDOW,
                ..Summary::default()
            },
            effort,
            dry_run,
            blocked_at: None,
            waiting_since: None,
            window: INITIAL_WINDOW,
            loopback: false,
            widened_at: None,
            rtt: None,
            block: Vec::new(),
            out: Vec::new(),
        }
    }

    /// The receiver is reached over a loopback address: this host, or the near end of a
    /// tunnel (`ssh -L`); the round trip tells them apart.
    pub fn peer_on_loopback(&mut self, loopback: bool) {
        self.loopback = loopback;
    }

    fn set_codec_name(&mut self) {
        self.summary.codecs = vec![self.effort.name()];
    }

    /// Once the receiver shows it runs on this very host, `auto` compression stores: no
    /// compression shortens a memory copy, and both ends share the CPU (see `effort.rs`).
    fn follow_the_round_trip(&mut self) {
        let same_host = self.loopback && self.rtt.is_some_and(|rtt| rtt < SAME_HOST_RTT);
        if self.effort.is_adaptive() && same_host {
            self.effort = Effort::new(SyncCodec::None);
            self.encoder = self.effort.encoder();
            self.set_codec_name();
        }
    }

    /// A round trip measured outside (the client's `Open` → `Opened`, with nothing queued on
    /// either side): the cleanest sample there is.
    pub fn seed_rtt(&mut self, rtt: Option<Duration>) {
        if let Some(sample) = rtt {
            self.note_rtt(sample);
        }
    }

    /// Samples only ever overstate the round trip (queues, a busy receiver): the least is kept.
    fn note_rtt(&mut self, sample: Duration) {
        let rtt = self.rtt.map_or(sample, |r| r.min(sample));
        self.rtt = Some(rtt);
        self.summary.rtt_ms = Some(rtt.as_secs_f64() * 1e3);
        self.follow_the_round_trip();
    }

    fn sample_rtt(&mut self, id: u32) {
        if let Some(offered) = self.flying.get(&id).and_then(|o| o.offered) {
            let sample = self.job.clock.now().saturating_sub(offered);
            self.note_rtt(sample);
        }
    }

    /// Puts the entries this connection had in flight back in the queue (the connection
    /// failed; another try resumes them from the receiver's durable partials).
    pub fn requeue_unfinished(&mut self) {
        let mut ids: Vec<u32> = self.flying.keys().copied().collect();
        ids.sort_unstable();
        for id in ids.into_iter().rev() {
            let o = self.remove_flying(id).expect("listed above");
            self.job.push_front(o.item);
        }
        self.ready.clear();
        self.aborted.clear();
        self.pending = None;
    }

    /// Takes entry `id` out of the entries in flight.
    fn remove_flying(&mut self, id: u32) -> Option<Outgoing> {
        let o = self.flying.remove(&id)?;
        self.parts_flying -= usize::from(o.item.is_part());
        Some(o)
    }

    fn offer(&mut self, ep: &mut HostSender, now: u64) -> Result<bool> {
        if lock(&self.job.stopped).is_some() {
            return Ok(false);
        }
        let part_in_flight = self.parts_flying > 0;
        let Some(mut item) = self.job.pop(self.job.clock.now(), part_in_flight) else { return Ok(false) };
        let e = &item.entry;
        // --checksum: the file's BLAKE3 goes with the offer (read through the tree, from the
        // index when the file is unchanged).
        if item.hash.is_none()
            && e.kind == Kind::File
            && let Some(index) = &self.job.index
        {
            let hashed =
                self.job.tree.open_read(&e.rel).and_then(|f| crate::index::hash_open(index, &e.rel, &f));
            match hashed {
                Ok(h) => item.hash = Some(h),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    self.summary.problem(Problem { path: e.rel.clone(), cause: Cause::Vanished });
                    return Ok(true);
                }
                Err(err) => {
                    self.summary.problem(Problem::new(e.rel.clone(), format!("cannot read it: {err}")));
                    return Ok(true);
                }
            }
        }
        let e = &item.entry;
        let meta = FileMeta {
            id: self.next_id,
            path: &e.rel,
            kind: e.kind,
            size: e.size(),
            mtime: e.stat.mtime.0,
            mtime_nsec: e.stat.mtime.1,
            mode: e.stat.mode,
            target: &e.target,
            hash: item.hash,
            version: if e.kind == Kind::File { e.version() } else { [0; 16] },
            layout: item.layout,
        };
        // Nothing queued ahead of the offer: its `Have` will time one round trip.
        let offered = ep.pending_transmit().is_empty();
        match ep.offer(now, &meta) {
            Ok(()) => {}
            Err(SendError::Blocked) => {
                self.job.push_front(item);
                return Ok(false);
            }
            Err(err) => return Err(internal(err)),
        }
        let start = item.range().0;
        self.parts_flying += usize::from(item.is_part());
        self.flying.insert(
            self.next_id,
            Outgoing {
                offered: offered.then(|| self.job.clock.now()),
                item,
                hashes: Vec::new(),
                resume_from: 0,
                block_log2: BLOCK_LOG2,
                needed: false,
                file: None,
                offset: start,
                hasher: blake3::Hasher::new(),
                aside: None,
                hash: None,
                broken: None,
                ended: false,
                aborted: None,
                streaming: false,
                stopped: None,
            },
        );
        self.next_id = self.next_id.wrapping_add(1);
        Ok(true)
    }

    /// Opens the entry's file (through the tree), checking it still is the version listed.
    fn open_source(job: &Job, o: &mut Outgoing) -> Option<File> {
        let e = &o.item.entry;
        match job.tree.open_read_stat(&e.rel) {
            Ok((f, stat)) if stat.same_version(&e.stat) => Some(f),
            Ok(_) => {
                o.broken = Some(Broken::Changed);
                None
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                o.broken = Some(Broken::Vanished);
                None
            }
            Err(_) => {
                o.broken = Some(Broken::Changed);
                None
            }
        }
    }

    /// Prepares the next block of file `id`; `false` when the file is complete.
    fn next_block(&mut self, id: u32) -> Result<bool> {
        let job = Arc::clone(&self.job);
        let any_aside = self.flying.values().any(|o| o.aside.is_some());
        let o = self.flying.get_mut(&id).expect("ready files are in flight");
        let (start, end) = o.item.range();
        let part = o.item.is_part();
        if o.file.is_none() && o.broken.is_none() {
            let Some(file) = Self::open_source(&job, o) else { return Ok(false) };
            // Large entries are hashed on a thread beside the transfer (one at a time).
            if !job.inline && !any_aside && end - start >= HASH_ASIDE_MIN {
                let copy = file
                    .try_clone()
                    .map_err(|e| Error::io("read", job.tree.display(&o.item.entry.rel), e))?;
                o.aside = Some(hash_aside(copy, (start, end), part));
            } else {
                o.hasher = range_hasher(start, part);
            }
            o.file = Some(file);
            o.offset = if o.aside.is_some() { o.resume_from.clamp(start, end) } else { start };
            job.bar.inc(o.offset - start);
        }
        while o.offset < end && o.broken.is_none() {
            let n = (end - o.offset).min(1u64 << o.block_log2) as usize;
            self.block.resize(n, 0);
            let file = o.file.as_ref().expect("opened above");
            if file.read_exact_at(&mut self.block, o.offset).is_err() {
                // Shorter than listed: it changed while being sent.
                o.broken = Some(Broken::Changed);
                break;
            }
            if o.aside.is_none() {
                o.hasher.update(&self.block);
            }
            let offset = o.offset;
            o.offset += n as u64;
            // The receiver's hashes start at the entry's first block.
            let index = ((offset - start) >> o.block_log2) as usize;
            let unchanged = offset < o.resume_from
                || o.hashes.get(index).is_some_and(|h| h == blake3::hash(&self.block).as_bytes());
            if unchanged {
                job.bar.inc(n as u64);
                continue;
            }
            self.out.resize(compress_bound(n), 0);
            let started = Instant::now();
            let (codec, len) = match self.encoder.encode(&self.block, &mut self.out) {
                Some((codec, len)) => (codec as u8, len),
                None => {
                    self.out[..n].copy_from_slice(&self.block);
                    (0, n)
                }
            };
            self.pending = Some(Pending { id, offset, codec, raw_len: n as u32, len });
            let now = Instant::now();
            if self.effort.on_block(n as u64, now - started, now) {
                self.encoder = self.effort.encoder();
                self.set_codec_name();
            }
            return Ok(true);
        }
        // Read to the end: the file must still be the version listed.
        if o.broken.is_none()
            && let Some(f) = &o.file
            && !Stat::of(f).is_ok_and(|s| s.same_version(&o.item.entry.stat))
        {
            o.broken = Some(Broken::Changed);
        }
        Ok(false)
    }

    /// Once the receiver said its tree cannot take more (a full or read-only disk), no more
    /// data goes on any connection of the run: each file in flight is ended at once (its `End`
    /// with a digest that cannot match), and counted as not sent for that reason.
    fn stop_if_the_tree_is_full(&mut self, ep: &mut HostSender, now: u64) -> Result<()> {
        let Some(status) = *lock(&self.job.stopped) else { return Ok(()) };
        for o in self.flying.values_mut() {
            if o.needed && !o.ended && o.aborted.is_none() && o.stopped.is_none() {
                o.stopped = Some(status);
            }
        }
        let flying = &self.flying;
        self.ready.retain(|id| flying.get(id).is_some_and(|o| o.stopped.is_none()));
        if self.pending.as_ref().is_some_and(|p| flying.get(&p.id).is_some_and(|o| o.stopped.is_some())) {
            self.pending = None;
        }
        let due: Vec<u32> = self
            .flying
            .iter()
            .filter(|(_, o)| o.stopped.is_some() && o.streaming && !o.ended && o.aborted.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            match ep.end_file(now, id, [0; 32]) {
                Ok(()) => {
                    let o = self.flying.get_mut(&id).expect("listed above");
                    o.ended = true;
                    o.file = None;
                }
                Err(SendError::Blocked) => return Ok(()),
                Err(e) => return Err(internal(e)),
            }
        }
        Ok(())
    }

    fn window_full(&self, ep: &HostSender) -> bool {
        !ep.can_offer() || ep.in_flight() >= self.window
    }

    /// Widens the window (doubling, up to what the receiver takes) when every file in flight
    /// is sent and the sender waits on a receiver a long round trip away: a batch of files
    /// costs two round trips (`File` → `Have`, data → `Done`), so on a long link the window,
    /// not the link or either end, would set the pace. At most once per two round trips.
    fn widen_on_a_long_link(&mut self, ep: &HostSender) {
        let Some(rtt) = self.rtt.filter(|&rtt| rtt >= LONG_LINK) else { return };
        let now = self.job.clock.now();
        let waiting = self.pending.is_none() && self.ready.is_empty() && self.window_full(ep);
        let settled = self.widened_at.is_none_or(|at| now.saturating_sub(at) >= 2 * rtt);
        if waiting && settled && self.window < ep.window() {
            self.window = (2 * self.window).min(ep.window());
            self.widened_at = Some(now);
        }
    }

    fn on_event(&mut self, event: SenderEvent<'_>) {
        match event {
            SenderEvent::Have { id, have: Have::Skip } => {
                self.sample_rtt(id);
                if let Some(o) = self.remove_flying(id) {
                    self.job.bar.inc(o.item.len());
                    self.settle(o, None);
                }
            }
            SenderEvent::Have { id, have: Have::Need { resume_from, block_log2, blocks } } => {
                self.sample_rtt(id);
                let o = self.flying.get_mut(&id).expect("the sender checked the id");
                o.needed = true;
                o.resume_from = resume_from;
                o.block_log2 = block_log2;
                o.hashes.reserve(blocks.min(1 << 20) as usize);
                if blocks == 0 {
                    o.streaming = true;
                    self.ready.push_back(id);
                }
            }
            SenderEvent::Hashes { id, hashes, complete, .. } => {
                let o = self.flying.get_mut(&id).expect("the sender checked the id");
                o.hashes.extend(hashes.chunks_exact(32).map(|h| <[u8; 32]>::try_from(h).expect("32 bytes")));
                if complete {
                    o.streaming = true;
                    self.ready.push_back(id);
                }
            }
            SenderEvent::Done { id, status } => {
                let Some(o) = self.flying.get_mut(&id) else { return };
                if o.needed && !o.ended {
                    // Early: the receiver cannot use the rest. No more data; the End goes next.
                    o.aborted = Some(status);
                    self.aborted.push(id);
                    self.ready.retain(|&r| r != id);
                    if self.pending.as_ref().is_some_and(|p| p.id == id) {
                        self.pending = None;
                    }
                    return;
                }
                let o = self.remove_flying(id).expect("looked up above");
                // Stopped by this end: it was not sent because the receiver's tree is full.
                let status = o.stopped.unwrap_or(status);
                self.settle(o, Some(status));
            }
            SenderEvent::Deleted(path) => {
                self.summary.deleted += 1;
                if self.dry_run {
                    self.summary.planned.push(Action::Delete { path: path.to_owned() });
                }
            }
            SenderEvent::Closed(_) => {}
        }
    }
}

impl App<HostSender> for SendApp {
    fn produce(&mut self, ep: &mut HostSender, now: u64) -> Result<()> {
        if !ep.is_open() {
            return Ok(());
        }
        if let Some(since) = self.blocked_at.take() {
            self.effort.on_idle(since.elapsed());
        }
        if let Some(since) = self.waiting_since.take() {
            self.effort.on_receiver_wait(since.elapsed());
        }
        self.stop_if_the_tree_is_full(ep, now)?;
        // Entries the receiver ended early: their End closes them.
        while let Some(&id) = self.aborted.last() {
            match ep.end_file(now, id, [0; 32]) {
                Ok(()) => {
                    self.aborted.pop();
                    let o = self.remove_flying(id).expect("aborted entries are in flight");
                    let status = o.aborted;
                    self.settle(o, status);
                }
                Err(SendError::Blocked) => return Ok(()),
                Err(e) => return Err(internal(e)),
            }
        }
        self.widen_on_a_long_link(ep);
        self.summary.files_in_flight = self.window.min(ep.window());
        while ep.can_offer() && ep.in_flight() < self.window && self.offer(ep, now)? {}
        while let Some(&id) = self.ready.front() {
            if let Some(p) = &self.pending {
                match ep.send_data(now, p.id, p.offset, p.codec, p.raw_len, &self.out[..p.len]) {
                    Ok(()) => {
                        self.job.bar.inc(u64::from(p.raw_len));
                        self.summary.data_bytes += u64::from(p.raw_len);
                        self.pending = None;
                    }
                    Err(SendError::Blocked) => {
                        let now = Instant::now();
                        self.blocked_at = Some(now);
                        if self.effort.on_blocked(now) {
                            self.encoder = self.effort.encoder();
                            self.set_codec_name();
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(internal(e)),
                }
            }
            if self.next_block(id)? {
                continue;
            }
            let o = self.flying.get_mut(&id).expect("ready files are in flight");
            let hash = o.end_hash();
            match ep.end_file(now, id, hash) {
                Ok(()) => {
                    o.ended = true;
                    o.file = None;
                    self.ready.pop_front();
                }
                Err(SendError::Blocked) => return Ok(()),
                Err(e) => return Err(internal(e)),
            }
        }
        // Nothing to send and no room to offer more: the receiver, not the link, sets the pace.
        if self.pending.is_none() && self.window_full(ep) {
            self.waiting_since = Some(Instant::now());
        }
        if self.job.is_empty() && self.flying.is_empty() && !self.finished {
            match ep.finish(now) {
                Ok(()) => self.finished = true,
                Err(SendError::Blocked) => {}
                Err(e) => return Err(internal(e)),
            }
        }
        Ok(())
    }

    fn handle(&mut self, ep: &mut HostSender, now: u64) -> Result<()> {
        while let Some(event) = ep.poll_event(now) {
            let event = event.map_err(|e| proto("the receiver", e))?;
            if let SenderEvent::Closed(code) = event {
                if code != CloseCode::Done {
                    return Err(Error::Refused {
                        peer: "the receiver".into(),
                        reason: format!("it closed the connection ({code:?})"),
                    });
                }
                self.closed = true;
                continue;
            }
            self.on_event(event);
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.closed
    }

    fn poll_timeout(&self) -> Option<u64> {
        // An entry put off after a "busy" answer goes when its wait is over.
        self.job.next_wake().map(|t| t.as_millis() as u64 + 1)
    }
}
