//! Where files land: the receiving end's storage, behind the [`Destination`] trait.
//!
//! A network receiver ([`super::recv`]) and a local sync ([`super::local`]) write through it
//! the same way: what stands at a path, making way, directories and links, a file written
//! into a partial and verified, placed in batches only over what its writer saw, deleting what
//! the sender did not list. [`local::Dest`] is a tree on this host's filesystem; an object
//! store can join as another implementation.

pub mod local;

use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode as TreeMode, merge_subtrees_non_root, merge_subtrees_root,
};
use keepsync_core::sync::{Layout, Status};
use rustix::io::Errno;

use super::filter::Filter;
use super::tree::{EntryKind, Stat};
use crate::index::SharedIndex;

pub use local::{Claim, Dest, Partial, Store, Verified};

/// Partials untouched for this long are removed when a sync next writes into the tree: an
/// interrupted transfer resumes within a week.
pub const PARTIAL_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Unfinished versions kept in one tree at most; beyond, the oldest are removed first.
pub const MAX_PARTIALS: usize = 256;

/// Bytes written between two durable checkpoints of one file, by default.
pub const CHECKPOINT_EVERY: u64 = 16 << 20;

/// Why something could not be written at the receiving end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The path is not allowed, or leads through something that is not a real directory.
    Refused(String),
    /// An entry of another kind stands there (and there is no `--delete`).
    InTheWay(String),
    /// The filesystem refused a write.
    Io {
        /// What failed, in words, with the OS error.
        what: String,
        /// The error's class, which the sender is told.
        class: IoClass,
    },
    /// Another writer is writing this version now.
    Busy,
    /// Another writer placed a different version at the path meanwhile.
    Superseded,
    /// The bytes do not hash to what the sender sent (or parts are missing).
    Mismatch(String),
    /// An entry exists there and the writer may only add entries (append-only).
    AppendOnly(String),
}

/// Classes of write failures a sender can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoClass {
    /// The filesystem or quota is full.
    NoSpace,
    /// The filesystem is read-only.
    ReadOnly,
    /// Permission denied.
    Denied,
    /// Anything else.
    Other,
}

impl Fault {
    /// A write failure: `what` failed with `e`.
    pub fn io(what: impl std::fmt::Display, e: &io::Error) -> Self {
        let class = match e.raw_os_error().map(Errno::from_raw_os_error) {
            Some(Errno::NOSPC | Errno::DQUOT) => IoClass::NoSpace,
            Some(Errno::ROFS) => IoClass::ReadOnly,
            Some(Errno::ACCESS | Errno::PERM) => IoClass::Denied,
            _ => IoClass::Other,
        };
        Self::Io { what: format!("{what}: {e}"), class }
    }

    /// The status a sender is told.
    pub fn status(&self) -> Status {
        match self {
            Self::Refused(_) => Status::Rejected,
            Self::InTheWay(_) => Status::Failed,
            Self::Io { class: IoClass::NoSpace, .. } => Status::NoSpace,
            Self::Io { class: IoClass::ReadOnly, .. } => Status::ReadOnly,
            Self::Io { class: IoClass::Denied, .. } => Status::Denied,
            Self::Io { .. } => Status::Failed,
            Self::Busy => Status::Busy,
            Self::Superseded => Status::Superseded,
            Self::Mismatch(_) => Status::HashMismatch,
            Self::AppendOnly(_) => Status::Denied,
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Refused(why) | Self::InTheWay(why) | Self::Mismatch(why) => f.write_str(why),
            Self::AppendOnly(rel) => {
                write!(f, "{rel}: exists, and this client may only add entries (append-only): kept as it was")
            }
            Self::Io { what, .. } => f.write_str(what),
            Self::Busy => f.write_str("another writer is writing this file now"),
            Self::Superseded => f.write_str("another writer placed a different version there meanwhile"),
        }
    }
}

/// What a sender is told when the receiver cannot write, in words for the user.
pub fn status_message(status: Status) -> &'static str {
    match status {
        Status::Ok => "written",
        Status::Rejected => "refused by the receiver (the path is not allowed there)",
        Status::Failed => "the receiver could not write it (see its log)",
        Status::HashMismatch => "did not verify at the receiver",
        Status::NoSpace => "the receiver's disk (or quota) is full: free space there and run the sync again",
        Status::ReadOnly => "the receiver's filesystem is read-only",
        Status::Denied => {
            "the receiver may not write there (permission denied, or an append-only client changing what exists)"
        }
        Status::Busy => "another sync is writing this file at the receiver now: run the sync again later",
        Status::Superseded => {
            "another writer placed a different version there meanwhile; this one was not placed over it \
             (run the sync again to replace it)"
        }
    }
}

/// What the receiving side finds at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum There {
    /// Nothing.
    Nothing,
    /// An entry.
    Entry(Stat),
    /// A directory on the way is not a real directory (a symlink or a file stands there).
    Blocked(String),
}

