use std::path::PathBuf;

use clap::Args;

use super::batch::{self, Job, Naming};
use super::{KeyArgs, OutputArgs, PipelineArgs, ReportArgs};
use crate::error::Result;
use crate::io::{Sink, Source};
use crate::keys::SessionKeys;
use crate::unpack::{UnpackSummary, unpack_with_session};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  keepsync unpack photos.tar.ks -o photos.tar -k my.key    one file, named output
  keepsync unpack a.log.ks b.log.ks --passphrase-env PW    writes a.log and b.log beside them
  keepsync unpack /mnt/backup/*.ks -o restore/ -k my.key   into an existing directory

Every chunk is authenticated before any of its bytes are released. With -o FILE (or several
inputs), an output appears only after its whole container authenticated; with -o -,
authenticated chunks stream to stdout as they are verified, and a failure later in the file
exits non-zero.

Several inputs are opened with one Argon2id run per passphrase session: containers packed by one
`keepsync pack` share the stretched key. If an input fails (wrong passphrase, damage), the error
names it, no output is left for it, the others are still unpacked, and the exit code is
non-zero.

--json prints the summary on stdout, so the output cannot be -o -. With several inputs it
prints {\"files\": [...], \"failed\": [...], \"argon2id_runs\": N}.")]
pub struct UnpackArgs {
    /// Containers to read, or - for standard input (given alone).
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<PathBuf>,
    /// Where to write the original bytes: a file (one input), - for standard output (one
    /// input), or an existing directory. Default: each INPUT.ks without .ks, beside it.
    #[arg(long, short = 'o', value_name = "OUTPUT")]
    output: Option<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: UnpackArgs) -> Result<()> {
    let jobs = batch::plan(&args.inputs, args.output.as_deref(), Naming::Unpack)?;
    for job in &jobs {
        args.out.check(&job.output)?;
    }
    let mut keys = SessionKeys::new(args.key.spec(false)?);
    batch::run_all(&jobs, &args.out.report, &mut keys, "unpacked", |keys, job, prefix| {
        unpack_one(&args, keys, job, prefix)
    })
}

/// Unpacks one input; `prefix` starts its `-v` line (the input, when several).
fn unpack_one(args: &UnpackArgs, keys: &mut SessionKeys, job: &Job, prefix: &str) -> Result<UnpackSummary> {
    let source = Source::from_arg(&job.input);
    let sink = Sink::from_arg(&job.output, args.out.force);
    run_one(&args.pipeline, &args.out.report, keys, &source, &sink, prefix)
}

/// Runs the unpack pipeline from `source` into `sink` with a progress bar and the `-v` line:
/// `unpack` into its outputs, `verify` into [`Sink::Discard`] (the same authentication, nothing
/// written). `prefix` starts the `-v` line (the input, when several).
pub(super) fn run_one(
    pipeline: &PipelineArgs,
    report: &ReportArgs,
    keys: &mut SessionKeys,
    source: &Source,
    sink: &Sink,
    prefix: &str,
) -> Result<UnpackSummary> {
    let verifying = *sink == Sink::Discard;
    let progress = report.progress(if verifying { "verify" } else { "unpack" });
    let summary = unpack_with_session(
        source,
        sink,
        keys,
        pipeline.threads(),
        pipeline.max_memory,
        pipeline.crypto,
        &progress,
    );
    progress.finish_and_clear();
    let summary = summary?;
    report.print_summary(|| {
        let size = crate::units::human_bytes(summary.bytes_out);
        let did = if verifying {
            format!("verified {} chunks ({size})", summary.chunks)
        } else {
            format!("unpacked {} chunks into {size}", summary.chunks)
        };
        format!(
            "{prefix}{did} in {:.2} s, {:.0} MB/s, peak memory {}, limited by {}",
            summary.seconds,
            summary.mb_per_s,
            summary.peak_rss_bytes.map_or("unknown".into(), crate::units::human_bytes),
            summary.pipeline.bottleneck
        )
    });
    Ok(summary)
}
