use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args};

use super::ReportArgs;
use crate::error::{Error, Result};
use crate::net::client::{RemoteSync, sync_remote};
use crate::net::{RateLimiter, Remote};
use crate::sync::filter::{Filter, Rule, read_exclude_from};
use crate::sync::send::effort::SyncCodec;
use crate::sync::{Summary, SyncOptions, sync_local};
use crate::units::human_bytes;
use keepsync_core::sync::Direction;

#[derive(Debug, Args)]
#[command(after_help = "\
SRC's contents are mirrored into DEST (created if missing): regular files, directories and
symlinks (as links), with permissions and modification times. Files whose size and
modification time already match are skipped (--checksum compares contents instead). Each
copied file is written to a hidden partial file, fsynced and renamed into place, so an
interrupted sync never leaves a half-written file under a real name; run it again to finish.

Network sync: either side may be ks://HOST[:PORT]/PATH, served by `keepsync serve`
(PATH names a tree under the served root; ks://HOST/. names the whole root, which a URL
without a path never does by accident); then
--psk-file is required (the same file on both sides, made once by `keepsync keygen`). The
link is encrypted and authenticated (AES-256-GCM, keys from the PSK and fresh randoms);
blocks are compressed on the way; a changed file sends only the blocks that differ from the
receiver's copy (blocks sized to the file: 2 KiB for 100 KB, 64 KiB for 128 MiB). An interrupted transfer resumes at the last durable block: run the
same command again. Files are spread over --connections connections, both ways (a pull's
connections share one listing on the server, so each file crosses once). --dry-run asks the
receiving side what it would write and, with --delete, remove, and changes nothing; the list
is printed here for pushes and pulls alike.

Examples:
  keepsync sync ~/photos /mnt/backup/photos --delete
  keepsync sync ~/photos ks://backup.lan/photos --psk-file sync.psk --limit-rate 10MiB
  keepsync sync ks://backup.lan/photos ~/restore --psk-file sync.psk --json
  keepsync sync ~/code /mnt/backup/code --delete --exclude target/ --exclude '*.tmp'

A source file that vanishes while the sync runs is reported and skipped; one that changes
while it is read is read once more, then reported; the rest of the tree completes either way.
A file is placed only as one complete version its sender had: if another writer places a
different version at the same path meanwhile, the later one is not placed over it (reported).