/// How a receiving end works.
#[derive(Debug, Clone, Copy)]
pub struct DestOptions {
    /// Remove entries the sender did not list (after the whole listing came).
    pub delete: bool,
    /// Remove entries of another kind in the way of what comes.
    pub replace: bool,
    /// Change nothing (a dry run).
    pub dry_run: bool,
    /// Bytes between durable checkpoints of a file.
    pub checkpoint_every: u64,
    /// Add entries only: never change, replace or remove one that exists (an append-only
    /// client of `serve --clients`).
    pub append_only: bool,
}

impl Default for DestOptions {
    fn default() -> Self {
        Self {
            delete: false,
            replace: false,
            dry_run: false,
            checkpoint_every: CHECKPOINT_EVERY,
            append_only: false,
        }
    }
}

/// An entry offered for writing, as far as the destination needs it.
#[derive(Debug, Clone, Copy)]
pub struct Offer<'a> {
    /// Path under the subtree.
    pub rel: &'a str,
    /// File size.
    pub size: u64,
    /// Modification time.
    pub mtime: (i64, u32),
    /// Permission bits.
    pub mode: u32,
    /// The sender's identity of the content.
    pub version: [u8; 16],
    /// Whole, a part, or an assembly.
    pub layout: Layout,
}

/// A directory's mode and mtime, set once everything under it is written (writing an entry
/// into a directory changes its mtime).
#[derive(Debug, Clone)]
pub struct DirMeta {
    /// Path under the store's root.
    full: String,
    mode: u32,
    mtime: (i64, u32),
}

/// How placing a verified file went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// Renamed into place.
    Written,
    /// Another writer placed this very version meanwhile; ours was dropped.
    AlreadyThere,
}

/// A part or file whose data is all in.
pub enum Ended<V> {
    /// A part: verified and durable, waiting for its assembly.
    Part {
        /// It resumed what an earlier try left.
        resumed: bool,
    },
    /// A whole file, ready to place.
    Whole(Box<V>),
}

/// The receiving end's storage.
pub trait Destination {
    /// A file (or part) being written.
    type Partial: PartialFile<Verified = Self::Verified>;
    /// A file whose bytes verified, waiting to be placed.
    type Verified: VerifiedFile;

