//! The local destination: a tree on this host's filesystem, written by a local sync, a pull's
//! client or a push's server, through one set of rules.
//!
//! - Every name is resolved under the tree's confined root handle ([`super::super::tree`]).
//! - A file is written into `.keepsync-partial/VID.data` at the tree's root, where `VID` keys
//!   the version being written: its path, size, mtime, the sender's content identity, and
//!   whether it comes whole or in parts of which size. Two versions never share a partial.
//! - Writers are ordered: within a process a connection *claims* the range of a partial it
//!   writes (another claim of an overlapping range is answered [`Fault::Busy`]), and across
//!   processes the process writing a partial holds an `flock` on it. Every change of the
//!   tree's names (creating a directory, placing a file or a link, removing) happens under the
//!   tree's lock ([`Tree::lock`]).
//! - A file is placed only after it verified (the whole file's BLAKE3 over the network; a
//!   stable source locally), its data is durable, and the destination still is what the
//!   writer saw when it began ([`Verified`] remembers it): if another writer placed something
//!   else there meanwhile, this one loses ([`Fault::Superseded`]) and says so; one complete
//!   version wins, never a mix.
//! - Partials nobody finished expire ([`PARTIAL_MAX_AGE`], at most [`MAX_PARTIALS`] kept).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use keepsync_core::Checkpoint;
use keepsync_core::sync::Layout;
use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::super::plan::{in_the_way, replaceable, unchanged};
use super::super::tree::{EntryKind, Stat, Tree, TreeLock, join, remove_in, set_meta, split};
use super::{
    DestOptions, Destination, DirMeta, Ended, Fault, MAX_PARTIALS, Offer, PARTIAL_MAX_AGE, PartialFile,
    Placed, There, VerifiedFile, hash_range, merge_parts, range_digest, range_hasher,
};
use crate::index::{HashIndex, SharedIndex, blake3_of, hash_open};

/// A partial file a process writes, and the connections writing ranges of it.
struct Writer {
    file: Arc<File>,
    /// Ranges claimed, `start..end` (an assembly claims everything).
    claims: Vec<(u64, u64)>,
    /// The partial holds something worth keeping (a checkpoint, or it was placed): not removed
    /// when the last claim goes.
    keep: bool,
}

/// A tree receiving files, shared by the connections (threads) of one process that write
/// into it.
pub struct Store {
    tree: Tree,
    /// The partial directory, once opened (a removed one is found out when creating in it
    /// fails with `ENOENT`, and opened anew).
    partials: Mutex<Option<Arc<OwnedFd>>>,
    writers: Mutex<HashMap<String, Writer>>,
    /// Versions whose resume was counted (a split file's parts resume one by one).
    resumed: Mutex<HashSet<String>>,
    /// Hash their durable prefix in line rather than on a thread beside the transfer
    /// (deterministic, for simulation).
    inline: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("tree", &self.tree.path()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key of one version of one file as written: path, size, mtime, the sender's identity
/// of the content, and how it comes (whole: 0; in parts: their size's log2).
fn version_key(full: &str, size: u64, mtime: (i64, u32), version: &[u8; 16], layout: u8) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"keepsync partial v3");
    h.update(&(full.len() as u64).to_le_bytes());
    h.update(full.as_bytes());
    h.update(&size.to_le_bytes());
    h.update(&mtime.0.to_le_bytes());
    h.update(&mtime.1.to_le_bytes());
    h.update(version);
    h.update(&[layout]);
    hex::encode(&h.finalize().as_bytes()[..16])
}

/// Binds a checkpoint to a version and the range it covers.
/// The partial file it describes is part of the binding (its device and inode): a checkpoint
/// written for a partial that was removed meanwhile (and its writer still held open) never
/// vouches for a new partial of the same name.
fn binding(vid: &str, start: u64, end: u64, data: &File) -> io::Result<[u8; 32]> {
    let file = Stat::of(data)?;
    let mut h = blake3::Hasher::new();
    h.update(b"keepsync partial range v3");
    h.update(vid.as_bytes());
    for n in [start, end, file.dev, file.ino] {
        h.update(&n.to_le_bytes());
    }
    Ok(*h.finalize().as_bytes())
}

/// A connection's hold on a range of a partial file (see [`Store`]); let go when dropped.
pub struct Claim {
    store: Arc<Store>,
    vid: String,
    range: (u64, u64),
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut writers = lock(&self.store.writers);
        let Some(w) = writers.get_mut(&self.vid) else { return };
        if let Some(at) = w.claims.iter().position(|r| *r == self.range) {
            w.claims.swap_remove(at);
        }
        if w.claims.is_empty() {
            let w = writers.remove(&self.vid).expect("looked up above");
            // Nothing durable in it: a file announced and never (or barely) sent leaves nothing.
            // The flock is still held (through `w.file`), so no other process uses it.
            if !w.keep
                && let Ok(Some(dir)) = self.store.partial_dir(false)
            {
                let _ = rustix::fs::unlinkat(&dir, format!("{}.data", self.vid), AtFlags::empty());
            }
        }
    }
}

impl Store {
    /// Receives into the tree at `tree`.
    pub fn new(tree: Tree) -> Arc<Self> {
        Self::with_inline(tree, false)
    }

    /// Receives into `tree`; `inline`: re-hash resumed prefixes in line (simulation).
    pub fn with_inline(tree: Tree, inline: bool) -> Arc<Self> {
        Arc::new(Self {
            tree,
            partials: Mutex::default(),
            writers: Mutex::default(),
            resumed: Mutex::default(),
            inline,
        })
    }

    /// The partial directory (created when `create` and missing); `None` when it is missing.
    fn partial_dir(&self, create: bool) -> io::Result<Option<Arc<OwnedFd>>> {
        let mut cached = lock(&self.partials);
        if let Some(dir) = &*cached {
            return Ok(Some(Arc::clone(dir)));
        }
        let Some(dir) = self.tree.partials(create)? else { return Ok(None) };
        let dir = Arc::new(dir);
        *cached = Some(Arc::clone(&dir));
        Ok(Some(dir))
    }

    /// Forgets the partial directory opened before (it was removed: creating in it failed).
    fn forget_partial_dir(&self) {
        *lock(&self.partials) = None;
    }

