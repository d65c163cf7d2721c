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
use std::sync::Arc;

use keepsync_core::sync::Layout;
use rustix::fs::{AtFlags, Mode};
use rustix::io::Errno;

use super::super::filter::{Filter, Scope};
use super::super::plan::{in_the_way, replaceable, unchanged};
use super::super::tree::{EntryKind, Stat, Tree, TreeLock, join, remove_in, set_meta, split};
use super::{DestOptions, Destination, DirMeta, Fault, Offer, Placed, There, merge_parts, range_hasher};
use crate::index::{HashIndex, SharedIndex, blake3_of, hash_open};

mod partial;
mod store;

pub use partial::{Partial, Verified};
use partial::{PrefixCheck, claimed_prefix, read_checkpoint};
pub use store::{Claim, Store};
use store::{binding, version_key};

/// One sync's view of a receiving tree: the [`Store`] and the subtree (`base`) it writes.
pub struct Dest {
    store: Arc<Store>,
    base: String,
    /// How it works.
    pub opts: DestOptions,
    /// Renames were made since the last flush.
    renamed: bool,
    /// The directory the last lookup resolved, kept for the next (files of one directory come
    /// together). Only lookups use it: a lookup through a directory replaced meanwhile sees
    /// the old one, and the placement, which resolves its directory afresh under the tree's
    /// lock, then finds the destination changed and places nothing.
    looked_in: std::cell::RefCell<Option<(String, OwnedFd)>>,
}

/// What a `--delete` sweep keeps: what the sender listed, and what the filter excludes
/// (`None`: `--delete-excluded`).
struct Sweep<'a> {
    seen: &'a HashSet<String>,
    keep: Option<&'a Filter>,
}

impl Dest {
    /// Writes into `base` (a path under the store's root; `""` for the root itself).
    pub fn new(store: Arc<Store>, base: &str, opts: DestOptions) -> Self {
        Self { store, base: base.to_owned(), opts, renamed: false, looked_in: Default::default() }
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
        let full = self.full(rel);
        let (dir, name) = split(&full);
        let mut looked_in = self.looked_in.borrow_mut();
        if looked_in.as_ref().is_none_or(|(d, _)| d != dir) {
            *looked_in = match self.store.tree.dir(dir) {
                Ok(fd) => Some((dir.to_owned(), fd)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return There::Nothing,
                Err(e) => {
                    return There::Blocked(format!(
                        "{rel}: a directory on the way is not a real directory ({e})"
                    ));
                }
            };
        }
        let (_, fd) = looked_in.as_ref().expect("set above");
        match Tree::stat_in(fd, name) {
            Ok(None) => There::Nothing,
            Ok(Some(stat)) => There::Entry(stat),
            Err(e) => There::Blocked(format!("{rel}: cannot look at it ({e})")),
        }
    }

    /// Forgets the directory the last lookup resolved (this end changed names under it).
    fn forget_lookups(&self) {
        self.looked_in.borrow_mut().take();
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
                self.forget_lookups();
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
        if self.opts.append_only && !matches!(Tree::stat_in(&parent, &name), Ok(None)) {
            return Err(Fault::AppendOnly(rel.to_owned()));
        }
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
        // Under the tree's lock: no other keepsync writer can put something there between
        // this look and the rename.
        if self.opts.append_only && now.is_some() {
            return Err(Fault::AppendOnly(v.rel.clone()));
        }
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
    /// listed), but those `keep` excludes (with everything under them: an excluded directory
    /// is not looked into); with `dry_run`, only lists them. Returns what was (or would be)
    /// removed. A `.keepsyncignore` here that cannot be read stops it before anything is
    /// removed.
    pub fn delete_unseen(
        &mut self,
        seen: &HashSet<String>,
        keep: Option<&Filter>,
        dry_run: bool,
    ) -> Result<Vec<String>, Fault> {
        if self.opts.append_only {
            return Err(Fault::Refused("--delete: this client may only add entries (append-only)".into()));
        }
        let mut gone = Vec::new();
        let mut leftovers = Vec::new();
        let sweep = Sweep { seen, keep };
        self.sweep(&sweep, "", None, &mut gone, &mut leftovers)?;
        gone.sort();
        if !dry_run && (!gone.is_empty() || !leftovers.is_empty()) {
            let _lock = self.lock()?;
            self.forget_lookups();
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

    /// Looks through the directory `rel` (in the filter `parent` leaves, with its own
    /// `.keepsyncignore`) for what `--delete` removes: the entries the sender did not list and
    /// the filter does not exclude. An unlisted directory goes whole, unless something under
    /// it is kept: then it stays, and what is not kept under it goes (rsync keeps such a
    /// directory the same way). Returns whether anything under `rel` stays.
    fn sweep(
        &self,
        sweep: &Sweep<'_>,
        rel: &str,
        parent: Option<&Scope>,
        gone: &mut Vec<String>,
        leftovers: &mut Vec<String>,
    ) -> Result<bool, Fault> {
        let tree = &self.store.tree;
        let full = self.full(rel);
        if let Ok(names) = super::super::tree::leftovers(tree, &full) {
            leftovers.extend(names.into_iter().filter_map(|n| n.into_string().ok()).map(|n| join(&full, &n)));
        }
        let listed = match tree.list(&full) {
            Ok(l) => l,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => {
                return Err(Fault::io(format!("{}: cannot list it", tree.display(&full).display()), &e));
            }
        };
        let scope = match (sweep.keep, parent) {
            (None, _) => None,
            (Some(filter), None) => Some(filter.root(&listed, tree, &full)),
            (Some(_), Some(parent)) => Some(parent.enter(rel, &listed, tree, &full)),
        }
        .transpose()
        .map_err(|e| Fault::Refused(format!("{e}; nothing was deleted")))?;
        let mut stays = false;
        for (name, stat) in &listed {
            // A name that is not UTF-8 cannot be listed or named; it goes only with its
            // directory.
            let Some(name) = name.to_str() else { continue };
            let child = join(rel, name);
            let is_dir = stat.kind == EntryKind::Dir;
            if scope.as_ref().is_some_and(|s| s.excludes(&child, is_dir)) {
                // Excluded: kept, with everything under it.
                stays = true;
            } else if sweep.seen.contains(&child) {
                stays = true;
                if is_dir {
                    self.sweep(sweep, &child, scope.as_ref(), gone, leftovers)?;
                }
            } else if is_dir && scope.is_some() {
                let mut under = Vec::new();
                if self.sweep(sweep, &child, scope.as_ref(), &mut under, leftovers)? {
                    stays = true;
                    gone.append(&mut under);
                } else {
                    gone.push(child);
                }
            } else {
                gone.push(child);
            }
        }
        Ok(stays)
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

    fn delete_unseen(
        &mut self,
        seen: &HashSet<String>,
        keep: Option<&Filter>,
        dry_run: bool,
    ) -> Result<Vec<String>, Fault> {
        Dest::delete_unseen(self, seen, keep, dry_run)
    }

    fn finish(&mut self) -> Result<(), Fault> {
        Dest::finish(self)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt;
    use std::time::SystemTime;

    use rustix::fs::FlockOperation;

    use super::super::{Ended, MAX_PARTIALS};
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
        let now = SystemTime::now(); // wall clock: partial ages are file mtimes
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
