use std::time::Duration;

use clap::Args;

use crate::error::Result;

#[derive(Debug, Args)]
pub struct CapsArgs {
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Milliseconds spent on each measurement.
    #[arg(long, value_name = "MS", default_value_t = 80)]
    measure_ms: u64,
}

pub fn run(args: CapsArgs) -> Result<()> {
    let report = crate::caps::caps(Duration::from_millis(args.measure_ms));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report).expect("reports serialize"));
    } else {
        println!("{report}");
    }
    Ok(())
}
