//! What a sender does once the receiver is done with an entry: counted, retried once (its
//! source changed while read, or it did not verify), put off (the receiver is busy with the
//! same file), assembled (the last part of a split file), or reported.

use keepsync_core::sync::{Kind, Layout, Status};

use super::super::dest::{merge_parts, status_message};
use super::super::plan::Action;
use super::super::summary::{Cause, Problem};
use super::job::{BUSY_WAIT, Broken, Item, MAX_BUSY, lock};
use super::{Outgoing, SendApp};

impl SendApp {
    /// The receiver is done with `o` (`None`: it already had it).
    pub(super) fn settle(&mut self, mut o: Outgoing, status: Option<Status>) {
        let cv = o.hash;
        let broken = o.broken;
        if let Some(thread) = o.aside.take() {
            let _ = thread.join();
        }
        match o.item.layout {
            Layout::Part { index, .. } => self.settle_part(o.item, index, status, cv, broken),
            _ => self.settle_entry(o.item, status, broken),
        }
    }

    fn settle_entry(&mut self, item: Item, status: Option<Status>, broken: Option<Broken>) {
        let e = &item.entry;
        let Some(status) = status else {
            if e.kind == Kind::File {
                self.summary.files_skipped += 1;
            }
            return;
        };
        match status {
            Status::Ok => {
                match e.kind {
                    Kind::File => self.summary.files_transferred += 1,
                    Kind::Dir => self.summary.dirs_created += 1,
                    Kind::Symlink => self.summary.symlinks += 1,
                }
                if self.dry_run {
                    self.summary.planned.push(match e.kind {
                        Kind::File => Action::CopyFile { path: e.rel.clone(), bytes: e.size() },
                        Kind::Dir => Action::CreateDir { path: e.rel.clone() },
                        Kind::Symlink => Action::Symlink { path: e.rel.clone(), target: e.target.clone() },
                    });
                }
            }
            Status::Busy => self.busy(item),
            Status::HashMismatch => self.retry(item, broken),
            other => self.fail(&item, other),
        }
    }

    fn settle_part(
        &mut self,
        item: Item,
        index: u32,
        status: Option<Status>,
        cv: Option<[u8; 32]>,
        broken: Option<Broken>,
    ) {
        if status == Some(Status::Busy) {
            return self.busy(item);
        }
        let rel = item.entry.rel.clone();
        let mut splits = lock(&self.job.splits);
        let Some(split) = splits.get_mut(&rel) else { return };
        match status {
            None => split.skipped += 1,
            Some(Status::Ok) => split.cvs[index as usize] = cv,
            Some(other) => {
                split.bad.get_or_insert((other, broken));
            }
        }
        split.resolved += 1;
        if split.resolved < split.parts {
            return;
        }
        let split = splits.remove(&rel).expect("looked up above");
        drop(splits);
        let Layout::Part { log2, .. } = item.layout else { return };
        if split.skipped == split.parts {
            self.summary.files_skipped += 1;
            return;
        }
        match split.bad {
            Some((Status::HashMismatch, broken)) => return self.retry(item, broken),
            Some((status, _)) => return self.fail(&item, status),
            None => {}
        }
        // Every part is in: the source must still be the version listed, then the assembly
        // carries the whole file's hash.
        let cvs: Option<Vec<[u8; 32]>> = split.cvs.into_iter().collect();
        let same = item
            .entry
            .relisted(&self.job.tree)
            .ok()
            .flatten()
            .is_some_and(|e| e.stat.same_version(&item.entry.stat));
        match cvs.and_then(|cvs| merge_parts(item.entry.size(), log2, &cvs)) {
            Some(root) if same => {
                let mut assemble = Item::new(item.entry, Layout::Assemble { log2 }, item.tries);
                assemble.hash = Some(root);
                self.job.push_front(assemble);
            }
            // Some parts skipped and some not (the receiver's copy changed meanwhile), or the
            // source changed between parts: once more, whole.
            _ => self.retry(item, if same { None } else { Some(Broken::Changed) }),
        }
    }

    /// Did not verify (the source changed while read, or the receiver's partial was damaged):
    /// once more as the file is now; a vanished source is reported.
    fn retry(&mut self, item: Item, broken: Option<Broken>) {
        let rel = item.entry.rel.clone();
        if broken == Some(Broken::Vanished) {
            return self.summary.problem(Problem { path: rel, cause: Cause::Vanished });
        }
        if item.tries >= 1 {
            let cause = match broken {
                Some(_) => Cause::KeptChanging,
                None => Cause::Other("did not verify at the receiver twice in a row; not synced".into()),
            };
            return self.summary.problem(Problem { path: rel, cause });
        }
        match item.entry.relisted(&self.job.tree) {
            Ok(Some(entry)) if entry.kind == item.entry.kind => {
                for again in self.job.items(entry, item.tries + 1).into_iter().rev() {
                    self.job.bar.inc_length(again.len());
                    self.job.push_front(again);
                }
            }
            Ok(Some(_)) => self.summary.problem(Problem::new(
                rel,
                "became another kind of entry while it was sent; run the sync again",
            )),
            Ok(None) => self.summary.problem(Problem { path: rel, cause: Cause::Vanished }),
            Err(e) => self.summary.problem(Problem::new(rel, format!("cannot read it any more: {e}"))),
        }
    }

    /// The receiver is writing this very file for another connection or process: later.
    fn busy(&mut self, mut item: Item) {
        if item.busy >= MAX_BUSY {
            return self.fail(&item, Status::Busy);
        }
        item.not_before = self.job.clock.now() + BUSY_WAIT * (1 << item.busy);
        item.busy += 1;
        self.job.defer(item);
    }

    fn fail(&mut self, item: &Item, status: Status) {
        self.summary.problem(Problem::new(item.entry.rel.clone(), status_message(status)));
        if status.stops_the_tree() {
            let mut stopped = lock(&self.job.stopped);
            if stopped.is_none() {
                *stopped = Some(status);
                drop(stopped);
                // Nothing more can land: what is still queued is not sent (and said once).
                let left: Vec<Item> = {
                    let mut q = lock(&self.job.queue);
                    let mut left: Vec<Item> = q.ready.drain(..).collect();
                    left.append(&mut q.deferred);
                    left
                };
                let files = left.iter().filter(|i| i.entry.kind == Kind::File && !i.is_part()).count()
                    + left.iter().filter(|i| matches!(i.layout, Layout::Part { index: 0, .. })).count();
                if !left.is_empty() {
                    self.summary.problem(Problem::new(
                        "",
                        format!(
                            "{} more entries ({files} files) not sent: {}",
                            left.len(),
                            status_message(status)
                        ),
                    ));
                }
            }
        }
    }
}
