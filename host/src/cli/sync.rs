use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, Args};

use super::ReportArgs;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::net::client::{RemoteSync, sync_remote};
use crate::net::{RateLimiter, Remote};
use crate::sync::filter::{Filter, Rule, read_exclude_from};
use crate::sync::send::effort::SyncCodec;
use crate::sync::tree::Tree;
use crate::sync::verify::verify;
use crate::sync::{Summary, SyncOptions, sync_local};
use crate::units::human_bytes;
use keepsync_core::sync::Direction;

#[derive(Debug, Args)]
#[command(after_help = "\
SRC's contents are mirrored into DEST (created if missing): regular files, directories and
symlinks (as links), with permissions and modification times. SRC and SRC/ mean the same
(unlike rsync, the slash does not matter): `sync photos /backup/photos` puts photos/a.jpg at
/backup/photos/a.jpg; to get /backup/photos from /backup, name /backup/photos as DEST. Files whose size and
modification time already match are skipped (--checksum compares contents instead). Each
copied file is written to a hidden partial file, fsynced and renamed into place, so an
interrupted sync never leaves a half-written file under a real name; run it again to finish.

Network sync: either side may be ks://HOST[:PORT]/PATH (or ks://ALIAS/PATH, an alias from
the config file, see `keepsync --help`), served by `keepsync serve`
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
    /// Keep running: watch SRC and sync again after every burst of changes (let settle for
    /// 100 ms, at most 2 s); a failed pass is retried with backoff. Ctrl-C stops after the
    /// pass in flight. With --json, one summary line per pass.
    #[arg(long)]
    watch: bool,
    /// After the sync, read SRC and DEST again and compare every entry (contents by
    /// BLAKE3, size, mode, modification time, link targets; with --delete, nothing extra in
    /// DEST); a difference is listed and makes exit 23. Local paths for now.
    #[arg(long)]
    verify: bool,
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
    /// Bandwidth limit (over ks://, all connections together; locally, the bytes copied, e.g.
    /// to a USB disk shared with other work): 10MiB, off, or a timetable like
    /// "08:00,512KiB 18:00,off" (local time).
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

/// `Some` for a ks:// path; `None` for a local one; an error for what looks like a URL or an
/// rsync-style `HOST:PATH` that KeepSync does not reach, rather than a local directory named
/// `s3:` or `host:` made by surprise.
fn remote(path: &std::path::Path) -> Option<Result<Remote>> {
    let arg = path.to_str()?;
    if let Some(remote) = Remote::parse(arg) {
        return Some(remote);
    }
    let first = arg.split('/').next().unwrap_or_default();
    let (before, _) = first.split_once(':')?;
    let local = format!("./{arg}");
    let why = if before.eq_ignore_ascii_case("ks") {
        format!("{arg} is not a ks:// URL: write ks://HOST[:PORT]/PATH (two slashes)")
    } else if arg[first.len()..].starts_with("//") && first.len() == before.len() + 1 {
        format!(
            "{arg}: keepsync does not reach {before}:// stores; it syncs local paths and \
             ks://HOST[:PORT]/PATH served by `keepsync serve`"
        )
    } else {
        format!(
            "{arg} looks like rsync's HOST:PATH, which keepsync does not reach: run `keepsync serve` \
             there and write ks://{before}/PATH"
        )
    };
    Some(Err(Error::Usage(format!("{why}; to mean a local path, write {local}"))))
}

fn run_remote(
    args: &SyncArgs,
    remote: Remote,
    local: PathBuf,
    direction: Direction,
    config_psk: Option<&PathBuf>,
) -> Result<ExitCode> {
    if args.verify {
        return Err(Error::Usage(format!(
            "--verify compares two local trees, and {remote} is a network path; \
             run `keepsync sync --checksum --dry-run` with the same paths to compare contents"
        )));
    }
    let Some(psk_file) = args.psk_file.as_ref().or(config_psk) else {
        return Err(Error::Usage(format!(
            "{remote} is a network path: pass --psk-file FILE (the key `keepsync serve` uses there), \
             or set psk_file in the config file"
        )));
    };
    let psk = crate::keys::read_key_file_warning(psk_file)?;
    let limit = limit_rate(args)?.unwrap_or_else(RateLimiter::unlimited);
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
    report(args, summary?)
}

