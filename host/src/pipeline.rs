//! An ordered, bounded parallel map: one producer, N workers, one in-order consumer.
//!
//! The producer (a scoped thread) emits jobs in order; workers transform them in any order;
//! the consumer (the calling thread) receives results strictly in job order. Memory is bounded
//! by a [`Pool`] of reusable buffers: the producer takes one per job and the consumer gives it
//! back once the result is written, so at most `pool size` jobs are ever in flight, whatever
//! the input size, and no buffer is allocated per chunk.
//!
//! Errors stop the pipeline: if the consumer fails, the channels close and the producer and
//! workers wind down; a producer error is reported after every earlier result was consumed, so
//! errors come out in the same order as in a sequential run.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, bounded, select, unbounded};

/// A fixed set of reusable buffers. `take` blocks while all are in flight, and returns
/// `None` once the pipeline using the pool has stopped.
pub struct Pool<B> {
    give: Sender<B>,
    take: Receiver<B>,
    closed_tx: Mutex<Option<Sender<()>>>,
    closed_rx: Receiver<()>,
    /// Nanoseconds `take` spent waiting for a buffer.
    waited_ns: AtomicU64,
}

impl<B> Pool<B> {
    /// A pool holding `buffers`.
    pub fn new(buffers: impl IntoIterator<Item = B>) -> Self {
        let buffers: Vec<B> = buffers.into_iter().collect();
        let (give, take) = bounded(buffers.len().max(1));
        for b in buffers {
            give.send(b).expect("pool has room for its own buffers");
        }
        let (closed_tx, closed_rx) = bounded(0);
        Self { give, take, closed_tx: Mutex::new(Some(closed_tx)), closed_rx, waited_ns: AtomicU64::new(0) }
    }

    /// Takes a buffer, waiting for one to be given back. `None` once the pool is closed.
    pub fn take(&self) -> Option<B> {
        if let Ok(b) = self.take.try_recv() {
            return Some(b);
        }
        let started = Instant::now();
        let b = select! {
            recv(self.take) -> b => b.ok(),
            recv(self.closed_rx) -> _ => None,
        };
        self.waited_ns.fetch_add(nanos(started.elapsed()), Ordering::Relaxed);
        b
    }

    /// Gives a buffer back.
    pub fn give(&self, buffer: B) {
        let _ = self.give.send(buffer);
    }