    /// The tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Claims `range` of the partial `vid` for one connection: opens (or creates) the partial
    /// file, and `flock`s it for this process if no connection of it holds it yet. `Busy`
    /// when another connection holds an overlapping range, or another process the file.
    fn claim(self: &Arc<Self>, vid: &str, range: (u64, u64)) -> Result<(Claim, Arc<File>, bool), Fault> {
        let mut writers = lock(&self.writers);
        let claim = || Claim { store: Arc::clone(self), vid: vid.to_owned(), range };
        if let Some(w) = writers.get_mut(vid) {
            if w.claims.iter().any(|&(s, e)| s < range.1 && range.0 < e) {
                return Err(Fault::Busy);
            }
            w.claims.push(range);
            return Ok((claim(), Arc::clone(&w.file), false));
        }
        let name = format!("{vid}.data");
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut tries = 0;
        let (fd, created) = loop {
            let dir =
                self.partial_dir(true).map_err(|e| Fault::io("cannot create the partial directory", &e))?;
            let dir = dir.ok_or_else(|| Fault::Refused("the partial directory vanished".into()))?;
            let opened = match rustix::fs::openat(
                &dir,
                &name,
                flags | OFlags::CREATE | OFlags::EXCL,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => Ok((fd, true)),
                Err(Errno::EXIST) => {
                    rustix::fs::openat(&dir, &name, flags, Mode::empty()).map(|fd| (fd, false))
                }
                Err(e) => Err(e),
            };
            match opened {
                Ok(x) => break x,
                // The (empty) partial directory was removed by a writer that finished: again.
                Err(Errno::NOENT) if tries < 3 => {
                    tries += 1;
                    self.forget_partial_dir();
                }
                Err(e) => return Err(Fault::io(format!("cannot create partial {name}"), &e.into())),
            }
        };
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(Fault::Busy),
            Err(e) => return Err(Fault::io(format!("cannot lock partial {name}"), &e.into())),
        }
        let file = Arc::new(File::from(fd));
        writers
            .insert(vid.to_owned(), Writer { file: Arc::clone(&file), claims: vec![range], keep: !created });
        Ok((claim(), file, created))
    }

    /// Notes that `vid`'s partial holds something worth keeping.
    fn keep(&self, vid: &str) {
        if let Some(w) = lock(&self.writers).get_mut(vid) {
            w.keep = true;
        }
    }

    /// Whether this is the first resume counted for `vid`.
    fn first_resume(&self, vid: &str) -> bool {
        let mut resumed = lock(&self.resumed);
        if resumed.len() >= 4096 {
            resumed.clear();
        }
        resumed.insert(vid.to_owned())
    }

    /// Removes partials nobody finished: those untouched for [`PARTIAL_MAX_AGE`], and the
    /// oldest beyond [`MAX_PARTIALS`]. Partials a writer holds (here or in another process)
    /// are left alone.
    pub fn expire(&self) {
        let Ok(Some(dir)) = self.partial_dir(false) else { return };
        let Ok(files) = list_all(&dir) else { return };
        // Each version's files (data, checkpoints, temporaries) and its newest mtime.
        let mut versions: HashMap<String, (Vec<String>, i64)> = HashMap::new();
        for (name, stat) in files {
            let Some(vid) = name.get(..32).filter(|v| v.bytes().all(|b| b.is_ascii_hexdigit())) else {
                continue;
            };
            let v = versions.entry(vid.to_owned()).or_insert((Vec::new(), i64::MIN));
            v.0.push(name.clone());
            v.1 = v.1.max(stat.mtime.0);
        }
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64); // wall clock: partial ages
        let mut by_age: Vec<(i64, String, Vec<String>)> =
            versions.into_iter().map(|(vid, (names, mtime))| (mtime, vid, names)).collect();
        by_age.sort();
        // Oldest first: those past their age go, and more while too many are left.
        let mut left = by_age.len();
        for (mtime, vid, names) in by_age {
            let old = now.saturating_sub(mtime) > PARTIAL_MAX_AGE.as_secs() as i64;
            if !(old || left > MAX_PARTIALS) || lock(&self.writers).contains_key(&vid) {
                continue;
            }
            // Held by a writer of another process: leave it.
            let data = rustix::fs::openat(
                &dir,
                format!("{vid}.data"),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            let held = data
                .as_ref()
                .is_ok_and(|fd| rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive).is_err());
            if held {
                continue;
            }
            for name in names {
                let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
            }
            left -= 1;
        }
    }
}

/// Every name in an open directory with its metadata (our own names included).
fn list_all(dir: &OwnedFd) -> io::Result<Vec<(String, Stat)>> {
    let mut out = Vec::new();
    let mut read = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = read.read() {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else { continue };
        if name == "." || name == ".." {
            continue;
        }
        if let Ok(Some(stat)) = Tree::stat_in(dir, name) {
            out.push((name.to_owned(), stat));
        }
    }
    Ok(out)
}

/// Writes `bytes` as `name` in the partial directory atomically and durably.
fn write_record(dir: &OwnedFd, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    let fd = rustix::fs::openat(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let file = File::from(fd);
    let written = file.write_all_at(bytes, 0).and_then(|()| file.sync_data());
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
        return Err(e);
    }
    rustix::fs::renameat(dir, &tmp, dir, name)?;
    rustix::fs::fsync(dir)?;
    Ok(())
}

/// One sync's view of a receiving tree: the [`Store`] and the subtree (`base`) it writes.
pub struct Dest {
    store: Arc<Store>,
    base: String,
    /// How it works.
    pub opts: DestOptions,
    /// Renames were made since the last flush.
    renamed: bool,
}

