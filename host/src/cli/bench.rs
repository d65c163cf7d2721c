use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::bench::corpus::SizeClass;
use crate::bench::report::{self, Format, RunView};
use crate::bench::store::{self, Store};
use crate::bench::workload::{PEERS, Workload};
use crate::bench::{self as harness, Run, Settings};
use crate::error::{Error, Result, exit};

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    after_help = "\
Each (workload, size class, tool) runs --warmup untimed times, then --repeat timed times; the
report shows the median, min..max and MAD of each metric, and keepsync / peer ratios. pack and
unpack work on the class's bytes as one file; sync mirrors its tree of files into a fresh
directory (small = 1,000 files of 4 KiB: per-file costs). Corpora are generated once from
--seed into --work-dir and reused; every run is stored in the history database.

Peers (zstd, lz4, pigz, age, rage, rsync) run on the same corpus when installed; missing ones
are listed as not installed. They do not fsync their output; keepsync does.

Examples:
  keepsync bench                                   small + medium, all workloads, 5 repeats
  keepsync bench --size-class large --workload pack --tag before-change
  keepsync bench --input ~/photos --workload sync  your own data
  keepsync bench --report bench.html --markdown
  keepsync bench history
  keepsync bench report 12 --report run12.html
  keepsync bench baseline set 12                   mark run 12 as the baseline, once
  keepsync bench compare baseline latest           exit 3 on a regression

Regression rule (bench compare): a keepsync metric regressed when its median moved the bad way
by more than max(3 x 1.4826 x pooled MAD, 2% of the base median, the metric's resolution)."
)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// List the stored runs, oldest first, with keepsync's median MB/s.
    History(HistoryArgs),
    /// Compare two runs metric by metric; exit 3 if keepsync regressed beyond the noise.
    Compare(CompareArgs),
    /// Show a stored run again: tables, JSON, the HTML report or the charts.
    Report(ReportArgs),
    /// Name the run that `baseline` refers to.
    Baseline(BaselineArgs),
}

#[derive(Debug, Args)]
struct DbArg {
    /// History database [default: $XDG_DATA_HOME/keepsync/bench.sqlite, else
    /// ~/.local/share/keepsync/bench.sqlite].
    #[arg(long, value_name = "FILE")]
    db: Option<PathBuf>,
}

impl DbArg {
    fn open(&self) -> Result<Store> {
        let path = match &self.db {
            Some(p) => p.clone(),
            None => store::default_path()?,
        };
        Store::open(&path)
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Workloads, comma-separated: pack, unpack, sync, loopback (a push to an in-process
    /// `keepsync serve` over loopback TCP; not in the default set).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "pack,unpack,sync", value_parser = parse_workload)]
    workload: Vec<Workload>,
    /// Size classes, comma-separated: small (1,000 x 4 KiB), medium (32 x 1 MiB), large
    /// (256 MiB), very-large (2 GiB).
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "small,medium", value_parser = parse_class)]
    size_class: Vec<SizeClass>,
    /// Seed of the generated corpora: the same seed gives the same bytes on every machine.
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Benchmark your own data instead: a file (pack, unpack) or a directory (sync).
    #[arg(long, value_name = "PATH", conflicts_with = "size_class")]
    input: Option<PathBuf>,
    /// Timed runs per case.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    repeat: u32,
    /// Untimed runs before them (caches, page cache, CPU frequency).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=100))]
    warmup: u32,
    /// Peers to run when installed, comma-separated, or `none`.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "zstd,lz4,pigz,age,rage,rsync")]
    peers: Vec<String>,
    /// Worker threads for keepsync, zstd and pigz (default: every core).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Corpus cache and outputs [default: $XDG_CACHE_HOME/keepsync/bench, else
    /// ~/.cache/keepsync/bench].
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// A name for this run, usable in `bench compare`.
    #[arg(long, value_name = "NAME", value_parser = parse_tag)]
    tag: Option<String>,
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    out: RunOutputs,
    /// Files in the small and medium classes (for quick tests).
    #[arg(long, value_name = "N", hide = true, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    files: Option<u64>,
}

