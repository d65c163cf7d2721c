//! The receiving side's record of split files: which parts of each have been verified, so
//! that the last one to verify, on whichever connection, places the file. It also says which
//! partials a connection is writing ([`PartBook::claim`]).
//!
//! A large file may arrive as several [`Part`](keepsync_core::sync::Part)s over several
//! connections, all written into one partial file. Each part is verified against its own
//! BLAKE3 and made durable with a checkpoint that says so; the book only says which parts
//! of this run are done. After a crash the book is empty, and the sender's next offers
//! rebuild it: a part whose checkpoint covers it resumes at its end and verifies again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

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

/// Verified parts by file, and the partials being written, shared by the connections
/// receiving into the same trees.
#[derive(Default)]
pub struct PartBook {
    book: Mutex<HashMap<FileKey, Parts>>,
    /// Ranges of partial files connections are writing, (partial file, first byte), and by
    /// how many (more than one only once a wait timed out).
    writing: Mutex<HashMap<(PathBuf, u64), usize>>,
    released: Condvar,
}

/// A [`PartBook`] shared between connections.
pub type SharedParts = Arc<PartBook>;

/// How long a connection waits for another to let go of a partial it wants. A broken
/// connection keeps what arrived (an fsync and a checkpoint) before it lets go; one that
/// hangs instead is not waited for: its checkpoint would only be older, never wrong.
pub const CLAIM_WAIT: Duration = Duration::from_secs(10);

/// A range of a partial file that one connection writes; let go when dropped.
pub struct Claim {
    book: SharedParts,
    key: (PathBuf, u64),
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut writing = self.book.writing.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(holders) = writing.get_mut(&self.key) {
            *holders -= 1;
            if *holders == 0 {
                writing.remove(&self.key);
            }
        }
        drop(writing);
        self.book.released.notify_all();
    }
}

impl PartBook {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<FileKey, Parts>> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the range of `partial` that starts at `start` for one connection, first waiting
    /// (at most `wait`) while another holds it. So a sender's retry, arriving while the
    /// broken connection before it still makes what it received durable, resumes from that
    /// connection's last checkpoint, not an older one.
    pub fn claim(book: &SharedParts, partial: PathBuf, start: u64, wait: Duration) -> Claim {
        let key = (partial, start);
        let deadline = Instant::now() + wait;
        let mut writing = book.writing.lock().unwrap_or_else(|e| e.into_inner());
        while writing.contains_key(&key) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            writing = book.released.wait_timeout(writing, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        *writing.entry(key.clone()).or_default() += 1;
        Claim { book: Arc::clone(book), key }
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

    #[test]
    fn a_claimed_partial_waits_for_its_holder_and_other_parts_do_not() {
        let book = SharedParts::default();
        let held = PartBook::claim(&book, "a.data".into(), 0, CLAIM_WAIT);
        // Another part of the same file, or another file, is claimed at once.
        let t = Instant::now();
        let _part = PartBook::claim(&book, "a.data".into(), 1 << 20, CLAIM_WAIT);
        let _other = PartBook::claim(&book, "b.data".into(), 0, CLAIM_WAIT);
        assert!(t.elapsed() < Duration::from_secs(1));
        // The same range waits until its holder lets go.
        let book2 = Arc::clone(&book);
        let waiter = std::thread::spawn(move || {
            let t = Instant::now();
            let _again = PartBook::claim(&book2, "a.data".into(), 0, CLAIM_WAIT);
            t.elapsed()
        });
        std::thread::sleep(Duration::from_millis(200));
        drop(held);
        let waited = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(150), "waited {waited:?}");
        assert!(waited < CLAIM_WAIT, "woken by the release, not the timeout");
        // A holder that never lets go is waited for only so long; when the late one is done,
        // the first still holds its range.
        let t = Instant::now();
        let late = PartBook::claim(&book, "b.data".into(), 0, Duration::from_millis(100));
        assert!(t.elapsed() >= Duration::from_millis(100));
        drop(late);
        let t = Instant::now();
        let _next = PartBook::claim(&book, "b.data".into(), 0, Duration::from_millis(100));
        assert!(t.elapsed() >= Duration::from_millis(100), "b.data is still held by _other");
    }
}