    /// How it works.
    fn options(&self) -> &DestOptions;
    /// What stands at `rel`.
    fn there(&self, rel: &str) -> There;
    /// Makes way for an entry of `kind` at `rel`: an entry of another kind there goes only
    /// with `replace`. Returns what stays there (of a replaceable kind), if anything.
    fn clear_way(&mut self, rel: &str, kind: EntryKind) -> Result<Option<Stat>, Fault>;
    /// Creates the directory `rel` (and any missing above it); `true` if it was made.
    fn make_dir(&mut self, rel: &str) -> Result<bool, Fault>;
    /// The directory metadata to set once everything is written.
    fn dir_meta(&self, rel: &str, mode: u32, mtime: (i64, u32)) -> DirMeta;
    /// Sets `dirs`' modes and mtimes, deepest first (best effort).
    fn finish_dirs(&self, dirs: Vec<DirMeta>);
    /// The target of the symlink at `rel`, if it is one.
    fn link_target(&self, rel: &str) -> Option<String>;
    /// Makes `rel` a symlink to `target`, replacing a file or link there atomically.
    fn place_symlink(&mut self, rel: &str, target: &str) -> Result<(), Fault>;
    /// Sets the mode of the file at `rel` (an unchanged file whose mode changed).
    fn set_mode(&self, rel: &str, mode: u32);
    /// The BLAKE3 of the file at `rel` (through `index` when given), for `--checksum`.
    fn content_hash(&self, rel: &str, index: Option<&SharedIndex>) -> Option<[u8; 32]>;
    /// A hash index for this destination's files.
    fn hash_index(&self) -> SharedIndex;
    /// Begins writing the regular file (or part) `offer` over `there` (what stands at its
    /// path, if anything). `hashed`: the bytes are verified by their BLAKE3 at the end.
    fn begin(&mut self, offer: &Offer<'_>, there: Option<Stat>, hashed: bool)
    -> Result<Self::Partial, Fault>;
    /// The assembly of the parts of `2^log2` bytes of `offer`'s file, which must hash to
    /// `want`, the whole file's BLAKE3.
    fn assemble(
        &mut self,
        offer: &Offer<'_>,
        log2: u8,
        want: [u8; 32],
        there: Option<Stat>,
    ) -> Result<Self::Verified, Fault>;
    /// Places `batch` (durable first), each only over what its writer saw.
    fn commit(&mut self, batch: Vec<Self::Verified>) -> Vec<(Self::Verified, Result<Placed, Fault>)>;
    /// Removes (with `dry_run`, lists) every entry the sender did not list (`seen`), but
    /// those `keep` excludes, with everything under them: its rules and this tree's
    /// `.keepsyncignore` files (`None`, for `--delete-excluded`: those go too).
    fn delete_unseen(
        &mut self,
        seen: &HashSet<String>,
        keep: Option<&Filter>,
        dry_run: bool,
    ) -> Result<Vec<String>, Fault>;
    /// Makes this sync's changes durable and leaves nothing of its own behind.
    fn finish(&mut self) -> Result<(), Fault>;
}

/// A file (or part) being written at a [`Destination`].
pub trait PartialFile {
    /// What it becomes once its bytes verified.
    type Verified;
    /// The path under the destination's tree.
    fn rel(&self) -> &str;
    /// Where the sender should start: after what an earlier try left durable.
    fn resume_from(&self) -> u64;
    /// An earlier try's durable prefix was found.
    fn resumed(&self) -> bool;
    /// There is an old copy to compare blocks with (and fill skipped blocks from).
    fn has_old_copy(&self) -> bool;
    /// The BLAKE3 of each `2^block_log2`-byte block of the old copy from `start` up to `end`
    /// (`None`: there is no old copy).
    fn old_block_hashes(&mut self, block_log2: u8, start: u64, end: u64) -> Option<io::Result<Vec<u8>>>;
    /// Writes `bytes` at `offset` (at or after the last write; the gap comes from the old copy).
    fn write_at(&mut self, offset: u64, bytes: &[u8], buf: &mut Vec<u8>) -> Result<(), Fault>;
    /// The connection broke: keeps what arrived, durable, to resume from.
    fn save(&mut self, buf: &mut Vec<u8>);
    /// All data is in: checks it against `want` (`None`: the caller vouches for the bytes).
    fn end(self, want: Option<[u8; 32]>, buf: &mut Vec<u8>) -> Result<Ended<Self::Verified>, Fault>;
}

/// A file whose bytes verified at a [`Destination`], waiting to be placed.
pub trait VerifiedFile {
    /// The path under the destination's tree.
    fn rel(&self) -> &str;
    /// The file's size.
    fn size(&self) -> u64;
    /// Bytes this try wrote.
    fn written(&self) -> u64;
}

/// A hasher for the range starting at `start`: of a whole file, or of a part's subtree of the
/// file's BLAKE3 tree.
pub fn range_hasher(start: u64, part: bool) -> blake3::Hasher {
    let mut h = blake3::Hasher::new();
    if part {
        h.set_input_offset(start);
    }
    h
}

/// A range hasher's digest: the root hash of a whole file, the chaining value of a part.
pub fn range_digest(h: &blake3::Hasher, part: bool) -> [u8; 32] {
    if part { h.finalize_non_root() } else { *h.finalize().as_bytes() }
}

/// The BLAKE3 of a whole `size`-byte file from the chaining values of its parts of
/// `2^log2` bytes, in order (`None` if there are not exactly as many as it has parts).
pub fn merge_parts(size: u64, log2: u8, cvs: &[ChainingValue]) -> Option<[u8; 32]> {
    fn merge(cvs: &[ChainingValue], root: bool) -> ChainingValue {
        if cvs.len() == 1 {
            return cvs[0];
        }
        // BLAKE3 splits an input at the largest power of two below its length; parts are of
        // one power-of-two size, so that is a power of two of parts.
        let left = (cvs.len() - 1).next_power_of_two().max(1);
        let left = if left >= cvs.len() { left / 2 } else { left };
        let (l, r) = (merge(&cvs[..left], false), merge(&cvs[left..], false));
        if root {
            *merge_subtrees_root(&l, &r, TreeMode::Hash).as_bytes()
        } else {
            merge_subtrees_non_root(&l, &r, TreeMode::Hash)
        }
    }
    (cvs.len() as u64 == Layout::parts(size, log2) && cvs.len() >= 2).then(|| merge(cvs, true))
}

/// Feeds bytes `from..to` of `file` to `hasher` by positioned reads, `buf.len()` at a time.
pub fn hash_range(
    hasher: &mut blake3::Hasher,
    file: &File,
    (from, to): (u64, u64),
    buf: &mut [u8],
) -> io::Result<()> {
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(buf.len());
        file.read_exact_at(&mut buf[..n], at)?;
        hasher.update(&buf[..n]);
        at += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_chaining_values_merge_into_the_whole_files_hash() {
        for (size, log2) in
            [(3 << 20, 20u8), ((4 << 20) + 5, 20), (5 << 20, 21), ((9 << 20) - 1, 20), (2 << 20, 20)]
        {
            let data: Vec<u8> = (0..size as u64).map(|i| (i * 31 % 251) as u8).collect();
            let mut cvs = Vec::new();
            for index in 0..Layout::parts(size as u64, log2) {
                let (s, e) = Layout::part_range(size as u64, log2, index as u32).unwrap();
                let mut h = range_hasher(s, true);
                h.update(&data[s as usize..e as usize]);
                cvs.push(range_digest(&h, true));
            }
            assert_eq!(
                merge_parts(size as u64, log2, &cvs),
                Some(*blake3::hash(&data).as_bytes()),
                "{size} {log2}"
            );
            assert_eq!(merge_parts(size as u64, log2, &cvs[1..]), None);
        }
    }
}
