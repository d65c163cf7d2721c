//! `sync --verify`: after a sync, SRC and DEST are read again, entry by entry, and compared:
//! kind, size, modification time, permissions, symlink target, and for every regular file
//! the BLAKE3 of both copies, read from the files themselves (never from the `--checksum`
//! index, which is a cache). Both sides are listed through the sync's filter, so what it
//! excludes is not compared. With `--delete`, DEST must hold no file or link SRC lacks that
//! the filter lets through, and no such directory unless the filter kept something in DEST
//! (a directory holding an excluded entry stays, as `--delete` leaves it).
//!
//! A difference is reported as a problem of the run (exit 23), naming the entry and what
//! differs. It catches what a sync cannot see by itself: a writer that changed DEST after the
//! sync placed a file, a disk or filesystem that returned other bytes than were written.

use std::collections::HashSet;

use super::filter::Filter;
use super::summary::{Problem, Summary};
use super::tree::{EntryKind, Stat, Tree};
use super::walk::{Entry, walk};
use crate::error::{Error, Result};
use crate::index::blake3_of;
use crate::units::human_bytes;

/// What `--verify` compared.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    /// Entries compared.
    pub entries: u64,
    /// File bytes read on each side.
    pub bytes: u64,
    /// Entries that differ (each is a problem of the run).
    pub differ: u64,
}

/// Compares `src` with `dst` (both already open) through `filter` and records every
/// difference in `summary`; `delete`: DEST must hold nothing more.
pub fn verify(
    src: &Tree,
    dst: &Tree,
    filter: &Filter,
    delete: bool,
    summary: &mut Summary,
) -> Result<Verified> {
    let mut problems = Vec::new();
    let entries = walk(src, filter, &mut problems)?.entries;
    let mut done = Verified::default();
    let mut differ = |summary: &mut Summary, rel: &str, why: String| {
        summary.problem(Problem::new(rel, format!("--verify: {why}")));
        done.differ += 1;
    };
    for e in &entries {
        done.entries += 1;
        match compare(src, dst, e) {
            Ok(Same::Yes { bytes }) => done.bytes += bytes,
            Ok(Same::No(why)) => differ(summary, &e.rel, why),
            // Read again just now, so one that vanished from SRC is a change made after the
            // sync, not a difference it left.
            Err(err)
                if err.kind() == std::io::ErrorKind::NotFound
                    && src.lstat(&e.rel).map_err(|e| Error::io("read", src.path(), e))?.is_none() => {}
            Err(err) => differ(summary, &e.rel, format!("cannot compare it: {err}")),
        }
    }
    if delete {
        let listed: HashSet<&str> = entries.iter().map(|e| e.rel.as_str()).collect();
        let there = walk(dst, filter, &mut Vec::new())?;
        for extra in there.entries {
            let kept_dir = extra.stat.kind == EntryKind::Dir && there.excluded > 0;
            if !listed.contains(extra.rel.as_str()) && !kept_dir {
                differ(summary, &extra.rel, "is in DEST but not in SRC (with --delete)".into());
            }
        }
    }
    Ok(done)
}

enum Same {
    Yes { bytes: u64 },
    No(String),
}

fn kind_name(kind: EntryKind) -> &'static str {
    match kind {
        EntryKind::File => "a file",
        EntryKind::Dir => "a directory",
        EntryKind::Symlink => "a symlink",
        EntryKind::Other => "a special file",
    }
}

