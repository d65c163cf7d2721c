//! The receiving end of a network sync: answers each entry with what it needs (skip, or the
//! blocks after its durable prefix that differ from the old copy), writes through a
//! [`Dest`], and places what verified in batches: when no file is mid-transfer, or when a
//! batch holds [`BATCH_FILES`] files, [`BATCH_BYTES`] bytes or is [`BATCH_TIME`] old. A crash
//! so loses at most one batch of placed files (and the partials resume).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use keepsync_core::budget::{MIN_BLOCK_LOG2, MIN_FRAME_BODY, frame_body_for_block};
use keepsync_core::compress::{Codec, Decoder};
use keepsync_core::sync::message::hashes_per_frame;
use keepsync_core::sync::{
    CloseCode, FileMeta, Have, Kind, Layout, ProtoError, ReceiverEvent, SendError, Status,
};

use super::dest::{
    Dest, Destination, DirMeta, Ended, Fault, Offer, PartialFile, Placed, There, VerifiedFile,
};
use super::filter::Filter;
use super::plan::{Action, in_the_way, unchanged};
use super::summary::{Problem, Summary};
use super::tree::{EntryKind, Stat, check_rel};
use crate::codec::HostDecoder;
use crate::error::{Error, Result};
use crate::index::SharedIndex;
use crate::net::app::{App, proto};
use crate::net::clock::SharedClock;
use crate::net::{HostReceiver, NEW_FILE_BLOCK_LOG2, delta_block_log2};

/// Files in a batch at most.
pub const BATCH_FILES: usize = 512;

/// Bytes in a batch at most.
pub const BATCH_BYTES: u64 = 256 << 20;

/// How long a verified file waits for its batch at most.
pub const BATCH_TIME: Duration = Duration::from_secs(1);

/// Replies queued beyond this stop the receiver from taking more input.
const MAX_QUEUED_REPLIES: usize = 64;

enum Reply {
    Have(u32, Have),
    Hashes(u32, u32, Vec<u8>),
    Done(u32, Status),
    /// `--delete` removed (in a dry run: would remove) this entry.
    Deleted(String),
    Close,
}

/// The receiving application on one connection, writing into a [`Destination`].
pub struct RecvApp<D: Destination = Dest> {
    dest: D,
    checksum: bool,
    /// What `--delete` keeps: what this filter excludes (`None`: `--delete-excluded`).
    keep: Option<Filter>,
    replies: VecDeque<Reply>,
    files: HashMap<u32, D::Partial>,
    verified: Vec<(u32, D::Verified)>,
    /// When the oldest file of the batch verified, and the batch's bytes.
    batch_since: Option<Duration>,
    batch_bytes: u64,
    seen: HashSet<String>,
    dirs: Vec<DirMeta>,
    defer_dirs: bool,
    decoder: HostDecoder,
    block: Vec<u8>,
    scratch: Vec<u8>,
    closed: bool,
    log_as: Option<String>,
    local_max_body: usize,
    /// The largest frame the sender takes: `Hashes` go in messages that fit it.
    peer_max_body: usize,
    index: Option<SharedIndex>,
    bar: indicatif::ProgressBar,
    clock: SharedClock,
    /// Parts of split files verified.
    pub parts_received: u64,
    /// What happened so far.
    pub summary: Summary,
}

impl<D: Destination> RecvApp<D> {
    /// Receives into `dest`; `checksum`: compare contents rather than size and mtime.
    pub fn new(dest: D, checksum: bool, clock: SharedClock) -> Self {
        Self {
            dest,
            checksum,
            keep: Some(Filter::default()),
            replies: VecDeque::new(),
            files: HashMap::new(),
            verified: Vec::new(),
            batch_since: None,
            batch_bytes: 0,
            seen: HashSet::new(),
            dirs: Vec::new(),
            defer_dirs: false,
            decoder: HostDecoder::new(),
            block: Vec::new(),
            scratch: Vec::new(),
            closed: false,
            log_as: None,
            local_max_body: 0,
            peer_max_body: 0,
            index: None,
            bar: indicatif::ProgressBar::hidden(),
            clock,
            parts_received: 0,
            summary: Summary::default(),
        }
    }

    /// `--delete` keeps what `keep` excludes (its rules, and the `.keepsyncignore` files of
    /// this tree); `None` (`--delete-excluded`): it keeps nothing for being excluded. By
    /// default the tree's `.keepsyncignore` files alone decide.
    pub fn keeping(mut self, keep: Option<Filter>) -> Self {
        self.keep = keep;
        self
    }

