use std::path::PathBuf;

use clap::Args;

use super::{KeyArgs, OutputArgs, PipelineArgs};
use crate::error::Result;
use crate::io::{Sink, Source};
use crate::unpack::unpack;

#[derive(Debug, Args)]
#[command(after_help = "\
Every chunk is authenticated before any of its bytes are released. With -o FILE, the output
appears only after the whole container authenticated; with -o -, authenticated chunks stream
to stdout as they are verified, and a failure later in the file exits non-zero.")]
pub struct UnpackArgs {
    /// Container to read, or - for standard input.
    input: PathBuf,
    /// Where to write the original bytes, or - for standard output.
    #[arg(long, short = 'o', value_name = "OUTPUT")]
    output: PathBuf,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: UnpackArgs) -> Result<()> {
    args.out.check(&args.output)?;
    let source = Source::from_arg(&args.input);
    let sink = Sink::from_arg(&args.output, args.out.force);
    let progress = args.out.progress("unpack");
    let summary = unpack(
        &source,
        &sink,
        &args.key.spec(),
        args.pipeline.threads(),
        args.pipeline.max_memory,
        args.pipeline.crypto,
        &progress,
    );
    progress.finish_and_clear();
    let summary = summary?;
    args.out.print_summary(|| {
        format!(
            "unpacked {} chunks into {} in {:.2} s, {:.0} MB/s, peak memory {}, limited by {}",
            summary.chunks,
            crate::units::human_bytes(summary.bytes_out),
            summary.seconds,
            summary.mb_per_s,
            summary.peak_rss_bytes.map_or("unknown".into(), crate::units::human_bytes),
            summary.pipeline.bottleneck
        )
    });
    args.out.print_json(&summary);
    Ok(())
}