fn compare(src: &Tree, dst: &Tree, e: &Entry) -> std::io::Result<Same> {
    let Some(there) = dst.lstat(&e.rel)? else { return Ok(Same::No("missing in DEST".into())) };
    let here = &e.stat;
    if there.kind != here.kind {
        return Ok(Same::No(format!(
            "is {} in DEST, {} in SRC",
            kind_name(there.kind),
            kind_name(here.kind)
        )));
    }
    match here.kind {
        EntryKind::Symlink => {
            let (a, b) = (src.read_link(&e.rel)?, dst.read_link(&e.rel)?);
            if a != b {
                return Ok(Same::No(format!("points to {} in DEST, {} in SRC", b.display(), a.display())));
            }
            Ok(Same::Yes { bytes: 0 })
        }
        EntryKind::Dir => Ok(meta(here, &there).map_or(Same::Yes { bytes: 0 }, Same::No)),
        EntryKind::File => {
            if there.size != here.size {
                return Ok(Same::No(format!(
                    "is {} in DEST, {} in SRC",
                    human_bytes(there.size),
                    human_bytes(here.size)
                )));
            }
            if let Some(why) = meta(here, &there) {
                return Ok(Same::No(why));
            }
            let (a, b) = (blake3_of(&src.open_read(&e.rel)?)?, blake3_of(&dst.open_read(&e.rel)?)?);
            if a != b {
                return Ok(Same::No("the contents differ (BLAKE3)".into()));
            }
            Ok(Same::Yes { bytes: here.size })
        }
        EntryKind::Other => Ok(Same::Yes { bytes: 0 }),
    }
}

/// What differs in the metadata a sync carries (permissions, modification time).
fn meta(here: &Stat, there: &Stat) -> Option<String> {
    if here.mode & 0o7777 != there.mode & 0o7777 {
        return Some(format!("mode is {:o} in DEST, {:o} in SRC", there.mode & 0o7777, here.mode & 0o7777));
    }
    if here.kind == EntryKind::File && here.mtime != there.mtime {
        return Some("the modification time differs".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two trees, `a` as a sync leaves it and `b` changed by `change` afterwards.
    fn differences(change: impl FnOnce(&std::path::Path), delete: bool) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        for root in [&a, &b] {
            std::fs::create_dir_all(root.join("d")).unwrap();
            std::fs::write(root.join("d/f"), "same").unwrap();
            std::os::unix::fs::symlink("d/f", root.join("l")).unwrap();
        }
        let mtime = std::fs::metadata(a.join("d/f")).unwrap().modified().unwrap();
        std::fs::File::options().write(true).open(b.join("d/f")).unwrap().set_modified(mtime).unwrap();
        change(&b);
        let mut summary = Summary::default();
        let (a, b) = (Tree::open(&a).unwrap(), Tree::open(&b).unwrap());
        let v = verify(&a, &b, &Filter::default(), delete, &mut summary).unwrap();
        assert_eq!(v.differ as usize, summary.problems.len());
        summary.problems
    }

    /// A change made to DEST after a sync.
    type Change = fn(&std::path::Path);

    #[test]
    fn every_kind_of_difference_is_named() {
        use std::os::unix::fs::PermissionsExt;
        assert!(differences(|_| {}, true).is_empty());
        let cases: [(&str, Change, &str); 6] = [
            (
                "mode",
                |b| std::fs::set_permissions(b.join("d/f"), std::fs::Permissions::from_mode(0o600)).unwrap(),
                "d/f: --verify: mode is 600 in DEST",
            ),
            (
                "size",
                |b| std::fs::write(b.join("d/f"), "longer").unwrap(),
                "d/f: --verify: is 6 B in DEST, 4 B in SRC",
            ),
            ("missing", |b| std::fs::remove_file(b.join("d/f")).unwrap(), "d/f: --verify: missing in DEST"),
            (
                "kind",
                |b| {
                    std::fs::remove_file(b.join("l")).unwrap();
                    std::fs::create_dir(b.join("l")).unwrap()
                },
                "l: --verify: is a directory in DEST, a symlink in SRC",
            ),
            (
                "target",
                |b| {
                    std::fs::remove_file(b.join("l")).unwrap();
                    std::os::unix::fs::symlink("d", b.join("l")).unwrap()
                },
                "l: --verify: points to d in DEST, d/f in SRC",
            ),
            (
                "extra",
                |b| std::fs::write(b.join("new"), "x").unwrap(),
                "new: --verify: is in DEST but not in SRC",
            ),
        ];
        for (what, change, needle) in cases {
            let found = differences(change, true);
            assert!(found.iter().any(|p| p.contains(needle)), "{what}: {found:?}");
        }
        assert!(
            differences(|b| std::fs::write(b.join("new"), "x").unwrap(), false).is_empty(),
            "extras are fine without --delete"
        );
    }
}