    /// Shows progress on `bar`: its length grows as files are announced.
    pub fn with_progress(mut self, bar: indicatif::ProgressBar) -> Self {
        self.bar = bar;
        self
    }

    /// Leaves directories' mode and mtime to the caller ([`RecvApp::take_dirs`]): other
    /// connections of the run may still write into them after this one finished.
    pub fn defer_dirs(mut self) -> Self {
        self.defer_dirs = true;
        self
    }

    /// The directories this connection received, for the caller to finish.
    pub fn take_dirs(&mut self) -> Vec<DirMeta> {
        std::mem::take(&mut self.dirs)
    }

    /// The destination.
    pub fn dest(&self) -> &D {
        &self.dest
    }

    /// Also prints each problem on stderr as it happens, naming `peer` (the server's log).
    pub fn log_problems_as(mut self, peer: String) -> Self {
        self.log_as = Some(peer);
        self
    }

    fn problem(&mut self, p: Problem) {
        if let Some(peer) = &self.log_as {
            crate::say::say(&format!("{peer}: {p}"));
        }
        self.summary.problem(p);
    }

    /// Answers `id` with the failure `fault` (and records it).
    fn fault(&mut self, id: u32, rel: &str, fault: Fault) {
        let status = fault.status();
        let why = fault.to_string();
        let shown = if why.starts_with(rel) { why } else { format!("{rel}: {why}") };
        self.problem(Problem::new("", shown));
        self.replies.push_back(Reply::Done(id, status));
    }

    /// The BLAKE3 of the receiver's file at `rel`, through the hash index.
    fn hash_there(&mut self, rel: &str) -> Option<[u8; 32]> {
        if self.index.is_none() {
            self.index = Some(self.dest.hash_index());
        }
        self.dest.content_hash(rel, self.index.as_ref())
    }

    /// Whether `there` already holds what the sender offers (the one "unchanged" rule).
    fn unchanged(&mut self, meta: &FileMeta<'_>, there: &Stat) -> bool {
        let hash = meta.hash.filter(|_| self.checksum);
        let rel = meta.path.to_owned();
        unchanged(meta.size, (meta.mtime, meta.mtime_nsec), hash, there, || self.hash_there(&rel))
    }

    fn on_file(&mut self, meta: &FileMeta<'_>) {
        let (id, rel) = (meta.id, meta.path);
        if let Err(why) = check_rel(rel) {
            self.problem(Problem::new("", format!("refused a path from the sender: {why}")));
            return self.replies.push_back(Reply::Done(id, Status::Rejected));
        }
        self.seen.insert(rel.to_owned());
        let dry_run = self.dest.options().dry_run;
        match meta.kind {
            Kind::Dir if dry_run => match self.dest.there(rel) {
                There::Entry(s) if s.kind == EntryKind::Dir => {
                    self.replies.push_back(Reply::Have(id, Have::Skip))
                }
                There::Blocked(why) => self.fault(id, rel, Fault::Refused(why)),
                There::Entry(_) if !self.dest.options().replace => {
                    self.fault(id, rel, Fault::InTheWay(in_the_way(rel)))
                }
                _ => self.plan(id, Action::CreateDir { path: rel.to_owned() }),
            },
            Kind::Dir => match self.dest.make_dir(rel) {
                Ok(created) => {
                    // An append-only writer sets the mode and time of directories it made only.
                    if created || !self.dest.options().append_only {
                        self.dirs.push(self.dest.dir_meta(rel, meta.mode, (meta.mtime, meta.mtime_nsec)));
                    }
                    let reply =
                        if created { Reply::Done(id, Status::Ok) } else { Reply::Have(id, Have::Skip) };
                    self.replies.push_back(reply);
                }
                Err(f) => self.fault(id, rel, f),
            },
            Kind::Symlink if self.dest.link_target(rel).as_deref() == Some(meta.target) => {
                self.replies.push_back(Reply::Have(id, Have::Skip));
            }
            Kind::Symlink if dry_run => match self.dest.there(rel) {
                There::Blocked(why) => self.fault(id, rel, Fault::Refused(why)),
                There::Entry(_) if self.dest.options().append_only => {
                    self.fault(id, rel, Fault::AppendOnly(rel.to_owned()))
                }
                There::Entry(s) if s.kind == EntryKind::Dir && !self.dest.options().replace => {
                    self.fault(id, rel, Fault::InTheWay(in_the_way(rel)))
                }
                _ => self.plan(id, Action::Symlink { path: rel.to_owned(), target: meta.target.to_owned() }),
            },
            Kind::Symlink => match self.dest.place_symlink(rel, meta.target) {
                Ok(()) => self.replies.push_back(Reply::Done(id, Status::Ok)),
                Err(f) => self.fault(id, rel, f),
            },
            Kind::File => self.on_regular_file(meta),
        }
    }

