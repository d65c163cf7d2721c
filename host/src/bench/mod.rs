//! `keepsync bench`: repeatable end-to-end benchmarks with a history.
//!
//! - [`corpus`]: seeded corpora per size class, generated once into a cache;
//! - [`workload`]: pack, unpack and sync, by keepsync and by peer tools;
//! - [`measure`]: wall, CPU, memory and I/O counters of one run;
//! - [`stats`]: medians, MADs and the regression rule;
//! - [`store`]: the SQLite history;
//! - [`report`]: text and Markdown tables, comparisons, the HTML report;
//! - [`chart`]: the report's SVG charts.
//!
//! A run times every (workload, size class, tool) case `warmup + repeat` times, keeps the
//! last `repeat` samples of every metric, and stores them all. Wall-clock numbers on a shared
//! machine are noisy: read them with their MAD, and gate on instruction counts
//! (`benches/icount.rs`) where exactness matters.

pub mod chart;
pub mod corpus;
pub mod measure;
pub mod report;
pub mod stats;
pub mod store;
pub mod workload;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use corpus::{Corpus, Layout, SizeClass};
use workload::{AgeKey, Context, PEERS, Sample, Tool, Workload, peer_status};

/// One benchmark run, as stored in the history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// Id in the history (`None` before it is stored).
    pub id: Option<i64>,
    /// Start time, RFC 3339 UTC.
    pub started_at: String,
    /// Start time, seconds since the Unix epoch.
    pub unix_time: i64,
    /// A name given with `--tag`.
    pub tag: Option<String>,
    /// `git rev-parse HEAD` where the run started, if in a repository.
    pub git_rev: Option<String>,
    /// keepsync's version.
    pub version: String,
    /// The settings (see [`Settings`]).
    pub settings: serde_json::Value,
    /// The machine (see [`Machine`]).
    pub machine: serde_json::Value,
    /// Each peer and whether it could run.
    pub peers: Vec<PeerStatus>,
    /// The measured cases.
    pub cases: Vec<Case>,
}

/// The status of a peer that is installed and was requested: it ran in every case it does.
pub const INSTALLED: &str = "installed";

/// Whether a peer could run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The tool.
    pub tool: String,
    /// [`INSTALLED`], `not installed`, or `not requested`.
    pub status: String,
}

/// One (workload, size class, tool) with its samples.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    /// `pack`, `unpack` or `sync`.
    pub workload: String,
    /// Size class name (or `input`).
    pub size_class: String,
    /// `keepsync` or a peer's name.
    pub tool: String,
    /// What ran, e.g. `zstd -1 -T2 -q -c`.
    pub command: String,
    /// Bytes the corpus holds.
    pub input_bytes: u64,
    /// Files the corpus holds.
    pub files: u64,
    /// Samples per metric name ([`stats::METRICS`]), one per repeat.
    pub samples: BTreeMap<String, Vec<f64>>,
}

/// What to run.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Workloads.
    pub workloads: Vec<Workload>,
    /// Size classes (empty with `input`).
    pub size_classes: Vec<SizeClass>,
    /// Corpus seed.
    pub seed: u64,
    /// The user's data instead of generated corpora.
    pub input: Option<PathBuf>,
    /// Timed runs per case.
    pub repeat: u32,
    /// Untimed runs before them.
    pub warmup: u32,
    /// Peers to run when installed.
    pub peers: Vec<String>,
    /// Files in multi-file classes, overriding the defaults.
    pub files: Option<u64>,
    /// Worker threads.
    pub threads: usize,
    /// Corpus cache and outputs.
    #[serde(skip)]
    pub work_dir: PathBuf,
    /// A name for the run.
    #[serde(skip)]
    pub tag: Option<String>,
    /// The corpus format version (caches and results are only comparable within one).
    pub corpus_version: u32,
}

