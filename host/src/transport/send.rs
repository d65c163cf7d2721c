//! The sending end: walks a tree, offers each entry, and streams the blocks the receiver
//! does not have (compressed per block with the same adaptive codec choice as `pack`).

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use keepsync_core::budget::compress_bound;
use keepsync_core::compress::Encoder;
use keepsync_core::sync::{CloseCode, FileMeta, Have, Kind, Part, SendError, SenderEvent, Status};
use serde::Serialize;

use super::HostSender;
use super::driver::{App, proto};
use super::effort::{Effort, SyncCodec};
use crate::codec::HostEncoder;
use crate::error::{Error, Result};
use crate::index::{SharedIndex, hash_with};
use crate::sync::entries;

/// One entry of the tree being sent.
#[derive(Debug, Clone)]
pub struct Entry {
    rel: String,
    path: PathBuf,
    kind: Kind,
    size: u64,
    mtime: i64,
    mtime_nsec: u32,
    mode: u32,
    target: String,
    retried: bool,
    /// Only this range of the file (a large file split over connections).
    part: Option<Part>,
}

impl Entry {
    /// What the entry is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// A part of a large file split over connections.
    pub fn is_part(&self) -> bool {
        self.part.is_some()
    }

    /// Bytes this entry carries: its part's, or the whole file's.
    fn len(&self) -> u64 {
        self.part.map_or(self.size, |p| p.len)
    }

    /// The byte range this entry carries.
    fn range(&self) -> (u64, u64) {
        self.part.map_or((0, self.size), |p| (p.offset, p.offset + p.len))
    }

    /// Whether this entry stands for its file in the counts: the whole file, or its first part.
    fn counts_as_file(&self) -> bool {
        self.kind == Kind::File && self.part.is_none_or(|p| p.offset == 0)
    }

    fn from_meta(rel: String, path: PathBuf, meta: &fs::Metadata) -> Option<Result<Self, String>> {
        let ft = meta.file_type();
        let kind = if ft.is_dir() {
            Kind::Dir
        } else if ft.is_file() {
            Kind::File
        } else if ft.is_symlink() {
            Kind::Symlink
        } else {
            return None;
        };
        let target = if kind == Kind::Symlink {
            match fs::read_link(&path).map(|t| t.to_str().map(str::to_owned)) {
                Ok(Some(t)) => t,
                _ => return Some(Err(format!("{rel}: symlink target is unreadable or not UTF-8; skipped"))),
            }
        } else {
            String::new()
        };
        Some(Ok(Self {
            size: if kind == Kind::File { meta.len() } else { 0 },
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec() as u32,
            mode: meta.permissions().mode() & 0o7777,
            rel,
            path,
            kind,
            target,
            retried: false,
            part: None,
        }))
    }
}

/// Every entry under `root`, parents before children, sorted by name. Names that are not
/// UTF-8 and special files are reported in `problems` and left out.
pub fn walk(root: &Path, problems: &mut Vec<String>) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    walk_dir(root, "", &mut out, problems)?;
    Ok(out)
}

fn walk_dir(root: &Path, rel: &str, out: &mut Vec<Entry>, problems: &mut Vec<String>) -> Result<()> {
    for (name, meta) in entries(&root.join(rel))? {
        let Some(name) = name.to_str() else {
            problems.push(format!("{rel}/{}: name is not UTF-8; skipped", name.to_string_lossy()));
            continue;
        };
        let child = if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
        match Entry::from_meta(child.clone(), root.join(&child), &meta) {
            None => problems.push(format!("{child}: not a file, directory or symlink; skipped")),
            Some(Err(p)) => problems.push(p),
            Some(Ok(e)) => {
                let is_dir = e.kind == Kind::Dir;
                out.push(e);
                if is_dir {
                    walk_dir(root, &child, out, problems)?;
                }
            }
        }
    }
    Ok(())
}

/// Smallest part a large file is split into (the protocol's part alignment, 1 MiB).
pub const MIN_PART_SIZE: u64 = 1 << keepsync_core::budget::MAX_BLOCK_LOG2;

/// Default part size: a file larger than this crosses several connections at once.
pub const PART_SIZE: u64 = 32 << 20;

/// Most parts one file is split into (larger files get larger parts): bounds the entries a
/// peer's `part_size` can make a server hold.
const MAX_PARTS_PER_FILE: u64 = 4096;

