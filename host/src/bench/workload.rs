//! The operations a benchmark times, for keepsync (through its library, in this process) and
//! for the peer tools people compare it with (as child processes, on the same bytes).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::Serialize;

use super::corpus::Corpus;
use super::measure::{self, Measured, Redirect};
use crate::crypto::CryptoChoice;
use crate::error::{Error, Result};
use crate::io::{Sink, Source};
use crate::keys::KeySpec;
use crate::net::client::{RemoteSync, sync_remote};
use crate::net::server::spawn_loopback;
use crate::net::{RateLimiter, Remote};
use crate::pack::{PackOptions, pack};
use crate::pipeline::PipelineStats;
use crate::sync::send::effort::SyncCodec;
use crate::sync::{SyncOptions, sync_local};
use crate::unpack::unpack;
use keepsync_core::crypto::SecretKey;
use keepsync_core::sync::Direction;

/// What is timed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Compress + encrypt the corpus's bytes as one file.
    Pack,
    /// Decrypt + decompress them back.
    Unpack,
    /// Mirror the corpus's tree into a fresh directory.
    Sync,
    /// Push the corpus's tree over loopback TCP to an in-process `keepsync serve`
    /// (handshake, sealed frames, compression, the receiver's writes: both ends' costs).
    Loopback,
}

impl Workload {
    /// Every workload, in report order.
    pub const ALL: [Workload; 4] = [Workload::Pack, Workload::Unpack, Workload::Sync, Workload::Loopback];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Pack => "pack",
            Workload::Unpack => "unpack",
            Workload::Sync => "sync",
            Workload::Loopback => "loopback",
        }
    }

    /// Mirrors a tree (into a fresh directory per run).
    pub fn is_tree(self) -> bool {
        matches!(self, Workload::Sync | Workload::Loopback)
    }

    /// Parses a name as [`Workload::name`] prints it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.name() == name)
    }
}

/// A peer tool keepsync is compared with.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The program, as found on `PATH`.
    pub tool: &'static str,
    /// The output file's extension.
    ext: &'static str,
    /// The workloads it does.
    pub workloads: &'static [Workload],
    /// Needs an age key pair.
    needs_age_key: bool,
}

/// Every peer: compressors (zstd, lz4, pigz) and encryptors (age, rage) for pack and unpack,
/// rsync for sync. None of them fsyncs its output; keepsync does (see `fsync_s`).
pub const PEERS: [Peer; 6] = [
    Peer { tool: "zstd", ext: "zst", workloads: &[Workload::Pack, Workload::Unpack], needs_age_key: false },
    Peer { tool: "lz4", ext: "lz4", workloads: &[Workload::Pack, Workload::Unpack], needs_age_key: false },
    Peer { tool: "pigz", ext: "gz", workloads: &[Workload::Pack, Workload::Unpack], needs_age_key: false },
    Peer { tool: "age", ext: "age", workloads: &[Workload::Pack, Workload::Unpack], needs_age_key: true },
    Peer { tool: "rage", ext: "rage", workloads: &[Workload::Pack, Workload::Unpack], needs_age_key: true },
    Peer { tool: "rsync", ext: "", workloads: &[Workload::Sync], needs_age_key: false },
];

/// A peer by name.
pub fn peer(name: &str) -> Option<&'static Peer> {
    PEERS.iter().find(|p| p.tool == name)
}

/// Who runs a workload.
#[derive(Debug, Clone, Copy)]
pub enum Tool {
    /// keepsync itself.
    Keepsync,
    /// A peer.
    Peer(&'static Peer),
}

impl Tool {
    /// The name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Keepsync => "keepsync",
            Tool::Peer(p) => p.tool,
        }
    }
}

/// An age key pair for the age and rage peers.
#[derive(Debug, Clone)]
pub struct AgeKey {
    /// Identity file (secret key).
    pub identity: PathBuf,
    /// Recipient (public key).
    pub recipient: String,
}