    /// A dry run's answer: what would happen, nothing changed.
    fn plan(&mut self, id: u32, action: Action) {
        match &action {
            Action::CopyFile { .. } => self.summary.files_transferred += 1,
            Action::CreateDir { .. } => self.summary.dirs_created += 1,
            Action::Symlink { .. } => self.summary.symlinks += 1,
            Action::Delete { .. } => self.summary.deleted += 1,
        }
        self.summary.planned.push(action);
        self.replies.push_back(Reply::Done(id, Status::Ok));
    }

    fn on_regular_file(&mut self, meta: &FileMeta<'_>) {
        let (id, rel) = (meta.id, meta.path);
        // The core checked the layout; `None` cannot happen.
        let (start, end) = meta.range().unwrap_or((0, meta.size));
        let assemble = matches!(meta.layout, Layout::Assemble { .. });
        if !assemble {
            self.bar.inc_length(end - start);
        }
        let there = match self.dest.there(rel) {
            There::Nothing => None,
            There::Blocked(why) => return self.fault(id, rel, Fault::Refused(why)),
            There::Entry(s) if s.kind == EntryKind::Dir => {
                if self.dest.options().dry_run && self.dest.options().replace {
                    None
                } else if let Err(f) = self.dest.clear_way(rel, EntryKind::File) {
                    return self.fault(id, rel, f);
                } else {
                    None
                }
            }
            There::Entry(s) => Some(s),
        };
        if let Some(s) = there.filter(|s| s.kind == EntryKind::File)
            && self.unchanged(meta, &s)
        {
            if s.mode != meta.mode && !self.dest.options().dry_run && !self.dest.options().append_only {
                self.dest.set_mode(rel, meta.mode);
            }
            if start == 0 && !assemble {
                self.summary.files_skipped += 1;
            }
            self.bar.inc(end - start);
            let reply = if assemble { Reply::Done(id, Status::Ok) } else { Reply::Have(id, Have::Skip) };
            return self.replies.push_back(reply);
        }
        // Refused before any data moves (placement checks again, under the tree's lock). A
        // part of a split file may find the parts before it placed nothing yet: only a file.
        if self.dest.options().append_only && there.is_some() {
            return self.fault(id, rel, Fault::AppendOnly(rel.to_owned()));
        }
        if self.dest.options().dry_run {
            return self.plan(id, Action::CopyFile { path: rel.to_owned(), bytes: meta.size });
        }
        let offer = Offer {
            rel,
            size: meta.size,
            mtime: (meta.mtime, meta.mtime_nsec),
            mode: meta.mode,
            version: meta.version,
            layout: meta.layout,
        };
        if let Layout::Assemble { log2 } = meta.layout {
            let want = meta.hash.unwrap_or_default();
            match self.dest.assemble(&offer, log2, want, there) {
                Ok(v) => self.verified(id, v),
                Err(f) => self.fault(id, rel, f),
            }
            return;
        }
        let mut partial = match self.dest.begin(&offer, there, true) {
            Ok(p) => p,
            Err(f) => return self.fault(id, rel, f),
        };
        let resume = partial.resume_from();
        if partial.resumed() {
            self.summary.files_resumed += 1;
        }
        self.bar.inc(resume - start);
        // Blocks sized to the old copy, where they can match it; 1 MiB otherwise, for fewer
        // messages and a better compression ratio. Within what the frames carry, and on the
        // boundaries of a resume (made with the blocks of the run before).
        let old_len = there.filter(|s| s.kind == EntryKind::File).map(|s| s.size);
        let mut block_log2 = match (partial.has_old_copy(), old_len) {
            (true, Some(len)) => delta_block_log2(len),
            _ => NEW_FILE_BLOCK_LOG2,
        };
        while block_log2 > MIN_BLOCK_LOG2 && frame_body_for_block(block_log2) > self.local_max_body {
            block_log2 -= 1;
        }
        if resume < end {
            block_log2 = block_log2.min(resume.trailing_zeros().min(u32::from(u8::MAX)) as u8);
        }
        let hashes = match partial.old_block_hashes(block_log2, start, end) {
            Some(Ok(h)) => h,
            Some(Err(e)) => {
                return self.fault(id, rel, Fault::io(format!("{rel}: cannot read the old copy"), &e));
            }
            None => Vec::new(),
        };
        let blocks = (hashes.len() / 32) as u32;
        self.replies.push_back(Reply::Have(id, Have::Need { resume_from: resume, block_log2, blocks }));
        // Sized for the sender's frames, not ours: a device with 4 KiB frames takes about
        // 120 hashes a message, a host 32,000.
        let per = hashes_per_frame(self.peer_max_body.max(MIN_FRAME_BODY)).max(1);
        for (i, batch) in hashes.chunks(per * 32).enumerate() {
            self.replies.push_back(Reply::Hashes(id, (i * per) as u32, batch.to_vec()));
        }
        self.files.insert(id, partial);
    }

