use std::path::PathBuf;

use clap::Args;

use super::{KeyArgs, OutputArgs, PipelineArgs};
use crate::codec::{CodecChoice, CodecPlan};
use crate::error::{Error, Result};
use crate::io::{Sink, Source, refuse_binary_to_terminal};
use crate::pack::{PackOptions, pack};
use crate::units::{human_bytes, parse_size};

#[derive(Debug, Args)]
#[command(after_help = "\
The container is written beside OUTPUT as a hidden partial file, fsynced, and renamed into place
only when complete. If the run is interrupted, run the same command again: it resumes after
re-verifying the bytes already packed, or starts over with fresh keys if the source changed.")]
pub struct PackArgs {
    /// File to pack, or - for standard input.
    input: PathBuf,
    /// Container to write, or - for standard output.
    #[arg(long, short = 'o', value_name = "OUTPUT")]
    output: PathBuf,
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
    /// Make output durable and record a checkpoint after this many bytes: the most work a
    /// crash can make the next run redo.
    #[arg(long, value_name = "SIZE", default_value = "64MiB", value_parser = parse_size)]
    checkpoint_every: u64,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: PackArgs) -> Result<()> {
    args.out.check(&args.output)?;
    let chunk_log2 = usize::try_from(args.chunk_size)
        .ok()
        .and_then(keepsync_core::budget::chunk_log2_from_size)
        .ok_or_else(|| {
            Error::Usage(format!(
                "--chunk-size {} is not a power of two from 4KiB to 4MiB",
                human_bytes(args.chunk_size)
            ))
        })?;
    let source = Source::from_arg(&args.input);
    let sink = Sink::from_arg(&args.output, args.out.force);
    if sink == Sink::Stdout {
        refuse_binary_to_terminal()?;
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
    let progress = args.out.progress("pack");
    let summary = pack(&source, &sink, &args.key.spec(), &opts, &progress, &args.out.notice());
    progress.finish_and_clear();
    let summary = summary?;
    args.out.print_summary(|| {
        format!(
            "packed {} into {} ({:.3}) in {:.2} s, {:.0} MB/s, peak memory {}, limited by {}",
            human_bytes(summary.bytes_in),
            human_bytes(summary.bytes_out),
            summary.ratio,
            summary.seconds,
            summary.mb_per_s,
            summary.peak_rss_bytes.map_or("unknown".into(), human_bytes),
            summary.pipeline.map_or("?", |p| p.bottleneck)
        )
    });
    args.out.print_json(&summary);
    Ok(())
}