impl AgeKey {
    /// Makes (once) or reads the key pair in `dir` with `age-keygen` or `rage-keygen`; `None`
    /// when neither is installed.
    pub fn ensure(dir: &Path) -> Result<Option<Self>> {
        let identity = dir.join("age-identity.txt");
        if !identity.exists() {
            let Some(keygen) = ["age-keygen", "rage-keygen"].into_iter().find(|k| measure::installed(k))
            else {
                return Ok(None);
            };
            measure::child(
                keygen,
                &["-o".into(), identity.clone().into()],
                Redirect { stdin: None, stdout: None },
            )?;
        }
        let text = std::fs::read_to_string(&identity).map_err(|e| Error::io("read", &identity, e))?;
        let recipient = text.lines().find_map(|l| l.strip_prefix("# public key: ")).ok_or_else(|| {
            Error::Usage(format!("{} has no `# public key:` line; delete it", identity.display()))
        })?;
        Ok(Some(Self { identity, recipient: recipient.trim().to_string() }))
    }
}

/// What the timed operations share.
#[derive(Debug)]
pub struct Context<'a> {
    /// The data.
    pub corpus: &'a Corpus,
    /// Where outputs go (per size class); never inside the corpus.
    pub out_dir: PathBuf,
    /// keepsync's key file.
    pub key_file: PathBuf,
    /// The age key pair, when a keygen is installed.
    pub age: Option<AgeKey>,
    /// Worker threads for keepsync and for the peers that take a thread count.
    pub threads: usize,
    /// The in-process server of the loopback workload, started on first use.
    pub loopback: std::sync::OnceLock<(std::net::SocketAddr, SecretKey)>,
}

/// One timed run.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The costs.
    pub measured: Measured,
    /// Plaintext bytes processed.
    pub bytes_in: u64,
    /// Output bytes (pack only).
    pub bytes_out: Option<u64>,
    /// keepsync's pipeline statistics.
    pub pipeline: Option<PipelineStats>,
    /// Seconds in final fsyncs and renames (keepsync only).
    pub fsync_s: Option<f64>,
}

fn file_len(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path).map_err(|e| Error::io("read", path, e))?.len())
}