/// The machine a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Cores this process may use.
    pub cores: usize,
    /// CPU model.
    pub cpu: Option<String>,
    /// CPU features that matter to AES-GCM.
    pub cpu_crypto_features: Vec<&'static str>,
    /// AES and carry-less multiply in hardware.
    pub hardware_aes: bool,
    /// Total memory.
    pub memory_bytes: Option<u64>,
    /// Kernel release.
    pub kernel: Option<String>,
}

impl Machine {
    /// This machine.
    pub fn detect() -> Self {
        Self {
            cores: crate::pack::default_threads(),
            cpu: crate::caps::cpu_model(),
            cpu_crypto_features: crate::crypto::cpu_crypto_features(),
            hardware_aes: crate::crypto::hardware_aes(),
            memory_bytes: crate::caps::meminfo_total(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        }
    }
}

/// The default work directory: `$XDG_CACHE_HOME/keepsync/bench`, else `~/.cache/keepsync/bench`.
pub fn default_work_dir() -> Result<PathBuf> {
    crate::io::xdg_path("XDG_CACHE_HOME", ".cache", "bench", "--work-dir DIR")
}

/// `git rev-parse HEAD` in the current directory, if git and a repository are there.
fn git_rev() -> Option<String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let rev = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !rev.is_empty()).then_some(rev)
}

/// Seconds since the epoch as RFC 3339 UTC (no time zone database needed for UTC).
pub fn rfc3339(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs / 60 % 60, secs % 60)
}

/// The metrics of one sample, by name.
fn metrics_of(sample: &Sample) -> Vec<(&'static str, f64)> {
    let m = &sample.measured;
    let mut out = vec![("wall_s", m.wall_s)];
    if m.wall_s > 0.0 {
        out.push(("mb_per_s", sample.bytes_in as f64 / m.wall_s / 1e6));
    }
    if let Some(bytes_out) = sample.bytes_out.filter(|_| sample.bytes_in > 0) {
        out.push(("ratio", bytes_out as f64 / sample.bytes_in as f64));
    }
    out.extend(m.user_s.map(|v| ("user_s", v)));
    out.extend(m.sys_s.map(|v| ("sys_s", v)));
    out.extend(m.peak_rss_bytes.map(|v| ("peak_rss_bytes", v as f64)));
    if let Some(io) = m.io {
        out.extend([
            ("read_bytes", io.read_bytes as f64),
            ("written_bytes", io.written_bytes as f64),
            ("disk_read_bytes", io.disk_read_bytes as f64),
            ("disk_written_bytes", io.disk_written_bytes as f64),
        ]);
    }
    out.extend(sample.fsync_s.map(|v| ("fsync_s", v)));
    if let Some(p) = sample.pipeline {
        out.extend([
            ("read_busy", 1.0 - p.reader_waiting),
            ("compute_busy", 1.0 - p.workers_idle),
            ("write_busy", 1.0 - p.writer_waiting),
        ]);
    }
    out
}

/// Runs one case: prepare, warm up, then `repeat` timed runs. Outputs are overwritten in
/// place; sync targets are fresh directories, removed once the case is done (never inside
/// the timing loop).
fn run_case(ctx: &Context<'_>, tool: Tool, workload: Workload, settings: &Settings) -> Result<Case> {
    ctx.prepare(tool, workload)?;
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let total = settings.warmup + settings.repeat;
    let result = (|| {
        for run in 0..total {
            // Write back the previous run's dirty pages now, so no run pays for another's.
            let _ = std::process::Command::new("sync").status();
            let sample = ctx.run(tool, workload, run)?;
            if run >= settings.warmup {
                for (name, value) in metrics_of(&sample) {
                    samples.entry(name.to_string()).or_default().push(value);
                }
            }
        }
        Ok(())
    })();
    if workload.is_tree() {
        for run in 0..total {
            let dest = ctx.sync_dest(tool, run);
            if dest.exists() {
                std::fs::remove_dir_all(&dest).map_err(|e| Error::io("remove", &dest, e))?;
            }
        }
    }
    result?;
    Ok(Case {
        workload: workload.name().into(),
        size_class: ctx.corpus.class.clone(),
        tool: tool.name().into(),
        command: ctx.describe(tool, workload),
        input_bytes: ctx.corpus.bytes,
        files: ctx.corpus.files,
        samples,
    })
}

