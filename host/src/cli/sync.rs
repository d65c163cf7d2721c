use std::path::PathBuf;

use clap::Args;

use super::OutputArgs;
use crate::error::{Error, Result, exit};
use crate::sync::{Action, SyncOptions, sync};
use crate::units::human_bytes;

#[derive(Debug, Args)]
#[command(after_help = "\
SRC's contents are mirrored into DEST (created if missing): regular files, directories and
symlinks (as links), with permissions and modification times. Files whose size and
modification time already match are skipped (--checksum compares contents instead). Each
copied file is written to a hidden partial file, fsynced and renamed into place, so an
interrupted sync never leaves a half-written file under a real name; run it again to finish.

Exit codes: 0 success, 23 some entries could not be synced (listed), others as in `keepsync
--help`.")]
pub struct SyncArgs {
    /// Directory to mirror.
    src: PathBuf,
    /// Directory to mirror into (a local path).
    dest: PathBuf,
    /// Remove entries in DEST that SRC does not have (and replace entries of another kind).
    #[arg(long)]
    delete: bool,
    /// Show what would change, change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Compare file contents (BLAKE3) rather than size and modification time.
    #[arg(long, short = 'c')]
    checksum: bool,
    #[command(flatten)]
    out: OutputArgs,
}

pub fn run(args: SyncArgs) -> Result<std::process::ExitCode> {
    for p in [&args.src, &args.dest] {
        if p.to_string_lossy().starts_with("ks://") {
            return Err(Error::Usage(format!(
                "{}: network sync (ks://) needs `keepsync serve`, which this build does not have yet; \
                 sync between local paths",
                p.display()
            )));
        }
    }
    let opts = SyncOptions { delete: args.delete, dry_run: args.dry_run, checksum: args.checksum };
    let bar = args.out.progress("sync");
    let summary = sync(&args.src, &args.dest, &opts, &bar);
    bar.finish_and_clear();
    let summary = summary?;
    if summary.dry_run && !args.out.json {
        for action in &summary.planned {
            match action {
                Action::CreateDir { path } => println!("create dir  {}", path.display()),
                Action::CopyFile { path, bytes } => {
                    println!("copy        {} ({})", path.display(), human_bytes(*bytes))
                }
                Action::Symlink { path, target } => {
                    println!("symlink     {} -> {}", path.display(), target.display())
                }
                Action::Delete { path } => println!("delete      {}", path.display()),
            }
        }
    }
    for problem in &summary.problems {
        eprintln!("keepsync: warning: {problem}");
    }
    args.out.print_summary(|| {
        format!(
            "{} {} files ({}), {} up to date, {} dirs created, {} symlinks, {} deleted in {:.2} s",
            if summary.dry_run { "would copy" } else { "copied" },
            summary.files_transferred
                + summary.planned.iter().filter(|a| matches!(a, Action::CopyFile { .. })).count() as u64,
            human_bytes(summary.bytes_sent),
            summary.files_skipped,
            summary.dirs_created,
            summary.symlinks,
            summary.deleted,
            summary.seconds
        )
    });
    args.out.print_json(&summary);
    Ok(std::process::ExitCode::from(if summary.problems.is_empty() { exit::OK } else { exit::PARTIAL }))
}
