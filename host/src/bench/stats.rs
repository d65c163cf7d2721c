//! Metrics, robust summaries (median, MAD) and the regression rule.
//!
//! Benchmarks on a shared 2-core machine have outliers (a neighbour's build, a writeback
//! burst), so everything is rank-based: the median for the centre and the median absolute
//! deviation (MAD) for the spread, which one wild run cannot move.
//!
//! **The regression rule.** For a metric with base samples B and head samples H:
//!
//! ```text
//! Δ         = median(H) − median(B)
//! MAD_pool  = sqrt((MAD(B)² + MAD(H)²) / 2)
//! threshold = max(3 × 1.4826 × MAD_pool, 2% × |median(B)|, the metric's resolution)
//! ```
//!
//! The change is a regression when Δ points the bad way and |Δ| > threshold, an improvement
//! when it points the good way and |Δ| > threshold, otherwise noise. 1.4826 × MAD estimates
//! the standard deviation of normal noise, so 3 of them is a "3 sigma" shift; the 2% floor
//! keeps a run with five identical samples (MAD 0) from flagging a 0.1% wobble, and the
//! resolution floor does the same for counters that move in steps (CPU time in 10 ms ticks).

use serde::Serialize;

/// Which direction is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Smaller is better (time, memory, output size).
    Lower,
    /// Larger is better (throughput).
    Higher,
    /// Informational: no direction.
    Neither,
}

/// A metric every run records.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Column and key name.
    pub name: &'static str,
    /// Unit, for reports.
    pub unit: &'static str,
    /// Which way is better.
    pub better: Better,
    /// Whether `bench compare` fails on a regression of this metric (for keepsync's rows).
    pub gates: bool,
    /// The smallest change the counter can show; shifts below it are noise.
    pub resolution: f64,
    /// One line for the docs and the report.
    pub about: &'static str,
}

/// Every metric, in report order.
pub const METRICS: &[MetricDef] = &[
    MetricDef {
        name: "wall_s",
        unit: "s",
        better: Better::Lower,
        gates: true,
        resolution: 0.0,
        about: "wall-clock seconds of the operation",
    },
    MetricDef {
        name: "mb_per_s",
        unit: "MB/s",
        better: Better::Higher,
        gates: false,
        resolution: 0.0,
        about: "input bytes (10^6) per wall-clock second; the inverse of wall_s, so it does not gate twice",
    },
    MetricDef {
        name: "ratio",
        unit: "",
        better: Better::Lower,
        gates: true,
        resolution: 0.001,
        about: "output bytes / input bytes (pack only)",
    },
    MetricDef {
        name: "user_s",
        unit: "s",
        better: Better::Lower,
        gates: true,
        resolution: 0.02,
        about: "user CPU seconds, all threads (10 ms ticks)",
    },
    MetricDef {
        name: "sys_s",
        unit: "s",
        better: Better::Lower,
        gates: true,
        resolution: 0.02,
        about: "system CPU seconds, all threads (10 ms ticks)",
    },
    MetricDef {
        name: "peak_rss_bytes",
        unit: "B",
        better: Better::Lower,
        gates: true,
        resolution: 1048576.0,
        about: "peak resident memory during the run (VmHWM; sampled every ms for peers)",
    },
    MetricDef {
        name: "read_bytes",
        unit: "B",
        better: Better::Neither,
        gates: false,
        resolution: 0.0,
        about: "bytes passed to read calls (/proc/self/io rchar), page-cache hits included",
    },
    MetricDef {
        name: "written_bytes",
        unit: "B",
        better: Better::Neither,
        gates: false,
        resolution: 0.0,
        about: "bytes passed to write calls (/proc/self/io wchar)",
    },
    MetricDef {
        name: "disk_read_bytes",
        unit: "B",
        better: Better::Neither,
        gates: false,
        resolution: 0.0,
        about: "bytes fetched from storage (/proc/self/io read_bytes); 0 when cached",
    },
    MetricDef {
        name: "disk_written_bytes",
        unit: "B",
        better: Better::Neither,
        gates: false,
        resolution: 0.0,
        about: "bytes dirtied towards storage (/proc/self/io write_bytes)",
    },
    MetricDef {
        name: "fsync_s",
        unit: "s",
        better: Better::Lower,
        gates: false,
        resolution: 0.0,
        about: "seconds in the final fsync + rename + directory fsync of each output (keepsync only)",
    },
    MetricDef {
        name: "read_busy",
        unit: "share",
        better: Better::Neither,
        gates: false,
        resolution: 0.0,
        about: "share of the run the pipeline's reader was busy (1 - its waiting share)",
    },
    MetricDef {
        name: "compute_busy",
        unit: "share",
        better: Better::Neither,
        gates: false,
        resolution: 0.0,
        about: "share of the workers' time spent sealing or opening chunks",
    },
    MetricDef {
        name: "write_busy",
        unit: "share",
        better: Better::Neither,
        gates: false,
        resolution: 0.0,
        about: "share of the run the pipeline's writer was busy",
    },
];

/// The definition of `name`, if it is a known metric.
pub fn metric(name: &str) -> Option<&'static MetricDef> {
    METRICS.iter().find(|m| m.name == name)
}

/// Scale from MAD to the standard deviation of normally distributed noise.
pub const MAD_TO_SIGMA: f64 = 1.4826;
/// How many (estimated) standard deviations a shift must exceed.
pub const SIGMAS: f64 = 3.0;
/// The smallest relative shift ever reported, as a share of the base median.
pub const MIN_RELATIVE_SHIFT: f64 = 0.02;

