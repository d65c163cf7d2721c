//! `keepsync verify`: authenticates containers exactly as `unpack` does, and writes nothing.

use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{KeyArgs, PipelineArgs, ReportArgs};
use crate::error::{Error, Result, exit};
use crate::io::{Sink, Source};
use crate::keys::SessionKeys;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  keepsync verify photos.tar.ks -k my.key                  one container
  keepsync verify /mnt/backup/*.ks --passphrase-env PW     many: one Argon2id run per session
  ssh backup cat photos.tar.ks | keepsync verify - -k my.key
  keepsync verify /mnt/backup/*.ks -k my.key --json        one result object per file

Every chunk of each container is authenticated and decoded as `keepsync unpack` does, then
dropped: nothing is written, not even a partial file. A container that verifies prints
`FILE: OK (N bytes, M chunks)` on stdout, N being the size of the original data; one that
does not is named on stderr with what went wrong and what to do, and the next is checked.
--json prints instead an array of {\"input\", \"ok\", \"bytes\", \"chunks\",
\"container_bytes\", \"error\", \"exit_code\"}, one per FILE; -q prints only the failures.

Exit codes:
  0   every container verified
  65  one was rejected: not a container, damaged, tampered with, truncated, or the wrong key
  74  reading one failed midway
  66  one, or the key file, cannot be opened
When containers fail in different ways, the first of 65, 74, 66 that applies is the exit
code: a damaged backup matters more than a mistyped name.")]
pub struct VerifyArgs {
    /// Containers to check; - reads one from standard input.
    #[arg(required = true, value_name = "FILE")]
    inputs: Vec<PathBuf>,
    #[command(flatten)]
    key: KeyArgs,
    #[command(flatten)]
    pipeline: PipelineArgs,
    #[command(flatten)]
    report: ReportArgs,
}

/// What verifying one container found: an element of the `--json` array.
#[derive(Debug, Serialize)]
struct Verdict {
    /// The container, as messages name it.
    input: String,
    /// Whether every chunk authenticated and decoded.
    ok: bool,
    /// Original (plaintext) bytes, when it verified.
    bytes: Option<u64>,
    /// Chunks authenticated, when it verified.
    chunks: Option<u64>,
    /// Container bytes read, when it verified.
    container_bytes: Option<u64>,
    /// The error, when it did not.
    error: Option<String>,
    /// The exit code this container alone would give.
    exit_code: u8,
}

/// The failures that decide the exit code when containers fail differently, most important
/// first: rejected data, then a read that failed midway, then an input that cannot be opened.
const EXIT_PRECEDENCE: [u8; 3] = [exit::DATA, exit::IO, exit::NO_INPUT];

/// The exit code of a run whose failed containers gave `codes` (not empty): the first of
/// [`EXIT_PRECEDENCE`] among them, else the first failure's.
fn worst_exit_code(codes: &[u8]) -> u8 {
    EXIT_PRECEDENCE.into_iter().find(|c| codes.contains(c)).unwrap_or(codes[0])
}

/// `1 chunk`, `4 chunks`.
fn plural(n: u64, noun: &str) -> String {
    if n == 1 { format!("1 {noun}") } else { format!("{n} {noun}s") }
}

pub fn run(args: VerifyArgs) -> Result<()> {
    let stdin = Path::new("-");
    if args.inputs.iter().filter(|i| *i == stdin).count() > 1 {
        return Err(Error::Usage("- (standard input) can be given only once".into()));
    }
    let mut keys = SessionKeys::new(args.key.spec(false)?);
    // A key that cannot be had is one failure, not one per container.
    keys.preflight()?;
    let several = args.inputs.len() > 1;
    let list_ok = !args.report.quiet && !args.report.json;
    let mut verdicts = Vec::with_capacity(args.inputs.len());
    let mut first_error = None;
    let mut codes = Vec::new();
    for input in &args.inputs {
        let source = Source::from_arg(input);
        let name = source.name();
        let prefix = if several { format!("{name}: ") } else { String::new() };
        match super::unpack::run_one(
            &args.pipeline,
            &args.report,
            &mut keys,
            &source,
            &Sink::Discard,
            &prefix,
        ) {
            Ok(s) => {
                if list_ok {
                    // Escaped: a file name must not be able to print another file's OK line.
                    let (bytes, chunks) = (plural(s.bytes_out, "byte"), plural(s.chunks, "chunk"));
                    println!("{}: OK ({bytes}, {chunks})", crate::say::escape(&name));
                }
                verdicts.push(Verdict {
                    input: name,
                    ok: true,
                    bytes: Some(s.bytes_out),
                    chunks: Some(s.chunks),
                    container_bytes: Some(s.bytes_in),
                    error: None,
                    exit_code: exit::OK,
                });
            }
            Err(e) => {
                // One container's error is the command's, reported once by main.
                if several {
                    super::report(&e, Some(&name));
                }
                codes.push(e.exit_code());
                verdicts.push(Verdict {
                    input: name,
                    ok: false,
                    bytes: None,
                    chunks: None,
                    container_bytes: None,
                    error: Some(e.to_string()),
                    exit_code: e.exit_code(),
                });
                first_error.get_or_insert(e);
            }
        }
    }
    args.report.note_key_memory(&keys);
    args.report.print_json(&verdicts);
    match first_error {
        None => Ok(()),
        Some(e) if !several => Err(e),
        Some(_) => Err(Error::NotVerified {
            failed: codes.len(),
            total: args.inputs.len(),
            exit_code: worst_exit_code(&codes),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damage_outranks_a_failed_read_which_outranks_a_missing_file() {
        assert_eq!(worst_exit_code(&[exit::NO_INPUT, exit::DATA]), exit::DATA);
        assert_eq!(worst_exit_code(&[exit::NO_INPUT, exit::IO, exit::USAGE]), exit::IO);
        assert_eq!(worst_exit_code(&[exit::USAGE, exit::NO_INPUT]), exit::NO_INPUT);
        assert_eq!(worst_exit_code(&[exit::USAGE, exit::FAILURE]), exit::USAGE);
    }
}
