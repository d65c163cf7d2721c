use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::Result;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  keepsync keygen -o ~/.keepsync.key                 a new key file, mode 0600
  keepsync keygen -o sync.psk --force                replace a key (the old one is lost)
  keepsync keygen -o - | ssh backup 'umask 077; cat > sync.psk'

A key file is two comment lines and one line `KEEPSYNC-KEY-1` followed by 64 hex digits
(docs/FORMAT.md). Without --force an existing KEYFILE is never touched (exit 73). With
--force the new key is written to a private temporary file beside KEYFILE, fsynced and
renamed over it: KEYFILE holds the old key or the new one, never part of either. Containers
packed with the old key cannot be opened with the new one.

-o - prints the key file on standard output for a pipe or a redirection; keygen refuses to
print it on a terminal, where the secret would stay in the scrollback.")]
pub struct KeygenArgs {
    /// Where to write the key file, or - for standard output.
    #[arg(long, short = 'o', value_name = "KEYFILE")]
    output: PathBuf,
    /// Replace KEYFILE if it exists (a regular file), atomically.
    #[arg(long, short = 'f')]
    force: bool,
}

pub fn run(args: KeygenArgs) -> Result<()> {
    if args.output == Path::new("-") {
        return print_key();
    }
    crate::keys::generate_key_file(&args.output, args.force)?;
    crate::say::say(&format!(
        "wrote a new key to {} (mode 0600). Back it up: without it, data packed with it cannot be recovered.",
        args.output.display()
    ));
    Ok(())
}

/// Prints a new key file on standard output, unless that is a terminal.
fn print_key() -> Result<()> {
    crate::io::refuse_terminal_stdout("a secret key")?;
    crate::io::write_stdout(crate::keys::new_key_file_text()?.as_bytes())
}