impl Dest {
    /// Writes into `base` (a path under the store's root; `""` for the root itself).
    pub fn new(store: Arc<Store>, base: &str, opts: DestOptions) -> Self {
        Self { store, base: base.to_owned(), opts, renamed: false }
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn full(&self, rel: &str) -> String {
        join(&self.base, rel)
    }

    /// What stands at `rel`.
    pub fn there(&self, rel: &str) -> There {
        match self.store.tree.lstat(&self.full(rel)) {
            Ok(None) => There::Nothing,
            Ok(Some(stat)) => There::Entry(stat),
            Err(e) => There::Blocked(format!("{rel}: a directory on the way is not a real directory ({e})")),
        }
    }

    /// Opens the regular file at `rel` (the old copy a delta is made against), confined.
    pub fn open_existing(&self, rel: &str) -> Option<File> {
        self.store.tree.open_read(&self.full(rel)).ok()
    }

    /// Takes the tree's lock.
    fn lock(&self) -> Result<TreeLock, Fault> {
        self.store
            .tree
            .lock()
            .map_err(|e| Fault::io("cannot lock the tree (its .keepsync-partial directory)", &e))
    }

    /// The parent directory of `full`, created as needed (under the lock).
    fn parent(&self, full: &str) -> Result<(OwnedFd, String), Fault> {
        let (dir, name) = split(full);
        // Usually there already: one resolution; else made component by component.
        let fd = match self.store.tree.dir(dir) {
            Ok(fd) => Ok(fd),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.store.tree.make_dirs(dir),
            Err(e) => Err(e),
        };
        let fd = fd.map_err(|e| match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::LOOP | Errno::NOTDIR) => Fault::Refused(format!(
                "{full}: a directory on the way is not a real directory; refusing to write through it"
            )),
            _ => Fault::io(format!("{full}: cannot create its directory"), &e),
        })?;
        Ok((fd, name.to_owned()))
    }

    /// Makes way for an entry of `kind` at `rel`: an entry of another kind there goes only with
    /// `--delete`. Returns what stays there (of a replaceable kind), if anything.
    pub fn clear_way(&mut self, rel: &str, kind: EntryKind) -> Result<Option<Stat>, Fault> {
        match self.there(rel) {
            There::Nothing => Ok(None),
            There::Blocked(why) => Err(Fault::Refused(why)),
            There::Entry(stat) if replaceable(kind, &stat) => Ok(Some(stat)),
            There::Entry(_) if !self.opts.replace => Err(Fault::InTheWay(in_the_way(rel))),
            There::Entry(_) => {
                let full = self.full(rel);
                let _lock = self.lock()?;
                let (parent, name) = self.parent(&full)?;
                remove_in(&parent, &name).map_err(|e| Fault::io(format!("{rel}: cannot remove it"), &e))?;
                Ok(None)
            }
        }
    }

    /// Creates the directory `rel` (and any missing above it); `true` if it was made.
    pub fn make_dir(&mut self, rel: &str) -> Result<bool, Fault> {
        self.clear_way(rel, EntryKind::Dir)?;
        let full = self.full(rel);
        let _lock = self.lock()?;
        let (parent, name) = self.parent(&full)?;
        match rustix::fs::mkdirat(&parent, name.as_str(), Mode::from_raw_mode(0o755)) {
            Ok(()) => Ok(true),
            Err(Errno::EXIST) => match Tree::stat_in(&parent, &name) {
                Ok(Some(s)) if s.kind == EntryKind::Dir => Ok(false),
                _ => Err(Fault::InTheWay(in_the_way(rel))),
            },
            Err(e) => Err(Fault::io(format!("{rel}: cannot create the directory"), &e.into())),
        }
    }

    /// The directory metadata to set once everything is written.
    pub fn dir_meta(&self, rel: &str, mode: u32, mtime: (i64, u32)) -> DirMeta {
        DirMeta { full: self.full(rel), mode, mtime }
    }

    /// Sets `dirs`' modes and mtimes, deepest first (best effort: a directory removed since is
    /// skipped).
    pub fn finish_dirs(&self, mut dirs: Vec<DirMeta>) {
        dirs.sort_by_key(|d| std::cmp::Reverse(d.full.matches('/').count()));
        for d in dirs {
            let _ = self.store.tree.set_dir_meta(&d.full, d.mode, d.mtime);
        }
    }

    /// Makes `rel` a symlink to `target`, replacing a file or link there atomically (the link
    /// is made in the partial directory and renamed into place).
    pub fn place_symlink(&mut self, rel: &str, target: &str) -> Result<(), Fault> {
        self.clear_way(rel, EntryKind::Symlink)?;
        let full = self.full(rel);
        let lock = self.lock()?;
        let (parent, name) = self.parent(&full)?;
        let tmp = format!("{}.link", version_key(&full, 0, (0, 0), &[0; 16], 0xff));
        let dir = lock.partials();
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
        rustix::fs::symlinkat(target, dir, &tmp)
            .map_err(|e| Fault::io(format!("{rel}: cannot create the symlink"), &e.into()))?;
        if let Err(e) = rustix::fs::renameat(dir, &tmp, &parent, name.as_str()) {
            let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
            return Err(Fault::io(format!("{rel}: cannot place the symlink"), &e.into()));
        }
        self.renamed = true;
        Ok(())
    }

    /// The target of the symlink at `rel`, if it is one.
    pub fn link_target(&self, rel: &str) -> Option<String> {
        self.store.tree.read_link(&self.full(rel)).ok().and_then(|t| t.into_string().ok())
    }

    /// Begins writing the regular file (or part) `offer` over `there` (the entry it replaces,
    /// if any): claims its partial, and finds what an earlier try left durable of it.
    /// `hashed`: the bytes are verified by their BLAKE3 at the end (network), else not
    /// (local: the bytes come straight from the source, which the caller checks).
    pub fn begin(&mut self, offer: &Offer<'_>, there: Option<Stat>, hashed: bool) -> Result<Partial, Fault> {
        let full = self.full(offer.rel);
        let (layout_key, part, range) = match offer.layout {
            Layout::Whole => (0, false, (0, offer.size)),
            Layout::Part { log2, index } => {
                let range = Layout::part_range(offer.size, log2, index)
                    .ok_or_else(|| Fault::Refused(format!("{}: a part outside the file", offer.rel)))?;
                (log2, true, range)
            }
            Layout::Assemble { .. } => return Err(Fault::Refused("an assembly carries no data".into())),
        };
        let vid = version_key(&full, offer.size, offer.mtime, &offer.version, layout_key);
        let (claim, data, created) = self.store.claim(&vid, range)?;
        let ckpt_name = match offer.layout {
            Layout::Part { index, .. } => format!("{vid}.{index}.ckpt"),
            _ => format!("{vid}.ckpt"),
        };
        let io = |what: &str, e: io::Error| Fault::io(format!("{}: {what}", offer.rel), &e);
        // What an earlier try made durable, if it wrote this very version and range (a partial
        // just created has no checkpoint to read).
        let claimed = match (created, hashed) {
            (false, true) => {
                let bound = binding(&vid, range.0, range.1, &data)
                    .map_err(|e| io("cannot read the partial file", e))?;
                let dir = self.store.partial_dir(false).ok().flatten();
                dir.and_then(|dir| claimed_prefix(&dir, &data, &ckpt_name, &bound, range.0))
            }
            _ => None,
        };
        let ckpt_may_exist = !created;
        let (done, prefix) = match claimed {
            Some((done, expect)) => {
                self.store.keep(&vid);
                let copy = data.try_clone().map_err(|e| io("cannot read the partial file", e))?;
                (done, Some(PrefixCheck::start(copy, range.0, done, expect, part, self.store.inline)))
            }
            None => (0, None),
        };
        // A whole file's partial holds nothing past its durable prefix worth keeping.
        if !part && !created {
            data.set_len(done).map_err(|e| io("cannot trim the partial file", e))?;
        }
        let resumed = done > 0 && (!part || self.store.first_resume(&vid));
        let old = there.filter(|s| s.kind == EntryKind::File).and_then(|_| self.open_existing(offer.rel));
        let expect = there;
        let written = range.0 + done;
        Ok(Partial {
            rel: offer.rel.to_owned(),
            full,
            vid,
            size: offer.size,
            start: range.0,
            end: range.1,
            part,
            mode: offer.mode,
            mtime: offer.mtime,
            data,
            ckpt_name,
            range_binding: None,
            ckpt_may_exist,
            written,
            resume: written,
            hasher: hashed.then(|| range_hasher(range.0, part)),
            hashed: written,
            prefix,
            prefix_bad: false,
            old,
            since_ckpt: 0,
            expect,
            resumed,
            checkpoint_every: self.opts.checkpoint_every,
            store: Arc::clone(&self.store),
            claim: Some(claim),
        })
    }

    /// An assembly of the parts of `2^log2` bytes of `offer`'s file, which must hash to `want`
    /// (the whole file's BLAKE3): verified from the chaining values its parts' checkpoints
    /// recorded, each checked against the sender's when the part ended.
    pub fn assemble(
        &mut self,
        offer: &Offer<'_>,
        log2: u8,
        want: [u8; 32],
        there: Option<Stat>,
    ) -> Result<Verified, Fault> {
        let full = self.full(offer.rel);
        let vid = version_key(&full, offer.size, offer.mtime, &offer.version, log2);
        let (claim, data, created) = self.store.claim(&vid, (0, u64::MAX))?;
        let missing = |why: &str| Fault::Mismatch(format!("{}: {why}; it will be sent again", offer.rel));
        if created {
            return Err(missing("none of its parts are here"));
        }
        let dir =
            self.store.partial_dir(false).ok().flatten().ok_or_else(|| missing("its parts are gone"))?;
        let parts = Layout::parts(offer.size, log2);
        let mut cvs = Vec::with_capacity(parts as usize);
        let mut ckpts = Vec::with_capacity(parts as usize + 1);
        for index in 0..parts {
            let (start, end) =
                Layout::part_range(offer.size, log2, index as u32).ok_or_else(|| missing("bad layout"))?;
            let name = format!("{vid}.{index}.ckpt");
            let ckpt = read_checkpoint(&dir, &name).ok_or_else(|| missing("a part is missing"))?;
            let bound = binding(&vid, start, end, &data).ok();
            if Some(ckpt.header_mac) != bound || ckpt.plain_offset != end - start {
                return Err(missing("a part is incomplete"));
            }
            cvs.push(ckpt.source_hash);
            ckpts.push(name);
        }
        if merge_parts(offer.size, log2, &cvs) != Some(want) {
            return Err(missing("its parts do not add up to the file the sender has"));
        }
        let io = |what: &str, e: io::Error| Fault::io(format!("{}: {what}", offer.rel), &e);
        if data.metadata().map_err(|e| io("cannot read the partial file", e))?.len() != offer.size {
            data.set_len(offer.size).map_err(|e| io("cannot trim the partial file", e))?;
        }
        set_meta(data.as_fd(), offer.mode, offer.mtime)
            .map_err(|e| io("cannot set its mode and mtime", e))?;
        Ok(Verified {
            rel: offer.rel.to_owned(),
            full,
            vid,
            data,
            size: offer.size,
            mtime: offer.mtime,
            expect: there,
            ckpts,
            written: 0,
            resumed: false,
            claim: Some(claim),
        })
    }

    /// Places `batch`: makes the data durable (one filesystem flush for several files), then,
    /// under the tree's lock, renames each into place unless another writer placed something
    /// else there since it began. Returns each file's outcome, in order.
    pub fn commit(&mut self, batch: Vec<Verified>) -> Vec<(Verified, Result<Placed, Fault>)> {
        if batch.is_empty() {
            return Vec::new();
        }
        let started = std::time::Instant::now();
        let flushed = match batch.as_slice() {
            [one] => one.data.sync_data(),
            [first, ..] => rustix::fs::syncfs(first.data.as_fd()).map_err(io::Error::from),
            [] => Ok(()),
        };
        if let Err(e) = flushed {
            let fault = Fault::io("cannot make the received files durable", &e);
            return batch.into_iter().map(|v| (v, Err(fault.clone()))).collect();
        }
        let lock = match self.lock() {
            Ok(l) => l,
            Err(f) => return batch.into_iter().map(|v| (v, Err(f.clone()))).collect(),
        };
        let mut out = Vec::with_capacity(batch.len());
        // Directories of this batch, opened once: under the lock no writer changes them.
        let mut parents: HashMap<String, Arc<OwnedFd>> = HashMap::new();
        for v in batch {
            let placed = self.place(&lock, &v, &mut parents);
            // Placed or dropped, the partial is done with. Once renamed away its name may be
            // taken by another writer's new partial: the claim must not remove that.
            let dir = lock.partials();
            if placed != Ok(Placed::Written) {
                let _ = rustix::fs::unlinkat(dir, format!("{}.data", v.vid), AtFlags::empty());
            }
            self.store.keep(&v.vid);
            for ckpt in &v.ckpts {
                let _ = rustix::fs::unlinkat(dir, ckpt.as_str(), AtFlags::empty());
            }
            out.push((v, placed));
        }
        crate::output::add_commit_time(started.elapsed());
        out
    }

    fn place(
        &mut self,
        lock: &TreeLock,
        v: &Verified,
        parents: &mut HashMap<String, Arc<OwnedFd>>,
    ) -> Result<Placed, Fault> {
        let (dir, name) = split(&v.full);
        let parent = match parents.get(dir) {
            Some(fd) => Arc::clone(fd),
            None => {
                let fd = Arc::new(self.parent(&v.full)?.0);
                parents.insert(dir.to_owned(), Arc::clone(&fd));
                fd
            }
        };
        let name = name.to_owned();
        let now = Tree::stat_in(&parent, &name)
            .map_err(|e| Fault::io(format!("{}: cannot look at it", v.rel), &e))?;
        let as_expected = match (&v.expect, &now) {
            (None, None) => true,
            (Some(was), Some(is)) => was.same_version(is),
            _ => false,
        };
        if !as_expected {
            // Someone else wrote there meanwhile: fine if it is this very version.
            return match now {
                Some(is) if unchanged(v.size, v.mtime, None, &is, || None) => Ok(Placed::AlreadyThere),
                _ => Err(Fault::Superseded),
            };
        }
        rustix::fs::renameat(lock.partials(), format!("{}.data", v.vid), &parent, name.as_str())
            .map_err(|e| Fault::io(format!("{}: cannot rename it into place", v.rel), &e.into()))?;
        self.renamed = true;
        Ok(Placed::Written)
    }

    /// Removes every entry under the subtree the sender did not list (`seen` holds what it
    /// listed), deepest entries last; with `dry_run`, only lists them. Returns what was (or
    /// would be) removed.
    pub fn delete_unseen(&mut self, seen: &HashSet<String>, dry_run: bool) -> Result<Vec<String>, Fault> {
        let mut gone = Vec::new();
        let mut leftovers = Vec::new();
        let mut todo = vec![String::new()];
        while let Some(rel) = todo.pop() {
            let full = self.full(&rel);
            if let Ok(names) = super::super::tree::leftovers(&self.store.tree, &full) {
                leftovers
                    .extend(names.into_iter().filter_map(|n| n.into_string().ok()).map(|n| join(&full, &n)));
            }
            let listed = match self.store.tree.list(&full) {
                Ok(l) => l,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    return Err(Fault::io(
                        format!("{}: cannot list it", self.store.tree.display(&full).display()),
                        &e,
                    ));
                }
            };
            for (name, stat) in listed {
                let Some(name) = name.to_str() else { continue };
                let child = join(&rel, name);
                if !seen.contains(&child) {
                    gone.push(child);
                } else if stat.kind == EntryKind::Dir {
                    todo.push(child);
                }
            }
        }
        gone.sort();
        if !dry_run && (!gone.is_empty() || !leftovers.is_empty()) {
            let _lock = self.lock()?;
            // What earlier versions of KeepSync left beside the files they wrote.
            for full in &leftovers {
                let _ = self.store.tree.remove_all(full);
            }
            for rel in &gone {
                let full = self.full(rel);
                let (dir, name) = split(&full);
                let dir = self
                    .store
                    .tree
                    .dir(dir)
                    .map_err(|e| Fault::io(format!("{rel}: cannot remove it"), &e))?;
                remove_in(&dir, name).map_err(|e| Fault::io(format!("{rel}: cannot remove it"), &e))?;
            }
        }
        Ok(gone)
    }

    /// Makes this sync's renames durable (one filesystem flush), and removes the partial
    /// directory when nothing is left in it.
    pub fn finish(&mut self) -> Result<(), Fault> {
        if std::mem::take(&mut self.renamed) {
            let root = self.store.tree.dir("").map_err(|e| Fault::io("cannot open the tree", &e))?;
            rustix::fs::syncfs(&root).map_err(|e| Fault::io("cannot flush the tree", &e.into()))?;
        }
        self.store.tree.remove_partials_if_empty();
        self.store.forget_partial_dir();
        Ok(())
    }
}

