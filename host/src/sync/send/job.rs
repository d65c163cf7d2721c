//! What the connections of one run send: the [`Job`] and its queue of [`Item`]s, and the
//! parts of split files.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use indicatif::ProgressBar;
use keepsync_core::sync::{Kind, Layout, MAX_PART_LOG2, MIN_PART_LOG2, Status};

use super::super::tree::Tree;
use super::super::walk::Entry;
use crate::index::SharedIndex;
use crate::net::clock::SharedClock;

/// Default part size: a file larger than this crosses several connections at once.
pub const PART_SIZE: u64 = 32 << 20;

/// Most parts one file is split into (larger files get larger parts).
const MAX_PARTS_PER_FILE: u64 = 4096;

/// Times the receiver may answer "busy" (another writer holds the file) before the entry is
/// reported; the waits double from [`BUSY_WAIT`] (about 25 s in all).
pub(super) const MAX_BUSY: u8 = 8;

/// The first wait after a "busy" answer.
pub(super) const BUSY_WAIT: Duration = Duration::from_millis(100);

/// The part size (`log2`) for `--part-size SIZE`: the power of two nearest to it, at least
/// 1 MiB.
pub fn part_log2(part_size: u64) -> u8 {
    let size = u128::from(part_size.max(1 << MIN_PART_LOG2));
    let lo = 127 - size.leading_zeros();
    // The nearer of the powers of two around it (up when halfway).
    let log2 =
        if size - (1 << lo) >= (2u128 << lo).saturating_sub(size) && size != 1 << lo { lo + 1 } else { lo };
    (log2.min(u32::from(MAX_PART_LOG2)) as u8).max(MIN_PART_LOG2)
}

/// One entry to offer.
#[derive(Debug, Clone)]
pub struct Item {
    pub(super) entry: Entry,
    pub(super) layout: Layout,
    /// An assembly's whole-file BLAKE3.
    pub(super) hash: Option<[u8; 32]>,
    /// Tries of the whole file so far (a retry relists it).
    pub(super) tries: u8,
    /// "Busy" answers so far.
    pub(super) busy: u8,
    /// Not offered before this time (after a "busy" answer).
    pub(super) not_before: Duration,
}

impl Item {
    pub(super) fn new(entry: Entry, layout: Layout, tries: u8) -> Self {
        Self { entry, layout, hash: None, tries, busy: 0, not_before: Duration::ZERO }
    }

    /// Bytes this item carries.
    pub(super) fn len(&self) -> u64 {
        match self.layout {
            Layout::Whole => self.entry.size(),
            Layout::Part { log2, index } => {
                Layout::part_range(self.entry.size(), log2, index).map_or(0, |(s, e)| e - s)
            }
            Layout::Assemble { .. } => 0,
        }
    }

    pub(super) fn range(&self) -> (u64, u64) {
        match self.layout {
            Layout::Part { log2, index } => {
                Layout::part_range(self.entry.size(), log2, index).unwrap_or((0, 0))
            }
            _ => (0, self.entry.size()),
        }
    }

    pub(super) fn is_part(&self) -> bool {
        matches!(self.layout, Layout::Part { .. })
    }
}

/// A split file whose parts are out: what each part came to.
pub(super) struct Split {
    pub(super) parts: u64,
    /// Each part's chaining value, once the receiver has it.
    pub(super) cvs: Vec<Option<[u8; 32]>>,
    pub(super) resolved: u64,
    pub(super) skipped: u64,
    /// The first part that failed, and how.
    pub(super) bad: Option<(Status, Option<Broken>)>,
}

/// How the sender broke off reading an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Broken {
    /// It vanished.
    Vanished,
    /// It changed while read.
    Changed,
}

/// Items waiting: in order, and those put off (after a "busy" answer) until their time.
#[derive(Default)]
pub(super) struct Queue {
    pub(super) ready: VecDeque<Item>,
    pub(super) deferred: Vec<Item>,
}

impl Queue {
    pub(super) fn len(&self) -> usize {
        self.ready.len() + self.deferred.len()
    }
}

