//! The clock a connection's timers and measurements run on: monotonic, never the wall clock.
//!
//! The core's timers (keep-alive, idle timeout, handshake deadline) and the host's round-trip
//! samples, window widening and commit batches all take their time from a [`Clock`]. In a
//! process that is [`Monotonic`]: a wall-clock step (NTP, a laptop waking up, a user setting
//! the date) cannot make a connection time out or a batch wait. Simulations pass a
//! [`SimClock`] they move themselves.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

/// A source of monotonic time: the time since some fixed start.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Time since the clock's start; never goes back.
    fn now(&self) -> Duration;

    /// [`Clock::now`] in whole milliseconds, as the core's timers take it.
    fn now_ms(&self) -> u64 {
        self.now().as_millis() as u64
    }
}

/// The process's monotonic clock (`CLOCK_MONOTONIC`), counted from its first use.
#[derive(Debug, Clone, Copy, Default)]
pub struct Monotonic;

static START: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Clock for Monotonic {
    fn now(&self) -> Duration {
        START.elapsed()
    }
}

/// A shared handle on a clock.
pub type SharedClock = Arc<dyn Clock>;

/// The process's monotonic clock, shared.
pub fn monotonic() -> SharedClock {
    Arc::new(Monotonic)
}

/// A clock that moves only when told (simulations).
#[derive(Debug, Default)]
pub struct SimClock(AtomicU64);

impl SimClock {
    /// Moves the clock `by` forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Clock for SimClock {
    fn now(&self) -> Duration {
        Duration::from_micros(self.0.load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_only_move_forward() {
        let m = Monotonic;
        let a = m.now();
        assert!(m.now() >= a);
        let s = SimClock::default();
        assert_eq!(s.now_ms(), 0);
        s.advance(Duration::from_millis(1500));
        assert_eq!(s.now_ms(), 1500);
    }

    /// The protocol's timers must never read the wall clock (a clock step of a minute failed
    /// every connection with a timeout when they did).
    #[test]
    fn network_and_sync_code_never_read_the_wall_clock() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
        let mut offenders = Vec::new();
        for sub in ["net", "sync"] {
            let mut stack = vec![std::path::Path::new(dir).join(sub)];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    if p.is_dir() {
                        stack.push(p);
                    } else if let Ok(text) = std::fs::read_to_string(&p) {
                        for (i, line) in text.lines().enumerate() {
                            let code = line.split("//").next().unwrap_or("");
                            // Expiring old partials compares file mtimes: wall time, on purpose.
                            if code.contains("SystemTime::now") && !line.contains("wall clock: partial ages")
                            {
                                offenders.push(format!("{}:{}", p.display(), i + 1));
                            }
                        }
                    }
                }
            }
        }
        assert!(offenders.is_empty(), "wall clock read in protocol code: {offenders:?}");
    }
}
