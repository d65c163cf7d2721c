//! The receiving end: confines every path to the tree root, answers each file with what it
//! needs (skip, or the blocks after its durable prefix that differ from its old copy),
//! writes into `.keepsync-partial/`, checkpoints durable progress, and renames a file into
//! place only after its whole-content BLAKE3 matches the sender's.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use keepsync_core::Checkpoint;
use keepsync_core::budget::{MAX_PATH_LEN, MIN_BLOCK_LOG2, frame_body_for_block};
use keepsync_core::compress::{Codec, Decoder};
use keepsync_core::sync::message::hashes_per_frame;
use keepsync_core::sync::{CloseCode, FileMeta, Have, Kind, ProtoError, ReceiverEvent, SendError, Status};
use serde::Serialize;

use super::HostReceiver;
use super::driver::{App, proto};
use super::parts::{CLAIM_WAIT, Claim, PartBook, SharedParts};
use super::{NEW_FILE_BLOCK_LOG2, delta_block_log2};
use crate::codec::HostDecoder;
use crate::error::{Error, Result};
use crate::index::{HashIndex, SharedIndex, hash_with};
use crate::output::{place_symlink, write_small_file_atomically};
use crate::sync::{entries, is_ours, remove};

/// The directory under a receiving tree's root that holds partial files and checkpoints.
pub const PARTIAL_DIR: &str = ".keepsync-partial";

/// Bytes written between two durable checkpoints of one file, by default.
pub const CHECKPOINT_EVERY: u64 = 16 << 20;

/// Replies queued beyond this stop the receiver from taking more input.
const MAX_QUEUED_REPLIES: usize = 64;

/// Checks a path from the network and returns where it lives under `root`: relative, no
/// `.`/`..`/empty components, no reserved names, and no ancestor that is a symlink or a
/// file. Missing ancestors are created as real directories when `create` is set (left
/// missing otherwise: a dry run). Never follows a symlink.
pub fn net_path(root: &Path, rel: &str, create: bool) -> Result<PathBuf, String> {
    if rel.is_empty() || rel.len() > MAX_PATH_LEN || rel.starts_with('/') || rel.contains('\0') {
        return Err(format!("{rel:?}: not a relative path"));
    }
    let parts: Vec<&str> = rel.split('/').collect();
    if let Some(p) = parts.iter().find(|p| p.is_empty() || **p == "." || **p == ".." || is_ours(p.as_ref())) {
        return Err(format!("{rel:?}: component {p:?} is not allowed"));
    }
    let mut at = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(format!("{}: not a real directory; refusing to write through it", at.display()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !create => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match fs::DirBuilder::new().mode(0o755).create(&at) {
                    Ok(()) => {}
                    // Another connection of the same sync made it a moment ago: check it again.
                    Err(_) if fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) => {}
                    Err(e) => return Err(format!("{}: {e}", at.display())),
                }
            }
            Err(e) => return Err(format!("{}: {e}", at.display())),
        }
    }
    Ok(root.join(rel))
}

/// How the receiving end works.
#[derive(Debug, Clone, Copy)]
pub struct RecvOptions {
    /// Remove entries the sender did not list (the client's `--delete`).
    pub delete: bool,
    /// Compare contents (BLAKE3) rather than size and mtime (the client's `--checksum`).
    pub checksum: bool,
    /// Bytes between durable checkpoints of a file: what an interruption can cost again.
    pub checkpoint_every: u64,
    /// Change nothing: answer `Done(Ok)` for what would be written, and list it.
    pub dry_run: bool,
    /// Leave directories' mode and mtime to the caller ([`RecvApp::take_dirs`]): other
    /// connections of the run may still write into them after this one finished.
    pub defer_dirs: bool,
}

/// A directory's mode and mtime, set once everything under it is written (writing an entry
/// into a directory changes its mtime).
#[derive(Debug, Clone)]
pub struct DirMeta {
    path: PathBuf,
    mode: u32,
    mtime: (i64, u32),
}

/// Sets the mode and mtime of `dirs`, deepest first.
pub fn apply_dirs(mut dirs: Vec<DirMeta>) {
    dirs.sort_by_key(|d| std::cmp::Reverse(d.path.components().count()));
    for d in dirs {
        let _ = fs::set_permissions(&d.path, fs::Permissions::from_mode(d.mode));
        if let Ok(f) = File::open(&d.path) {
            let _ = set_mtime(&f, d.mtime);
        }
    }
}

/// What the receiving end did.
#[derive(Debug, Default, Clone, Serialize)]
pub struct RecvSummary {
    /// Regular files written.
    pub files_received: u64,
    /// Regular files already up to date.
    pub files_skipped: u64,
    /// Files resumed from a durable partial left by an earlier run.
    pub files_resumed: u64,
    /// Parts of split files verified (a file split into parts is counted as received once,
    /// when its last part is in).
    pub parts_received: u64,
    /// Bytes written into files (received or copied from the old copy).
    pub bytes_written: u64,
    /// Entries removed (`--delete`).
    pub deleted: u64,
    /// Entries refused or not written, with the reason.
    pub problems: Vec<String>,
    /// With `dry_run`: what would be done, one line per entry.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<String>,
}