/// Splits every regular file larger than `part_size` (rounded up to whole MiB) into parts of
/// that size, so that the connections of a run share its bytes; other entries stay as
/// they are.
pub fn split_large_files(entries: Vec<Entry>, part_size: u64) -> Vec<Entry> {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let part_size =
            part_size.max(e.size.div_ceil(MAX_PARTS_PER_FILE)).max(1).next_multiple_of(MIN_PART_SIZE);
        if e.kind != Kind::File || e.size <= part_size {
            out.push(e);
            continue;
        }
        let mut offset = 0;
        while offset < e.size {
            let len = part_size.min(e.size - offset);
            out.push(Entry { part: Some(Part { offset, len }), ..e.clone() });
            offset += len;
        }
    }
    out
}

/// Entries waiting to be offered, shared by the connections of one run.
#[derive(Debug, Clone, Default)]
pub struct Queue(Arc<Mutex<VecDeque<Entry>>>);

impl Queue {
    /// A queue holding `entries` in order.
    pub fn new(entries: Vec<Entry>) -> Self {
        Self(Arc::new(Mutex::new(entries.into())))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Entry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next entry, unless it is a part and `take_part` (asked only then) says no.
    fn pop_front(&self, take_part: impl FnOnce() -> bool) -> Option<Entry> {
        let mut q = self.lock();
        if q.front()?.part.is_some() && !take_part() {
            return None;
        }
        q.pop_front()
    }

    fn push_front(&self, entry: Entry) {
        self.lock().push_front(entry);
    }

    /// No entry is waiting.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }
}

/// Total bytes of the regular files (and parts) in `entries`.
pub fn total_bytes(entries: &[Entry]) -> u64 {
    entries.iter().map(Entry::len).sum()
}

/// What the sending end did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct SendSummary {
    /// Regular files sent (in whole or in part).
    pub files_transferred: u64,
    /// Regular files the receiver already had.
    pub files_skipped: u64,
    /// Directories and symlinks mirrored.
    pub other_entries: u64,
    /// File bytes carried by data messages (before compression).
    pub data_bytes: u64,
    /// Bytes of data messages' bodies (after compression).
    pub data_bytes_compressed: u64,
    /// The compression the sender ended on (`auto` moves it with the bottleneck).
    pub codec: String,
    /// With a dry run: the entries the receiver would write or delete.
    pub planned: Vec<String>,
    /// Entries the receiver removed with `--delete` (in a dry run: would remove).
    pub deleted: u64,
    /// Entries the receiver refused or could not write.
    pub problems: Vec<String>,
    /// The shortest time from offering a file to the receiver's `Have`: the round trip.
    pub rtt: Option<Duration>,
    /// Files the sender allowed in flight when it ended (its window widens on a long link).
    pub window: usize,
}

/// A loopback peer whose round trip is below this runs on this very host; the near end of a
/// tunnel to another host answers with that host's round trip. Loopback here answers in
/// 0.1-0.4 ms (release and debug builds).
const SAME_HOST_RTT: Duration = Duration::from_millis(1);

/// Whether a receiver reached over loopback (or not) with round trip `rtt` runs on this host.
fn same_host(loopback: bool, rtt: Option<Duration>) -> bool {
    loopback && rtt.is_some_and(|rtt| rtt < SAME_HOST_RTT)
}

/// Files a sender keeps in flight at first, if the receiver takes that many.
pub const INITIAL_WINDOW: usize = 128;

/// A round trip from which on a sender widens its window when it waits on the receiver. Below
/// it, two round trips per batch of `INITIAL_WINDOW` files allow more than the 13,000 small
/// files a second that two cores move over loopback; a LAN's round trip is well below.
const LONG_LINK: Duration = Duration::from_millis(5);

struct Outgoing {
    /// When the file was offered, if nothing was queued ahead of it: its `Have` then gives a
    /// round-trip sample (one that may still include the receiver's busy time).
    offered: Option<Instant>,
    entry: Entry,
    hashes: Vec<[u8; 32]>,
    resume_from: u64,
    block_log2: u8,
    file: Option<File>,
    offset: u64,
    /// BLAKE3 of the bytes read so far, in order (an entry hashed inline).
    hasher: blake3::Hasher,
    /// An entry hashed on a thread of its own (see [`HASH_ASIDE_MIN`]): its BLAKE3, or `None`
    /// if the file could not be read whole.
    aside: Option<std::thread::JoinHandle<Option<[u8; 32]>>>,
    /// The BLAKE3 `End` carries, once taken.
    hash: Option<[u8; 32]>,
    broken: bool,
}

