//! `keepsync sync SRC DEST` between local paths: the same walker, rules and destination as a
//! network sync ([`Dest`]), with the bytes going straight from a source file to its partial.
//!
//! A copied file is placed only if its source stayed the same version while it was read
//! (same inode, size, mtime and ctime before and after): one that changes is tried once more,
//! then reported; one that vanishes is reported and skipped (exit 24), and the rest of the
//! tree completes either way.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use indicatif::ProgressBar;
use keepsync_core::sync::{Kind, Layout};

use super::EmptyDir;
use super::dest::{
    Dest, DestOptions, Destination, Ended, Fault, Offer, PartialFile, Placed, Store, There, VerifiedFile,
};
use super::filter::Filter;
use super::plan::{Action, in_the_way, unchanged};
use super::summary::{Cause, Problem, Summary};
use super::tree::{EntryKind, Stat, Tree};
use super::walk::{Entry, Listing, walk};
use crate::error::{Error, Result};
use crate::index::blake3_of;
use crate::net::RateLimiter;

/// Files copied before their batch is placed (see [`Dest::commit`]).
const BATCH_FILES: usize = 256;

/// Bytes copied before their batch is placed: bounds what a crash can cost again.
const BATCH_BYTES: u64 = 256 << 20;

/// Settings of one sync.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Remove DEST entries that SRC does not have (but those the filter excludes).
    pub delete: bool,
    /// With `delete`, remove the DEST entries the filter excludes too.
    pub delete_excluded: bool,
    /// What is left out (`--include`, `--exclude`, `.keepsyncignore` files).
    pub filter: Filter,
    /// Only report what would change.
    pub dry_run: bool,
    /// Compare file contents (BLAKE3) instead of size and modification time.
    pub checksum: bool,
    /// Bandwidth limit on the bytes copied (`--limit-rate`); `None`: unlimited.
    pub limit: Option<Arc<RateLimiter>>,
}

/// `path` made absolute through its nearest existing ancestor (which is canonicalized, so
/// symlinks and `..` in the existing part are resolved); the missing rest is appended.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = fs::canonicalize(existing) {
            return Some(rest.iter().rev().fold(real, |acc, part| acc.join(part)));
        }
        rest.push(existing.file_name()?.to_owned());
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
}

/// Refuses SRC/DEST pairs that cannot be mirrored safely.
fn check_roots(src: &Path, dst: &Path) -> Result<()> {
    let s = fs::symlink_metadata(src).map_err(|e| Error::io("open", src, e))?;
    if !s.is_dir() && !fs::metadata(src).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Usage(format!(
            "{} is not a directory: sync mirrors a directory tree",
            src.display()
        )));
    }
    if let Ok(d) = fs::metadata(dst)
        && !d.is_dir()
    {
        return Err(Error::Usage(format!("{} exists and is not a directory", dst.display())));
    }
    // Also when DEST does not exist yet: it would be created inside SRC.
    if let (Some(s), Some(d)) = (resolve(src), resolve(dst))
        && (d.starts_with(&s) || s.starts_with(&d))
    {
        return Err(Error::Usage(format!(
            "{} and {} overlap: DEST may not be SRC, inside SRC, or contain it",
            src.display(),
            dst.display()
        )));
    }
    Ok(())
}

/// Why one copy did not go through.
enum CopyFault {
    Vanished,
    Changed,
    Dest(Fault),
}

/// A local sync writing into a [`Destination`].
struct Local<'a, D: Destination> {
    src: Tree,
    dest: D,
    opts: &'a SyncOptions,
    bar: &'a ProgressBar,
    summary: Summary,
    batch: Vec<D::Verified>,
    batch_bytes: u64,
    buf: Vec<u8>,
    scratch: Vec<u8>,
}

