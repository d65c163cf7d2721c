//! The `keepsync` command line: clap definitions and dispatch. One file per subcommand.

mod batch;
mod bench;
mod caps;
mod completions;
mod inspect;
mod keygen;
mod man;
mod pack;
mod serve;
mod sync;
mod unpack;
mod verify;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::error::{Error, Result, exit};
use crate::keys::{KeySpec, SessionKeys};

const AFTER_HELP: &str = "\
Examples:
  keepsync sync ~/photos /mnt/backup/photos --delete
  keepsync serve --root /srv/backup --listen 0.0.0.0:7373 --psk-file sync.psk
  keepsync sync ~/photos ks://backup.lan:7373/photos --psk-file sync.psk
  keepsync keygen -o ~/.keepsync.key
  keepsync keygen -o - | ssh backup 'umask 077; cat > sync.psk'   (never to a terminal)
  keepsync pack photos.tar -o photos.tar.ks --key-file ~/.keepsync.key
  keepsync unpack photos.tar.ks -o photos.tar --key-file ~/.keepsync.key
  keepsync pack notes.txt                                   (asks for a passphrase)
  keepsync verify /mnt/backup/*.ks --key-file ~/.keepsync.key   (writes nothing)
  keepsync pack *.log -o /mnt/backup/ --passphrase-env PW    (one Argon2id run for all)
  tar c dir | keepsync pack - -o - --passphrase-env PW > dir.tar.ks
  keepsync inspect photos.tar.ks --json
  keepsync caps
  keepsync bench --report bench.html
  keepsync bench baseline set 12 && keepsync bench compare baseline latest
  keepsync completions bash > ~/.local/share/bash-completion/completions/keepsync
  keepsync man -o ~/.local/share/man/man1

Exit codes:
  0   success
  1   failure not listed below
  2   the command line is wrong
  3   bench compare: keepsync regressed beyond the noise threshold
  10  the network failed (cannot connect, connection lost, peer silent): run again to resume
  12  the peer broke the protocol, holds another PSK, or refused the path
  23  sync finished, but some entries could not be synced (they are listed)
  65  input rejected: not a container, damaged, tampered with, truncated, or the wrong key
  66  an input or key file cannot be opened
  73  the output cannot be created (it exists: use --force)
  74  reading or writing failed midway

Defaults live in $XDG_CONFIG_HOME/keepsync/config.toml (else ~/.config/keepsync/config.toml;
KEEPSYNC_CONFIG=FILE names another); options on the command line win:
  key_file = '~/.keepsync.key'      pack/unpack without --key-file or --passphrase-env
  psk_file = '~/sync.psk'           ks:// without --psk-file
  [remotes.backup]                  ks://backup/photos = ks://backup.lan:7373/photos
  url = 'ks://backup.lan:7373'
  psk_file = '~/backup.psk'

With --json, a failed run prints {ok: false, exit_code: N, error, hint} as JSON
on stdout (the same words as on stderr); several inputs list their failures in the summary.

An interrupted `pack` to a file leaves a hidden .NAME.keepsync-partial beside the output; running
the same command again resumes it once the source's already-packed bytes are re-verified.";

/// KeepSync moves and keeps files safely: sync trees; compress, encrypt, checkpoint, resume.
#[derive(Debug, Parser)]
#[command(name = "keepsync", version, about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Mirror a directory tree into another (local, or ks:// over the network), skipping what
    /// is unchanged, crash-safe per file, resumable.
    Sync(sync::SyncArgs),
    /// Serve a directory to `keepsync sync ks://...` clients that hold the same PSK file.
    Serve(serve::ServeArgs),
    /// Create a new random key file (mode 0600), or print one with -o -. Replaces an existing
    /// file only with --force.
    Keygen(keygen::KeygenArgs),
    /// Compress and encrypt files (or stdin) into KeepSync containers, deriving the key once.
    Pack(pack::PackArgs),
    /// Authenticate, decrypt and decompress containers back into the original bytes.
    Unpack(unpack::UnpackArgs),
    /// Check that containers are intact and open with the key, as `unpack` would, writing
    /// nothing.
    Verify(verify::VerifyArgs),
    /// Show what a container's headers say (sizes, codecs, ratio) without needing the key.
    Inspect(inspect::InspectArgs),
    /// Show this machine's cores, memory, CPU crypto features, and measured codec and
    /// AES-GCM speeds (about 2 seconds).
    Caps(caps::CapsArgs),
    /// Benchmark pack, unpack and sync against zstd, lz4, pigz, age, rage and rsync on seeded
    /// corpora; keep a history, compare runs, write reports.
    Bench(Box<bench::BenchArgs>),
    /// Print a completion script for bash, zsh, fish, elvish or PowerShell (--help says how to
    /// install it).
    Completions(completions::CompletionsArgs),
    /// Print the keepsync(1) manual page, or write it and one page per subcommand into a
    /// directory.
    Man(man::ManArgs),
}

/// The key options shared by pack, unpack and verify: at most one; with neither, the passphrase is
/// asked for on the terminal.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct KeyArgs {
    /// Key file made by `keepsync keygen`.
    #[arg(long, short = 'k', value_name = "KEYFILE")]
    key_file: Option<PathBuf>,
    /// Read the passphrase from this environment variable (stretched with Argon2id). With
    /// neither option, the config file's key_file is used, else the passphrase is asked for
    /// on the terminal (twice when packing).
    #[arg(long, value_name = "VAR")]
    passphrase_env: Option<String>,
}

impl KeyArgs {
    /// Where the key comes from: the options, else the config file's `key_file`, else a
    /// passphrase typed at the prompt (twice when `confirm`: packing).
    fn spec(&self, confirm: bool) -> Result<KeySpec> {
        Ok(match (&self.key_file, &self.passphrase_env) {
            (Some(path), _) => KeySpec::KeyFile(path.clone()),
            (None, Some(var)) => KeySpec::PassphraseEnv(var.clone()),
            (None, None) => match crate::config::Config::load()?.key_file {
                Some(path) => KeySpec::KeyFile(path),
                None => KeySpec::Prompt { confirm },
            },
        })
    }
}

/// Parallelism and memory options shared by pack, unpack and verify.
#[derive(Debug, Args)]
pub struct PipelineArgs {
    /// Worker threads (default: every core). The output is byte-identical whatever the count.
    #[arg(long, short = 'j', value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    threads: Option<u16>,
    /// Memory budget, e.g. 16MiB: fewer chunks in flight (and, if needed, fewer workers) so
    /// peak memory stays under it, whatever the file size.
    #[arg(long, value_name = "SIZE", value_parser = crate::units::parse_size)]
    max_memory: Option<u64>,
    /// AES-256-GCM backend: auto and soft use RustCrypto (zeroizes keys); hw uses ring
    /// (about 2x faster sealing, but its key schedule is not zeroized). Same bytes either way.
    #[arg(long, value_enum, default_value_t = crate::crypto::CryptoChoice::Auto)]
    crypto: crate::crypto::CryptoChoice,
}

impl PipelineArgs {
    fn threads(&self) -> usize {
        self.threads.map_or_else(crate::pack::default_threads, usize::from)
    }
}

/// How a command reports: progress, notices, summaries (sync, pack, unpack, verify).
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Print no progress bar and no notices.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Print a JSON summary on stdout when done.
    #[arg(long)]
    json: bool,
    /// Print a one-line summary (sizes, ratio, speed, peak memory) on stderr when done.
    #[arg(long, short = 'v')]
    verbose: bool,
}

/// Output options shared by pack and unpack: how they report, and whether they replace.
#[derive(Debug, Args)]
pub struct OutputArgs {
    #[command(flatten)]
    report: ReportArgs,
    /// Replace the output file if it exists.
    #[arg(long, short = 'f')]
    force: bool,
}

impl OutputArgs {
    /// `--json` prints on standard output, so the container cannot go there too.
    fn check(&self, output: &std::path::Path) -> Result<()> {
        if self.report.json && output == std::path::Path::new("-") {
            return Err(Error::Usage("--json prints on stdout, so it needs -o FILE rather than -o -".into()));
        }
        Ok(())
    }
}

impl ReportArgs {
    fn progress(&self, label: &'static str) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            )
            .expect("static template")
            .progress_chars("=> "),
        );
        bar.set_prefix(label);
        bar
    }

    fn notice(&self) -> impl Fn(&str) + use<> {
        let quiet = self.quiet;
        move |msg: &str| {
            if !quiet {
                crate::say::say(msg);
            }
        }
    }

    fn print_summary(&self, line: impl FnOnce() -> String) {
        if self.verbose && !self.quiet {
            crate::say::say(&line());
        }
    }

    /// Under --verbose, says when the master keys could not be locked in RAM.
    fn note_key_memory(&self, keys: &SessionKeys) {
        if let Some(why) = keys.memory_lock_error() {
            self.print_summary(|| {
                format!(
                    "note: cannot lock the keys in RAM ({why}), so they may be swapped out; raise `ulimit -l`"
                )
            });
        }
    }

    fn print_json<T: serde::Serialize>(&self, value: &T) {
        if self.json {
            JSON_PRINTED.store(true, std::sync::atomic::Ordering::Relaxed);
            println!("{}", serde_json::to_string_pretty(value).expect("summaries serialize"));
        }
    }
}

/// Parses the command line, runs the command, prints errors, returns the exit code.
pub fn main() -> ExitCode {
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        let mut cli = Cli::from_arg_matches(&m)?;
        if let (Command::Sync(args), Some(("sync", sub))) = (&mut cli.command, m.subcommand()) {
            args.order_filters(sub);
        }
        Ok(cli)
    });
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            if !e.use_stderr() {
                return ExitCode::from(exit::OK);
            }
            print_json_error(&e.render().to_string(), None, exit::USAGE);
            return ExitCode::from(exit::USAGE);
        }
    };
    let result = match cli.command {
        Command::Sync(a) => sync::run(a),
        Command::Serve(a) => serve::run(a).map(|()| ExitCode::from(exit::OK)),
        Command::Keygen(a) => keygen::run(a).map(|()| ExitCode::from(exit::OK)),
        Command::Pack(a) => pack::run(a).map(|()| ExitCode::from(exit::OK)),
        Command::Unpack(a) => unpack::run(a).map(|()| ExitCode::from(exit::OK)),
        Command::Verify(a) => verify::run(a).map(|()| ExitCode::from(exit::OK)),
        Command::Inspect(a) => inspect::run(a).map(|()| ExitCode::from(exit::OK)),
        Command::Caps(a) => caps::run(a).map(|()| ExitCode::from(exit::OK)),
        Command::Bench(a) => bench::run(*a),
        Command::Completions(a) => completions::run(a).map(|()| ExitCode::from(exit::OK)),
        Command::Man(a) => man::run(a).map(|()| ExitCode::from(exit::OK)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report(&e, None);
            // A run that printed its JSON summary (which lists its failures) prints no second
            // document.
            if !JSON_PRINTED.load(std::sync::atomic::Ordering::Relaxed) {
                print_json_error(&e.to_string(), e.hint().as_deref(), e.exit_code());
            }
            ExitCode::from(e.exit_code())
        }
    }
}

/// Set once a run printed its `--json` summary on stdout.
static JSON_PRINTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Under `--json`, a failed run prints a JSON object on stdout too, so a machine reading
/// stdout learns why (the same words as on stderr) rather than finding nothing.
fn print_json_error(message: &str, hint: Option<&str>, code: u8) {
    let json = std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json");
    if json {
        let error = serde_json::json!({
            "ok": false,
            "exit_code": code,
            "error": message.trim_end().trim_start_matches("error: "),
            "hint": hint,
        });
        println!("{}", serde_json::to_string_pretty(&error).expect("JSON values serialize"));
    }
}

/// Prints an error and its hint on stderr, naming `input` first unless the message already does.
fn report(e: &Error, input: Option<&str>) {
    let msg = e.to_string();
    match input {
        Some(input) if !msg.contains(input) => crate::say::say(&format!("error: {input}: {msg}")),
        _ => crate::say::say(&format!("error: {msg}")),
    }
    if let Some(hint) = e.hint() {
        crate::say::say(&format!("hint: {hint}"));
    }
}