/// The durable bytes from `start` on (of the file, or a part) that the checkpoint `name`
/// claims and the digest it recorded of them, when it names this very version and range and
/// the partial file is long enough. The bytes themselves are checked apart ([`PrefixCheck`]).
fn claimed_prefix(
    dir: &OwnedFd,
    data: &File,
    name: &str,
    binding: &[u8; 32],
    start: u64,
) -> Option<(u64, [u8; 32])> {
    let ckpt = read_checkpoint(dir, name)?;
    let long_enough = data.metadata().ok()?.len() >= start + ckpt.plain_offset;
    (&ckpt.header_mac == binding && long_enough && ckpt.plain_offset > 0)
        .then_some((ckpt.plain_offset, ckpt.source_hash))
}

fn read_checkpoint(dir: &OwnedFd, name: &str) -> Option<Checkpoint> {
    let fd =
        rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .ok()?;
    let mut bytes = [0u8; Checkpoint::MAX_ENCODED_LEN];
    let n = rustix::io::read(&fd, &mut bytes).ok()?;
    Checkpoint::decode(&bytes[..n]).ok()
}

/// Re-hashing a resumed partial's durable prefix: on a thread beside the transfer, or done in
/// line.
enum PrefixCheck {
    Running(std::thread::JoinHandle<Option<blake3::Hasher>>),
    Settled(Option<Box<blake3::Hasher>>),
}

