//! `sync --watch`: keep DEST following SRC. SRC is watched with the `notify` crate (inotify on
//! Linux, FSEvents on macOS, kqueue on the BSDs); a burst of changes is let settle
//! ([`SETTLE`], at most [`MAX_DELAY`] after its first event) and then one sync pass runs.
//!
//! A pass is an ordinary sync of the whole tree: unchanged files cost one `stat` each, so a
//! missed or coalesced event can never leave a change behind, and an overflowing event queue
//! (or a watch the kernel dropped) needs nothing special: the next pass finds everything. The
//! watch is set up before the first pass, so a change made while a pass runs is followed by
//! another pass.
//!
//! A pass that fails (DEST unmounted, the server gone) is tried again after 1, 2, 4 ... up to
//! [`MAX_BACKOFF`] seconds, or sooner when SRC changes. Ctrl-C (SIGINT) or SIGTERM ends the
//! watch between passes; during a pass, the pass finishes first (a second Ctrl-C stops at
//! once: every file is then either placed whole or left as a partial the next run resumes).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use notify::{RecursiveMode, Watcher};

use crate::error::{Error, Result};

/// Quiet time after the last event before a pass starts.
pub const SETTLE: Duration = Duration::from_millis(100);
/// Longest wait from the first event of a burst to its pass, however long the burst.
pub const MAX_DELAY: Duration = Duration::from_secs(2);
/// Longest wait before a failed pass is tried again.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often a wait looks at the stop flag.
const POLL: Duration = Duration::from_millis(200);

/// What ended a wait.
#[derive(Debug, PartialEq, Eq)]
enum Woken {
    Changed,
    TimedOut,
    Stopped,
}

/// Runs `pass` once, then again after every settled burst of changes under `src`, until
/// SIGINT or SIGTERM. `failed` is told of each failed pass and the wait before the next.
pub fn watch(
    src: &Path,
    mut pass: impl FnMut() -> Result<()>,
    failed: impl Fn(&Error, Duration),
) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        // A second signal while the first is being honoured exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, 130, Arc::clone(&stop))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop)))
            .map_err(|e| Error::io("handle signals for", "--watch", e))?;
    }
    let (tx, events) = channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Reads (a pass reading SRC opens every file it copies) change nothing. Errors (a
        // dropped watch, an overflowing queue) mean "look again".
        if !event.as_ref().is_ok_and(|e| matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = tx.send(event.map(drop).map_err(drop));
        }
    })
    .map_err(|e| Error::io("watch", src, std::io::Error::other(e)))?;
    watch_recursive(&mut watcher, src)?;
    let mut backoff = Duration::from_secs(1);
    loop {
        drain(&events);
        match pass() {
            Ok(()) => {
                backoff = Duration::from_secs(1);
                if wait(&events, &stop, None) == Woken::Stopped {
                    return Ok(());
                }
            }
            Err(e) => {
                failed(&e, backoff);
                if wait(&events, &stop, Some(backoff)) == Woken::Stopped {
                    return Err(e);
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
    }
}

/// Watches `src` and everything under it; the error says what could not be watched.
fn watch_recursive(watcher: &mut impl Watcher, src: &Path) -> Result<()> {
    watcher.watch(src, RecursiveMode::Recursive).map_err(|e| {
        let hint = match &e.kind {
            notify::ErrorKind::MaxFilesWatch => {
                " (too many directories for inotify: raise fs.inotify.max_user_watches)"
            }
            _ => "",
        };
        Error::io("watch", src, std::io::Error::other(format!("{e}{hint}")))
    })
}

/// Forgets events already queued: the pass about to run sees their changes.
fn drain(events: &Receiver<std::result::Result<(), ()>>) {
    while events.try_recv().is_ok() {}
}

/// Waits for a change (then for it to settle), for `limit` to pass, or for a stop signal.
fn wait(events: &Receiver<std::result::Result<(), ()>>, stop: &AtomicBool, limit: Option<Duration>) -> Woken {
    let started = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Woken::Stopped;
        }
        if limit.is_some_and(|l| started.elapsed() >= l) {
            return Woken::TimedOut;
        }
        match events.recv_timeout(POLL) {
            Ok(_) => break,
            Err(RecvTimeoutError::Timeout) => {}
            // The watcher is gone: nothing more will come; keep honouring stop.
            Err(RecvTimeoutError::Disconnected) => std::thread::sleep(POLL),
        }
    }
    let first = Instant::now();
    while first.elapsed() < MAX_DELAY {
        match events.recv_timeout(SETTLE) {
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Woken::Changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_let_settle_and_a_stop_ends_the_wait() {
        let (tx, rx) = channel();
        let stop = AtomicBool::new(false);
        for _ in 0..50 {
            tx.send(Ok(())).unwrap();
        }
        assert_eq!(wait(&rx, &stop, None), Woken::Changed);
        assert!(rx.try_recv().is_err(), "the whole burst was taken in one wake");
        assert_eq!(wait(&rx, &stop, Some(Duration::ZERO)), Woken::TimedOut);
        stop.store(true, Ordering::SeqCst);
        tx.send(Ok(())).unwrap();
        assert_eq!(wait(&rx, &stop, None), Woken::Stopped, "a stop wins over a change");
    }
}