/// How a run is shown: by `bench` after it ran, and by `bench report` from the history.
#[derive(Debug, Args)]
struct RunOutputs {
    /// Print the run as JSON (samples, summaries, ratios) instead of tables.
    #[arg(long, conflicts_with = "markdown")]
    json: bool,
    /// Print Markdown tables instead of aligned text.
    #[arg(long)]
    markdown: bool,
    /// Also write a self-contained HTML report with SVG charts to FILE.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Also write each chart as DIR/bench-NAME.svg (throughput, phases, history), e.g. for docs.
    #[arg(long, value_name = "DIR")]
    charts: Option<PathBuf>,
}

impl RunOutputs {
    /// Writes the requested files and prints the run.
    fn show(&self, store: &Store, run: &Run) -> Result<()> {
        if self.report.is_some() || self.charts.is_some() {
            let charts = crate::bench::chart::charts(run, &history_series(store, run)?);
            if let Some(path) = &self.report {
                write_file(path, report::html(run, &charts).as_bytes())?;
            }
            if let Some(dir) = &self.charts {
                std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
                for (name, svg) in &charts {
                    write_file(&dir.join(format!("bench-{name}.svg")), svg.as_bytes())?;
                }
            }
        }
        if self.json {
            json(&RunView::new(run));
        } else {
            println!("{}", report::render(&report::run_tables(run), format(self.markdown)));
        }
        Ok(())
    }
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// The run: an id, a --tag name, `baseline` or `latest`.
    #[arg(default_value = "latest")]
    run: String,
    #[command(flatten)]
    db: DbArg,
    #[command(flatten)]
    out: RunOutputs,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    #[command(flatten)]
    db: DbArg,
    /// Show at most the last N runs.
    #[arg(long, value_name = "N", default_value_t = 50)]
    limit: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print a Markdown table.
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// The reference run: an id, a --tag name, `baseline` or `latest`.
    base: String,
    /// The run to judge, named the same ways.
    head: String,
    #[command(flatten)]
    db: DbArg,
    /// Show every metric, not only the ones that moved beyond the noise.
    #[arg(long)]
    all: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Print a Markdown table.
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
}

#[derive(Debug, Args)]
struct BaselineArgs {
    #[command(subcommand)]
    action: BaselineAction,
}

#[derive(Debug, Subcommand)]
enum BaselineAction {
    /// Make RUN (an id, a tag, or `latest`) the baseline.
    Set {
        /// The run.
        run: String,
        #[command(flatten)]
        db: DbArg,
    },
}

fn parse_workload(text: &str) -> std::result::Result<Workload, String> {
    Workload::parse(text)
        .ok_or_else(|| format!("`{text}` is not a workload (use pack, unpack, sync, loopback)"))
}

fn parse_class(text: &str) -> std::result::Result<SizeClass, String> {
    SizeClass::parse(text)
        .ok_or_else(|| format!("`{text}` is not a size class (use small, medium, large, very-large)"))
}

fn parse_tag(text: &str) -> std::result::Result<String, String> {
    // A tag that looks like an id or a keyword could never be named in `bench compare`.
    if text.is_empty() || text.parse::<i64>().is_ok() || text == "latest" || text == "baseline" {
        return Err(format!("`{text}` cannot be a tag: it would read as a run id or keyword; add a letter"));
    }
    Ok(text.to_string())
}

fn format(markdown: bool) -> Format {
    if markdown { Format::Markdown } else { Format::Text }
}

fn json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("reports serialize"));
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    match args.command {
        None => run_bench(args.run),
        Some(BenchCommand::History(a)) => history(a),
        Some(BenchCommand::Compare(a)) => compare(a),
        Some(BenchCommand::Report(a)) => {
            let store = a.db.open()?;
            let run = store.load(store.resolve(&a.run)?)?;
            a.out.show(&store, &run)?;
            Ok(ExitCode::from(exit::OK))
        }
        Some(BenchCommand::Baseline(BaselineArgs { action: BaselineAction::Set { run, db } })) => {
            let store = db.open()?;
            let id = store.resolve(&run)?;
            store.set_baseline(id)?;
            eprintln!("keepsync: run {id} is the baseline");
            Ok(ExitCode::from(exit::OK))
        }
    }
}

