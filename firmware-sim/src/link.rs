//! A seeded lossy link on a mock clock: one direction of a radio or UART between the device
//! and the host, with bandwidth, latency, loss, duplication, reordering and corruption.
//!
//! Bytes written are cut into segments of at most `mtu` bytes. Each segment occupies the link
//! for `len / bytes_per_sec` after the previous one (bandwidth), arrives `latency_ms` after
//! that, and is independently lost, corrupted (one bit flipped), delayed past later segments
//! (reordered) or delivered twice (duplicated), as drawn from the seed. The same seed and the
//! same writes give the same deliveries, so a failing test replays exactly.
//!
//! The queue is a fixed array of `SLOTS` segments of `MTU` bytes (no allocator): when it is
//! full, [`Link::send`] accepts fewer bytes, like a UART FIFO or a TCP window, and the writer
//! keeps them in its own send queue. Loss therefore only ever comes from the fault model.

use keepsync_core::sync::Millis;

/// How a [`Link`] behaves. Probabilities are per segment, in thousandths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkConfig {
    /// Bandwidth: how fast segments leave the sender.
    pub bytes_per_sec: u32,
    /// One-way delay of every segment after it was sent.
    pub latency_ms: u32,
    /// Largest segment, in bytes (capped at the link's `MTU` parameter).
    pub mtu: usize,
    /// Segments that never arrive.
    pub loss_per_mille: u16,
    /// Segments that arrive twice.
    pub duplicate_per_mille: u16,
    /// Segments held back by [`reorder_delay_ms`](Self::reorder_delay_ms), so that later
    /// segments overtake them.
    pub reorder_per_mille: u16,
    /// Segments with one bit flipped.
    pub corrupt_per_mille: u16,
    /// Extra delay of a reordered segment.
    pub reorder_delay_ms: u32,
    /// Seed of the fault draws.
    pub seed: u64,
}

impl LinkConfig {
    /// A fault-free link: 1 Mbit/s-ish serial radio, 20 ms one way, 512-byte segments.
    pub const fn clean(seed: u64) -> Self {
        Self {
            bytes_per_sec: 125_000,
            latency_ms: 20,
            mtu: 512,
            loss_per_mille: 0,
            duplicate_per_mille: 0,
            reorder_per_mille: 0,
            corrupt_per_mille: 0,
            reorder_delay_ms: 50,
            seed,
        }
    }

    /// The same link with `per_mille` of its segments hit by a fault, spread equally over
    /// loss, duplication, reordering and corruption.
    pub const fn faulty(self, per_mille: u16) -> Self {
        let each = per_mille / 4;
        Self {
            loss_per_mille: each,
            duplicate_per_mille: each,
            reorder_per_mille: each,
            corrupt_per_mille: per_mille - 3 * each,
            ..self
        }
    }
}

/// What a [`Link`] did to the segments it carried.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LinkStats {
    /// Segments sent.
    pub segments: u64,
    /// Bytes accepted from the writer.
    pub bytes: u64,
    /// Segments dropped.
    pub lost: u64,
    /// Segments delivered twice.
    pub duplicated: u64,
    /// Segments delayed past later ones.
    pub reordered: u64,
    /// Segments with a flipped bit.
    pub corrupted: u64,
}

impl LinkStats {
    /// Segments hit by any fault.
    pub fn faults(&self) -> u64 {
        self.lost + self.duplicated + self.reordered + self.corrupted
    }
}

#[derive(Clone, Copy)]
struct Segment<const MTU: usize> {
    due: Millis,
    /// Send order: breaks ties between segments due at the same time.
    seq: u64,
    start: usize,
    end: usize,
    bytes: [u8; MTU],
}

/// One direction of a link holding up to `SLOTS` segments of up to `MTU` bytes in flight.
pub struct Link<const SLOTS: usize, const MTU: usize> {
    config: LinkConfig,
    rng: u64,
    queue: [Option<Segment<MTU>>; SLOTS],
    busy_until: Millis,
    seq: u64,
    stats: LinkStats,
}

impl<const SLOTS: usize, const MTU: usize> Link<SLOTS, MTU> {
    /// An empty link.
    pub fn new(config: LinkConfig) -> Self {
        // splitmix64 of the seed: neighbouring seeds give unrelated fault sequences.
        let mut z = config.seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self {
            config,
            rng: (z ^ (z >> 31)) | 1,
            queue: [None; SLOTS],
            busy_until: 0,
            seq: 0,
            stats: LinkStats::default(),
        }
    }

