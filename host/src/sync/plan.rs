//! The rules every sync applies the same way, locally and over the network: what an entry
//! needs ([`Action`], the typed plan a dry run prints), when a file is unchanged, and which
//! entries stand in each other's way.

use serde::Serialize;

use super::tree::{EntryKind, Stat};
use crate::units::human_bytes;

/// One change a sync makes (or, in a dry run, would make).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a directory.
    CreateDir {
        /// Relative path.
        path: String,
    },
    /// Copy a regular file.
    CopyFile {
        /// Relative path.
        path: String,
        /// Its size.
        bytes: u64,
    },
    /// (Re)create a symlink.
    Symlink {
        /// Relative path.
        path: String,
        /// Where it points (as stored, not resolved).
        target: String,
    },
    /// Remove an entry the receiving side has and the sending side does not (`--delete`).
    Delete {
        /// Relative path.
        path: String,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::CreateDir { path } => write!(f, "create dir  {path}"),
            Self::CopyFile { path, bytes } => write!(f, "copy        {path} ({})", human_bytes(*bytes)),
            Self::Symlink { path, target } => write!(f, "symlink     {path} -> {target}"),
            Self::Delete { path } => write!(f, "delete      {path}"),
        }
    }
}

/// The one "unchanged" rule: the receiving side's entry `there` is a regular file of the same
/// size and modification time (to the nanosecond), or, when the sender gave its content's
/// BLAKE3 (`--checksum`), of the same size and content (`there_hash` reads it, only then).
pub fn unchanged(
    size: u64,
    mtime: (i64, u32),
    hash: Option<[u8; 32]>,
    there: &Stat,
    there_hash: impl FnOnce() -> Option<[u8; 32]>,
) -> bool {
    if there.kind != EntryKind::File || there.size != size {
        return false;
    }
    match hash {
        Some(want) => there_hash() == Some(want),
        None => there.mtime == mtime,
    }
}

/// Whether an existing entry can take the place of an entry of `kind` without being removed
/// first: a directory only by a directory; files and symlinks are replaced atomically by a
/// rename over them. Anything else needs `--delete`.
pub fn replaceable(kind: EntryKind, there: &Stat) -> bool {
    match kind {
        EntryKind::Dir => there.kind == EntryKind::Dir,
        EntryKind::File | EntryKind::Symlink => matches!(there.kind, EntryKind::File | EntryKind::Symlink),
        EntryKind::Other => false,
    }
}

/// The message for an entry of another kind in the way.
pub fn in_the_way(rel: &str) -> String {
    format!("{rel}: another kind of entry is in the way (use --delete to replace it)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(kind: EntryKind, size: u64, mtime: (i64, u32)) -> Stat {
        Stat { kind, size, mtime, ctime: (0, 0), mode: 0o644, ino: 1, dev: 1 }
    }

    #[test]
    fn unchanged_means_same_size_and_time_or_same_content() {
        let f = stat(EntryKind::File, 10, (5, 7));
        assert!(unchanged(10, (5, 7), None, &f, || unreachable!()));
        assert!(!unchanged(10, (5, 8), None, &f, || unreachable!()), "nanoseconds count");
        assert!(!unchanged(11, (5, 7), None, &f, || unreachable!()));
        assert!(unchanged(10, (1, 1), Some([3; 32]), &f, || Some([3; 32])));
        assert!(!unchanged(10, (5, 7), Some([3; 32]), &f, || Some([4; 32])));
        assert!(!unchanged(10, (5, 7), None, &stat(EntryKind::Symlink, 10, (5, 7)), || None));
    }

    #[test]
    fn only_directories_stand_in_the_way_of_others() {
        let dir = stat(EntryKind::Dir, 0, (0, 0));
        let file = stat(EntryKind::File, 0, (0, 0));
        let link = stat(EntryKind::Symlink, 0, (0, 0));
        assert!(replaceable(EntryKind::Dir, &dir));
        assert!(!replaceable(EntryKind::Dir, &file) && !replaceable(EntryKind::Dir, &link));
        assert!(!replaceable(EntryKind::File, &dir) && !replaceable(EntryKind::Symlink, &dir));
        assert!(replaceable(EntryKind::File, &link) && replaceable(EntryKind::Symlink, &file));
        assert_eq!(Action::CopyFile { path: "a".into(), bytes: 2048 }.to_string(), "copy        a (2.0 KiB)");
    }
}
