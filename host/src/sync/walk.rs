//! The one tree walker: every entry of a source tree that the [`Filter`] lets through,
//! parents before children, sorted by name, read through the tree's confined handle (see
//! [`super::tree`]). An excluded directory is not looked into. A local sync, a push and a
//! pull's server all send what this lists.

use std::io;

use keepsync_core::sync::Kind;

use super::filter::{Filter, Scope};
use super::summary::{Cause, Problem};
use super::tree::{EntryKind, Stat, Tree, join};
use crate::error::{Error, Result};

/// One entry of a tree being sent.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path relative to the tree's root, `/`-separated.
    pub rel: String,
    /// What it is.
    pub kind: Kind,
    /// Its metadata when it was listed.
    pub stat: Stat,
    /// Symlinks: where the link points (as stored).
    pub target: String,
}

impl Entry {
    /// Bytes (regular files; 0 otherwise).
    pub fn size(&self) -> u64 {
        if self.kind == Kind::File { self.stat.size } else { 0 }
    }

    /// The identity of this version of the file's content as its sender sees it: a digest of
    /// its inode, size and modification and change times. Writing the file moves its change
    /// time, so the identity changes; reading it does not.
    pub fn version(&self) -> [u8; 16] {
        let s = &self.stat;
        let mut h = blake3::Hasher::new();
        h.update(b"keepsync source version v1");
        for n in [
            s.dev,
            s.ino,
            s.size,
            s.mtime.0 as u64,
            u64::from(s.mtime.1),
            s.ctime.0 as u64,
            u64::from(s.ctime.1),
        ] {
            h.update(&n.to_le_bytes());
        }
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize().as_bytes()[..16]);
        out
    }

    /// The entry as listed now (`None`: it vanished, or a directory on its way did).
    pub fn relisted(&self, tree: &Tree) -> io::Result<Option<Self>> {
        let stat = match tree.lstat(&self.rel) {
            Ok(Some(stat)) => stat,
            Ok(None) => return Ok(None),
            // A directory on the way became a file or a symlink: the entry is gone from there.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTDIR | libc::ELOOP)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Self::from_stat(tree, self.rel.clone(), stat)?.ok())
    }

    /// An entry from its metadata: `Ok(Err(problem))` when it cannot be synced.
    fn from_stat(tree: &Tree, rel: String, stat: Stat) -> io::Result<Result<Self, Problem>> {
        let kind = match stat.kind {
            EntryKind::File => Kind::File,
            EntryKind::Dir => Kind::Dir,
            EntryKind::Symlink => Kind::Symlink,
            EntryKind::Other => {
                return Ok(Err(Problem::new(rel, "not a file, directory or symlink; skipped")));
            }
        };
        let target = if kind == Kind::Symlink {
            match tree.read_link(&rel) {
                Ok(t) => match t.into_string() {
                    Ok(t) => t,
                    Err(_) => return Ok(Err(Problem::new(rel, "symlink target is not UTF-8; skipped"))),
                },
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Ok(Err(Problem { path: rel, cause: Cause::Vanished }));
                }
                Err(e) => {
                    return Ok(Err(Problem::new(rel, format!("cannot read the symlink: {e}; skipped"))));
                }
            }
        } else {
            String::new()
        };
        Ok(Ok(Self { rel, kind, stat, target }))
    }
}

/// What a walk lists.
#[derive(Debug, Default)]
pub struct Listing {
    /// The entries to sync, parents before children, sorted by name.
    pub entries: Vec<Entry>,
    /// Entries the filter left out (an excluded directory counts once: nothing under it is
    /// looked at).
    pub excluded: u64,
}

/// Every entry under `tree` that `filter` lets through, parents before children, sorted by
/// name. Entries that cannot be synced (names that are not UTF-8, special files, unreadable
/// directories, entries that vanish while listed) are reported in `problems` and left out;
/// an unreadable root, or a `.keepsyncignore` that cannot be read or compiled, fails the walk
/// (before anything is synced: a broken ignore file must not let through what it was meant
/// to keep out).
pub fn walk(tree: &Tree, filter: &Filter, problems: &mut Vec<Problem>) -> Result<Listing> {
    let top = tree.list("").map_err(|e| Error::io("read", tree.path(), e))?;
    let scope = filter.root(&top, tree, "").map_err(Error::Filter)?;
    let mut out = Listing::default();
    walk_dir(tree, &scope, "", top, &mut out, problems)?;
    Ok(out)
}

fn walk_dir(
    tree: &Tree,
    scope: &Scope,
    rel: &str,
    listed: Vec<(std::ffi::OsString, Stat)>,
    out: &mut Listing,
    problems: &mut Vec<Problem>,
) -> Result<()> {
    for (name, stat) in listed {
        let Some(name) = name.to_str() else {
            let shown = join(rel, &name.to_string_lossy());
            problems.push(Problem::new(shown, "name is not UTF-8; skipped"));
            continue;
        };
        let child = join(rel, name);
        if scope.excludes(&child, stat.kind == EntryKind::Dir) {
            out.excluded += 1;
            continue;
        }
        let entry = Entry::from_stat(tree, child.clone(), stat)
            .map_err(|e| Error::io("read", tree.display(&child), e))?;
        match entry {
            Err(p) => problems.push(p),
            Ok(e) if e.kind == Kind::Dir => match tree.list(&child) {
                Ok(listed) => {
                    let inner = scope.enter(&child, &listed, tree, &child).map_err(Error::Filter)?;
                    out.entries.push(e);
                    walk_dir(tree, &inner, &child, listed, out, problems)?;
                }
                Err(err) if err.kind() == io::ErrorKind::NotFound => {
                    problems.push(Problem { path: child, cause: Cause::Vanished });
                }
                Err(err) => {
                    problems.push(Problem::new(child, format!("cannot read the directory: {err}; skipped")))
                }
            },
            Ok(e) => out.entries.push(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_parents_first_in_name_order_and_reports_what_it_skips() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("b/c")).unwrap();
        std::fs::write(r.join("a"), b"1").unwrap();
        std::fs::write(r.join("b/c/d"), b"22").unwrap();
        std::os::unix::fs::symlink("a", r.join("l")).unwrap();
        std::fs::create_dir(r.join(".keepsync-partial")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            r.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let tree = Tree::open(r).unwrap();
        let mut problems = Vec::new();
        let entries = walk(&tree, &Filter::default(), &mut problems).unwrap().entries;
        let rels: Vec<_> = entries.iter().map(|e| (e.rel.as_str(), e.kind)).collect();
        assert_eq!(
            rels,
            [
                ("a", Kind::File),
                ("b", Kind::Dir),
                ("b/c", Kind::Dir),
                ("b/c/d", Kind::File),
                ("l", Kind::Symlink)
            ]
        );
        assert_eq!(entries[3].size(), 2);
        assert_eq!(entries[4].target, "a");
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].to_string().starts_with("fifo: not a file"));

        // The version identity moves when the file is written, not when it is read.
        let v = entries[0].version();
        assert_eq!(entries[0].relisted(&tree).unwrap().unwrap().version(), v);
        std::fs::write(r.join("a"), b"1").unwrap();
        assert_ne!(entries[0].relisted(&tree).unwrap().unwrap().version(), v);
        std::fs::remove_file(r.join("a")).unwrap();
        assert!(entries[0].relisted(&tree).unwrap().is_none());
    }
}