/// Runs the benchmark described by `settings`. Progress goes to stderr when it is a terminal.
pub fn run(settings: &Settings) -> Result<Run> {
    let unix_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let work = &settings.work_dir;
    let cache = work.join("corpus");
    std::fs::create_dir_all(&cache).map_err(|e| Error::io("create", &cache, e))?;
    let key_file = work.join("keepsync.key");
    if !key_file.exists() {
        crate::keys::generate_key_file(&key_file, false)?;
    }
    let wants_age = settings.peers.iter().any(|p| p == "age" || p == "rage");
    let age = if wants_age { AgeKey::ensure(work)? } else { None };
    let peers: Vec<PeerStatus> = PEERS
        .iter()
        .map(|p| PeerStatus {
            tool: p.tool.into(),
            status: if !settings.peers.iter().any(|r| r == p.tool) {
                "not requested".into()
            } else {
                match peer_status(p, age.as_ref()) {
                    Ok(()) => INSTALLED.into(),
                    Err(why) => why.into(),
                }
            },
        })
        .collect();
    let tools: Vec<Tool> = std::iter::once(Tool::Keepsync)
        .chain(PEERS.iter().zip(&peers).filter(|(_, s)| s.status == INSTALLED).map(|(p, _)| Tool::Peer(p)))
        .collect();
    let progress = std::io::stderr().is_terminal();
    let corpora: Vec<Corpus> = match &settings.input {
        Some(path) => vec![corpus::from_input(path)?],
        None => settings
            .size_classes
            .iter()
            .map(|&class| {
                let layout = Layout::new(class, settings.seed, settings.files);
                if progress && !cache.join(layout.key()).is_dir() {
                    eprintln!("keepsync: bench: generating the {} corpus (once)", class.name());
                }
                layout.ensure(&cache)
            })
            .collect::<Result<_>>()?,
    };
    let mut cases = Vec::new();
    for corpus in &corpora {
        let out_dir = work.join("out").join(&corpus.class);
        std::fs::create_dir_all(&out_dir).map_err(|e| Error::io("create", &out_dir, e))?;
        let ctx = Context {
            corpus,
            out_dir,
            key_file: key_file.clone(),
            age: age.clone(),
            threads: settings.threads,
            loopback: std::sync::OnceLock::new(),
        };
        for &workload in &settings.workloads {
            let applies = match workload {
                Workload::Pack | Workload::Unpack => corpus.bundle.is_some(),
                Workload::Sync | Workload::Loopback => corpus.tree.is_some(),
            };
            if !applies {
                eprintln!(
                    "keepsync: bench: {} skipped: --input is not a {}",
                    workload.name(),
                    match workload {
                        Workload::Sync | Workload::Loopback => "directory",
                        _ => "file",
                    }
                );
                continue;
            }
            for &tool in &tools {
                if let Tool::Peer(p) = tool
                    && !p.workloads.contains(&workload)
                {
                    continue;
                }
                if progress {
                    eprintln!("keepsync: bench: {} {} {}", workload.name(), corpus.class, tool.name());
                }
                cases.push(run_case(&ctx, tool, workload, settings)?);
            }
        }
    }
    Ok(Run {
        id: None,
        started_at: rfc3339(unix_time),
        unix_time,
        tag: settings.tag.clone(),
        git_rev: git_rev(),
        version: env!("CARGO_PKG_VERSION").into(),
        settings: serde_json::to_value(settings).expect("settings serialize"),
        machine: serde_json::to_value(Machine::detect()).expect("machine serializes"),
        peers,
        cases,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000 + 3661), "2026-11-18T12:07:41Z");
    }
}