    fn on_data(&mut self, id: u32, offset: u64, codec: u8, raw_len: u32, body: &[u8]) -> Result<()> {
        self.block.resize(raw_len as usize, 0);
        let decoded = Codec::from_id(codec).map(|c| self.decoder.decode(c, body, &mut self.block));
        if !matches!(decoded, Some(Ok(()))) {
            return Err(proto("the sender", ProtoError::Malformed));
        }
        let Some(partial) = self.files.get_mut(&id) else { return Ok(()) };
        match partial.write_at(offset, &self.block, &mut self.scratch) {
            Ok(()) => self.bar.inc(u64::from(raw_len)),
            Err(f) => {
                // The rest cannot land: say so now, so the sender stops sending it.
                let p = self.files.remove(&id).expect("looked up above");
                let rel = p.rel().to_owned();
                self.fault(id, &rel, f);
            }
        }
        Ok(())
    }

    fn on_end(&mut self, id: u32, want: [u8; 32]) {
        let Some(partial) = self.files.remove(&id) else { return };
        let rel = partial.rel().to_owned();
        match partial.end(Some(want), &mut self.scratch) {
            Ok(Ended::Whole(v)) => self.verified(id, *v),
            Ok(Ended::Part { .. }) => {
                self.parts_received += 1;
                self.replies.push_back(Reply::Done(id, Status::Ok));
            }
            Err(f) => self.fault(id, &rel, f),
        }
    }

    fn verified(&mut self, id: u32, v: D::Verified) {
        self.batch_since.get_or_insert_with(|| self.clock.now());
        self.batch_bytes += v.size();
        self.verified.push((id, v));
    }

    /// Places the batch when it is due: nothing mid-transfer on this connection, or the batch
    /// full or old enough.
    fn commit_if_due(&mut self) {
        let due = self.files.is_empty()
            || self.verified.len() >= BATCH_FILES
            || self.batch_bytes >= BATCH_BYTES
            || self.batch_since.is_some_and(|t| self.clock.now().saturating_sub(t) >= BATCH_TIME);
        if due {
            self.commit();
        }
    }

    /// Places the verified files, then answers `Done` for each.
    fn commit(&mut self) {
        if self.verified.is_empty() {
            return;
        }
        let (ids, batch): (Vec<u32>, Vec<D::Verified>) =
            std::mem::take(&mut self.verified).into_iter().unzip();
        (self.batch_since, self.batch_bytes) = (None, 0);
        for (id, (v, placed)) in ids.into_iter().zip(self.dest.commit(batch)) {
            match placed {
                Ok(Placed::Written) => {
                    self.summary.files_transferred += 1;
                    self.summary.data_bytes += v.written();
                    self.replies.push_back(Reply::Done(id, Status::Ok));
                }
                Ok(Placed::AlreadyThere) => {
                    self.summary.files_skipped += 1;
                    self.replies.push_back(Reply::Done(id, Status::Ok));
                }
                Err(f) => self.fault(id, v.rel(), f),
            }
        }
    }