impl<D: Destination> Local<'_, D> {
    fn problem(&mut self, p: Problem) {
        self.summary.problem(p);
    }

    fn fault(&mut self, rel: &str, f: Fault) {
        let why = f.to_string();
        let shown = if why.starts_with(rel) { why } else { format!("{rel}: {why}") };
        self.problem(Problem::new("", shown));
    }

    /// Creates the directory `e`; `false` when it cannot be (reported), so its subtree is
    /// skipped.
    fn dir(&mut self, e: &Entry) -> bool {
        if self.opts.dry_run {
            return match self.dest.there(&e.rel) {
                There::Entry(s) if s.kind == EntryKind::Dir => true,
                There::Blocked(why) => {
                    self.fault(&e.rel, Fault::Refused(why));
                    false
                }
                There::Entry(_) if !self.opts.delete => {
                    self.fault(&e.rel, Fault::InTheWay(in_the_way(&e.rel)));
                    false
                }
                _ => {
                    self.summary.dirs_created += 1;
                    self.summary.planned.push(Action::CreateDir { path: e.rel.clone() });
                    true
                }
            };
        }
        match self.dest.make_dir(&e.rel) {
            Ok(created) => {
                self.summary.dirs_created += u64::from(created);
                true
            }
            Err(f) => {
                self.fault(&e.rel, f);
                false
            }
        }
    }

    fn symlink(&mut self, e: &Entry) {
        if self.dest.link_target(&e.rel).as_deref() == Some(e.target.as_str()) {
            return;
        }
        if self.opts.dry_run {
            match self.dest.there(&e.rel) {
                There::Blocked(why) => self.fault(&e.rel, Fault::Refused(why)),
                There::Entry(s) if s.kind == EntryKind::Dir && !self.opts.delete => {
                    self.fault(&e.rel, Fault::InTheWay(in_the_way(&e.rel)))
                }
                _ => {
                    self.summary.symlinks += 1;
                    self.summary
                        .planned
                        .push(Action::Symlink { path: e.rel.clone(), target: e.target.clone() });
                }
            }
            return;
        }
        match self.dest.place_symlink(&e.rel, &e.target) {
            Ok(()) => self.summary.symlinks += 1,
            Err(f) => self.fault(&e.rel, f),
        }
    }

    fn hash_src(&self, rel: &str) -> Option<[u8; 32]> {
        self.src.open_read(rel).ok().and_then(|f| blake3_of(&f).ok())
    }

    fn file(&mut self, e: &Entry) {
        let rel = e.rel.as_str();
        let there = match self.dest.there(rel) {
            There::Nothing => None,
            There::Blocked(why) => return self.fault(rel, Fault::Refused(why)),
            There::Entry(s) if s.kind == EntryKind::Dir => {
                if !self.opts.delete {
                    return self.fault(rel, Fault::InTheWay(in_the_way(rel)));
                }
                if !self.opts.dry_run
                    && let Err(f) = self.dest.clear_way(rel, EntryKind::File)
                {
                    return self.fault(rel, f);
                }
                None
            }
            There::Entry(s) => Some(s),
        };
        if let Some(s) = there.filter(|s| s.kind == EntryKind::File) {
            let hash = if self.opts.checksum { self.hash_src(rel) } else { None };
            let same = (hash.is_some() || !self.opts.checksum)
                && unchanged(e.size(), e.stat.mtime, hash, &s, || self.dest.content_hash(rel, None));
            if same {
                if s.mode != e.stat.mode && !self.opts.dry_run {
                    self.dest.set_mode(rel, e.stat.mode);
                }
                self.summary.files_skipped += 1;
                self.bar.inc(e.size());
                return;
            }
        }
        if self.opts.dry_run {
            self.summary.files_transferred += 1;
            self.summary.planned.push(Action::CopyFile { path: e.rel.clone(), bytes: e.size() });
            return;
        }
        let mut entry = e.clone();
        for attempt in 0..2 {
            if attempt > 0 {
                // Changed while read: once more, as it is now.
                entry = match entry.relisted(&self.src) {
                    Ok(Some(again)) if again.kind == Kind::File => again,
                    Ok(Some(_)) => {
                        return self.problem(Problem::new(
                            rel,
                            "became another kind of entry while it was read; run the sync again",
                        ));
                    }
                    Ok(None) => {
                        return self.problem(Problem { path: rel.to_owned(), cause: Cause::Vanished });
                    }
                    Err(err) => return self.problem(Problem::new(rel, format!("cannot read it: {err}"))),
                };
                self.bar.inc_length(entry.size());
            }
            match self.copy(&entry, there) {
                Ok(v) => return self.add_to_batch(v),
                Err(CopyFault::Vanished) => {
                    return self.problem(Problem { path: rel.to_owned(), cause: Cause::Vanished });
                }
                Err(CopyFault::Dest(f)) => return self.fault(rel, f),
                Err(CopyFault::Changed) => {}
            }
        }
        self.problem(Problem { path: rel.to_owned(), cause: Cause::KeptChanging });
    }

    /// Copies the source file `e` into its partial, checking it stays the version listed.
    fn copy(&mut self, e: &Entry, there: Option<Stat>) -> std::result::Result<D::Verified, CopyFault> {
        let (src, opened) = match self.src.open_read_stat(&e.rel) {
            Ok(f) => f,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(CopyFault::Vanished),
            Err(err) => return Err(CopyFault::Dest(Fault::io(format!("{}: cannot read it", e.rel), &err))),
        };
        let same = |f: &fs::File| Stat::of(f).is_ok_and(|s| s.same_version(&e.stat));
        if !opened.same_version(&e.stat) {
            return Err(CopyFault::Changed);
        }
        let offer = Offer {
            rel: &e.rel,
            size: e.size(),
            mtime: e.stat.mtime,
            mode: e.stat.mode,
            version: e.version(),
            layout: Layout::Whole,
        };
        let mut partial = self.dest.begin(&offer, there, false).map_err(CopyFault::Dest)?;
        self.buf.resize(1 << 18, 0);
        let mut at = 0u64;
        while at < e.size() {
            let mut want = ((e.size() - at) as usize).min(self.buf.len());
            if let Some(limit) = &self.opts.limit {
                want = limit.acquire(want);
            }
            let read = src.read_at(&mut self.buf[..want], at);
            if let Some(limit) = &self.opts.limit {
                limit.refund(want - *read.as_ref().unwrap_or(&0));
            }
            match read {
                Ok(0) => return Err(CopyFault::Changed),
                Ok(n) => {
                    partial.write_at(at, &self.buf[..n], &mut self.scratch).map_err(CopyFault::Dest)?;
                    at += n as u64;
                    self.bar.inc(n as u64);
                }
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => {
                    return Err(CopyFault::Dest(Fault::io(format!("{}: cannot read it", e.rel), &err)));
                }
            }
        }
        if !same(&src) {
            return Err(CopyFault::Changed);
        }
        match partial.end(None, &mut self.scratch).map_err(CopyFault::Dest)? {
            Ended::Whole(v) => Ok(*v),
            Ended::Part { .. } => unreachable!("a local copy is whole"),
        }
    }

    fn add_to_batch(&mut self, v: D::Verified) {
        self.batch_bytes += v.size();
        self.batch.push(v);
        if self.batch.len() >= BATCH_FILES || self.batch_bytes >= BATCH_BYTES {
            self.commit();
        }
    }

    fn commit(&mut self) {
        self.batch_bytes = 0;
        let batch = std::mem::take(&mut self.batch);
        for (v, placed) in self.dest.commit(batch) {
            match placed {
                Ok(Placed::Written) => {
                    self.summary.files_transferred += 1;
                    self.summary.bytes_sent += v.size();
                    self.summary.data_bytes += v.size();
                }
                Ok(Placed::AlreadyThere) => self.summary.files_skipped += 1,
                Err(f) => self.fault(v.rel(), f),
            }
        }
    }
}

