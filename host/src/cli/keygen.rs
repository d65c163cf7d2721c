use std::path::PathBuf;

use clap::Args;

use crate::error::Result;

#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Where to write the key file (must not exist).
    #[arg(long, short = 'o', value_name = "KEYFILE")]
    output: PathBuf,
}

pub fn run(args: KeygenArgs) -> Result<()> {
    crate::keys::generate_key_file(&args.output)?;
    eprintln!(
        "keepsync: wrote a new key to {} (mode 0600). Back it up: without it, data packed with it cannot be recovered.",
        args.output.display()
    );
    Ok(())
}