    /// Wakes every `take` with `None`, now and later.
    pub fn close(&self) {
        self.closed_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

/// Where a pipeline run spent its waiting time, to name its bottleneck.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PipelineStats {
    /// Workers that ran.
    pub workers: usize,
    /// Chunks the pool allowed in flight.
    pub window: usize,
    /// Share of the run the reader waited for a free buffer (workers or writer behind).
    pub reader_waiting: f64,
    /// Share of the workers' time spent waiting for input (reader behind).
    pub workers_idle: f64,
    /// Share of the run the writer waited for the next result (workers or reader behind).
    pub writer_waiting: f64,
    /// `read`, `compute` or `write`: the stage busy for the largest share of the run.
    pub bottleneck: &'static str,
}

impl PipelineStats {
    fn new(
        workers: usize,
        window: usize,
        elapsed: Duration,
        reader_ns: u64,
        idle_ns: u64,
        writer_ns: u64,
    ) -> Self {
        let total = nanos(elapsed).max(1) as f64;
        let reader_waiting = (reader_ns as f64 / total).min(1.0);
        let workers_idle = (idle_ns as f64 / (total * workers.max(1) as f64)).min(1.0);
        let writer_waiting = (writer_ns as f64 / total).min(1.0);
        // Each stage is busy whenever it is not waiting on a neighbour; the busiest one sets
        // the pace. (Reading itself, including a slow disk or pipe, counts as the reader busy.)
        let busy = [
            (1.0 - writer_waiting, "write"),
            (1.0 - workers_idle, "compute"),
            (1.0 - reader_waiting, "read"),
        ];
        let bottleneck = busy.iter().fold(busy[0], |best, &b| if b.0 > best.0 { b } else { best }).1;
        Self { workers, window, reader_waiting, workers_idle, writer_waiting, bottleneck }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Runs `produce` on its own thread and `work` on `threads` workers, handing results to
/// `consume` in the order `produce` emitted the jobs.
///
/// `produce` gets an `emit` function that returns `false` once the pipeline has stopped (then
/// it should return). Each worker owns a state made by `make_state` (an encoder, a decoder).
/// `pool` is closed when the consumer stops, so a producer waiting for a buffer wakes up.
pub fn ordered_map<B, J, O, S, E>(
    threads: usize,
    pool: &Pool<B>,
    produce: impl FnOnce(&mut dyn FnMut(J) -> bool) -> Result<(), E> + Send,
    make_state: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, J) -> O + Sync,
    mut consume: impl FnMut(O) -> Result<(), E>,
) -> Result<PipelineStats, E>
where
    B: Send,
    J: Send,
    O: Send,
    E: Send,
{
    let threads = threads.max(1);
    let started = Instant::now();
    let idle_ns = AtomicU64::new(0);
    let mut writer_ns = 0u64;
    let (job_tx, job_rx) = unbounded::<(u64, J)>();
    let (out_tx, out_rx) = unbounded::<(u64, O)>();
    std::thread::scope(|scope| {
        let producer = scope.spawn(move || {
            let mut seq = 0u64;
            let mut emit = |job: J| {
                let sent = job_tx.send((seq, job)).is_ok();
                seq += 1;
                sent
            };
            produce(&mut emit)
        });
        for _ in 0..threads {
            let (job_rx, out_tx) = (job_rx.clone(), out_tx.clone());
            let (make_state, work, idle_ns) = (&make_state, &work, &idle_ns);
            scope.spawn(move || {
                let mut state = make_state();
                loop {
                    let waiting = Instant::now();
                    let Ok((seq, job)) = job_rx.recv() else { return };
                    idle_ns.fetch_add(nanos(waiting.elapsed()), Ordering::Relaxed);
                    if out_tx.send((seq, work(&mut state, job))).is_err() {
                        return;
                    }
                }
            });
        }
        drop((job_rx, out_tx));
        let mut next = 0u64;
        let mut early: BTreeMap<u64, O> = BTreeMap::new();
        let consumed = (|| {
            loop {
                let waiting = Instant::now();
                let Ok((seq, out)) = out_rx.recv() else { break };
                writer_ns += nanos(waiting.elapsed());
                early.insert(seq, out);
                while let Some(out) = early.remove(&next) {
                    consume(out)?;
                    next += 1;
                }
            }
            Ok(())
        })();
        // On a consumer error, closing the result channel makes the workers stop, which
        // closes the job channel, which makes the producer's next emit return false; closing
        // the pool wakes a producer that waits for a buffer.
        drop(out_rx);
        pool.close();
        let produced = producer.join().expect("producer thread does not panic");
        consumed.and(produced)
    })?;
    let window = pool.take.capacity().unwrap_or(0);
    let reader_ns = pool.waited_ns.load(Ordering::Relaxed);
    Ok(PipelineStats::new(
        threads,
        window,
        started.elapsed(),
        reader_ns,
        idle_ns.load(Ordering::Relaxed),
        writer_ns,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_out_in_order_with_bounded_buffers() {
        let pool = Pool::new((0..3).map(|_| Vec::<u8>::with_capacity(8)));
        let mut seen = Vec::new();
        let mut in_flight_max = 0;
        let in_flight = std::sync::atomic::AtomicUsize::new(0);
        ordered_map::<_, _, _, _, ()>(
            4,
            &pool,
            |emit| {
                for i in 0..200u32 {
                    let Some(mut b) = pool.take() else { return Ok(()) };
                    in_flight.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    b.clear();
                    b.extend_from_slice(&i.to_le_bytes());
                    if !emit(b) {
                        return Ok(());
                    }
                }
                Ok(())
            },
            || (),
            |_, b: Vec<u8>| {
                std::thread::sleep(std::time::Duration::from_micros(u64::from(b[0] % 7) * 50));
                b
            },
            |b| {
                in_flight_max = in_flight_max.max(in_flight.load(std::sync::atomic::Ordering::SeqCst));
                seen.push(u32::from_le_bytes(b[..4].try_into().unwrap()));
                in_flight.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                pool.give(b);
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(seen, (0..200).collect::<Vec<_>>());
        assert!(in_flight_max <= 3, "{in_flight_max} buffers in flight with a pool of 3");
    }

    #[test]
    fn consumer_error_stops_the_producer() {
        let pool = Pool::new((0..2).map(|_| 0u64));
        let produced = std::sync::atomic::AtomicU64::new(0);
        let r = ordered_map(
            2,
            &pool,
            |emit| {
                for i in 0..1_000_000u64 {
                    let Some(_) = pool.take() else { return Ok(()) };
                    produced.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if !emit(i) {
                        return Ok(());
                    }
                }
                Ok(())
            },
            || (),
            |_, i| i,
            |i| {
                pool.give(0);
                if i == 10 { Err("stop") } else { Ok(()) }
            },
        );
        assert_eq!(r.unwrap_err(), "stop");
        assert!(produced.load(std::sync::atomic::Ordering::SeqCst) < 1000);
    }

    #[test]
    fn producer_error_comes_after_earlier_results() {
        let mut seen = Vec::new();
        let r = ordered_map(
            3,
            &Pool::<()>::new([]),
            |emit| {
                for i in 0..5u32 {
                    emit(i);
                }
                Err("read failed")
            },
            || (),
            |_, i| i,
            |i| {
                seen.push(i);
                Ok(())
            },
        );
        assert_eq!(r.unwrap_err(), "read failed");
        assert_eq!(seen, [0, 1, 2, 3, 4]);
    }
}

/// Bytes of pipeline memory one in-flight chunk costs: its plaintext buffer and its record
/// buffer (room for the codec's worst case).
pub fn bytes_per_chunk(chunk_size: usize) -> u64 {
    (chunk_size
        + keepsync_core::budget::RECORD_HEADER_LEN
        + keepsync_core::budget::compress_bound(chunk_size)
        + keepsync_core::budget::TAG_LEN) as u64
}

/// Memory that does not depend on the window: the binary, the allocator, and each worker's
/// codec state (a zstd context at level 1 on 64 KiB inputs is about 1 MiB). An estimate,
/// checked against measured peak RSS in docs/BENCHMARKS.md.
pub const BASE_MEMORY: u64 = 4 << 20;

/// Per-worker codec state, as estimated for [`BASE_MEMORY`].
pub const WORKER_MEMORY: u64 = 1 << 20;

/// Workers and window (chunks in flight) for `threads` requested workers under an optional
/// memory budget. The window is 2 per worker plus 2 (one being read, one being written); a
/// budget shrinks the window first, then the workers. Fails when even one worker with two
/// chunks in flight does not fit.
pub fn plan(threads: usize, chunk_size: usize, max_memory: Option<u64>) -> Result<(usize, usize), String> {
    let threads = threads.max(1);
    let wanted = 2 * threads + 2;
    let Some(budget) = max_memory else { return Ok((threads, wanted)) };
    let per_chunk = bytes_per_chunk(chunk_size);
    for workers in (1..=threads).rev() {
        let fixed = BASE_MEMORY + workers as u64 * WORKER_MEMORY;
        let fits = budget.saturating_sub(fixed) / per_chunk;
        if fits >= (workers + 1) as u64 {
            return Ok((workers, (fits as usize).min(2 * workers + 2)));
        }
    }
    Err(format!(
        "--max-memory {} is too small: one worker with {} chunks needs about {}; lower --chunk-size or raise --max-memory",
        crate::units::human_bytes(budget),
        crate::units::human_bytes(chunk_size as u64),
        crate::units::human_bytes(BASE_MEMORY + WORKER_MEMORY + 2 * per_chunk)
    ))
}

/// This process's peak resident set size in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod bottleneck_tests {
    use super::*;
    use std::thread::sleep;

    /// Runs 24 jobs through 2 workers with the given per-job delays (ms) in each stage.
    fn run(read_ms: u64, work_ms: u64, write_ms: u64) -> PipelineStats {
        let pool = Pool::new((0..6).map(|_| ()));
        ordered_map::<_, _, _, _, ()>(
            2,
            &pool,
            |emit| {
                for i in 0..24u32 {
                    let Some(()) = pool.take() else { return Ok(()) };
                    sleep(Duration::from_millis(read_ms));
                    if !emit(i) {
                        return Ok(());
                    }
                }
                Ok(())
            },
            || (),
            |_, i| {
                sleep(Duration::from_millis(work_ms));
                i
            },
            |_| {
                sleep(Duration::from_millis(write_ms));
                pool.give(());
                Ok(())
            },
        )
        .unwrap()
    }

    // Delays differ by 20x so that the slow stage dominates even on a loaded machine.
    #[test]
    fn the_slow_stage_is_named() {
        for (delays, expected) in [((10, 0, 0), "read"), ((0, 20, 0), "compute"), ((0, 0, 10), "write")] {
            let stats = run(delays.0, delays.1, delays.2);
            assert_eq!(stats.bottleneck, expected, "{stats:?}");
        }
        let s = run(0, 20, 0);
        assert_eq!((s.workers, s.window), (2, 6));
    }
}

#[cfg(test)]
mod plan_tests {
    use super::*;

    #[test]
    fn budget_shrinks_window_then_workers_and_refuses_the_impossible() {
        assert_eq!(plan(2, 65536, None), Ok((2, 6)));
        for (threads, chunk, budget) in
            [(8, 65536, 16u64 << 20), (4, 1 << 20, 16 << 20), (2, 4 << 20, 32 << 20)]
        {
            let (w, win) = plan(threads, chunk, Some(budget)).unwrap();
            assert!(w >= 1 && w <= threads && win > w && win <= 2 * w + 2, "{threads} {chunk}: {w} {win}");
            let used = BASE_MEMORY + w as u64 * WORKER_MEMORY + win as u64 * bytes_per_chunk(chunk);
            assert!(used <= budget, "{threads} x {chunk} in {budget}: {used}");
        }
        // 1 MiB chunks in 16 MiB: not every one of 4 workers fits.
        assert!(plan(4, 1 << 20, Some(16 << 20)).unwrap().0 < 4);
        // Two 4 MiB chunks (plus their record buffers) cannot fit in 16 MiB.
        assert!(plan(4, 4 << 20, Some(16 << 20)).unwrap_err().contains("too small"));
    }

    #[test]
    fn peak_rss_is_reported_on_linux() {
        let rss = peak_rss_bytes();
        if cfg!(target_os = "linux") {
            assert!(rss.unwrap() > 1 << 20);
        }
    }
}