    /// What the link did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    fn chance(&mut self, per_mille: u16) -> bool {
        // Always draw, so that one fault's setting does not shift the others' sequences.
        self.next_random() % 1000 < u64::from(per_mille)
    }

    fn free_slot(&self) -> Option<usize> {
        self.queue.iter().position(Option::is_none)
    }

    /// Sends bytes at `now`; returns how many the link took (fewer when its queue is full).
    pub fn send(&mut self, now: Millis, bytes: &[u8]) -> usize {
        let mtu = self.config.mtu.clamp(1, MTU);
        let mut taken = 0;
        while taken < bytes.len() {
            let Some(slot) = self.free_slot() else { break };
            let len = (bytes.len() - taken).min(mtu);
            let mut segment = Segment { due: 0, seq: self.seq, start: 0, end: len, bytes: [0; MTU] };
            segment.bytes[..len].copy_from_slice(&bytes[taken..taken + len]);
            taken += len;
            self.seq += 1;
            self.stats.segments += 1;
            self.stats.bytes += len as u64;
            // Serialization at the link's rate, then the propagation delay.
            let start = now.max(self.busy_until);
            self.busy_until =
                start + (len as u64 * 1000).div_ceil(u64::from(self.config.bytes_per_sec.max(1)));
            segment.due = self.busy_until + u64::from(self.config.latency_ms);
            let (lost, reordered, corrupted, duplicated) = (
                self.chance(self.config.loss_per_mille),
                self.chance(self.config.reorder_per_mille),
                self.chance(self.config.corrupt_per_mille),
                self.chance(self.config.duplicate_per_mille),
            );
            let flip = self.next_random();
            if lost {
                self.stats.lost += 1;
                continue;
            }
            if reordered {
                self.stats.reordered += 1;
                segment.due += u64::from(self.config.reorder_delay_ms);
            }
            if corrupted {
                self.stats.corrupted += 1;
                segment.bytes[(flip >> 8) as usize % len] ^= 1 << (flip % 8);
            }
            self.queue[slot] = Some(segment);
            // A duplicate needs a slot of its own; with the queue full it is simply not made.
            if duplicated && let Some(copy) = self.free_slot() {
                self.stats.duplicated += 1;
                self.queue[copy] = Some(Segment { due: segment.due + 1, seq: self.seq, ..segment });
                self.seq += 1;
            }
        }
        taken
    }

    /// When the next segment arrives, if any is in flight.
    pub fn next_due(&self) -> Option<Millis> {
        self.queue.iter().flatten().map(|s| s.due).min()
    }

    /// Copies the bytes of the earliest segment that has arrived by `now` into `buf`; returns
    /// how many (0: nothing has arrived). A segment larger than `buf` is delivered in parts.
    pub fn recv(&mut self, now: Millis, buf: &mut [u8]) -> usize {
        let earliest = self
            .queue
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.as_ref().filter(|s| s.due <= now).map(|s| (s.due, s.seq, i)))
            .min();
        let Some((_, _, i)) = earliest else { return 0 };
        let Some(segment) = self.queue[i].as_mut() else { return 0 };
        let n = (segment.end - segment.start).min(buf.len());
        buf[..n].copy_from_slice(&segment.bytes[segment.start..segment.start + n]);
        segment.start += n;
        if segment.start == segment.end {
            self.queue[i] = None;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(link: &mut Link<64, 16>, now: Millis) -> ([u8; 4096], usize) {
        let mut out = [0u8; 4096];
        let mut n = 0;
        loop {
            let m = link.recv(now, &mut out[n..]);
            if m == 0 {
                return (out, n);
            }
            n += m;
        }
    }

    #[test]
    fn a_clean_link_delivers_in_order_after_serialization_and_latency() {
        let config = LinkConfig { bytes_per_sec: 1000, latency_ms: 5, mtu: 16, ..LinkConfig::clean(1) };
        let mut link: Link<64, 16> = Link::new(config);
        let data: [u8; 100] = core::array::from_fn(|i| i as u8);
        assert_eq!(link.send(0, &data), 100);
        // 100 bytes at 1000 B/s take 100 ms to send, then 5 ms to arrive.
        assert_eq!(link.next_due(), Some(16 + 5));
        assert_eq!(drain(&mut link, 104).1, 96, "the last segment is still on its way");
        let mut rest = [0u8; 4];
        assert_eq!(link.recv(105, &mut rest), 4);
        assert_eq!(rest, [96, 97, 98, 99]);
        let mut link: Link<64, 16> = Link::new(config);
        link.send(0, &data);
        let (out, n) = drain(&mut link, 1000);
        assert_eq!(&out[..n], &data[..]);
        assert_eq!(link.stats().faults(), 0);
    }

    #[test]
    fn a_full_queue_pushes_back_instead_of_dropping() {
        let mut link: Link<4, 16> = Link::new(LinkConfig { mtu: 16, ..LinkConfig::clean(1) });
        assert_eq!(link.send(0, &[7; 100]), 64);
        assert_eq!(link.send(0, &[7; 100]), 0);
    }

    #[test]
    fn faults_follow_the_seed_and_change_the_stream() {
        let config = LinkConfig { mtu: 16, ..LinkConfig::clean(3) }.faulty(400);
        let data: [u8; 2048] = core::array::from_fn(|i| (i * 7) as u8);
        let run = |config: LinkConfig| {
            let mut link: Link<64, 16> = Link::new(config);
            let (mut out, mut n) = ([0u8; 4096], 0);
            for (t, piece) in data.chunks(512).enumerate() {
                let mut at = 0;
                while at < piece.len() {
                    at += link.send(t as u64 * 1000, &piece[at..]);
                    let (got, m) = drain(&mut link, u64::MAX);
                    out[n..n + m].copy_from_slice(&got[..m]);
                    n += m;
                }
            }
            (out, n, link.stats())
        };
        let (a, an, stats) = run(config);
        let (b, bn, _) = run(config);
        assert_eq!((&a[..an], an), (&b[..bn], bn), "same seed, same deliveries");
        assert!(stats.lost > 0 && stats.duplicated > 0 && stats.reordered > 0 && stats.corrupted > 0);
        assert_ne!(&a[..an], &data[..]);
        let (c, cn, _) = run(LinkConfig { seed: 4, ..config });
        assert_ne!(&a[..an], &c[..cn], "another seed, other faults");
    }
}
