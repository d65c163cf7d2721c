//! `--limit-rate`: one token bucket shared by every connection of a run, with an optional
//! rclone-style timetable (`"08:00,512KiB 18:00,off"`: from 08:00 local time 512 KiB/s, from
//! 18:00 unlimited; the last entry of the day also covers the hours before the first).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::units::parse_size;

/// The limit in force from a time of day on (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    minute: u16,
    rate: Option<u64>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// A shared bandwidth limit. Cheap to consult when unlimited.
#[derive(Debug)]
pub struct RateLimiter {
    slots: Vec<Slot>,
    bucket: Mutex<Bucket>,
}

/// Smallest grant worth a write when the bucket is nearly empty.
const MIN_GRANT: usize = 16 << 10;

fn parse_rate(text: &str) -> Result<Option<u64>, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match parse_size(text)? {
        0 => Err(format!("`{text}`: a rate of 0 would never send; use `off` for no limit")),
        n => Ok(Some(n)),
    }
}

impl RateLimiter {
    /// No limit.
    pub fn unlimited() -> Self {
        Self::from_slots(vec![Slot { minute: 0, rate: None }])
    }

    fn from_slots(slots: Vec<Slot>) -> Self {
        Self { slots, bucket: Mutex::new(Bucket { tokens: 0.0, last: Instant::now() }) }
    }

    /// Parses `10MiB` (bytes per second), `off`, or a timetable of `HH:MM,RATE` entries.
    pub fn parse(spec: &str) -> Result<Self, String> {
        if !spec.contains(',') {
            let rate = parse_rate(spec)?;
            return Ok(Self::from_slots(vec![Slot { minute: 0, rate }]));
        }
        let mut slots = Vec::new();
        for entry in spec.split_whitespace() {
            let bad = || format!("`{entry}` is not HH:MM,RATE (e.g. \"08:00,512KiB 18:00,off\")");
            let (time, rate) = entry.split_once(',').ok_or_else(bad)?;
            let (h, m) = time.split_once(':').ok_or_else(bad)?;
            let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
            if h > 23 || m > 59 {
                return Err(bad());
            }
            slots.push(Slot { minute: h * 60 + m, rate: parse_rate(rate)? });
        }
        slots.sort_by_key(|s| s.minute);
        if slots.windows(2).any(|w| w[0].minute == w[1].minute) {
            return Err(format!("`{spec}` names the same time twice"));
        }
        Ok(Self::from_slots(slots))
    }

    /// The rate in force at `minute` of the day (0..1440).
    fn rate_at(&self, minute: u16) -> Option<u64> {
        let slot = self.slots.iter().rev().find(|s| s.minute <= minute).or(self.slots.last());
        slot.and_then(|s| s.rate)
    }

    fn rate_now(&self) -> Option<u64> {
        if self.slots.len() == 1 {
            return self.slots[0].rate;
        }
        let now = jiff::ZonedDateTime::now();
        self.rate_at(now.hour() as u16 * 60 + now.minute() as u16)
    }

    /// How long until a write of `want` bytes may start (zero: now). Takes no tokens.
    pub fn wait_for(&self, want: usize) -> Duration {
        self.take(want, false).err().unwrap_or(Duration::ZERO)
    }

    /// How many of `want` bytes may be written now (taking their tokens), or how long to
    /// wait before asking again.
    pub fn grant(&self, want: usize) -> Result<usize, Duration> {
        self.take(want, true)
    }

    /// Blocks this thread until some of `want` bytes may be moved, and returns how many
    /// (their tokens taken): for loops that copy without an event loop (a local sync).
    pub fn acquire(&self, want: usize) -> usize {
        loop {
            match self.grant(want) {
                Ok(n) => return n,
                Err(wait) => std::thread::sleep(wait),
            }
        }
    }

    /// Gives back `n` granted bytes that were not written after all (the socket was not ready).
    pub fn refund(&self, n: usize) {
        if n == 0 || self.rate_now().is_none() {
            return;
        }
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        b.tokens += n as f64;
    }

    fn take(&self, want: usize, take: bool) -> Result<usize, Duration> {
        let Some(rate) = self.rate_now() else { return Ok(want) };
        let mut b = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        // Burst of at most 50 ms of traffic (and at least one small write).
        let cap = (rate as f64 / 20.0).max(MIN_GRANT as f64);
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate as f64).min(cap);
        b.last = now;
        let need = want.min(MIN_GRANT) as f64;
        if b.tokens >= need {
            let n = want.min(b.tokens as usize);
            if take {
                b.tokens -= n as f64;
            }
            return Ok(n);
        }
        Err(Duration::from_secs_f64((need - b.tokens) / rate as f64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timetables_parse_and_pick_the_slot_in_force() {
        let t = RateLimiter::parse("08:00,512KiB 18:00,off").unwrap();
        assert_eq!(t.rate_at(7 * 60), None, "before the first entry the last one still holds");
        assert_eq!(t.rate_at(8 * 60), Some(512 << 10));
        assert_eq!(t.rate_at(17 * 60 + 59), Some(512 << 10));
        assert_eq!(t.rate_at(18 * 60), None);
        assert_eq!(RateLimiter::parse("10MiB").unwrap().rate_now(), Some(10 << 20));
        assert_eq!(RateLimiter::parse("off").unwrap().rate_now(), None);
        for bad in ["0", "fast", "25:00,1M", "08:00", "08:00,1M 08:00,2M", "8h,1M"] {
            assert!(RateLimiter::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_bucket_grants_no_more_than_its_burst_and_then_asks_to_wait() {
        let limit = RateLimiter::parse("1MiB").unwrap();
        std::thread::sleep(Duration::from_millis(60));
        let first = limit.grant(10 << 20).unwrap();
        assert!((MIN_GRANT..=(1 << 20) / 20 + 1).contains(&first), "granted {first}");
        let wait = limit.wait_for(10 << 20);
        assert!(limit.grant(10 << 20).is_err(), "the bucket stays empty until it refills");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(20), "{wait:?}");
        assert_eq!(RateLimiter::unlimited().grant(123), Ok(123));
    }
}