enum Reply {
    Have(u32, Have),
    Hashes(u32, u32, Vec<u8>),
    Done(u32, Status),
    /// `--delete` removed (in a dry run: would remove) this entry.
    Deleted(String),
    Close,
}

/// A file that matched the sender's hash and waits for the next batch commit.
struct Verified {
    id: u32,
    rel: String,
    data: File,
    data_path: PathBuf,
    /// Checkpoints that may exist (the file's, or those of all its parts), removed once the
    /// file is in place.
    ckpts: Vec<PathBuf>,
    dest: PathBuf,
    size: u64,
    /// Held until the file is placed.
    _claim: Claim,
}

struct Incoming {
    rel: String,
    dest: PathBuf,
    size: u64,
    /// The range this entry carries: `0..size`, or a part's.
    start: u64,
    end: u64,
    /// A part of a split file: other parts share its partial file.
    split: bool,
    mtime: (i64, u32),
    mode: u32,
    data: File,
    data_path: PathBuf,
    ckpt_path: PathBuf,
    binding: [u8; 32],
    written: u64,
    /// BLAKE3 of `start..hashed`, once the durable prefix is settled.
    hasher: blake3::Hasher,
    /// Where the hash has got to: bytes written while the durable prefix was still being
    /// re-hashed are hashed afterwards, read back ([`RecvApp::catch_up`]).
    hashed: u64,
    /// The durable prefix being re-hashed beside the transfer: the hasher's state after it,
    /// if it still matches its checkpoint.
    prefix: Option<std::thread::JoinHandle<Option<blake3::Hasher>>>,
    /// The durable prefix did not match its checkpoint: the file cannot verify.
    prefix_bad: bool,
    old: Option<File>,
    since_ckpt: u64,
    /// A checkpoint file may exist: the partial was there before, or one was written.
    ckpt_may_exist: bool,
    failed: Option<String>,
    /// This connection's hold on its range of the partial file, until the entry is done.
    _claim: Claim,
}

/// The receiving application on one connection, writing under `root`.
pub struct RecvApp {
    root: PathBuf,
    opts: RecvOptions,
    replies: VecDeque<Reply>,
    files: HashMap<u32, Incoming>,
    verified: Vec<Verified>,
    renamed: bool,
    seen: HashSet<String>,
    dirs: Vec<DirMeta>,
    decoder: HostDecoder,
    buf: Vec<u8>,
    closed: bool,
    log_as: Option<String>,
    local_max_body: usize,
    index: Option<SharedIndex>,
    /// Verified parts of split files, shared with the other connections into the same trees.
    parts: SharedParts,
    bar: indicatif::ProgressBar,
    /// What happened so far.
    pub summary: RecvSummary,
}

fn set_mtime(file: &File, (secs, nsec): (i64, u32)) -> std::io::Result<()> {
    let t = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nsec)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs()) + Duration::from_nanos(u64::from(nsec))
    };
    file.set_times(fs::FileTimes::new().set_modified(t))
}

/// Whether an existing entry `m` can take a `kind` entry's place without removing it.
fn same_kind(kind: Kind, m: &fs::Metadata) -> bool {
    match kind {
        Kind::Dir => m.is_dir(),
        Kind::File | Kind::Symlink => !m.is_dir(),
    }
}

/// The durable bytes from `start` on (the file's, or a part's) that the checkpoint at
/// `ckpt_path` claims, and the BLAKE3 it recorded of them: when it names this very version of
/// the file (`binding`) and the partial file is long enough. The bytes are checked apart
/// ([`verify_prefix`]).
fn claimed_prefix(data: &File, ckpt_path: &Path, binding: &[u8; 32], start: u64) -> Option<(u64, [u8; 32])> {
    let bytes = fs::read(ckpt_path).ok()?;
    let ckpt = Checkpoint::decode(&bytes).ok()?;
    let long_enough = data.metadata().ok()?.len() >= start + ckpt.plain_offset;
    (&ckpt.header_mac == binding && long_enough && ckpt.plain_offset > 0)
        .then_some((ckpt.plain_offset, ckpt.source_hash))
}

/// Re-hashes `len` bytes of `file` from `start` on a thread of its own (positioned reads:
/// the caller's writes through its own handle are not disturbed); the hasher's state after
/// them, if they still hash to `expect`.
fn verify_prefix(
    file: File,
    start: u64,
    len: u64,
    expect: [u8; 32],
) -> std::thread::JoinHandle<Option<blake3::Hasher>> {
    std::thread::spawn(move || {
        let mut hasher = blake3::Hasher::new();
        super::hash_file_range(&mut hasher, &file, (start, start + len), &mut vec![0u8; 1 << 20]).ok()?;
        (*hasher.finalize().as_bytes() == expect).then_some(hasher)
    })
}

/// The checkpoints in the partial directory that belong to the partial file `data_path`
/// (`NAME.data`): `NAME.ckpt` and the parts' `NAME.START.ckpt`, of this layout or an earlier
/// run's.
fn leftover_checkpoints(data_path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (data_path.parent(), data_path.file_stem().and_then(|s| s.to_str())) else {
        return Vec::new();
    };
    let Ok(list) = fs::read_dir(dir) else { return Vec::new() };
    list.filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix(stem).is_some_and(|rest| rest.starts_with('.') && rest.ends_with(".ckpt"))
            })
        })
        .collect()
}