/// `--limit-rate`, parsed.
fn limit_rate(args: &SyncArgs) -> Result<Option<RateLimiter>> {
    let Some(spec) = &args.limit_rate else { return Ok(None) };
    RateLimiter::parse(spec).map(Some).map_err(|e| Error::Usage(format!("--limit-rate {e}")))
}

/// Prints what a sync did and says how it ended.
fn report(args: &SyncArgs, summary: Summary) -> Result<ExitCode> {
    if summary.dry_run && !args.out.json {
        args.out.notice()(&format!(
            "dry run: the contents of {} would be mirrored into {} (a trailing slash on SRC changes nothing)",
            crate::say::escape(&args.src.to_string_lossy()),
            crate::say::escape(&args.dest.to_string_lossy()),
        ));
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
        if let Some(v) = summary.verified {
            line += &format!(
                "; verified {} entries ({} read on each side), {} differ",
                v.entries,
                human_bytes(v.bytes),
                v.differ
            );
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
    if args.watch && args.out.json {
        // One line per pass, so a reader can follow the passes as they come.
        println!("{}", serde_json::to_string(&summary).expect("summaries serialize"));
    } else {
        args.out.print_json(&summary);
    }
    Ok(ExitCode::from(summary.exit_code()))
}

pub fn run(mut args: SyncArgs) -> Result<ExitCode> {
    let config = Config::load()?;
    let mut alias_psk = None;
    for path in [&mut args.src, &mut args.dest] {
        let Some(arg) = path.to_str() else { continue };
        let (url, psk) = config.expand(arg);
        alias_psk = alias_psk.or(psk.map(PathBuf::from));
        *path = PathBuf::from(url);
    }
    let config_psk = alias_psk.or(config.psk_file.clone());
    if !args.watch {
        return pass(&args, config_psk.as_ref());
    }
    if remote(&args.src).is_some() || args.dry_run {
        return Err(Error::Usage(
            "--watch follows a local SRC as it changes (not a ks:// one, not with --dry-run)".into(),
        ));
    }
    let notice = args.out.notice();
    notice(&format!(
        "watching {} (Ctrl-C stops after the pass in flight; a second Ctrl-C at once)",
        crate::say::escape(&args.src.to_string_lossy())
    ));
    crate::sync::watch::watch(
        &args.src,
        || pass(&args, config_psk.as_ref()).map(drop),
        |e, wait| {
            notice(&format!("pass failed: {e}; trying again in {} s or when SRC changes", wait.as_secs()))
        },
    )?;
    Ok(ExitCode::from(crate::error::exit::OK))
}

/// One sync of SRC into DEST, reported.
fn pass(args: &SyncArgs, config_psk: Option<&PathBuf>) -> Result<ExitCode> {
    match (remote(&args.src), remote(&args.dest)) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage("SRC and DEST are both ks:// paths: one side must be local".into()));
        }
        (Some(r), None) => {
            return run_remote(args, r?, args.dest.clone(), Direction::Pull, config_psk);
        }
        (None, Some(r)) => {
            return run_remote(args, r?, args.src.clone(), Direction::Push, config_psk);
        }
        (None, None) => {}
    }
    if args.psk_file.is_some() || args.connections.is_some() {
        return Err(Error::Usage(
            "--psk-file and --connections apply to ks:// paths only; both paths are local".into(),
        ));
    }
    let opts = SyncOptions {
        delete: args.delete(),
        delete_excluded: args.delete_excluded,
        filter: args.filter()?,
        dry_run: args.dry_run,
        checksum: args.checksum,
        limit: limit_rate(args)?.map(std::sync::Arc::new),
    };
    let bar = args.out.progress("sync");
    let summary = sync_local(&args.src, &args.dest, &opts, &bar);
    bar.finish_and_clear();
    let mut summary = summary?;
    if args.verify && !args.dry_run {
        let started = std::time::Instant::now();
        let open = |p: &std::path::Path| Tree::open(p).map_err(|e| Error::io("open", p, e));
        let (src, dst) = (open(&args.src)?, open(&args.dest)?);
        let verified = verify(&src, &dst, &opts.filter, args.delete(), &mut summary)?;
        summary.verified = Some(verified);
        summary.finish();
        summary.seconds += started.elapsed().as_secs_f64();
    }
    report(args, summary)
}
