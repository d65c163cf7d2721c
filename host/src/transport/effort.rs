//! Compression effort that follows the bottleneck.
//!
//! Compressing harder pays when the link limits a transfer and costs when the CPU does (on
//! either end: on loopback the receiver's CPU is "the link"). Rather than guess which one it
//! is, the sender measures what it is after: file bytes moved per second of wall time, per
//! window of blocks. It hill-climbs a ladder from storing through LZ4 to zstd levels: after
//! each window it tries the next rung in the current direction, keeps going while the rate
//! holds, and steps back (then rests a few windows) when it drops. Every rung above storing
//! keeps the entropy gate, so random-looking blocks are stored at any level.

use std::time::{Duration, Instant};

use crate::codec::{CodecChoice, CodecPlan, HostEncoder};

/// The rungs: (codec, zstd level).
const LADDER: [(CodecChoice, i32); 6] = [
    (CodecChoice::None, 0),
    (CodecChoice::Lz4, 0),
    (CodecChoice::Zstd, 1),
    (CodecChoice::Zstd, 3),
    (CodecChoice::Zstd, 6),
    (CodecChoice::Zstd, 12),
];

/// The rung a run starts on: zstd level 1, `pack`'s default.
const START: usize = 2;

/// File bytes per measuring window (and at least [`WINDOW_TIME`] of wall time).
const WINDOW_BYTES: u64 = 8 << 20;

/// Shortest window: below this, timer noise dominates.
const WINDOW_TIME: Duration = Duration::from_millis(40);

/// Windows to stay on a rung after a probe made things worse.
const REST: u32 = 3;

/// What the user asked for with `--codec` on `sync`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SyncCodec {
    /// Follow the bottleneck (starts at zstd level 1).
    Auto,
    /// Never compress (fast local networks, already-compressed data).
    None,
    /// LZ4 always.
    Lz4,
    /// zstd level 1 always.
    Zstd,
}

/// The adaptive (or fixed) compression choice of one sender.
#[derive(Debug)]
pub struct Effort {
    rung: usize,
    adaptive: bool,
    /// +1 climbs toward more compression, -1 descends.
    up: bool,
    window_start: Option<Instant>,
    window_bytes: u64,
    /// The previous window: its rung and file bytes per second.
    last: Option<(usize, f64)>,
    rest: u32,
}

impl Effort {
    /// Starts as `codec` says.
    pub fn new(codec: SyncCodec) -> Self {
        let (rung, adaptive) = match codec {
            SyncCodec::Auto => (START, true),
            SyncCodec::None => (0, false),
            SyncCodec::Lz4 => (1, false),
            SyncCodec::Zstd => (2, false),
        };
        Self { rung, adaptive, up: false, window_start: None, window_bytes: 0, last: None, rest: 0 }
    }

    /// The encoder for the current rung.
    pub fn encoder(&self) -> HostEncoder {
        let (choice, level) = LADDER[self.rung];
        let plan = CodecPlan { level: level.max(1), ..CodecPlan::new(choice) };
        if self.adaptive && choice != CodecChoice::None {
            // The entropy gate around the inner codec.
            return HostEncoder::Auto(Box::new(plan.encoder()));
        }
        plan.encoder()
    }

    /// A short name of the current rung, for summaries.
    pub fn name(&self) -> String {
        match LADDER[self.rung] {
            (CodecChoice::None, _) => "store".into(),
            (CodecChoice::Lz4, _) => "lz4".into(),
            (_, level) => format!("zstd-{level}"),
        }
    }

    fn step(&mut self) -> usize {
        match (self.up, self.rung) {
            (true, r) if r + 1 < LADDER.len() => r + 1,
            (false, r) if r > 0 => r - 1,
            // At an end of the ladder: turn around, rest, and probe the other way later.
            (_, r) => {
                self.up = !self.up;
                self.rest = REST;
                r
            }
        }
    }

    /// Records `bytes` of file data handled at time `now`. Returns true when the rung
    /// changed (take a new [`encoder`](Self::encoder)).
    pub fn on_block(&mut self, bytes: u64, now: Instant) -> bool {
        if !self.adaptive {
            return false;
        }
        let start = *self.window_start.get_or_insert(now);
        self.window_bytes += bytes;
        let elapsed = now.duration_since(start);
        if self.window_bytes < WINDOW_BYTES || elapsed < WINDOW_TIME {
            return false;
        }
        let rate = self.window_bytes as f64 / elapsed.as_secs_f64();
        (self.window_start, self.window_bytes) = (Some(now), 0);
        let here = self.rung;
        let next = if self.rest > 0 {
            self.rest -= 1;
            here
        } else {
            match self.last {
                // The probe lost: go back, rest, and probe the other side next time.
                Some((prev, prev_rate)) if prev != here && rate < prev_rate => {
                    self.up = !self.up;
                    self.rest = REST;
                    prev
                }
                _ => self.step(),
            }
        };
        self.last = Some((here, rate));
        self.rung = next;
        next != here
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds windows whose rate is `rate(rung)`; returns the rungs visited, window by window.
    fn simulate(
        effort: &mut Effort,
        now: &mut Instant,
        rate: impl Fn(usize) -> f64,
        windows: usize,
    ) -> Vec<usize> {
        let mut visited = Vec::new();
        for _ in 0..windows {
            let block = 1u64 << 20;
            for _ in 0..WINDOW_BYTES / block {
                *now += Duration::from_secs_f64(block as f64 / rate(effort.rung));
                effort.on_block(block, *now);
            }
            visited.push(effort.rung);
        }
        visited
    }

    #[test]
    fn it_settles_where_the_rate_peaks_and_moves_when_the_peak_moves() {
        // A slow link: more compression is better up to zstd-6 (rung 4), then the CPU limits.
        let slow_link = |r: usize| [12.0, 18.0, 25.0, 27.0, 30.0, 20.0][r];
        let mut e = Effort::new(SyncCodec::Auto);
        let mut clock = Instant::now();
        let visited = simulate(&mut e, &mut clock, slow_link, 40);
        let tail = &visited[20..];
        assert!(tail.iter().filter(|&&r| r == 4).count() >= tail.len() / 2, "{visited:?}");
        // Loopback: storing is best.
        let fast_link = |r: usize| [900.0, 600.0, 400.0, 250.0, 90.0, 20.0][r];
        let visited = simulate(&mut e, &mut clock, fast_link, 60);
        let tail = &visited[40..];
        assert!(tail.iter().filter(|&&r| r == 0).count() >= tail.len() / 2, "{visited:?}");
    }

    #[test]
    fn a_fixed_codec_never_moves() {
        let mut e = Effort::new(SyncCodec::Lz4);
        simulate(&mut e, &mut Instant::now(), |r| [1.0, 2.0, 3.0, 4.0, 5.0, 6.0][r], 10);
        assert_eq!(e.name(), "lz4");
        assert_eq!(Effort::new(SyncCodec::Auto).name(), "zstd-1");
    }
}