/// Opens the partial file at `path` in the partial directory `dir`, creating both as needed;
/// `true` when the file is new (so no checkpoint of it can exist). A new file costs one
/// `openat`: the directory is created only when that fails for want of it. Connections of one
/// push race here: one may make the directory, or remove it when empty at its end, between
/// another's steps; a step that finds the work done (or undone) simply tries again.
fn open_partial(dir: &Path, path: &Path) -> Result<(File, bool)> {
    use std::io::ErrorKind::{AlreadyExists, NotFound};
    let mut last = None;
    for _ in 0..3 {
        let created = OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(path);
        let e = match created {
            Ok(f) => return Ok((f, true)),
            Err(e) if e.kind() == AlreadyExists => match OpenOptions::new().read(true).write(true).open(path)
            {
                Ok(f) => return Ok((f, false)),
                Err(e) => e, // removed in between: try again
            },
            Err(e) => e,
        };
        if e.kind() != NotFound {
            return Err(Error::io("create", path, e));
        }
        if let Err(e) = fs::DirBuilder::new().mode(0o700).create(dir)
            && !fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
        {
            return Err(Error::io("create", dir, e));
        }
        last = Some(e);
    }
    Err(Error::io("create", path, last.unwrap_or_else(|| NotFound.into())))
}

/// BLAKE3 of each `2^block_log2`-byte block of `file` from `start` (block-aligned) up to
/// `end` or the end of the file.
fn block_hashes(file: &mut File, block_log2: u8, start: u64, end: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut block = vec![0u8; 1 << block_log2];
    file.seek(SeekFrom::Start(start))?;
    let mut at = start;
    while at < end {
        let want = ((end - at) as usize).min(block.len());
        let block = &mut block[..want];
        let mut n = 0;
        while n < block.len() {
            match file.read(&mut block[n..])? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(blake3::hash(&block[..n]).as_bytes());
        if n < block.len() {
            return Ok(out);
        }
        at += n as u64;
    }
    Ok(out)
}

impl RecvApp {
    /// Receives into the tree at `root` (which must exist as a real directory).
    pub fn new(root: PathBuf, opts: RecvOptions) -> Self {
        Self {
            root,
            opts,
            replies: VecDeque::new(),
            files: HashMap::new(),
            verified: Vec::new(),
            renamed: false,
            seen: HashSet::new(),
            dirs: Vec::new(),
            decoder: HostDecoder::new(),
            buf: Vec::new(),
            closed: false,
            log_as: None,
            local_max_body: 0,
            index: None,
            parts: SharedParts::default(),
            bar: indicatif::ProgressBar::hidden(),
            summary: RecvSummary::default(),
        }
    }

    /// Shares the record of split files' verified parts with the other connections that
    /// receive into the same trees, so that parts arriving over several connections complete
    /// their file.
    pub fn with_parts(mut self, parts: SharedParts) -> Self {
        self.parts = parts;
        self
    }

    /// Shows progress on `bar`: its length grows as files are announced.
    pub fn with_progress(mut self, bar: indicatif::ProgressBar) -> Self {
        self.bar = bar;
        self
    }

    /// The directories this connection received, for the caller to finish
    /// ([`RecvOptions::defer_dirs`]).
    pub fn take_dirs(&mut self) -> Vec<DirMeta> {
        std::mem::take(&mut self.dirs)
    }

    /// Also prints each problem on stderr as it happens, naming `peer` (the server's log).
    pub fn log_problems_as(mut self, peer: String) -> Self {
        self.log_as = Some(peer);
        self
    }

    fn problem(&mut self, id: u32, status: Status, why: String) {
        if let Some(peer) = &self.log_as {
            eprintln!("keepsync: {peer}: {why}");
        }
        self.summary.problems.push(why);
        self.replies.push_back(Reply::Done(id, status));
    }

    /// Whether the regular file `dest` (metadata `m`) already holds what the sender offers:
    /// same size and mtime, or with `--checksum` the same BLAKE3 (through the hash index).
    fn unchanged(&mut self, meta: &FileMeta<'_>, rel: &str, m: &fs::Metadata, dest: &Path) -> bool {
        if !m.is_file() || m.len() != meta.size {
            return false;
        }
        match (self.opts.checksum, meta.hash) {
            (true, Some(want)) => {
                let index = self.index.get_or_insert_with(|| HashIndex::shared(&self.root));
                hash_with(Some(index), rel, dest).is_ok_and(|h| h == want)
            }
            _ => (m.mtime(), m.mtime_nsec() as u32) == (meta.mtime, meta.mtime_nsec),
        }
    }

    /// A dry run's answer to an entry: what would happen, nothing changed.
    fn plan(&mut self, meta: &FileMeta<'_>, rel: &str, dest: &Path) {
        let there = fs::symlink_metadata(dest).ok();
        if there.as_ref().is_some_and(|m| !same_kind(meta.kind, m)) && !self.opts.delete {
            let why = format!("{rel}: another kind of entry is in the way (use --delete)");
            return self.problem(meta.id, Status::Failed, why);
        }
        let line = match meta.kind {
            // Nothing to do: `Skip` tells the sender so (it lists what is answered `Done`).
            Kind::Dir if there.as_ref().is_some_and(|m| m.is_dir()) => {
                return self.replies.push_back(Reply::Have(meta.id, Have::Skip));
            }
            Kind::Dir => Some(format!("create dir  {rel}")),
            Kind::Symlink if fs::read_link(dest).is_ok_and(|t| t.as_os_str() == meta.target) => {
                return self.replies.push_back(Reply::Have(meta.id, Have::Skip));
            }
            Kind::Symlink => Some(format!("symlink     {rel} -> {}", meta.target)),
            Kind::File => {
                if there.as_ref().is_some_and(|m| self.unchanged(meta, rel, m, dest)) {
                    self.summary.files_skipped += 1;
                    return self.replies.push_back(Reply::Have(meta.id, Have::Skip));
                }
                // Counted as received: a dry run's summary says what a real run would do.
                self.summary.files_received += 1;
                Some(format!("copy        {rel} ({} bytes)", meta.size))
            }
        };
        self.summary.planned.extend(line);
        self.replies.push_back(Reply::Done(meta.id, Status::Ok));
    }

    /// Makes room for a `kind` entry at `dest`: an entry of another kind goes only with
    /// `--delete`. `Err` (reported) when it stays in the way; else what is there of the same
    /// kind, if anything.
    fn clear_way(&mut self, id: u32, rel: &str, dest: &Path, kind: Kind) -> Result<Option<fs::Metadata>, ()> {
        let Ok(m) = fs::symlink_metadata(dest) else { return Ok(None) };
        if same_kind(kind, &m) {
            return Ok(Some(m));
        }
        if self.opts.delete && remove(dest).is_ok() {
            self.summary.deleted += 1;
            return Ok(None);
        }
        self.problem(
            id,
            Status::Failed,
            format!("{rel}: another kind of entry is in the way (use --delete)"),
        );
        Err(())
    }

    fn on_file(&mut self, meta: &FileMeta<'_>, max_body: usize) -> Result<()> {
        let (id, rel) = (meta.id, meta.path.to_owned());
        let dest = match net_path(&self.root, &rel, !self.opts.dry_run) {
            Ok(d) => d,
            Err(why) => {
                self.problem(id, Status::Rejected, format!("refused a path from the sender: {why}"));
                return Ok(());
            }
        };
        self.seen.insert(rel.clone());
        if self.opts.dry_run {
            self.plan(meta, &rel, &dest);
            return Ok(());
        }
        let Ok(existing) = self.clear_way(id, &rel, &dest, meta.kind) else { return Ok(()) };
        match meta.kind {
            Kind::Dir => {
                if !dest.is_dir()
                    && let Err(e) = fs::DirBuilder::new().mode(0o755).create(&dest)
                    && !fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir())
                {
                    self.problem(id, Status::Failed, format!("{rel}: cannot create directory: {e}"));
                    return Ok(());
                }
                self.dirs.push(DirMeta { path: dest, mode: meta.mode, mtime: (meta.mtime, meta.mtime_nsec) });
                self.replies.push_back(Reply::Done(id, Status::Ok));
            }
            Kind::Symlink => match place_symlink(Path::new(meta.target), &dest) {
                Ok(()) => self.replies.push_back(Reply::Done(id, Status::Ok)),
                Err(e) => self.problem(id, Status::Failed, format!("{rel}: {e}")),
            },
            Kind::File => self.on_regular_file(meta, rel, dest, existing, max_body)?,
        }
        Ok(())
    }

    fn on_regular_file(
        &mut self,
        meta: &FileMeta<'_>,
        rel: String,
        dest: PathBuf,
        existing: Option<fs::Metadata>,
        max_body: usize,
    ) -> Result<()> {
        let id = meta.id;
        // The core checked the part; `None` cannot happen.
        let (start, end) = meta.range().unwrap_or((0, meta.size));
        let split = meta.part.is_some();
        self.bar.inc_length(end - start);
        let existing = existing.filter(|m| m.is_file());
        if let Some(m) = &existing
            && self.unchanged(meta, &rel, m, &dest)
        {
            if m.permissions().mode() & 0o7777 != meta.mode {
                let _ = fs::set_permissions(&dest, fs::Permissions::from_mode(meta.mode));
            }
            if start == 0 {
                self.summary.files_skipped += 1;
            }
            self.bar.inc(end - start);
            self.replies.push_back(Reply::Have(id, Have::Skip));
            return Ok(());
        }
        let partial_dir = self.root.join(PARTIAL_DIR);
        let name = hex::encode(&blake3::hash(rel.as_bytes()).as_bytes()[..16]);
        let data_path = partial_dir.join(format!("{name}.data"));
        // A part keeps its own checkpoint, named by where it starts.
        let ckpt_path = match split {
            false => partial_dir.join(format!("{name}.ckpt")),
            true => partial_dir.join(format!("{name}.{start}.ckpt")),
        };
        let mut binding = blake3::Hasher::new();
        binding.update(b"keepsync sync partial v1");
        binding.update(&(rel.len() as u64).to_le_bytes());
        binding.update(rel.as_bytes());
        binding.update(&meta.size.to_le_bytes());
        binding.update(&meta.mtime.to_le_bytes());
        binding.update(&meta.mtime_nsec.to_le_bytes());
        let binding = *binding.finalize().as_bytes();

        // A connection that broke may still be saving this very range: wait for it.
        let claim = PartBook::claim(&self.parts, data_path.clone(), start, CLAIM_WAIT);
        let (mut data, fresh) = open_partial(&partial_dir, &data_path)?;
        let io = |e| Error::io("write", &data_path, e);
        // A new whole file has no checkpoint to read.
        let claimed = if fresh && !split { None } else { claimed_prefix(&data, &ckpt_path, &binding, start) };
        let (done, prefix) = match claimed {
            // The prefix is re-hashed beside the transfer: the sender re-reads its own at the
            // same time (it needs it for the file's BLAKE3), instead of after this one.
            Some((done, expect)) => {
                (done, Some(verify_prefix(data.try_clone().map_err(io)?, start, done, expect)))
            }
            None => (0, None),
        };
        if !fresh && !split {
            data.set_len(done).map_err(io)?;
        }
        if !fresh || split {
            data.seek(SeekFrom::Start(start + done)).map_err(io)?;
        }
        let resume = start + done;
        if done > 0 {
            if !split || self.parts.first_resume(&(data_path.clone(), binding)) {
                self.summary.files_resumed += 1;
            }
            self.bar.inc(done);
        }
        let old_len = existing.as_ref().map(|m| m.len());
        let mut old = existing.and_then(|_| File::open(&dest).ok());
        // Blocks sized to the old copy, where they can match it; 1 MiB otherwise, for fewer
        // messages and a better compression ratio. Within what the frames carry, and on the
        // boundaries of a resume (made with the blocks of the run before).
        let mut block_log2 = match (&old, old_len) {
            (Some(_), Some(len)) => delta_block_log2(len),
            _ => NEW_FILE_BLOCK_LOG2,
        };
        while block_log2 > MIN_BLOCK_LOG2 && frame_body_for_block(block_log2) > self.local_max_body {
            block_log2 -= 1;
        }
        if resume < end {
            block_log2 = block_log2.min(resume.trailing_zeros().min(u32::from(u8::MAX)) as u8);
        }
        let hashes = match old.as_mut() {
            Some(f) => block_hashes(f, block_log2, start, end).map_err(|e| Error::io("read", &dest, e))?,
            None => Vec::new(),
        };
        let blocks = (hashes.len() / 32) as u32;
        self.replies.push_back(Reply::Have(id, Have::Need { resume_from: resume, block_log2, blocks }));
        let per = hashes_per_frame(max_body).max(1);
        for (i, batch) in hashes.chunks(per * 32).enumerate() {
            self.replies.push_back(Reply::Hashes(id, (i * per) as u32, batch.to_vec()));
        }
        self.files.insert(
            id,
            Incoming {
                rel,
                dest,
                size: meta.size,
                start,
                end,
                split,
                mtime: (meta.mtime, meta.mtime_nsec),
                mode: meta.mode,
                data,
                data_path,
                ckpt_path,
                binding,
                written: resume,
                hasher: blake3::Hasher::new(),
                hashed: resume,
                prefix,
                prefix_bad: false,
                old,
                since_ckpt: 0,
                ckpt_may_exist: !fresh,
                failed: None,
                _claim: claim,
            },
        );
        Ok(())
    }

    /// Takes over the re-hashed durable prefix of `inc`. A prefix that no longer hashes to its
    /// checkpoint's record dooms the file: its `End` answers `HashMismatch`, which drops the
    /// partial, and the sender offers the file once more, whole.
    fn settle_prefix(inc: &mut Incoming) {
        if let Some(handle) = inc.prefix.take() {
            match handle.join() {
                Ok(Some(hasher)) => inc.hasher = hasher,
                _ => inc.prefix_bad = true,
            }
        }
    }

    /// Brings the hash up to `written`: once the durable prefix is settled (waiting for it
    /// only with `wait`), the bytes written meanwhile are read back and hashed. So a resumed
    /// file takes data at once, while its prefix is still being re-hashed. `false` while the
    /// prefix is not settled, or when it did not verify.
    fn catch_up(inc: &mut Incoming, wait: bool, buf: &mut Vec<u8>) -> std::result::Result<bool, String> {
        if !wait && inc.prefix.as_ref().is_some_and(|h| !h.is_finished()) {
            return Ok(false);
        }
        Self::settle_prefix(inc);
        if inc.prefix_bad {
            return Ok(false);
        }
        if inc.hashed < inc.written {
            buf.resize(1 << 20, 0);
            super::hash_file_range(&mut inc.hasher, &inc.data, (inc.hashed, inc.written), buf)
                .map_err(|e| format!("{}: cannot read back the partial file: {e}", inc.rel))?;
            inc.hashed = inc.written;
        }
        Ok(true)
    }

    /// Writes `bytes` at `inc.written`, hashing them now if the hash is up to date.
    fn write(inc: &mut Incoming, bytes: &[u8]) -> std::result::Result<(), String> {
        inc.data.write_all(bytes).map_err(|e| format!("{}: {e}", inc.rel))?;
        if inc.prefix.is_none() && inc.hashed == inc.written {
            inc.hasher.update(bytes);
            inc.hashed += bytes.len() as u64;
        }
        inc.written += bytes.len() as u64;
        inc.since_ckpt += bytes.len() as u64;
        Ok(())
    }

    /// Copies the old copy's bytes up to `until` (blocks the sender found unchanged).
    fn fill_from_old(inc: &mut Incoming, until: u64, buf: &mut Vec<u8>) -> std::result::Result<(), String> {
        if inc.written >= until {
            return Ok(());
        }
        let Some(old) = inc.old.as_mut() else {
            return Err(format!("{}: the sender skipped blocks this side does not have", inc.rel));
        };
        old.seek(SeekFrom::Start(inc.written)).map_err(|e| e.to_string())?;
        buf.resize(1 << 20, 0);
        while inc.written < until {
            let n = ((until - inc.written) as usize).min(buf.len());
            let old = inc.old.as_mut().expect("checked above");
            old.read_exact(&mut buf[..n])
                .map_err(|_| format!("{}: the old copy changed during the sync", inc.rel))?;
            Self::write(inc, &buf[..n])?;
        }
        Ok(())
    }

    /// Makes `inc` durable up to `written` and records that in its checkpoint. Unless `wait`,
    /// put off while its durable prefix is still being re-hashed (the next block tries again).
    fn checkpoint(inc: &mut Incoming, wait: bool, buf: &mut Vec<u8>) -> std::result::Result<(), String> {
        if !Self::catch_up(inc, wait, buf)? {
            return Ok(()); // not yet, or nothing here is worth resuming from
        }
        inc.data.sync_data().map_err(|e| format!("{}: {e}", inc.rel))?;
        let ckpt = Checkpoint {
            header_mac: inc.binding,
            chunks_done: 0,
            plain_offset: inc.written - inc.start,
            sealed_offset: inc.written - inc.start,
            source_hash: *inc.hasher.finalize().as_bytes(),
        };
        let mut bytes = [0u8; Checkpoint::MAX_ENCODED_LEN];
        let bytes = ckpt.encode(&mut bytes).map_err(|e| e.to_string())?;
        inc.ckpt_may_exist = true;
        write_small_file_atomically(&inc.ckpt_path, bytes).map_err(|e| e.to_string())?;
        inc.since_ckpt = 0;
        Ok(())
    }

    fn on_data(&mut self, id: u32, offset: u64, codec: u8, raw_len: u32, body: &[u8]) -> Result<()> {
        let inc = self.files.get_mut(&id).expect("the receiver checked the id");
        if inc.failed.is_some() {
            return Ok(());
        }
        let before = inc.written;
        let copied = Self::catch_up(inc, false, &mut self.buf)
            .and_then(|_| Self::fill_from_old(inc, offset, &mut self.buf));
        if let Err(why) = copied {
            inc.failed = Some(why);
            return Ok(());
        }
        self.buf.resize(raw_len as usize, 0);
        let decoded = Codec::from_id(codec).map(|c| self.decoder.decode(c, body, &mut self.buf));
        if !matches!(decoded, Some(Ok(()))) {
            return Err(proto("the sender", ProtoError::Malformed));
        }
        if let Err(why) = Self::write(inc, &self.buf) {
            inc.failed = Some(why);
            return Ok(());
        }
        self.bar.inc(inc.written - before);
        if inc.since_ckpt >= self.opts.checkpoint_every
            && let Err(why) = Self::checkpoint(inc, false, &mut self.buf)
        {
            inc.failed = Some(why);
        }
        Ok(())
    }

    fn on_end(&mut self, id: u32, want: [u8; 32]) {
        let mut inc = self.files.remove(&id).expect("the receiver checked the id");
        let (size, end) = (inc.size, inc.end);
        if inc.failed.is_none()
            && let Err(why) = Self::catch_up(&mut inc, true, &mut self.buf)
                .and_then(|_| Self::fill_from_old(&mut inc, end, &mut self.buf))
        {
            inc.failed = Some(why);
        }
        let status = match &inc.failed {
            Some(why) => {
                self.summary.problems.push(why.clone());
                Status::Failed
            }
            None if inc.prefix_bad || *inc.hasher.finalize().as_bytes() != want => Status::HashMismatch,
            None => {
                let err = |e: std::io::Error| format!("{}: {e}", inc.rel);
                let mut meta = inc
                    .data
                    .set_permissions(fs::Permissions::from_mode(inc.mode))
                    .and_then(|()| set_mtime(&inc.data, inc.mtime))
                    .map_err(err);
                if inc.split && meta.is_ok() {
                    // A part is durable, and its checkpoint says it is whole, before the book
                    // hears of it: the last part to verify places the file.
                    meta = Self::checkpoint(&mut inc, true, &mut self.buf);
                    if meta.is_ok() {
                        self.summary.parts_received += 1;
                    }
                }
                match meta {
                    Ok(())
                        if inc.split
                            && !self.parts.verified(
                                &(inc.data_path.clone(), inc.binding),
                                inc.start,
                                end,
                                size,
                            ) =>
                    {
                        return self.replies.push_back(Reply::Done(id, Status::Ok));
                    }
                    Ok(()) => {
                        let Incoming { rel, data, data_path, ckpt_may_exist, dest, _claim, .. } = inc;
                        let ckpts =
                            if ckpt_may_exist { leftover_checkpoints(&data_path) } else { Vec::new() };
                        let placed = Verified { id, rel, data, data_path, ckpts, dest, size, _claim };
                        return self.verified.push(placed);
                    }
                    Err(why) => {
                        self.summary.problems.push(why);
                        Status::Failed
                    }
                }
            }
        };
        // A wrong or failed assembly is dropped with its checkpoint: the next try starts clean.
        // (A part's partial file holds the other parts too: only its checkpoint goes.)
        if !inc.split {
            let _ = fs::remove_file(&inc.data_path);
        }
        let _ = fs::remove_file(&inc.ckpt_path);
        self.replies.push_back(Reply::Done(id, status));
    }

    /// Makes the verified files durable and puts them in place, then answers `Done` for
    /// each. One flush serves the whole batch (`syncfs`: every dirty byte of the tree's
    /// filesystem, so every verified file's data, is on disk before any of them is renamed);
    /// per-file fsyncs cost a journal commit each, which dominates a tree of small files.
    /// The renames themselves are made durable by the flush at the end of the run.
    fn commit_verified(&mut self) {
        if self.verified.is_empty() {
            return;
        }
        let flushed = match self.verified.as_slice() {
            [one] => one.data.sync_all(),
            [first, ..] => rustix::fs::syncfs(&first.data).map_err(std::io::Error::from),
            [] => Ok(()),
        };
        for v in std::mem::take(&mut self.verified) {
            let placed = flushed.as_ref().map_err(|e| std::io::Error::new(e.kind(), e.to_string()));
            match placed.and_then(|()| fs::rename(&v.data_path, &v.dest)) {
                Ok(()) => {
                    self.summary.files_received += 1;
                    self.summary.bytes_written += v.size;
                    self.renamed = true;
                    for ckpt in &v.ckpts {
                        let _ = fs::remove_file(ckpt);
                    }
                    self.replies.push_back(Reply::Done(v.id, Status::Ok));
                }
                Err(e) => {
                    self.summary.problems.push(format!("{}: {e}", v.rel));
                    let _ = fs::remove_file(&v.data_path);
                    for ckpt in &v.ckpts {
                        let _ = fs::remove_file(ckpt);
                    }
                    self.replies.push_back(Reply::Done(v.id, Status::Failed));
                }
            }
        }
    }

    /// The connection broke: keeps what it delivered. Files verified but not yet committed are
    /// flushed and placed, and each file in flight is made durable up to the last byte that
    /// arrived, with its checkpoint, so the next try resumes there rather than at the last
    /// periodic checkpoint (up to `--checkpoint-every` behind). Every byte written came in an
    /// authenticated frame, in order, and the file is still placed only once its whole BLAKE3
    /// matches.
    pub fn save_in_flight(&mut self) {
        if self.opts.dry_run {
            return;
        }
        self.commit_verified();
        for inc in self.files.values_mut() {
            if inc.failed.is_none() && inc.since_ckpt > 0 {
                let _ = Self::checkpoint(inc, true, &mut self.buf);
            }
        }
    }

    /// Makes this run's renames and directory changes durable.
    fn flush_renames(&mut self) -> Result<()> {
        if std::mem::take(&mut self.renamed) {
            let root = File::open(&self.root).map_err(|e| Error::io("open", &self.root, e))?;
            rustix::fs::syncfs(&root).map_err(|e| Error::io("flush", &self.root, e.into()))?;
        }
        Ok(())
    }

    /// After the sender's `Finished`: `--delete`, then directory metadata (children first).
    fn finish(&mut self) -> Result<()> {
        if self.opts.dry_run {
            if self.opts.delete && self.root.is_dir() {
                self.delete_unseen(String::new())?;
            }
            return Ok(());
        }
        self.commit_verified();
        // Deleting from a directory changes its mtime: delete first, then set directories.
        if self.opts.delete {
            self.delete_unseen(String::new())?;
        }
        if !self.opts.defer_dirs {
            apply_dirs(std::mem::take(&mut self.dirs));
        }
        let partial = self.root.join(PARTIAL_DIR);
        let _ = fs::remove_dir(&partial); // only when empty: partials of failed files stay
        if let Some(index) = &self.index {
            index.lock().unwrap_or_else(|e| e.into_inner()).save();
        }
        self.flush_renames()
    }

    fn delete_unseen(&mut self, rel: String) -> Result<()> {
        for (name, meta) in entries(&self.root.join(&rel))? {
            let Some(name) = name.to_str() else { continue };
            let child = if rel.is_empty() { name.to_owned() } else { format!("{rel}/{name}") };
            if !self.seen.contains(&child) {
                if self.opts.dry_run {
                    self.summary.planned.push(format!("delete      {child}"));
                } else {
                    remove(&self.root.join(&child))?;
                }
                self.summary.deleted += 1;
                // The sender hears of it too: the client lists what a push deletes.
                self.replies.push_back(Reply::Deleted(child));
            } else if meta.is_dir() {
                self.delete_unseen(child)?;
            }
        }
        Ok(())
    }
}

