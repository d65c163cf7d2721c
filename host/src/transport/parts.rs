//! The receiving side's record of split files: which parts of each have been verified, so
//! that the last one to verify, on whichever connection, places the file.
//!
//! A large file may arrive as several [`Part`](keepsync_core::sync::Part)s over several
//! connections, all written into one partial file. Each part is verified against its own
//! BLAKE3 and made durable with a checkpoint that says so; the book only says which parts
//! of this run are done. After a crash the book is empty, and the sender's next offers
//! rebuild it: a part whose checkpoint covers it resumes at its end and verifies again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Files with parts pending that one book tracks. Past it, the book starts over: the files
/// then wanting parts are placed by the next run, whose offers re-verify the parts done.
const MAX_FILES: usize = 4096;

/// A split file: its partial file and the binding of its version (path, size, mtime).
pub type FileKey = (PathBuf, [u8; 32]);

#[derive(Default)]
struct Parts {
    /// Verified ranges, `start..end`.
    verified: Vec<(u64, u64)>,
    /// A resume of this file was counted already.
    resumed: bool,
}

/// Verified parts by file, shared by the connections receiving into the same trees.
#[derive(Default)]
pub struct PartBook(Mutex<HashMap<FileKey, Parts>>);

/// A [`PartBook`] shared between connections.
pub type SharedParts = Arc<PartBook>;

impl PartBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Parts>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `start..end` of a `size`-byte file as verified and durable. `true` when the
    /// verified parts now cover the whole file: the book forgets it, and the caller places it.
    pub fn verified(&self, key: &FileKey, start: u64, end: u64, size: u64) -> bool {
        let mut book = self.lock();
        if book.len() >= MAX_FILES && !book.contains_key(key) {
            book.clear();
        }
        let parts = book.entry(key.clone()).or_default();
        if !parts.verified.contains(&(start, end)) {
            parts.verified.push((start, end));
            parts.verified.sort_unstable();
        }
        let mut covered = 0;
        for &(s, e) in &parts.verified {
            if s > covered {
                return false;
            }
            covered = covered.max(e);
        }
        if covered < size {
            return false;
        }
        book.remove(key);
        true
    }

    /// Whether this is the first resumed part of the file (a resume counts once per file).
    pub fn first_resume(&self, key: &FileKey) -> bool {
        let mut book = self.lock();
        let parts = book.entry(key.clone()).or_default();
        !std::mem::replace(&mut parts.resumed, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_part_that_completes_the_cover_places_the_file() {
        let book = PartBook::default();
        let key = (PathBuf::from("a.data"), [1; 32]);
        let other = (PathBuf::from("a.data"), [2; 32]); // another version of the same path
        assert!(!book.verified(&key, 2 << 20, 3 << 20, 3 << 20));
        assert!(!book.verified(&other, 0, 1 << 20, 3 << 20));
        assert!(!book.verified(&key, 0, 1 << 20, 3 << 20), "a gap at 1..2 MiB");
        assert!(!book.verified(&key, 0, 1 << 20, 3 << 20), "a repeat changes nothing");
        assert!(book.verified(&key, 1 << 20, 2 << 20, 3 << 20));
        // Placed and forgotten: a late repeat starts a new record, it does not place again.
        assert!(!book.verified(&key, 0, 1 << 20, 3 << 20));
        assert!(book.first_resume(&other));
        assert!(!book.first_resume(&other));
    }
}