impl Outgoing {
    /// The entry's BLAKE3 for `End` (waiting for its thread, if it has one); all zero, which
    /// the receiver refuses, if the file changed under the sender.
    fn whole_hash(&mut self) -> [u8; 32] {
        *self.hash.get_or_insert_with(|| match self.aside.take() {
            _ if self.broken => [0; 32],
            Some(thread) => thread.join().ok().flatten().unwrap_or([0; 32]),
            None => *self.hasher.finalize().as_bytes(),
        })
    }
}

/// Entries at least this long are hashed on a thread of their own (one per connection at a
/// time), beside the reading, encoding and sending. Above all, a resumed entry then starts
/// sending at once from where the receiver stopped, rather than after re-reading its durable
/// prefix to hash it first (BLAKE3 takes the bytes in order).
const HASH_ASIDE_MIN: u64 = 8 << 20;

/// Hashes `range` of `file` on a thread of its own.
fn hash_aside(file: File, range: (u64, u64)) -> std::thread::JoinHandle<Option<[u8; 32]>> {
    std::thread::spawn(move || {
        let mut hasher = blake3::Hasher::new();
        super::hash_file_range(&mut hasher, &file, range, &mut vec![0u8; 1 << 20]).ok()?;
        Some(*hasher.finalize().as_bytes())
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
    entries: Queue,
    index: Option<SharedIndex>,
    next_id: u32,
    flying: HashMap<u32, Outgoing>,
    ready: VecDeque<u32>,
    pending: Option<Pending>,
    finished: bool,
    closed: bool,
    effort: Effort,
    dry_run: bool,
    /// When the send queue was last found full (the wait until the next call is idle time).
    blocked_at: Option<std::time::Instant>,
    /// Since when every file in flight is sent and the window is full: waiting on the receiver.
    waiting_since: Option<std::time::Instant>,
    /// Files this sender lets be in flight (within what the receiver takes).
    window: usize,
    /// The receiver is reached over a loopback address.
    loopback: bool,
    /// When the window last widened.
    widened_at: Option<Instant>,
    encoder: HostEncoder,
    block: Vec<u8>,
    out: Vec<u8>,
    bar: ProgressBar,
    /// What happened so far.
    pub summary: SendSummary,
}

impl SendApp {
    /// Sends `entries`; `checksum` sends each file's BLAKE3 up front for the receiver to
    /// compare.
    pub fn new(entries: Vec<Entry>, index: Option<SharedIndex>, codec: SyncCodec, bar: ProgressBar) -> Self {
        bar.set_length(total_bytes(&entries));
        Self::with_queue(Queue::new(entries), index, codec, bar)
    }

    /// Sends entries taken from `queue`, which other connections of the run share. With
    /// `index` (`--checksum`), each file's BLAKE3 goes with its offer, from the index when
    /// the file is unchanged.
    pub fn with_queue(queue: Queue, index: Option<SharedIndex>, codec: SyncCodec, bar: ProgressBar) -> Self {
        let effort = Effort::new(codec);
        let effort_name = effort.name();
        Self {
            entries: queue,
            index,
            next_id: 0,
            flying: HashMap::new(),
            ready: VecDeque::new(),
            pending: None,
            waiting_since: None,
            window: INITIAL_WINDOW,
            loopback: false,
            widened_at: None,
            finished: false,
            closed: false,
            encoder: effort.encoder(),
            effort,
            dry_run: false,
            blocked_at: None,
            block: Vec::new(),
            out: Vec::new(),
            bar,
            summary: SendSummary { codec: effort_name, window: INITIAL_WINDOW, ..SendSummary::default() },
        }
    }

    /// The receiver is reached over a loopback address: this host, or the near end of a
    /// tunnel (`ssh -L`); the round trip tells them apart (see [`same_host`]).
    pub fn peer_on_loopback(&mut self, loopback: bool) {
        self.loopback = loopback;
    }

    /// Once the receiver shows it runs on this very host, `auto` compression stores: no
    /// compression shortens a memory copy, and both ends share the CPU (see `effort.rs`).
    fn follow_the_round_trip(&mut self) {
        if self.effort.is_adaptive() && same_host(self.loopback, self.summary.rtt) {
            self.effort = Effort::new(SyncCodec::None);
            self.encoder = self.effort.encoder();
            self.summary.codec = self.effort.name();
        }
    }

    /// Asks for a dry run: the receiver answers what it would write and changes nothing.
    pub fn dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Puts the entries this connection had in flight back in the queue (the connection
    /// failed; another try resumes them from the receiver's durable partials).
    pub fn requeue_unfinished(&mut self) {
        let mut ids: Vec<u32> = self.flying.keys().copied().collect();
        ids.sort_unstable();
        for id in ids.into_iter().rev() {
            let o = self.flying.remove(&id).expect("listed above");
            self.entries.push_front(o.entry);
        }
        self.ready.clear();
        self.pending = None;
    }

    fn offer(&mut self, ep: &mut HostSender, now: u64) -> Result<bool> {
        // One part at a time per connection: the others are left for other connections,
        // which is what splitting a file is for.
        let flying = &self.flying;
        let no_part_in_flight = || !flying.values().any(|o| o.entry.part.is_some());
        let Some(entry) = self.entries.pop_front(no_part_in_flight) else { return Ok(false) };
        let hash = match (&self.index, entry.kind) {
            (Some(index), Kind::File) => Some(hash_with(Some(index), &entry.rel, &entry.path)?),
            _ => None,
        };
        let meta = FileMeta {
            id: self.next_id,
            path: &entry.rel,
            kind: entry.kind,
            size: entry.size,
            mtime: entry.mtime,
            mtime_nsec: entry.mtime_nsec,
            mode: entry.mode,
            target: &entry.target,
            hash,
            part: entry.part,
        };
        match ep.offer(now, &meta) {
            Ok(()) => {}
            Err(SendError::Blocked) => {
                self.entries.push_front(entry);
                return Ok(false);
            }
            Err(e) => return Err(internal(e)),
        }
        let start = entry.range().0;
        self.flying.insert(
            self.next_id,
            Outgoing {
                offered: ep.pending_transmit().is_empty().then(Instant::now),
                entry,
                hashes: Vec::new(),
                resume_from: 0,
                block_log2: super::BLOCK_LOG2,
                file: None,
                offset: start,
                hasher: blake3::Hasher::new(),
                aside: None,
                hash: None,
                broken: false,
            },
        );
        self.next_id = self.next_id.wrapping_add(1);
        Ok(true)
    }

    /// Prepares the next block of the front ready file; `false` when that file is complete.
    fn next_block(&mut self, id: u32) -> Result<bool> {
        let o = &self.flying[&id];
        let (start, end) = o.entry.range();
        // Asked only of a large entry's first block: whether another is being hashed aside.
        let aside = o.file.is_none()
            && end - start >= HASH_ASIDE_MIN
            && !self.flying.values().any(|o| o.aside.is_some());
        let o = self.flying.get_mut(&id).expect("ready files are in flight");
        while o.offset < end && !o.broken {
            let block_len = 1u64 << o.block_log2;
            let n = (end - o.offset).min(block_len) as usize;
            if o.file.is_none() {
                let path = &o.entry.path;
                let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
                if aside {
                    let copy = file.try_clone().map_err(|e| Error::io("read", path, e))?;
                    o.aside = Some(hash_aside(copy, (start, end)));
                }
                o.file = Some(file);
                o.offset = if o.aside.is_some() { o.resume_from.clamp(start, end) } else { start };
                self.bar.inc(o.offset - start);
                let (file, offset) = (o.file.as_mut().expect("opened above"), o.offset);
                file.seek(SeekFrom::Start(offset)).map_err(|e| Error::io("read", path, e))?;
                continue;
            }
            self.block.resize(n, 0);
            let file = o.file.as_mut().expect("opened above");
            if file.read_exact(&mut self.block).is_err() {
                // The file changed while being sent: end it with a hash that cannot match;
                // the receiver refuses it and the retry offers the file as it is now.
                o.broken = true;
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
                self.bar.inc(n as u64);
                continue;
            }
            self.out.resize(compress_bound(n), 0);
            let started = std::time::Instant::now();
            let (codec, len) = match self.encoder.encode(&self.block, &mut self.out) {
                Some((codec, len)) => (codec as u8, len),
                None => {
                    self.out[..n].copy_from_slice(&self.block);
                    (0, n)
                }
            };
            self.pending = Some(Pending { id, offset, codec, raw_len: n as u32, len });
            let now = std::time::Instant::now();
            if self.effort.on_block(n as u64, now - started, now) {
                self.encoder = self.effort.encoder();
                self.summary.codec = self.effort.name();
            }
            return Ok(true);
        }
        Ok(false)
    }
}

impl SendApp {
    fn window_full(&self, ep: &HostSender) -> bool {
        !ep.can_offer() || ep.in_flight() >= self.window
    }

    /// Widens the window (doubling, up to what the receiver takes) when every file in flight
    /// is sent and the sender waits on a receiver a long round trip away: a batch of files
    /// costs two round trips (`File` → `Have`, data → `Done`), so on a long link the window,
    /// not the link or either end, would set the pace. At most once per two round trips, so
    /// each widening is seen before the next.
    fn widen_on_a_long_link(&mut self, ep: &HostSender) {
        let Some(rtt) = self.summary.rtt.filter(|&rtt| rtt >= LONG_LINK) else { return };
        let waiting = self.pending.is_none() && self.ready.is_empty() && self.window_full(ep);
        let settled = self.widened_at.is_none_or(|at| at.elapsed() >= 2 * rtt);
        if waiting && settled && self.window < ep.window() {
            self.window = (2 * self.window).min(ep.window());
            self.widened_at = Some(Instant::now());
        }
    }

    /// A round trip measured outside (the client's `Open` → `Opened`, with nothing queued on
    /// either side): the cleanest sample there is.
    pub fn seed_rtt(&mut self, rtt: Option<Duration>) {
        if let Some(sample) = rtt {
            self.summary.rtt = Some(self.summary.rtt.map_or(sample, |r| r.min(sample)));
            self.follow_the_round_trip();
        }
    }

    /// A round-trip sample: the time since file `id` was offered, when its `Have` arrives.
    /// Samples only ever overstate the round trip (queues, a busy receiver), so the least is
    /// kept.
    fn sample_rtt(&mut self, id: u32) {
        if let Some(offered) = self.flying.get(&id).and_then(|o| o.offered) {
            let sample = offered.elapsed();
            self.summary.rtt = Some(self.summary.rtt.map_or(sample, |r| r.min(sample)));
            self.follow_the_round_trip();
        }
    }
}

fn internal(e: SendError) -> Error {
    Error::Usage(format!("internal error in the sync sender ({e}); please report this as a bug"))
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
        self.widen_on_a_long_link(ep);
        self.summary.window = self.window.min(ep.window());
        while ep.can_offer() && ep.in_flight() < self.window && self.offer(ep, now)? {}
        while let Some(&id) = self.ready.front() {
            if let Some(p) = &self.pending {
                match ep.send_data(now, p.id, p.offset, p.codec, p.raw_len, &self.out[..p.len]) {
                    Ok(()) => {
                        self.bar.inc(u64::from(p.raw_len));
                        self.summary.data_bytes += u64::from(p.raw_len);
                        self.summary.data_bytes_compressed += p.len as u64;
                        self.pending = None;
                    }
                    Err(SendError::Blocked) => {
                        let now = std::time::Instant::now();
                        self.blocked_at = Some(now);
                        if self.effort.on_blocked(now) {
                            self.encoder = self.effort.encoder();
                            self.summary.codec = self.effort.name();
                        }
                        return Ok(());
                    }
                    Err(e) => return Err(internal(e)),
                }
            }
            if self.next_block(id)? {
                continue;
            }
            let hash = self.flying.get_mut(&id).expect("ready files are in flight").whole_hash();
            match ep.end_file(now, id, hash) {
                Ok(()) => {
                    self.ready.pop_front();
                }
                Err(SendError::Blocked) => return Ok(()),
                Err(e) => return Err(internal(e)),
            }
        }
        // Nothing to send and no room to offer more: the receiver, not the link, sets the pace.
        if self.pending.is_none() && self.window_full(ep) {
            self.waiting_since = Some(std::time::Instant::now());
        }
        if self.entries.is_empty() && self.flying.is_empty() && !self.finished {
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
            match event.map_err(|e| proto("the receiver", e))? {
                SenderEvent::Have { id, have: Have::Skip } => {
                    self.sample_rtt(id);
                    if let Some(o) = self.flying.remove(&id) {
                        self.bar.inc(o.entry.len());
                        // Only a dry run skips a directory (one that exists).
                        if o.entry.counts_as_file() {
                            self.summary.files_skipped += 1;
                        }
                    }
                }
                SenderEvent::Have { id, have: Have::Need { resume_from, block_log2, blocks } } => {
                    self.sample_rtt(id);
                    let o = self.flying.get_mut(&id).expect("the sender checked the id");
                    o.resume_from = resume_from;
                    o.block_log2 = block_log2;
                    o.hashes.reserve(blocks.min(1 << 20) as usize);
                    if blocks == 0 {
                        self.ready.push_back(id);
                    }
                }
                SenderEvent::Hashes { id, hashes, complete, .. } => {
                    let o = self.flying.get_mut(&id).expect("the sender checked the id");
                    o.hashes
                        .extend(hashes.chunks_exact(32).map(|h| <[u8; 32]>::try_from(h).expect("32 bytes")));
                    if complete {
                        self.ready.push_back(id);
                    }
                }
                SenderEvent::Done { id, status } => {
                    let Some(o) = self.flying.remove(&id) else { continue };
                    let rel = &o.entry.rel;
                    if self.dry_run && status == Status::Ok {
                        self.summary.planned.push(match o.entry.kind {
                            Kind::File => format!("copy        {rel} ({} bytes)", o.entry.size),
                            Kind::Dir => format!("create dir  {rel}"),
                            Kind::Symlink => format!("symlink     {rel} -> {}", o.entry.target),
                        });
                    }
                    match status {
                        Status::Ok if o.entry.counts_as_file() => self.summary.files_transferred += 1,
                        Status::Ok if o.entry.kind == Kind::File => {}
                        Status::Ok => self.summary.other_entries += 1,
                        Status::Rejected => self
                            .summary
                            .problems
                            .push(format!("{rel}: refused by the receiver (path not allowed there)")),
                        Status::Failed => {
                            self.summary.problems.push(format!("{rel}: the receiver could not write it"))
                        }
                        // A part's file changed between parts (its layout no longer holds), or
                        // the receiver's partial of it was damaged (it dropped the part's
                        // checkpoint): the next run sends the part again.
                        Status::HashMismatch if o.entry.part.is_some() => {
                            self.summary.problems.push(format!(
                                "{rel}: a part did not verify (the file changed while being sent, or the \
                             receiver's partial was damaged); run the sync again"
                            ))
                        }
                        Status::HashMismatch if !o.entry.retried => {
                            // Changed while being sent, or a stale partial at the receiver
                            // (which it has dropped): send it once more, as it is now.
                            let meta = fs::symlink_metadata(&o.entry.path);
                            if let Ok(meta) = meta
                                && let Some(Ok(mut again)) =
                                    Entry::from_meta(rel.clone(), o.entry.path.clone(), &meta)
                            {
                                again.retried = true;
                                self.entries.push_front(again);
                            }
                        }
                        Status::HashMismatch => self
                            .summary
                            .problems
                            .push(format!("{rel}: kept changing while being sent; not synced")),
                    }
                }
                SenderEvent::Deleted(path) => {
                    self.summary.deleted += 1;
                    if self.dry_run {
                        self.summary.planned.push(format!("delete      {path}"));
                    }
                }
                SenderEvent::Closed(CloseCode::Done) => self.closed = true,
                SenderEvent::Closed(code) => {
                    return Err(Error::Refused {
                        peer: "the receiver".into(),
                        reason: format!("it closed the connection ({code:?})"),
                    });
                }
            }
        }
        Ok(())
    }

    fn is_done(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codec_after(codec: SyncCodec, loopback: bool, rtt_ms: f64) -> String {
        let mut app = SendApp::new(Vec::new(), None, codec, ProgressBar::hidden());
        app.peer_on_loopback(loopback);
        app.seed_rtt(Some(Duration::from_secs_f64(rtt_ms / 1e3)));
        app.summary.codec
    }

    #[test]
    fn auto_stores_for_a_receiver_on_this_host_only() {
        assert_eq!(codec_after(SyncCodec::Auto, true, 0.2), "store", "loopback, 0.2 ms: this host");
        assert_eq!(codec_after(SyncCodec::Auto, true, 30.0), "zstd-1", "loopback, 30 ms: a tunnel");
        assert_eq!(codec_after(SyncCodec::Auto, false, 0.2), "zstd-1", "a LAN peer");
        assert_eq!(codec_after(SyncCodec::Zstd, true, 0.2), "zstd-1", "asked for by name");
    }
}