    /// The connection broke: keeps what it delivered. Files verified but not yet placed are
    /// placed, and each file in flight is made durable up to the last byte that arrived, with
    /// its checkpoint, so the next try resumes there. Every byte written came in an
    /// authenticated frame, in order, and a file is still placed only once it verified whole.
    pub fn save_in_flight(&mut self) {
        if self.dest.options().dry_run {
            return;
        }
        self.commit();
        for partial in self.files.values_mut() {
            partial.save(&mut self.scratch);
        }
        self.files.clear();
        let _ = self.dest.finish();
    }

    /// After the sender's `Finished`: `--delete`, then directory metadata (children first).
    fn finish(&mut self) -> Result<()> {
        self.commit();
        if self.dest.options().delete {
            let dry_run = self.dest.options().dry_run;
            match self.dest.delete_unseen(&self.seen, self.keep.as_ref(), dry_run) {
                Ok(gone) => {
                    for path in gone {
                        self.summary.deleted += 1;
                        if dry_run {
                            self.summary.planned.push(Action::Delete { path: path.clone() });
                        }
                        // The sender hears of it too: the client lists what a push deletes.
                        self.replies.push_back(Reply::Deleted(path));
                    }
                }
                Err(f) => self.problem(Problem::new("", format!("--delete stopped: {f}"))),
            }
        }
        if self.dest.options().dry_run {
            return Ok(());
        }
        if !self.defer_dirs {
            let dirs = std::mem::take(&mut self.dirs);
            self.dest.finish_dirs(dirs);
        }
        if let Some(index) = &self.index {
            index.lock().unwrap_or_else(|e| e.into_inner()).save();
        }
        if let Err(f) = self.dest.finish() {
            self.problem(Problem::new("", f.to_string()));
        }
        Ok(())
    }
}

impl<D: Destination> App<HostReceiver> for RecvApp<D> {
    fn produce(&mut self, ep: &mut HostReceiver, now: u64) -> Result<()> {
        self.commit_if_due_by_time();
        while let Some(reply) = self.replies.front() {
            let sent = match reply {
                Reply::Have(id, have) => ep.have(now, *id, *have),
                Reply::Hashes(id, first, hashes) => ep.hashes(now, *id, *first, hashes),
                Reply::Done(id, status) => ep.done(now, *id, *status),
                Reply::Deleted(path) => ep.deleted(now, path),
                Reply::Close => {
                    ep.close(now, CloseCode::Done);
                    self.closed = true;
                    Ok(())
                }
            };
            match sent {
                Ok(()) => {
                    self.replies.pop_front();
                }
                Err(SendError::Blocked) => return Ok(()),
                Err(e) => {
                    return Err(Error::Internal(format!("the sync receiver broke a transfer rule ({e})")));
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, ep: &mut HostReceiver, now: u64) -> Result<()> {
        self.local_max_body = ep.local_max_body();
        self.peer_max_body = ep.peer_max_body();
        while let Some(event) = ep.poll_event(now) {
            match event.map_err(|e| proto("the sender", e))? {
                ReceiverEvent::File(meta) => self.on_file(&meta),
                ReceiverEvent::Data { id, offset, codec, raw_len, body } => {
                    self.on_data(id, offset, codec, raw_len, body)?
                }
                ReceiverEvent::End { id, hash } => self.on_end(id, hash),
                ReceiverEvent::Finished => {
                    self.finish()?;
                    self.replies.push_back(Reply::Close);
                }
                ReceiverEvent::Closed(CloseCode::Done) => self.closed = true,
                ReceiverEvent::Closed(code) => {
                    return Err(Error::Refused {
                        peer: "the sender".into(),
                        reason: format!("it closed the connection ({code:?})"),
                    });
                }
            }
        }
        self.commit_if_due();
        Ok(())
    }

    fn wants_input(&self) -> bool {
        self.replies.len() < MAX_QUEUED_REPLIES
    }

    fn is_done(&self) -> bool {
        self.closed
    }

    fn poll_timeout(&self) -> Option<u64> {
        self.batch_since.map(|t| (t + BATCH_TIME).as_millis() as u64 + 1)
    }
}

impl<D: Destination> RecvApp<D> {
    fn commit_if_due_by_time(&mut self) {
        if self.batch_since.is_some_and(|t| self.clock.now().saturating_sub(t) >= BATCH_TIME) {
            self.commit();
        }
    }
}

/// A receiving end's store shared by the connections of a pull.
pub type SharedStore = Arc<super::dest::Store>;