impl App<HostReceiver> for RecvApp {
    fn produce(&mut self, ep: &mut HostReceiver, now: u64) -> Result<()> {
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
                    return Err(Error::Usage(format!(
                        "internal error in the sync receiver ({e}); please report it"
                    )));
                }
            }
        }
        Ok(())
    }

    fn handle(&mut self, ep: &mut HostReceiver, now: u64) -> Result<()> {
        let max_body = ep.peer_max_body();
        self.local_max_body = ep.local_max_body();
        while let Some(event) = ep.poll_event(now) {
            match event.map_err(|e| proto("the sender", e))? {
                ReceiverEvent::File(meta) => self.on_file(&meta, max_body)?,
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
        // Once no file is mid-transfer, the verified ones are committed together.
        if self.files.is_empty() {
            self.commit_verified();
        }
        Ok(())
    }

    fn wants_input(&self) -> bool {
        self.replies.len() < MAX_QUEUED_REPLIES
    }

    fn is_done(&self) -> bool {
        self.closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed whole file whose durable prefix `prefix` is still being re-hashed until
    /// `release` is sent.
    fn resumed(dir: &Path, prefix: &[u8], size: u64) -> (Incoming, std::sync::mpsc::Sender<()>) {
        let data_path = dir.join("f.data");
        fs::write(&data_path, prefix).unwrap();
        let data = OpenOptions::new().read(true).write(true).open(&data_path).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let expect = *blake3::hash(prefix).as_bytes();
        let check = data.try_clone().unwrap();
        let len = prefix.len() as u64;
        let prefix = std::thread::spawn(move || {
            wait.recv().unwrap();
            verify_prefix(check, 0, len, expect).join().unwrap()
        });
        let mut data = data;
        data.seek(SeekFrom::Start(len)).unwrap();
        let inc = Incoming {
            rel: "f".into(),
            dest: dir.join("f"),
            size,
            start: 0,
            end: size,
            split: false,
            mtime: (0, 0),
            mode: 0o644,
            data,
            data_path,
            ckpt_path: dir.join("f.ckpt"),
            binding: [7; 32],
            written: len,
            hasher: blake3::Hasher::new(),
            hashed: len,
            prefix: Some(prefix),
            prefix_bad: false,
            old: None,
            since_ckpt: 0,
            ckpt_may_exist: true,
            failed: None,
            _claim: PartBook::claim(&SharedParts::default(), dir.join("f.data"), 0, CLAIM_WAIT),
        };
        (inc, release)
    }

    #[test]
    fn data_written_while_the_prefix_verifies_is_hashed_once_it_settles() {
        let dir = tempfile::tempdir().unwrap();
        let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let (prefix, rest) = bytes.split_at(1_200_000);
        let (mut inc, release) = resumed(dir.path(), prefix, bytes.len() as u64);
        let mut buf = Vec::new();

        // The prefix is still being checked: data lands, unhashed, and no checkpoint is made.
        RecvApp::write(&mut inc, &rest[..700_000]).unwrap();
        assert_eq!((inc.hashed, inc.written), (1_200_000, 1_900_000));
        assert!(!RecvApp::catch_up(&mut inc, false, &mut buf).unwrap());
        RecvApp::checkpoint(&mut inc, false, &mut buf).unwrap();
        assert!(!inc.ckpt_path.exists(), "no checkpoint before the prefix is settled");

        // Once it is, the hash catches up from the partial, then follows the data in line.
        release.send(()).unwrap();
        assert!(RecvApp::catch_up(&mut inc, true, &mut buf).unwrap());
        assert_eq!(inc.hashed, 1_900_000);
        RecvApp::write(&mut inc, &rest[700_000..]).unwrap();
        assert_eq!(inc.hashed, 3_000_000);
        assert_eq!(inc.hasher.finalize(), blake3::hash(&bytes));
        RecvApp::checkpoint(&mut inc, false, &mut buf).unwrap();
        let ckpt = Checkpoint::decode(&fs::read(&inc.ckpt_path).unwrap()).unwrap();
        assert_eq!((ckpt.plain_offset, ckpt.source_hash), (3_000_000, *blake3::hash(&bytes).as_bytes()));
    }

    #[test]
    fn a_prefix_that_no_longer_matches_dooms_the_file_even_after_data_arrived() {
        let dir = tempfile::tempdir().unwrap();
        let (mut inc, release) = resumed(dir.path(), &[5u8; 100_000], 300_000);
        RecvApp::write(&mut inc, &[6u8; 100_000]).unwrap();
        // The durable prefix is damaged before its re-hash reads it.
        std::os::unix::fs::FileExt::write_all_at(&inc.data, &[0u8; 10], 500).unwrap();
        release.send(()).unwrap();
        let mut buf = Vec::new();
        assert!(!RecvApp::catch_up(&mut inc, true, &mut buf).unwrap());
        assert!(inc.prefix_bad);
    }
}