impl Context<'_> {
    fn bundle(&self, workload: Workload) -> Result<&Path> {
        self.corpus.bundle.as_deref().ok_or_else(|| {
            Error::Usage(format!(
                "{} needs a file; --input is a directory (sync it instead)",
                workload.name()
            ))
        })
    }

    fn tree(&self) -> Result<&Path> {
        self.corpus
            .tree
            .as_deref()
            .ok_or_else(|| Error::Usage("sync needs a directory; --input is a file (pack it instead)".into()))
    }

    /// The packed file `tool` writes and `unpack` reads.
    fn packed(&self, tool: Tool) -> PathBuf {
        match tool {
            Tool::Keepsync => self.out_dir.join("keepsync.ks"),
            Tool::Peer(p) => self.out_dir.join(format!("{}.{}", p.tool, p.ext)),
        }
    }

    fn unpacked(&self, tool: Tool) -> PathBuf {
        self.out_dir.join(format!("{}.plain", tool.name()))
    }

    /// A fresh sync destination: syncing into a populated one would skip every file.
    pub fn sync_dest(&self, tool: Tool, run: u32) -> PathBuf {
        self.out_dir.join(format!("sync-{}-{}-{run}", tool.name(), std::process::id()))
    }

    /// The command line a peer runs, for reports and for running it.
    pub fn peer_args(&self, peer: &'static Peer, workload: Workload, dest: &Path) -> Result<Vec<OsString>> {
        let threads = self.threads.to_string();
        let age = || {
            self.age
                .as_ref()
                .ok_or_else(|| Error::Usage(format!("{} needs age-keygen or rage-keygen", peer.tool)))
        };
        let packed = self.packed(Tool::Peer(peer)).into_os_string();
        let args: Vec<OsString> = match (peer.tool, workload) {
            ("zstd", Workload::Pack) => {
                vec![
                    "-1".into(),
                    format!("-T{threads}").into(),
                    "-q".into(),
                    "-c".into(),
                    self.bundle(workload)?.into(),
                ]
            }
            ("lz4", Workload::Pack) => {
                vec!["-1".into(), "-q".into(), "-c".into(), self.bundle(workload)?.into()]
            }
            ("pigz", Workload::Pack) => {
                vec!["-1".into(), "-p".into(), threads.into(), "-c".into(), self.bundle(workload)?.into()]
            }
            ("age" | "rage", Workload::Pack) => {
                vec!["-r".into(), age()?.recipient.clone().into(), self.bundle(workload)?.into()]
            }
            ("zstd" | "lz4", Workload::Unpack) => vec!["-d".into(), "-q".into(), "-c".into(), packed],
            ("pigz", Workload::Unpack) => vec!["-d".into(), "-c".into(), packed],
            ("age" | "rage", Workload::Unpack) => {
                vec!["-d".into(), "-i".into(), age()?.identity.clone().into(), packed]
            }
            ("rsync", Workload::Sync) => {
                // Trailing slashes: copy the tree's contents, like `keepsync sync SRC DEST`.
                let mut src = self.tree()?.as_os_str().to_owned();
                src.push("/");
                let mut dst = dest.as_os_str().to_owned();
                dst.push("/");
                vec!["-a".into(), src, dst]
            }
            _ => return Err(Error::Usage(format!("{} does not do {}", peer.tool, workload.name()))),
        };
        Ok(args)
    }

    /// The command line shown in reports (paths left out).
    pub fn describe(&self, tool: Tool, workload: Workload) -> String {
        let Tool::Peer(peer) = tool else {
            return format!("keepsync {} (library, -j{})", workload.name(), self.threads);
        };
        let args = self.peer_args(peer, workload, Path::new("DEST")).unwrap_or_default();
        // Paths and keys differ per machine and say nothing about the tool's settings.
        let flags: Vec<String> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .filter(|a| !a.contains('/') && !a.starts_with("age1"))
            .collect();
        std::iter::once(peer.tool.to_string()).chain(flags).collect::<Vec<_>>().join(" ")
    }

    /// Untimed work a workload needs first: `unpack` needs the tool's packed file.
    pub fn prepare(&self, tool: Tool, workload: Workload) -> Result<()> {
        if workload == Workload::Unpack {
            self.run(tool, Workload::Pack, 0)?;
        }
        Ok(())
    }

    /// Runs `workload` once with `tool`. `run` numbers the repeats (for fresh sync targets).
    pub fn run(&self, tool: Tool, workload: Workload, run: u32) -> Result<Sample> {
        match tool {
            Tool::Keepsync => self.run_keepsync(workload, run),
            Tool::Peer(peer) => self.run_peer(peer, workload, run),
        }
    }

    fn run_keepsync(&self, workload: Workload, run: u32) -> Result<Sample> {
        let key = KeySpec::KeyFile(self.key_file.clone());
        let bar = ProgressBar::hidden();
        let fsync_before = crate::output::commit_seconds();
        let (pipeline, bytes_in, bytes_out, measured) = match workload {
            Workload::Pack => {
                let input = self.bundle(workload)?;
                let opts = PackOptions { resume: false, threads: self.threads, ..PackOptions::default() };
                let source = Source::File(input.to_path_buf());
                let sink = Sink::File { path: self.packed(Tool::Keepsync), force: true };
                let (s, m) = measure::in_process(|| pack(&source, &sink, &key, &opts, &bar, &|_| {}))?;
                (s.pipeline, s.bytes_in, Some(s.bytes_out), m)
            }
            Workload::Unpack => {
                let source = Source::File(self.packed(Tool::Keepsync));
                let sink = Sink::File { path: self.unpacked(Tool::Keepsync), force: true };
                let (s, m) = measure::in_process(|| {
                    unpack(&source, &sink, &key, self.threads, None, CryptoChoice::Auto, &bar)
                })?;
                (Some(s.pipeline), s.bytes_out, None, m)
            }
            Workload::Sync => {
                let (src, dest) = (self.tree()?, self.sync_dest(Tool::Keepsync, run));
                let (s, m) = measure::in_process(|| sync_local(src, &dest, &SyncOptions::default(), &bar))?;
                if let Some(problem) = s.problems.first() {
                    return Err(Error::Usage(format!("sync of the corpus did not complete: {problem}")));
                }
                (None, self.corpus.bytes, None, m)
            }
            Workload::Loopback => {
                let (src, dest) = (self.tree()?, self.sync_dest(Tool::Keepsync, run));
                let (addr, psk) = self.loopback_server()?;
                let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                let opts = RemoteSync {
                    remote: Remote { host: addr.ip().to_string(), port: addr.port(), path: name },
                    local: src.to_path_buf(),
                    direction: Direction::Push,
                    delete: false,
                    delete_excluded: false,
                    filter: crate::sync::filter::Filter::default(),
                    checksum: false,
                    psk,
                    limit: RateLimiter::unlimited(),
                    connections: self.threads.clamp(1, 4),
                    codec: SyncCodec::Auto,
                    dry_run: false,
                    part_size: crate::sync::send::PART_SIZE,
                };
                let (s, m) = measure::in_process(|| sync_remote(opts, &bar))?;
                if let Some(problem) = s.problems.first() {
                    return Err(Error::Usage(format!(
                        "loopback sync of the corpus did not complete: {problem}"
                    )));
                }
                (None, self.corpus.bytes, Some(s.bytes_sent), m)
            }
        };
        let fsync_s = Some(crate::output::commit_seconds() - fsync_before);
        Ok(Sample { measured, bytes_in, bytes_out, pipeline, fsync_s })
    }

    /// The loopback server (serving `out_dir`, so a run's tree lands where `sync_dest` says).
    fn loopback_server(&self) -> Result<(std::net::SocketAddr, SecretKey)> {
        if let Some(server) = self.loopback.get() {
            return Ok(server.clone());
        }
        let psk = SecretKey::from_bytes(crate::net::fresh_random()?);
        let addr = spawn_loopback(self.out_dir.clone(), psk.clone())?;
        Ok(self.loopback.get_or_init(|| (addr, psk)).clone())
    }

    fn run_peer(&self, peer: &'static Peer, workload: Workload, run: u32) -> Result<Sample> {
        let dest = self.sync_dest(Tool::Peer(peer), run);
        let args = self.peer_args(peer, workload, &dest)?;
        let (stdout, bytes_out) = match workload {
            Workload::Pack => (Some(self.packed(Tool::Peer(peer))), true),
            Workload::Unpack => (Some(self.unpacked(Tool::Peer(peer))), false),
            Workload::Sync | Workload::Loopback => (None, false),
        };
        let measured = measure::child(peer.tool, &args, Redirect { stdin: None, stdout: stdout.as_deref() })?;
        let bytes_out = match (bytes_out, &stdout) {
            (true, Some(path)) => Some(file_len(path)?),
            _ => None,
        };
        Ok(Sample { measured, bytes_in: self.corpus.bytes, bytes_out, pipeline: None, fsync_s: None })
    }
}

/// Whether `peer` can run here, and if not, why.
pub fn peer_status(peer: &Peer, age: Option<&AgeKey>) -> std::result::Result<(), &'static str> {
    if !measure::installed(peer.tool) {
        return Err("not installed");
    }
    if peer.needs_age_key && age.is_none() {
        return Err("not installed (needs age-keygen or rage-keygen)");
    }
    Ok(())
}