/// What the connections of one run send: the source tree, the queue of entries, the split
/// files' parts, and whether the receiver can take anything more.
pub struct Job {
    pub(super) tree: Arc<Tree>,
    pub(super) queue: Mutex<Queue>,
    pub(super) splits: Mutex<HashMap<String, Split>>,
    /// The receiver cannot write at all any more (its disk is full, or read-only).
    pub(super) stopped: Mutex<Option<Status>>,
    /// Split files larger than one part of this size (`log2`).
    pub(super) part_log2: Option<u8>,
    pub(super) index: Option<SharedIndex>,
    /// Hash in line rather than on a thread (deterministic, for simulation).
    pub(super) inline: bool,
    pub(super) bar: ProgressBar,
    pub(super) clock: SharedClock,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Job {
    /// A run sending `entries` of `tree`: files larger than a part of `2^part_log2` bytes are
    /// split (`None`: never), and with `index` (`--checksum`) each file's BLAKE3 goes with
    /// its offer.
    pub fn new(
        tree: Arc<Tree>,
        entries: Vec<Entry>,
        part_log2: Option<u8>,
        index: Option<SharedIndex>,
        bar: ProgressBar,
        clock: SharedClock,
    ) -> Arc<Self> {
        let job = Arc::new(Self {
            tree,
            queue: Mutex::default(),
            splits: Mutex::default(),
            stopped: Mutex::default(),
            part_log2,
            index,
            inline: false,
            bar,
            clock,
        });
        let mut total = 0;
        let mut queue = VecDeque::with_capacity(entries.len());
        for e in entries {
            for item in job.items(e, 0) {
                total += item.len();
                queue.push_back(item);
            }
        }
        job.bar.set_length(total);
        lock(&job.queue).ready = queue;
        job
    }

    /// The same, hashing in line (simulations).
    pub fn inline(mut self: Arc<Self>) -> Arc<Self> {
        if let Some(job) = Arc::get_mut(&mut self) {
            job.inline = true;
        }
        self
    }

    /// The items `entry` goes as: itself, or its parts (recorded as a split file).
    pub(super) fn items(&self, entry: Entry, tries: u8) -> Vec<Item> {
        let size = entry.size();
        let Some(log2) = self.part_log2.filter(|_| entry.kind == Kind::File) else {
            return vec![Item::new(entry, Layout::Whole, tries)];
        };
        // At most MAX_PARTS_PER_FILE parts: larger files get larger parts.
        let min = (size.div_ceil(MAX_PARTS_PER_FILE).max(1).next_power_of_two().trailing_zeros()) as u8;
        let log2 = log2.max(min).min(MAX_PART_LOG2);
        if size <= 1 << log2 {
            return vec![Item::new(entry, Layout::Whole, tries)];
        }
        let parts = Layout::parts(size, log2);
        lock(&self.splits).insert(
            entry.rel.clone(),
            Split { parts, cvs: vec![None; parts as usize], resolved: 0, skipped: 0, bad: None },
        );
        (0..parts as u32).map(|index| Item::new(entry.clone(), Layout::Part { log2, index }, tries)).collect()
    }

    /// Items waiting (entries and parts).
    pub fn len(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Parts of split files waiting.
    pub fn parts(&self) -> usize {
        lock(&self.queue).ready.iter().filter(|i| i.is_part()).count()
    }

    /// No entry is waiting.
    pub fn is_empty(&self) -> bool {
        lock(&self.queue).len() == 0
    }

    /// The first item that may go now, and not a part when `no_part` (a connection carries one
    /// part at a time, leaving the others to other connections).
    pub(super) fn pop(&self, now: Duration, no_part: bool) -> Option<Item> {
        let mut q = lock(&self.queue);
        // Put-off items whose time came go first.
        if let Some(at) = q.deferred.iter().position(|i| i.not_before <= now && !(no_part && i.is_part())) {
            return Some(q.deferred.swap_remove(at));
        }
        let at = q.ready.iter().position(|i| !(no_part && i.is_part()))?;
        q.ready.remove(at)
    }

    /// When the first put-off item may go.
    pub(super) fn next_wake(&self) -> Option<Duration> {
        lock(&self.queue).deferred.iter().map(|i| i.not_before).min()
    }

    pub(super) fn push_front(&self, item: Item) {
        lock(&self.queue).ready.push_front(item);
    }

    /// Puts `item` off until its `not_before`.
    pub(super) fn defer(&self, item: Item) {
        lock(&self.queue).deferred.push(item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_are_the_nearest_power_of_two_of_at_least_a_mib() {
        assert_eq!(part_log2(32 << 20), 25);
        assert_eq!(part_log2(1), 20);
        assert_eq!(part_log2(3 << 20), 22, "3 MiB: 4 MiB is as near as 2 MiB; up");
        assert_eq!(part_log2(5 << 20), 22);
        assert_eq!(part_log2(7 << 20), 23);
        assert_eq!(part_log2(u64::MAX), MAX_PART_LOG2);
    }
}
