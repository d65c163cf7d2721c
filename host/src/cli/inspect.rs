use std::path::PathBuf;

use clap::Args;

use crate::error::Result;
use crate::io::Source;

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Container to inspect, or - for standard input.
    input: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(args: InspectArgs) -> Result<()> {
    let report = crate::inspect::inspect(&Source::from_arg(&args.input))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
    } else {
        println!("{report}");
    }
    Ok(())
}