impl PrefixCheck {
    fn start(file: File, start: u64, len: u64, expect: [u8; 32], part: bool, inline: bool) -> Self {
        let check = move || {
            let mut hasher = range_hasher(start, part);
            hash_range(&mut hasher, &file, (start, start + len), &mut vec![0u8; 1 << 20]).ok()?;
            (range_digest(&hasher, part) == expect).then_some(hasher)
        };
        if inline { Self::Settled(check().map(Box::new)) } else { Self::Running(std::thread::spawn(check)) }
    }

    fn is_settled(&self) -> bool {
        match self {
            Self::Running(h) => h.is_finished(),
            Self::Settled(_) => true,
        }
    }

    fn join(self) -> Option<blake3::Hasher> {
        match self {
            Self::Running(h) => h.join().ok().flatten(),
            Self::Settled(h) => h.map(|h| *h),
        }
    }
}

/// A file (or part) being written into its partial file.
pub struct Partial {
    rel: String,
    full: String,
    vid: String,
    size: u64,
    start: u64,
    end: u64,
    part: bool,
    mode: u32,
    mtime: (i64, u32),
    data: Arc<File>,
    ckpt_name: String,
    /// The checkpoint's binding, once one is written.
    range_binding: Option<[u8; 32]>,
    /// A checkpoint of this range may exist (an earlier try's, or this one's).
    ckpt_may_exist: bool,
    /// Where the next byte goes.
    written: u64,
    /// Where this try started (after the durable prefix).
    resume: u64,
    /// The BLAKE3 of `start..hashed` (network transfers only).
    hasher: Option<blake3::Hasher>,
    hashed: u64,
    /// The durable prefix being re-hashed; data written meanwhile is hashed once it settles.
    prefix: Option<PrefixCheck>,
    /// The durable prefix did not match its checkpoint: the file cannot verify.
    prefix_bad: bool,
    old: Option<File>,
    since_ckpt: u64,
    expect: Option<Stat>,
    resumed: bool,
    checkpoint_every: u64,
    store: Arc<Store>,
    /// Held until the entry is done (a whole file's, until it is placed).
    claim: Option<Claim>,
}

