use std::path::PathBuf;

use clap::Args;

use super::batch::{self, Job, Naming};
use super::{KeyArgs, OutputArgs, PipelineArgs};
use crate::codec::{CodecChoice, CodecPlan};
use crate::error::{Error, Result};
use crate::io::{Sink, Source, refuse_terminal_stdout};
use crate::keys::SessionKeys;
use crate::pack::{PackOptions, PackSummary, pack_with_session};
use crate::units::{human_bytes, parse_size};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  keepsync pack photos.tar -o photos.tar.ks -k my.key      one file, named output
  keepsync pack a.log b.log c.log --passphrase-env PW      writes a.log.ks, b.log.ks, c.log.ks
  keepsync pack *.log -o /mnt/backup/ --passphrase-env PW  into an existing directory
  tar c dir | keepsync pack - -o - -k my.key > dir.tar.ks  a pipe

Several inputs with --passphrase-env stretch the passphrase once (Argon2id takes about a second
and 64 MiB): the containers of one run share that Argon2id salt, so one stretched key opens them
all, as one key file would; each container still has its own random file salt, hence its own
keys. If an input fails, the error names it, the others are still packed, and the exit code is
non-zero.

--json prints the summary on stdout, so the output cannot be -o -. With several inputs it
prints {\"files\": [...], \"failed\": [...], \"argon2id_runs\": N}.

Each container is written beside its OUTPUT as a hidden partial file, fsynced, and renamed into
place only when complete. If the run is interrupted, run the same command again (with several
inputs: with the inputs not yet packed): it resumes after re-verifying the bytes already packed,
or starts over with fresh keys if the source changed.")]
pub struct PackArgs {
    /// Files to pack, or - for standard input (given alone).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// The container to write (one input), - for standard output (one input), or an existing
    /// directory to write each INPUT.ks into. Default: INPUT.ks beside each input.
    #[arg(long, short = 'o', value_name = "OUTPUT")]
    output: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    /// Compression: auto (per chunk: store what looks incompressible, zstd the rest; files
    /// that are already compressed are stored whole), none, lz4, deflate, zstd.
    #[arg(long, value_enum, default_value_t = CodecChoice::Auto)]
    codec: CodecChoice,
    /// zstd level, 1 (fast) to 19 (small).
    #[arg(long, value_name = "N", default_value_t = crate::codec::DEFAULT_ZSTD_LEVEL)]
    level: i32,
    /// Write only codecs keepsync-core can decode on a device (no zstd; auto uses lz4).
    #[arg(long)]
    for_device: bool,
    /// Plaintext bytes per chunk: a power of two from 4KiB to 4MiB.
    #[arg(long, value_name = "SIZE", default_value = "64KiB", value_parser = parse_size)]
    chunk_size: u64,
    /// Never resume an interrupted run; always start over.
    #[arg(long)]
    no_resume: bool,
    /// Make output durable and record a checkpoint after every SIZE of input read: the most
    /// work a crash can make the next run redo (a run stopped before its first checkpoint
    /// starts over, and says so).
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    checkpoint_every: u64,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: PackArgs) -> Result<()> {
    let jobs = batch::plan(&args.inputs, args.output.as_deref(), Naming::Pack)?;
    for job in &jobs {
        args.out.check(&job.output)?;
    }
    let chunk_log2 = usize::try_from(args.chunk_size)
        .ok()
        .and_then(keepsync_core::budget::chunk_log2_from_size)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--chunk-size {} is not a power of two from 4KiB to 4MiB",
                human_bytes(args.chunk_size)
            ))
        })?;
    if jobs.iter().any(|j| Sink::from_arg(&j.output, false) == Sink::Stdout) {
        refuse_terminal_stdout("a binary container")?;
    }
    let codec = CodecPlan { level: args.level, for_device: args.for_device, ..CodecPlan::new(args.codec) };
    codec.check().map_err(Error::Usage)?;
    let opts = PackOptions {
        codec,
        chunk_log2,
        resume: !args.no_resume,
        checkpoint_every: args.checkpoint_every.max(1),
        threads: args.pipeline.threads(),
        max_memory: args.pipeline.max_memory,
        crypto: args.pipeline.crypto,
    };
    let mut keys = SessionKeys::new(args.key.spec(true)?);
    batch::run_all(&jobs, &args.out.report, &mut keys, "packed", |keys, job, prefix| {
        pack_one(&args, &opts, keys, job, prefix)
    })
}

/// Packs one input; `prefix` starts its notices and its `-v` line (the input, when several).
fn pack_one(
    args: &PackArgs,
    opts: &PackOptions,
    keys: &mut SessionKeys,
    job: &Job,
    prefix: &str,
) -> Result<PackSummary> {
    let source = Source::from_arg(&job.input);
    let sink = Sink::from_arg(&job.output, args.out.force);
    let progress = args.out.report.progress("pack");
    let notice = args.out.report.notice();
    let notice = |msg: &str| notice(&format!("{prefix}{msg}"));
    let summary = pack_with_session(&source, &sink, keys, opts, &progress, &notice);
    progress.finish_and_clear();
    let summary = summary?;
    args.out.report.print_summary(|| {
        format!(
            "{prefix}packed {} into {} ({:.3}) in {:.2} s, {:.0} MB/s, peak memory {}, limited by {}",
            human_bytes(summary.bytes_in),
            human_bytes(summary.bytes_out),
            summary.ratio,
            summary.seconds,
            summary.mb_per_s,
            summary.peak_rss_bytes.map_or("unknown".into(), human_bytes),
            summary.pipeline.map_or("?", |p| p.bottleneck)
        )
    });
    Ok(summary)
}