/// Robust summary of one metric's samples.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Median absolute deviation from the median (unscaled).
    pub mad: f64,
}

fn median_of_sorted(v: &[f64]) -> f64 {
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Summary {
    /// Summarizes `samples`; `None` when there are none (or only NaNs).
    pub fn of(samples: &[f64]) -> Option<Self> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let median = median_of_sorted(&v);
        let mut dev: Vec<f64> = v.iter().map(|x| (x - median).abs()).collect();
        dev.sort_by(f64::total_cmp);
        Some(Self { n: v.len(), median, min: v[0], max: v[v.len() - 1], mad: median_of_sorted(&dev) })
    }
}

/// What a comparison concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Worse beyond the noise threshold.
    Regression,
    /// Better beyond the noise threshold.
    Improvement,
    /// Within the noise threshold (or a metric without direction).
    Noise,
}

/// One metric compared between two runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Shift {
    /// Base summary.
    pub base: Summary,
    /// Head summary.
    pub head: Summary,
    /// `head.median - base.median`.
    pub delta: f64,
    /// `delta / base.median` (NaN when the base median is 0).
    pub relative: f64,
    /// The noise threshold |delta| had to exceed.
    pub threshold: f64,
    /// The conclusion.
    pub verdict: Verdict,
}

/// Applies the regression rule (see the module docs) to one metric.
pub fn judge(def: &MetricDef, base: &[f64], head: &[f64]) -> Option<Shift> {
    let (b, h) = (Summary::of(base)?, Summary::of(head)?);
    let delta = h.median - b.median;
    let pooled = ((b.mad * b.mad + h.mad * h.mad) / 2.0).sqrt();
    let threshold =
        (SIGMAS * MAD_TO_SIGMA * pooled).max(MIN_RELATIVE_SHIFT * b.median.abs()).max(def.resolution);
    let beyond = delta.abs() > threshold;
    let worse = match def.better {
        Better::Lower => delta > 0.0,
        Better::Higher => delta < 0.0,
        Better::Neither => return Some(Shift::new(b, h, delta, threshold, Verdict::Noise)),
    };
    let verdict = match (beyond, worse) {
        (false, _) => Verdict::Noise,
        (true, true) => Verdict::Regression,
        (true, false) => Verdict::Improvement,
    };
    Some(Shift::new(b, h, delta, threshold, verdict))
}

impl Shift {
    fn new(base: Summary, head: Summary, delta: f64, threshold: f64, verdict: Verdict) -> Self {
        let relative = if base.median == 0.0 { f64::NAN } else { delta / base.median };
        Self { base, head, delta, relative, threshold, verdict }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wall() -> &'static MetricDef {
        metric("wall_s").unwrap()
    }

    /// Deterministic "noisy" samples: `centre` times factors spread by about ±`spread`.
    fn samples(centre: f64, spread: f64) -> Vec<f64> {
        [0.0, 0.6, -0.4, 1.0, -1.0, 0.2, -0.7].iter().map(|f| centre * (1.0 + f * spread)).collect()
    }

    #[test]
    fn summaries_are_robust() {
        let s = Summary::of(&[1.0, 2.0, 3.0, 4.0, 100.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.mad, s.n), (3.0, 1.0, 100.0, 1.0, 5));
        assert_eq!(Summary::of(&[2.0, 4.0]).unwrap().median, 3.0);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn a_20_percent_slowdown_is_a_regression() {
        let shift = judge(wall(), &samples(1.0, 0.01), &samples(1.2, 0.01)).unwrap();
        assert_eq!(shift.verdict, Verdict::Regression, "{shift:?}");
        assert!((shift.relative - 0.2).abs() < 1e-9);
        // And the same speed-up is an improvement; for throughput the directions flip.
        assert_eq!(
            judge(wall(), &samples(1.2, 0.01), &samples(1.0, 0.01)).unwrap().verdict,
            Verdict::Improvement
        );
        let mbps = metric("mb_per_s").unwrap();
        assert_eq!(
            judge(mbps, &samples(500.0, 0.01), &samples(400.0, 0.01)).unwrap().verdict,
            Verdict::Regression
        );
    }

    #[test]
    fn one_percent_noise_is_ignored() {
        // Same centre, 1% jitter; then a 1% shift of the centre: both below the 2% floor.
        assert_eq!(judge(wall(), &samples(1.0, 0.01), &samples(1.0, 0.01)).unwrap().verdict, Verdict::Noise);
        assert_eq!(judge(wall(), &samples(1.0, 0.01), &samples(1.01, 0.01)).unwrap().verdict, Verdict::Noise);
        // Identical samples (MAD 0) do not make a tiny shift significant.
        assert_eq!(judge(wall(), &[1.0; 5], &[1.005; 5]).unwrap().verdict, Verdict::Noise);
    }

    #[test]
    fn a_noisy_run_needs_a_bigger_shift() {
        // ±30% jitter: a 20% shift is within 3 sigma of the pooled MAD.
        let shift = judge(wall(), &samples(1.0, 0.3), &samples(1.2, 0.3)).unwrap();
        assert_eq!(shift.verdict, Verdict::Noise, "{shift:?}");
        assert!(shift.threshold > 0.2);
    }

    #[test]
    fn counters_below_their_resolution_are_noise() {
        let user = metric("user_s").unwrap();
        assert_eq!(judge(user, &[0.01; 3], &[0.02; 3]).unwrap().verdict, Verdict::Noise);
        let info = metric("read_bytes").unwrap();
        assert_eq!(judge(info, &[1.0; 3], &[100.0; 3]).unwrap().verdict, Verdict::Noise);
    }
}
