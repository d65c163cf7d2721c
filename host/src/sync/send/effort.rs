//! Compression effort that follows the bottleneck.
//!
//! Compressing harder pays when the link limits a transfer and costs when the CPU does. The
//! sender can tell which one it is from its own time: the share of each window it was busy
//! (not waiting on a full send queue), and within that the share spent encoding. A sender that
//! waits most of the time is link-bound and has CPU to spare, so it climbs a ladder (store,
//! LZ4, zstd 1, 3, 6, 12) as long as the next rung's known relative encoding cost still fits;
//! one that is busy nearly all the time is CPU-bound and steps down, and then waits a few
//! windows before it climbs again (no flapping between two rungs). This is the rule `zstd --adapt` follows. Comparing throughput
//! between windows does not work: a mixed file's compressibility changes from one window to
//! the next far more than a rung changes it. The window right after a change is not scored
//! (the queue still holds the old rung's output).
//!
//! A sender can also be held back by the receiver: every file it may have in flight is sent
//! and it waits for the receiver to commit them (`Done`), with nothing queued for the link.
//! Then fewer bytes on the wire gain nothing and the encoding only costs CPU (on one machine,
//! the receiver's), so a sender that spends most of a window waiting so steps down too. On
//! loopback with 10,000 small files that took the default from zstd-1 (1.03-1.18 s) to store.
//!
//! A receiver on the same host (a loopback address that answers within 1 ms, so not the end
//! of an `ssh -L` tunnel to a distant host) gets no compression at all with `auto`:
//! the "link" is a memory copy that fewer bytes do not speed up, and both ends share the CPU.
//! Measured there, the ladder could not tell its receiver's disk from a slow link: a resumed
//! 256 MiB push climbed to lz4 or zstd 1 and took 0.58-0.67 s for the half a full run moves in
//! 0.45-0.55 s.

use std::time::{Duration, Instant};

use crate::codec::{CodecChoice, CodecPlan, HostEncoder};

/// The rungs: (codec, zstd level), and each one's encoding cost relative to zstd level 1
/// (measured on the mixed corpus: store is the entropy gate's sampling only).
const COST: [f64; 6] = [0.05, 0.4, 1.0, 1.3, 3.0, 13.0];

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

/// A window of a sender whose queue never fills (it is the bottleneck itself).
const CPU_BOUND_WINDOW: u64 = 4 * WINDOW_BYTES;

/// Shortest window: below this, timer noise dominates.
const WINDOW_TIME: Duration = Duration::from_millis(40);

/// Busier than this (share of the window spent encoding): CPU-bound, step down.
const BUSY_HIGH: f64 = 0.85;

/// Less busy than this while the queue was full: link-bound, step up if the next rung fits.
const BUSY_LOW: f64 = 0.5;

/// Windows after a step down before the next climb.
const COOLDOWN: u32 = 4;