fn run_bench(args: RunArgs) -> Result<ExitCode> {
    let mut peers: Vec<String> = args.peers.iter().filter(|p| p.as_str() != "none").cloned().collect();
    peers.dedup();
    if let Some(bad) = peers.iter().find(|p| crate::bench::workload::peer(p).is_none()) {
        return Err(Error::Usage(format!(
            "--peers: `{bad}` is not a known peer (use {} or none)",
            PEERS.iter().map(|p| p.tool).collect::<Vec<_>>().join(", ")
        )));
    }
    let mut store = args.db.open()?;
    let mut workloads = args.workload.clone();
    workloads.dedup();
    let mut size_classes = if args.input.is_some() { Vec::new() } else { args.size_class.clone() };
    size_classes.dedup();
    let settings = Settings {
        workloads,
        size_classes,
        seed: args.seed,
        input: args.input.clone(),
        repeat: args.repeat,
        warmup: args.warmup,
        peers,
        files: args.files,
        threads: args.threads.map_or_else(crate::pack::default_threads, usize::from),
        // Absolute, so peers started elsewhere and the reports name the same place.
        work_dir: match &args.work_dir {
            Some(d) => std::path::absolute(d).map_err(|e| Error::io("resolve", d, e))?,
            None => harness::default_work_dir()?,
        },
        tag: args.tag.clone(),
        corpus_version: crate::bench::corpus::CORPUS_VERSION,
    };
    let mut run = harness::run(&settings)?;
    run.id = Some(store.insert(&run)?);
    args.out.show(&store, &run)?;
    Ok(ExitCode::from(exit::OK))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io("create", path, e))
}

/// keepsync's median MB/s per (workload, class) of `run`, over every stored run.
fn history_series(store: &Store, run: &Run) -> Result<Vec<crate::bench::chart::Line>> {
    run.cases
        .iter()
        .filter(|c| c.tool == "keepsync")
        .map(|c| {
            let points = store
                .series(&c.workload, &c.size_class, &c.tool, "mb_per_s")?
                .into_iter()
                .filter_map(|(id, v)| Some((id as f64, crate::bench::stats::Summary::of(&v)?.median)))
                .collect();
            Ok((format!("{} {}", c.workload, c.size_class), points))
        })
        .collect()
}

fn history(args: HistoryArgs) -> Result<ExitCode> {
    let store = args.db.open()?;
    let runs = store
        .list(args.limit)?
        .into_iter()
        .map(|info| Ok((store.load(info.id)?, info)))
        .map(|r: Result<_>| r.map(|(run, info)| (info, run)))
        .collect::<Result<Vec<_>>>()?;
    if args.json {
        json(&runs.iter().map(|(_, run)| RunView::new(run)).collect::<Vec<_>>());
        return Ok(ExitCode::from(exit::OK));
    }
    if runs.is_empty() {
        eprintln!("keepsync: the history is empty; run `keepsync bench` first");
    }
    println!("{}", report::render(&[report::history_table(&runs)], format(args.markdown)));
    Ok(ExitCode::from(exit::OK))
}

fn compare(args: CompareArgs) -> Result<ExitCode> {
    let store = args.db.open()?;
    let base = store.load(store.resolve(&args.base)?)?;
    let head = store.load(store.resolve(&args.head)?)?;
    let rows = report::compare(&base, &head);
    let regressions = report::regressions(&rows);
    if base.machine != head.machine {
        eprintln!(
            "keepsync: warning: the runs were measured on different machines; differences may not be keepsync's"
        );
    }
    if base.settings.get("seed") != head.settings.get("seed")
        || base.settings.get("corpus_version") != head.settings.get("corpus_version")
    {
        eprintln!("keepsync: warning: the runs used different corpora (seed or corpus version)");
    }
    if args.json {
        json(&serde_json::json!({
            "base": base.id, "head": head.id, "regressions": regressions, "rows": rows,
        }));
    } else {
        let shown: Vec<_> = rows
            .iter()
            .filter(|r| args.all || r.shift.verdict != crate::bench::stats::Verdict::Noise)
            .cloned()
            .collect();
        if rows.is_empty() {
            eprintln!("keepsync: the runs have no case in common (different workloads or size classes)");
        }
        if !shown.is_empty() {
            println!(
                "{}",
                report::render(&[report::compare_table(&base, &head, &shown)], format(args.markdown))
            );
        }
        println!(
            "{} of {} compared metrics moved beyond the noise; {} keepsync regression{}",
            rows.iter().filter(|r| r.shift.verdict != crate::bench::stats::Verdict::Noise).count(),
            rows.len(),
            regressions,
            if regressions == 1 { "" } else { "s" }
        );
    }
    Ok(ExitCode::from(if regressions > 0 { exit::REGRESSION } else { exit::OK }))
}
