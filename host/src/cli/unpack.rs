use std::path::PathBuf;

use clap::Args;

use super::{KeyArgs, OutputArgs};
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
    /// Worker threads authenticating and decoding chunks (default: every core).
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: UnpackArgs) -> Result<()> {
    args.out.check(&args.output)?;
    let source = Source::from_arg(&args.input);
    let sink = Sink::from_arg(&args.output, args.out.force);
    let progress = args.out.progress("unpack");
    let threads = args.threads.map_or_else(crate::pack::default_threads, usize::from);
    let summary = unpack(&source, &sink, &args.key.spec(), threads, &progress);
    progress.finish_and_clear();
    args.out.print_json(&summary?);
    Ok(())
}