/// Waiting on the receiver for more than this share of a window: receiver-bound, step down.
const RECEIVER_BOUND: f64 = 0.5;

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
    window_start: Option<Instant>,
    window_bytes: u64,
    window_busy: Duration,
    window_idle: Duration,
    /// Time spent with every file sent and the receiver's `Done`s outstanding.
    window_waiting: Duration,
    cooldown: u32,
    /// The window right after a change carries the old rung's queued output: not scored.
    settling: bool,
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
        Self {
            rung,
            adaptive,
            window_start: None,
            window_bytes: 0,
            window_busy: Duration::ZERO,
            window_idle: Duration::ZERO,
            window_waiting: Duration::ZERO,
            cooldown: 0,
            settling: false,
        }
    }

    /// Whether the rung follows the bottleneck (`--codec auto`).
    pub fn is_adaptive(&self) -> bool {
        self.adaptive
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

    /// Records `bytes` of file data that took `busy` to encode, at time `now`. Returns true
    /// when the rung changed (take a new [`encoder`](Self::encoder)). A sender that never
    /// finds its queue full closes its windows here.
    pub fn on_block(&mut self, bytes: u64, busy: Duration, now: Instant) -> bool {
        if !self.adaptive {
            return false;
        }
        self.window_start.get_or_insert(now);
        self.window_bytes += bytes;
        self.window_busy += busy;
        let receiver_waits = !self.window_waiting.is_zero() && self.window_bytes >= WINDOW_BYTES;
        (receiver_waits || self.window_bytes >= CPU_BOUND_WINDOW) && self.close_window(now, false)
    }

    /// Records time the sender spent with nothing to send, waiting for the receiver to finish
    /// files (its window of files in flight full).
    pub fn on_receiver_wait(&mut self, waited: Duration) {
        self.window_waiting += waited;
    }

    /// Records that the send queue was full at `now` (the link, or the peer, is behind).
    pub fn on_blocked(&mut self, now: Instant) -> bool {
        self.adaptive && self.window_bytes >= WINDOW_BYTES && self.close_window(now, true)
    }

    /// Records time the sender spent waiting for room in its send queue.
    pub fn on_idle(&mut self, idle: Duration) {
        self.window_idle += idle;
    }

    fn close_window(&mut self, now: Instant, queue_full: bool) -> bool {
        let Some(start) = self.window_start else { return false };
        let elapsed = now.duration_since(start);
        if elapsed < WINDOW_TIME {
            return false;
        }
        let secs = elapsed.as_secs_f64();
        let encoding = self.window_busy.as_secs_f64() / secs;
        // A window that never met a full queue (the start, or a CPU-bound sender) has no idle
        // time to go by: only its encoding share says whether lighter compression helps.
        let busy =
            if queue_full { (1.0 - self.window_idle.as_secs_f64() / secs).max(encoding) } else { encoding };
        let waiting = self.window_waiting.as_secs_f64() / secs;
        (self.window_start, self.window_bytes) = (Some(now), 0);
        (self.window_busy, self.window_idle) = (Duration::ZERO, Duration::ZERO);
        self.window_waiting = Duration::ZERO;
        if std::mem::take(&mut self.settling) {
            return false;
        }
        self.cooldown = self.cooldown.saturating_sub(1);
        let here = self.rung;
        if (busy > BUSY_HIGH || waiting > RECEIVER_BOUND) && here > 0 {
            self.rung -= 1;
            self.cooldown = COOLDOWN;
        } else if queue_full && busy < BUSY_LOW && here + 1 < LADDER.len() && self.cooldown == 0 {
            // Climb only when the next rung's encoding cost would still leave some slack.
            let predicted = busy - encoding + encoding * COST[here + 1] / COST[here];
            if predicted < BUSY_HIGH {
                self.rung += 1;
            }
        }
        self.settling = self.rung != here;
        self.rung != here
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs windows of a sender whose link takes `link` bytes/s of encoded output and whose
    /// encoder runs at `speed(rung)` bytes/s with ratio `ratio(rung)`; returns the rungs.
    fn simulate(e: &mut Effort, now: &mut Instant, link: f64, windows: usize) -> Vec<usize> {
        let speed = |r: usize| 400e6 / COST[r];
        let ratio = |r: usize| [1.0, 0.62, 0.5, 0.45, 0.43, 0.41][r];
        let mut visited = Vec::new();
        for _ in 0..windows {
            let block = 1u64 << 20;
            for _ in 0..WINDOW_BYTES / block {
                let rung = e.rung;
                let encode = Duration::from_secs_f64(block as f64 / speed(rung));
                let wire = Duration::from_secs_f64(block as f64 * ratio(rung) / link);
                // Encoding overlaps sending: the slower of the two sets the pace.
                *now += encode.max(wire);
                let link_bound = wire > encode;
                e.on_block(block, encode, *now);
                if link_bound {
                    e.on_idle(wire - encode);
                    e.on_blocked(*now);
                }
            }
            visited.push(e.rung);
        }
        visited
    }

    #[test]
    fn a_slow_link_climbs_until_the_cpu_is_busy_and_a_fast_one_descends() {
        let mut e = Effort::new(SyncCodec::Auto);
        let mut clock = Instant::now();
        // 12.5 MB/s: zstd-6 (rung 4) keeps the CPU under 85%; zstd-12 would not.
        let visited = simulate(&mut e, &mut clock, 12.5e6, 30);
        assert_eq!(*visited.last().unwrap(), 4, "{visited:?}");
        // 2 GB/s: the encoder is the bottleneck at every rung but store.
        let visited = simulate(&mut e, &mut clock, 2e9, 60);
        assert!(visited.last().unwrap() <= &1, "{visited:?}");
    }

    #[test]
    fn a_sender_waiting_on_the_receiver_steps_down_to_store() {
        let mut e = Effort::new(SyncCodec::Auto);
        let mut now = Instant::now();
        let block = 1u64 << 20;
        let mut visited = Vec::new();
        for _ in 0..12 {
            for _ in 0..WINDOW_BYTES / block {
                // Encoding takes 1 ms a block; then 3 ms pass waiting for the receiver's Dones.
                now += Duration::from_millis(4);
                e.on_receiver_wait(Duration::from_millis(3));
                e.on_block(block, Duration::from_millis(1), now);
            }
            visited.push(e.rung);
        }
        assert_eq!(*visited.last().unwrap(), 0, "{visited:?}");
        // Waiting less than half the time is not enough: a sender that mostly encodes stays.
        let mut e = Effort::new(SyncCodec::Auto);
        for _ in 0..12 * WINDOW_BYTES / block {
            now += Duration::from_millis(4);
            e.on_receiver_wait(Duration::from_millis(1));
            e.on_block(block, Duration::from_millis(2), now);
        }
        assert_eq!(e.name(), "zstd-1");
    }

    #[test]
    fn a_fixed_codec_never_moves() {
        let mut e = Effort::new(SyncCodec::Lz4);
        simulate(&mut e, &mut Instant::now(), 1e6, 10);
        assert_eq!(e.name(), "lz4");
        assert_eq!(Effort::new(SyncCodec::Auto).name(), "zstd-1");
    }
}