impl Partial {
    /// The path under the subtree.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// Where the sender should start: after the durable prefix an earlier try left.
    pub fn resume_from(&self) -> u64 {
        self.resume
    }

    /// The durable prefix of an earlier try was found (and is being checked).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The range this entry carries.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// The old copy a delta is made against, if there is one.
    pub fn old_copy(&mut self) -> Option<&mut File> {
        self.old.as_mut()
    }

    /// Bytes written so far by this try.
    pub fn written_now(&self) -> u64 {
        self.written - self.resume
    }

    /// Brings the hash up to `written`: once the durable prefix is settled (waiting for it only
    /// with `wait`), the bytes written meanwhile are read back and hashed. `false` while the
    /// prefix is not settled, or when it did not verify.
    fn catch_up(&mut self, wait: bool, buf: &mut Vec<u8>) -> Result<bool, Fault> {
        if let Some(check) = self.prefix.take_if(|c| wait || c.is_settled()) {
            match check.join() {
                Some(h) => self.hasher = Some(h),
                None => self.prefix_bad = true,
            }
        }
        if self.prefix.is_some() || self.prefix_bad {
            return Ok(false);
        }
        if let Some(hasher) = &mut self.hasher
            && self.hashed < self.written
        {
            buf.resize(1 << 20, 0);
            hash_range(hasher, &self.data, (self.hashed, self.written), buf)
                .map_err(|e| Fault::io(format!("{}: cannot read back the partial file", self.rel), &e))?;
            self.hashed = self.written;
        }
        Ok(true)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Fault> {
        self.data
            .write_all_at(bytes, self.written)
            .map_err(|e| Fault::io(format!("{}: cannot write", self.rel), &e))?;
        if self.prefix.is_none()
            && self.hashed == self.written
            && let Some(h) = &mut self.hasher
        {
            h.update(bytes);
            self.hashed += bytes.len() as u64;
        }
        self.written += bytes.len() as u64;
        self.since_ckpt += bytes.len() as u64;
        Ok(())
    }

    /// Copies the old copy's bytes up to `until` (blocks the sender found unchanged).
    fn fill_from_old(&mut self, until: u64, buf: &mut Vec<u8>) -> Result<(), Fault> {
        if self.written >= until {
            return Ok(());
        }
        if self.old.is_none() {
            // The sender skipped blocks there is no old copy of, or stopped before the end (its
            // file vanished or changed while it read it).
            return Err(Fault::Mismatch(format!("{}: data is missing; it will be sent again", self.rel)));
        }
        buf.resize(1 << 20, 0);
        while self.written < until {
            let n = ((until - self.written) as usize).min(buf.len());
            let old = self.old.as_ref().expect("checked above");
            old.read_exact_at(&mut buf[..n], self.written).map_err(|_| {
                Fault::Mismatch(format!("{}: the old copy changed during the sync", self.rel))
            })?;
            let chunk = std::mem::take(buf);
            let wrote = self.write(&chunk[..n]);
            *buf = chunk;
            wrote?;
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` (at or after where the last write ended; the gap is filled
    /// from the old copy), checkpointing every `checkpoint_every` bytes.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8], buf: &mut Vec<u8>) -> Result<(), Fault> {
        self.catch_up(false, buf)?;
        self.fill_from_old(offset, buf)?;
        self.write(bytes)?;
        if self.since_ckpt >= self.checkpoint_every {
            self.checkpoint(false, buf)?;
        }
        Ok(())
    }

    /// Makes the file durable up to `written` and records that in its checkpoint (put off,
    /// unless `wait`, while its durable prefix is still being re-hashed).
    fn checkpoint(&mut self, wait: bool, buf: &mut Vec<u8>) -> Result<(), Fault> {
        if self.hasher.is_none() || !self.catch_up(wait, buf)? || self.written == self.start {
            return Ok(());
        }
        self.data.sync_data().map_err(|e| Fault::io(format!("{}: cannot flush", self.rel), &e))?;
        let bound = match self.range_binding {
            Some(b) => b,
            None => binding(&self.vid, self.start, self.end, &self.data)
                .map_err(|e| Fault::io(format!("{}: cannot read the partial file", self.rel), &e))?,
        };
        self.range_binding = Some(bound);
        let hasher = self.hasher.as_ref().expect("checked above");
        let ckpt = Checkpoint {
            header_mac: bound,
            chunks_done: 0,
            plain_offset: self.written - self.start,
            sealed_offset: self.written - self.start,
            source_hash: range_digest(hasher, self.part),
        };
        let mut bytes = [0u8; Checkpoint::MAX_ENCODED_LEN];
        let bytes = ckpt.encode(&mut bytes).map_err(|e| Fault::Mismatch(e.to_string()))?;
        self.store.keep(&self.vid);
        self.ckpt_may_exist = true;
        let mut written = Err(io::Error::from(io::ErrorKind::NotFound));
        for _ in 0..2 {
            let dir = self.store.partial_dir(true).ok().flatten();
            let dir = dir.ok_or_else(|| Fault::Refused("the partial directory vanished".into()))?;
            written = write_record(&dir, &self.ckpt_name, bytes);
            match &written {
                // The (empty) partial directory was removed and made anew meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.store.forget_partial_dir(),
                _ => break,
            }
        }
        written.map_err(|e| Fault::io(format!("{}: cannot write its checkpoint", self.rel), &e))?;
        self.since_ckpt = 0;
        Ok(())
    }

    /// The connection broke: keeps what arrived (durable, with its checkpoint) so the next try
    /// resumes there. Every byte written came in order from an authenticated frame.
    pub fn save(&mut self, buf: &mut Vec<u8>) {
        if self.since_ckpt > 0 {
            let _ = self.checkpoint(true, buf);
        }
    }

    /// All data is in: fills the rest from the old copy and checks the bytes against `want`
    /// (the sender's BLAKE3; `None` when the caller vouches for them). A whole file is ready to
    /// place; a part is made durable with a checkpoint that records it whole.
    pub fn end(mut self, want: Option<[u8; 32]>, buf: &mut Vec<u8>) -> Result<Ended<Verified>, Fault> {
        let end = self.end;
        let checked = self.catch_up(true, buf).and_then(|_| self.fill_from_old(end, buf));
        if let Err(f) = checked {
            self.drop_partial();
            return Err(f);
        }
        let good = match (&self.hasher, want) {
            (Some(h), Some(want)) => !self.prefix_bad && range_digest(h, self.part) == want,
            (None, None) => true,
            _ => false,
        };
        if !good || self.written != end {
            self.drop_partial();
            return Err(Fault::Mismatch(format!(
                "{}: the received bytes did not verify; it will be sent again",
                self.rel
            )));
        }
        let io = |rel: &str, what: &str, e: io::Error| Fault::io(format!("{rel}: {what}"), &e);
        if self.part {
            self.since_ckpt = self.since_ckpt.max(1);
            self.checkpoint(true, buf)?;
            return Ok(Ended::Part { resumed: self.resumed });
        }
        set_meta(self.data.as_fd(), self.mode, self.mtime)
            .map_err(|e| io(&self.rel, "cannot set its mode and mtime", e))?;
        let ckpts = if self.ckpt_may_exist { vec![self.ckpt_name.clone()] } else { Vec::new() };
        let written = self.written - self.resume;
        Ok(Ended::Whole(Box::new(Verified {
            rel: self.rel.clone(),
            full: self.full.clone(),
            vid: self.vid.clone(),
            data: Arc::clone(&self.data),
            size: self.size,
            mtime: self.mtime,
            expect: self.expect,
            ckpts,
            written,
            resumed: self.resumed,
            claim: self.claim.take(),
        })))
    }

    /// A failed or wrong try: a whole file's partial and checkpoint go (the next try starts
    /// clean); a part's checkpoint only (its partial holds the other parts).
    fn drop_partial(&mut self) {
        if let Ok(Some(dir)) = self.store.partial_dir(false) {
            let _ = rustix::fs::unlinkat(&dir, self.ckpt_name.as_str(), AtFlags::empty());
            if !self.part {
                let _ = rustix::fs::unlinkat(&dir, format!("{}.data", self.vid), AtFlags::empty());
                // The name is gone: the claim must not remove a new partial of that name.
                self.store.keep(&self.vid);
            }
        }
    }
}

/// A file whose bytes verified, waiting to be placed ([`Dest::commit`]).
pub struct Verified {
    /// Path under the subtree.
    pub rel: String,
    full: String,
    vid: String,
    data: Arc<File>,
    size: u64,
    mtime: (i64, u32),
    /// What stood at the destination when the writer began (placed only over that).
    expect: Option<Stat>,
    ckpts: Vec<String>,
    /// Bytes this try wrote.
    pub written: u64,
    /// It resumed what an earlier try left.
    pub resumed: bool,
    /// Held until the file is placed or dropped.
    #[allow(dead_code)] // held for its Drop
    claim: Option<Claim>,
}

impl Verified {
    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Destination for Dest {
    type Partial = Partial;
    type Verified = Verified;

    fn options(&self) -> &DestOptions {
        &self.opts
    }

    fn there(&self, rel: &str) -> There {
        Dest::there(self, rel)
    }

    fn clear_way(&mut self, rel: &str, kind: EntryKind) -> Result<Option<Stat>, Fault> {
        Dest::clear_way(self, rel, kind)
    }

    fn make_dir(&mut self, rel: &str) -> Result<bool, Fault> {
        Dest::make_dir(self, rel)
    }

    fn dir_meta(&self, rel: &str, mode: u32, mtime: (i64, u32)) -> DirMeta {
        Dest::dir_meta(self, rel, mode, mtime)
    }

    fn finish_dirs(&self, dirs: Vec<DirMeta>) {
        Dest::finish_dirs(self, dirs)
    }

    fn link_target(&self, rel: &str) -> Option<String> {
        Dest::link_target(self, rel)
    }

    fn place_symlink(&mut self, rel: &str, target: &str) -> Result<(), Fault> {
        Dest::place_symlink(self, rel, target)
    }

    fn set_mode(&self, rel: &str, mode: u32) {
        if let Some(f) = self.open_existing(rel) {
            let _ = rustix::fs::fchmod(&f, Mode::from_raw_mode(mode & 0o7777));
        }
    }

    fn content_hash(&self, rel: &str, index: Option<&SharedIndex>) -> Option<[u8; 32]> {
        let file = self.open_existing(rel)?;
        match index {
            Some(index) => hash_open(index, &self.full(rel), &file).ok(),
            None => blake3_of(&file).ok(),
        }
    }

    fn hash_index(&self) -> SharedIndex {
        HashIndex::shared(self.store.tree.path())
    }

    fn begin(&mut self, offer: &Offer<'_>, there: Option<Stat>, hashed: bool) -> Result<Partial, Fault> {
        Dest::begin(self, offer, there, hashed)
    }

    fn assemble(
        &mut self,
        offer: &Offer<'_>,
        log2: u8,
        want: [u8; 32],
        there: Option<Stat>,
    ) -> Result<Verified, Fault> {
        Dest::assemble(self, offer, log2, want, there)
    }

    fn commit(&mut self, batch: Vec<Verified>) -> Vec<(Verified, Result<Placed, Fault>)> {
        Dest::commit(self, batch)
    }

    fn delete_unseen(&mut self, seen: &HashSet<String>, dry_run: bool) -> Result<Vec<String>, Fault> {
        Dest::delete_unseen(self, seen, dry_run)
    }

    fn finish(&mut self) -> Result<(), Fault> {
        Dest::finish(self)
    }
}

impl PartialFile for Partial {
    type Verified = Verified;

    fn rel(&self) -> &str {
        &self.rel
    }

    fn resume_from(&self) -> u64 {
        self.resume
    }

    fn resumed(&self) -> bool {
        self.resumed
    }

    fn has_old_copy(&self) -> bool {
        self.old.is_some()
    }

    fn old_block_hashes(&mut self, block_log2: u8, start: u64, end: u64) -> Option<io::Result<Vec<u8>>> {
        self.old.as_ref().map(|old| block_hashes(old, block_log2, start, end))
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8], buf: &mut Vec<u8>) -> Result<(), Fault> {
        Partial::write_at(self, offset, bytes, buf)
    }

    fn save(&mut self, buf: &mut Vec<u8>) {
        Partial::save(self, buf)
    }

    fn end(self, want: Option<[u8; 32]>, buf: &mut Vec<u8>) -> Result<Ended<Verified>, Fault> {
        Partial::end(self, want, buf)
    }
}

impl VerifiedFile for Verified {
    fn rel(&self) -> &str {
        &self.rel
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn written(&self) -> u64 {
        self.written
    }
}

/// BLAKE3 of each `2^block_log2`-byte block of `file` from `start` (block-aligned) up to `end`
/// or the end of the file.
fn block_hashes(file: &File, block_log2: u8, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut block = vec![0u8; 1 << block_log2];
    let mut at = start;
    while at < end {
        let want = ((end - at) as usize).min(block.len());
        let mut n = 0;
        while n < want {
            match file.read_at(&mut block[n..want], at + n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(blake3::hash(&block[..n]).as_bytes());
        if n < want {
            break;
        }
        at += n as u64;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(rel: &str, size: u64) -> Offer<'_> {
        Offer { rel, size, mtime: (1_700_000_000, 5), mode: 0o640, version: [1; 16], layout: Layout::Whole }
    }

    #[test]
    fn a_file_is_placed_only_over_what_its_writer_saw() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_inline(Tree::open(dir.path()).unwrap(), true);
        let mut a = Dest::new(Arc::clone(&store), "", DestOptions::default());
        let mut b = Dest::new(Arc::clone(&store), "", DestOptions::default());
        let mut buf = Vec::new();
        // Each version its own mtime: the same size and mtime would make them "unchanged".
        let write = |d: &mut Dest, bytes: &[u8], version: u8, buf: &mut Vec<u8>| {
            let o = Offer {
                version: [version; 16],
                mtime: (i64::from(version), 0),
                ..offer("x", bytes.len() as u64)
            };
            let mut p = d.begin(&o, None, true).unwrap();
            p.write_at(0, bytes, buf).unwrap();
            match p.end(Some(*blake3::hash(bytes).as_bytes()), buf).unwrap() {
                Ended::Whole(v) => *v,
                Ended::Part { .. } => unreachable!(),
            }
        };
        // Two writers of different versions of x: the first to place wins, the second is told.
        let va = write(&mut a, b"version a", 1, &mut buf);
        let vb = write(&mut b, b"version b", 2, &mut buf);
        assert!(matches!(a.commit(vec![va])[0].1, Ok(Placed::Written)));
        assert!(matches!(b.commit(vec![vb])[0].1, Err(Fault::Superseded)));
        assert_eq!(std::fs::read(dir.path().join("x")).unwrap(), b"version a");
        // The same version twice: the second finds it there.
        let vc = write(&mut b, b"version c", 3, &mut buf);
        let There::Entry(stat) = a.there("x") else { panic!() };
        let o = Offer { version: [3; 16], mtime: (3, 0), ..offer("x", 9) };
        assert!(matches!(a.begin(&o, Some(stat), true), Err(Fault::Busy)), "claimed by the other writer");
        assert!(
            matches!(b.commit(vec![vc])[0].1, Err(Fault::Superseded)),
            "b began over nothing, x exists now"
        );
        a.finish().unwrap();
        b.finish().unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no partial left");
    }

    #[test]
    fn a_broken_try_resumes_from_its_checkpoint_and_a_damaged_prefix_fails() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::with_inline(Tree::open(dir.path()).unwrap(), true);
        let mut d = Dest::new(
            Arc::clone(&store),
            "",
            DestOptions { checkpoint_every: 1000, ..DestOptions::default() },
        );
        let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 253) as u8).collect();
        let want = *blake3::hash(&bytes).as_bytes();
        let o = offer("f", bytes.len() as u64);
        let mut buf = Vec::new();
        let mut p = d.begin(&o, None, true).unwrap();
        p.write_at(0, &bytes[..2500], &mut buf).unwrap();
        p.save(&mut buf);
        drop(p);
        let mut p = d.begin(&o, None, true).unwrap();
        assert_eq!(p.resume_from(), 2500);
        assert!(p.resumed());
        p.write_at(2500, &bytes[2500..], &mut buf).unwrap();
        let Ended::Whole(v) = p.end(Some(want), &mut buf).unwrap() else { panic!() };
        assert!(matches!(d.commit(vec![*v])[0].1, Ok(Placed::Written)));
        assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), bytes);

        // A new version: broken at 3000, then its durable prefix damaged on disk.
        let o = Offer { version: [2; 16], ..offer("g", bytes.len() as u64) };
        let mut p = d.begin(&o, None, true).unwrap();
        p.write_at(0, &bytes[..3000], &mut buf).unwrap();
        p.save(&mut buf);
        drop(p);
        let data = std::fs::read_dir(dir.path().join(".keepsync-partial"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "data"))
            .unwrap();
        std::fs::OpenOptions::new().write(true).open(&data).unwrap().write_all_at(b"XX", 10).unwrap();
        let mut p = d.begin(&o, None, true).unwrap();
        assert_eq!(p.resume_from(), 3000);
        p.write_at(3000, &bytes[3000..], &mut buf).unwrap();
        assert!(matches!(p.end(Some(want), &mut buf), Err(Fault::Mismatch(_))));
        // It starts over clean.
        let p = d.begin(&o, None, true).unwrap();
        assert_eq!(p.resume_from(), 0);
        drop(p);
        d.finish().unwrap();
        assert!(!dir.path().join(".keepsync-partial").exists(), "an empty, unclaimed partial is not kept");
    }

    #[test]
    fn unfinished_partials_expire_by_age_and_count_but_never_under_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(Tree::open(dir.path()).unwrap());
        let partials = dir.path().join(crate::sync::tree::PARTIAL_DIR);
        std::fs::create_dir(&partials).unwrap();
        let now = SystemTime::now();
        let day = std::time::Duration::from_secs(24 * 3600);
        // 300 versions, one a minute apart; the oldest ten also 8 days old.
        let name = |i: usize| format!("{i:032x}");
        for i in 0..300 {
            for ext in ["data", "ckpt"] {
                let f = File::create(partials.join(format!("{}.{ext}", name(i)))).unwrap();
                let age =
                    if i < 10 { 8 * day } else { std::time::Duration::from_secs(60 * (300 - i as u64)) };
                f.set_modified(now - age).unwrap();
            }
        }
        // Version 0, the oldest, is held by a writer of another process.
        let held = File::open(partials.join(format!("{}.data", name(0)))).unwrap();
        rustix::fs::flock(&held, FlockOperation::LockExclusive).unwrap();
        store.expire();
        let left: HashSet<String> = std::fs::read_dir(&partials)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy()[..32].to_owned())
            .collect();
        assert!(left.contains(&name(0)), "a held partial is never removed");
        assert!((1..10).all(|i| !left.contains(&name(i))), "8 days old: gone");
        assert_eq!(left.len(), MAX_PARTIALS, "at most MAX_PARTIALS kept (the held one counts)");
        // The oldest beyond the held one and the expired went: 0 held, 1..=44 removed.
        assert!(left.contains(&name(299)) && left.contains(&name(45)) && !left.contains(&name(44)));
    }
}