FILTERS (docs/FILTERS.md has the details and examples). --exclude PATTERN, --include PATTERN
and --exclude-from FILE (one exclude pattern a line; `#` and `;` start comments, blank lines
are skipped) make one list of rules, in the order given; for each entry the FIRST rule whose
pattern matches decides (include or exclude), as rsync's filter rules do. An excluded
directory is not looked into, so nothing under it can be included again. Patterns are
rsync's, matched against the path relative to SRC:
  name.txt   no `/` inside: matches a name at any depth (also `*.log`, `cache`)
  a/b        a `/` inside: matches the end of the path (`a/b`, `x/a/b`), at a component
  /a/b       a leading `/` anchors at SRC's root: only `a/b`
  build/     a trailing `/` matches directories only
  *  ?  [a-z]  match within one name;  **  matches anything, `/` included (`a/**/b` needs
  a directory between a and b, `**/b` is a b at any depth);  dir/***  is dir and all in it
With no rule matching, the .keepsyncignore files decide: a file of that name in any
directory of SRC holds gitignore patterns for that directory and below (`!pattern`
re-includes; a deeper file's patterns come first). The rules on the command line come before
every .keepsyncignore. A .keepsyncignore is synced like any file.
The sending side filters: locally and on a push this host, on a pull the server (its
.keepsyncignore files, in the tree it serves). --delete never removes a DEST entry that the
rules or DEST's own .keepsyncignore files exclude (rsync's default; the .keepsyncignore files
reach DEST with the sync); --delete-excluded removes those too. Excluded entries do not
appear in --dry-run's list; the --json summary counts them in `excluded` (null on a pull).
Over ks:// the rules travel to the server: at most 256 rules, 8 KiB in all.

Exit codes: 0 success, 23 some entries could not be synced (listed), 24 the only entries not
synced vanished from the source before they could be read, 10 the network failed, 12 the
peer refused or broke the protocol; others as in `keepsync --help`.")]
pub struct SyncArgs {
    /// Directory to mirror (a local path, or ks://HOST[:PORT]/PATH).
    src: PathBuf,
    /// Directory to mirror into (a local path, or ks://HOST[:PORT]/PATH).
    dest: PathBuf,
    /// Remove entries in DEST that SRC does not have (and replace entries of another kind);
    /// what the filter excludes is kept.
    #[arg(long)]
    delete: bool,
    /// With --delete (implied), also remove DEST entries the filter excludes.
    #[arg(long)]
    delete_excluded: bool,
    /// Leave out what PATTERN matches (repeatable; the first matching --include/--exclude
    /// wins; see FILTERS below).
    #[arg(long, value_name = "PATTERN")]
    exclude: Vec<String>,
    /// Keep what PATTERN matches, whatever rules after it say (repeatable; see FILTERS).
    #[arg(long, value_name = "PATTERN")]
    include: Vec<String>,
    /// Exclude each pattern of FILE, one a line, at this place among the rules (repeatable).
    #[arg(long, value_name = "FILE")]
    exclude_from: Vec<PathBuf>,
    /// The filter flags in the order they were given (see [`SyncArgs::order_filters`]).
    #[arg(skip)]
    filter_flags: Vec<FilterFlag>,
    /// Show what would change, change nothing.
    #[arg(long, short = 'n')]
    dry_run: bool,
    /// Compare file contents (BLAKE3) rather than size and modification time.
    #[arg(long, short = 'c')]
    checksum: bool,
    /// Pre-shared key file for ks:// (from `keepsync keygen`; the server uses the same file).
    #[arg(long, value_name = "FILE")]
    psk_file: Option<PathBuf>,
    /// Parallel connections over ks://, push or pull (default: cores, at most 4).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    connections: Option<u16>,
    /// Compression over ks:// (pushes): auto follows the bottleneck (harder when the link is
    /// slow, lighter when the CPU is), or force none, lz4 or zstd.
    #[arg(long, value_enum, default_value_t = SyncCodec::Auto)]
    codec: SyncCodec,
    /// With several connections over ks://, a file larger than SIZE is sent as parts of
    /// SIZE (whole MiB) over several connections at once; the receiver places it when every
    /// part matched its BLAKE3.
    #[arg(long, value_name = "SIZE", default_value = "32MiB", value_parser = crate::units::parse_size)]
    part_size: u64,
    /// Bandwidth limit over ks:// (all connections together): 10MiB, off, or a timetable
    /// like "08:00,512KiB 18:00,off" (local time).
    #[arg(long, value_name = "RATE")]
    limit_rate: Option<String>,
    #[command(flatten)]
    out: ReportArgs,
}

/// One filter flag, as given.
#[derive(Debug, Clone)]
enum FilterFlag {
    Exclude(String),
    Include(String),
    ExcludeFrom(PathBuf),
}

impl SyncArgs {
    /// Records the filter flags in the order they were given on the command line (`m`: the
    /// `sync` subcommand's matches): the first rule that matches decides, so the order of
    /// `--include` among `--exclude` is part of what they say.
    pub(super) fn order_filters(&mut self, m: &ArgMatches) {
        let mut flags: Vec<(usize, FilterFlag)> = Vec::new();
        let mut take = |id: &str, make: &dyn Fn(&String) -> FilterFlag| {
            if let (Some(at), Some(values)) = (m.indices_of(id), m.get_many::<String>(id)) {
                flags.extend(at.zip(values.map(make)));
            }
        };
        take("exclude", &|p| FilterFlag::Exclude(p.clone()));
        take("include", &|p| FilterFlag::Include(p.clone()));
        if let (Some(at), Some(files)) = (m.indices_of("exclude_from"), m.get_many::<PathBuf>("exclude_from"))
        {
            flags.extend(at.zip(files.map(|f| FilterFlag::ExcludeFrom(f.clone()))));
        }
        flags.sort_by_key(|&(at, _)| at);
        self.filter_flags = flags.into_iter().map(|(_, f)| f).collect();
    }

    /// The filter the flags make, in their order.
    fn filter(&self) -> Result<Filter> {
        let given = self.exclude.len() + self.include.len() + self.exclude_from.len();
        if self.filter_flags.len() != given {
            return Err(Error::Internal("the filter flags were not put in order".into()));
        }
        let mut rules = Vec::new();
        for flag in &self.filter_flags {
            match flag {
                FilterFlag::Exclude(p) => rules.push(Rule::exclude(p.as_str())),
                FilterFlag::Include(p) => rules.push(Rule::include(p.as_str())),
                FilterFlag::ExcludeFrom(file) => {
                    rules.extend(read_exclude_from(file).map_err(Error::Filter)?)
                }
            }
        }
        Filter::new(rules).map_err(Error::Filter)
    }

    /// `--delete`, also implied by `--delete-excluded` (as rsync's is).
    fn delete(&self) -> bool {
        self.delete || self.delete_excluded
    }
}

fn remote(path: &std::path::Path) -> Option<Result<Remote>> {
    Remote::parse(path.to_str()?)
}

fn run_remote(args: SyncArgs, remote: Remote, local: PathBuf, direction: Direction) -> Result<ExitCode> {
    let Some(psk_file) = &args.psk_file else {
        return Err(Error::Usage(format!(
            "{remote} is a network path: pass --psk-file FILE (the key `keepsync serve` uses there)"
        )));
    };
    let psk = crate::keys::read_key_file_warning(psk_file)?;
    let limit = match &args.limit_rate {
        Some(spec) => RateLimiter::parse(spec).map_err(|e| Error::Usage(format!("--limit-rate {e}")))?,
        None => RateLimiter::unlimited(),
    };
    let connections = args
        .connections
        .map_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()).min(4), usize::from);
    if direction == Direction::Push && !local.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory: sync mirrors a directory tree",
            local.display()
        )));
    }
    let bar = args.out.progress("sync");
    let opts = RemoteSync {
        remote,
        local,
        direction,
        delete: args.delete(),
        delete_excluded: args.delete_excluded,
        filter: args.filter()?,
        checksum: args.checksum,
        psk,
        limit,
        connections,
        codec: args.codec,
        dry_run: args.dry_run,
        part_size: args.part_size,
    };
    let summary = sync_remote(opts, &bar);
    bar.finish_and_clear();
    report(&args, summary?)
}

/// Prints what a sync did and says how it ended.
fn report(args: &SyncArgs, summary: Summary) -> Result<ExitCode> {
    if summary.dry_run && !args.out.json {
        for action in &summary.planned {
            println!("{action}");
        }
    }
    for problem in &summary.problems {
        crate::say::say(&format!("warning: {problem}"));
    }
    args.out.print_summary(|| {
        let verb = if summary.dry_run { "would copy" } else { "copied" };
        let mut line = format!(
            "{} {verb} {} files ({}), {} up to date, {} dirs created, {} symlinks, {} deleted in {:.2} s",
            summary.direction,
            summary.files_transferred,
            human_bytes(summary.data_bytes),
            summary.files_skipped,
            summary.dirs_created,
            summary.symlinks,
            summary.deleted,
            summary.seconds
        );
        if let Some(n) = summary.excluded.filter(|&n| n > 0) {
            line += &format!(", {n} excluded");
        }
        if summary.direction != "local" {
            line += &format!(
                "; {} crossed the link over {} connection(s)",
                human_bytes(summary.link_bytes),
                summary.connections
            );
        }
        line
    });
    args.out.print_json(&summary);
    Ok(ExitCode::from(summary.exit_code()))
}

pub fn run(args: SyncArgs) -> Result<ExitCode> {
    match (remote(&args.src), remote(&args.dest)) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage("SRC and DEST are both ks:// paths: one side must be local".into()));
        }
        (Some(r), None) => {
            let local = args.dest.clone();
            return run_remote(args, r?, local, Direction::Pull);
        }
        (None, Some(r)) => {
            let local = args.src.clone();
            return run_remote(args, r?, local, Direction::Push);
        }
        (None, None) => {}
    }
    if args.psk_file.is_some() || args.connections.is_some() || args.limit_rate.is_some() {
        return Err(Error::Usage(
            "--psk-file, --connections and --limit-rate apply to ks:// paths only; both paths are local"
                .into(),
        ));
    }
    let opts = SyncOptions {
        delete: args.delete(),
        delete_excluded: args.delete_excluded,
        filter: args.filter()?,
        dry_run: args.dry_run,
        checksum: args.checksum,
    };
    let bar = args.out.progress("sync");
    let summary = sync_local(&args.src, &args.dest, &opts, &bar);
    bar.finish_and_clear();
    report(&args, summary?)
}