/// Mirrors `src` into `dst`.
pub fn sync_local(src: &Path, dst: &Path, opts: &SyncOptions, bar: &ProgressBar) -> Result<Summary> {
    sync_listed(src, dst, opts, bar, walk)
}

/// Mirrors `src` into `dst` as `list` lists it (a test lists, then changes the tree, as a
/// user working beside a sync does).
pub fn sync_listed(
    src: &Path,
    dst: &Path,
    opts: &SyncOptions,
    bar: &ProgressBar,
    list: impl FnOnce(&Tree, &Filter, &mut Vec<Problem>) -> Result<Listing>,
) -> Result<Summary> {
    let started = Instant::now();
    check_roots(src, dst)?;
    let src_tree = Tree::open(src).map_err(|e| Error::io("open", src, e))?;
    let mut summary =
        Summary { direction: "local", dry_run: opts.dry_run, connections: 0, ..Summary::default() };
    let mut problems = Vec::new();
    let Listing { entries, excluded } = list(&src_tree, &opts.filter, &mut problems)?;
    summary.excluded = Some(excluded);
    problems.into_iter().for_each(|p| summary.problem(p));
    // A dry run into a DEST that does not exist yet compares with an empty tree.
    let empty = (opts.dry_run && !dst.exists()).then(EmptyDir::new).transpose()?;
    if empty.is_none() && !dst.exists() {
        fs::create_dir_all(dst).map_err(|e| Error::io("create", dst, e))?;
    }
    let root = empty.as_ref().map_or(dst, |e| e.path());
    let store = Store::new(Tree::open(root).map_err(|e| Error::io("open", dst, e))?);
    if !opts.dry_run {
        store.expire();
    }
    let dest_opts = DestOptions {
        delete: opts.delete,
        replace: opts.delete,
        dry_run: opts.dry_run,
        checkpoint_every: u64::MAX,
        append_only: false,
    };
    let dest = Dest::new(Arc::clone(&store), "", dest_opts);
    bar.set_length(entries.iter().map(Entry::size).sum());
    let mut run = Local {
        src: src_tree,
        dest,
        opts,
        bar,
        summary,
        batch: Vec::new(),
        batch_bytes: 0,
        buf: Vec::new(),
        scratch: Vec::new(),
    };
    let mut seen = HashSet::with_capacity(entries.len());
    let mut dirs = Vec::new();
    // The subtree of a directory that could not be made is skipped (it was reported).
    let mut skip: Option<String> = None;
    for e in &entries {
        seen.insert(e.rel.clone());
        if let Some(s) = &skip {
            if e.rel.starts_with(s.as_str()) && e.rel.as_bytes().get(s.len()) == Some(&b'/') {
                continue;
            }
            skip = None;
        }
        match e.kind {
            Kind::Dir => {
                if run.dir(e) {
                    dirs.push(run.dest.dir_meta(&e.rel, e.stat.mode, e.stat.mtime));
                } else {
                    skip = Some(e.rel.clone());
                }
            }
            Kind::Symlink => run.symlink(e),
            Kind::File => run.file(e),
        }
    }
    run.commit();
    if opts.delete {
        let keep = (!opts.delete_excluded).then_some(&opts.filter);
        match run.dest.delete_unseen(&seen, keep, opts.dry_run) {
            Ok(gone) => {
                run.summary.deleted += gone.len() as u64;
                if opts.dry_run {
                    run.summary.planned.extend(gone.into_iter().map(|path| Action::Delete { path }));
                }
            }
            Err(f) => run.problem(Problem::new("", format!("--delete stopped: {f}"))),
        }
    }
    if !opts.dry_run {
        // The root last: writing into a directory changes its mtime.
        if let Ok(root) = Stat::of(run.src.dir("").map_err(|e| Error::io("read", src, e))?) {
            dirs.push(run.dest.dir_meta("", root.mode, root.mtime));
        }
        run.dest.finish_dirs(dirs);
        if let Err(f) = run.dest.finish() {
            run.problem(Problem::new("", f.to_string()));
        }
    }
    let mut summary = run.summary;
    summary.finish();
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}
