//! Host errors: each says what went wrong and what to do, and maps to an exit code.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use keepsync_core::FormatError;
use keepsync_core::sync::ProtoError;

/// Exit codes (sysexits-style), documented in `keepsync --help`.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any failure not listed below.
    pub const FAILURE: u8 = 1;
    /// The command line is wrong.
    pub const USAGE: u8 = 2;
    /// Input data was rejected: not a container, damaged, tampered with, or the wrong key.
    pub const DATA: u8 = 65;
    /// An input file or key file cannot be opened.
    pub const NO_INPUT: u8 = 66;
    /// The output cannot be created (it exists, or its directory is missing).
    pub const CANT_CREATE: u8 = 73;
    /// Reading or writing failed midway.
    pub const IO: u8 = 74;
    /// A sync finished but some entries could not be synced (rsync's "partial transfer").
    pub const PARTIAL: u8 = 23;
    /// A sync finished, and the only entries not synced vanished from the source before they
    /// could be read (rsync's 24).
    pub const VANISHED: u8 = 24;
    /// An internal error: a bug in keepsync (sysexits' EX_SOFTWARE).
    pub const SOFTWARE: u8 = 70;
    /// The network failed: cannot connect, connection lost, peer silent (rsync's 10).
    pub const NETWORK: u8 = 10;
    /// The peer broke the sync protocol, proved the wrong PSK, or refused the request
    /// (rsync's 12).
    pub const PROTOCOL: u8 = 12;
    /// `keepsync bench compare` found a regression beyond the noise threshold.
    pub const REGRESSION: u8 = 3;
}

/// Everything the host can fail with.
#[derive(Debug)]
pub enum Error {
    /// Container bytes were rejected by the format.
    Rejected {
        /// Where the bytes came from (a path, or "standard input").
        input: String,
        /// The fault.
        fault: FormatError,
    },
    /// An I/O operation failed.
    Io {
        /// What we were doing, as a verb phrase ("read", "create", ...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The output exists and `--force` was not given.
    OutputExists(PathBuf),
    /// Another keepsync is writing the same output.
    OutputBusy(PathBuf),
    /// The key file is not a KeepSync key file.
    BadKeyFile {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The passphrase variable is unset or empty.
    NoPassphrase(String),
    /// No key option was given and there is no terminal to ask for a passphrase on.
    NoTerminal(String),
    /// The container needs the other kind of key (passphrase vs key file).
    KeyKindMismatch {
        /// What the container needs.
        needs_passphrase: bool,
    },
    /// The command line is inconsistent.
    Usage(String),
    /// A sync's filter cannot be used: a bad pattern, an unreadable `--exclude-from` or
    /// `.keepsyncignore`, or more rules than a network sync carries.
    Filter(crate::sync::filter::FilterError),
    /// Something keepsync itself got wrong (a bug), or the system refused a resource it
    /// needs (a thread, a runtime).
    Internal(String),
    /// A network operation failed.
    Network {
        /// The peer (`host:port`).
        peer: String,
        /// What we were doing ("connect to", "read from", ...).
        action: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The peer broke the protocol or did not prove the PSK.
    Protocol {
        /// The peer (`host:port`).
        peer: String,
        /// The fault.
        fault: ProtoError,
    },
    /// The server refused the request.
    Refused {
        /// The peer (`host:port`).
        peer: String,
        /// Why, as far as the protocol says.
        reason: String,
    },
    /// This end (a server) ended a connection: a client it does not know, one revoked, one
    /// that gave up waiting (for the server's log).
    Ended {
        /// The peer (`host:port`).
        peer: String,
        /// Why.
        why: String,
    },
    /// A peer tool run by `keepsync bench` failed.
    Peer {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
    },
    /// The benchmark history database cannot be used.
    History {
        /// The database file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A benchmark run named on the command line is not in the history.
    UnknownRun(String),
    /// Some inputs of a `pack` or `unpack` of several failed (each was reported); the others
    /// completed.
    SomeInputsFailed {
        /// How many failed.
        failed: usize,
        /// How many inputs there were.
        total: usize,
        /// The exit code the failures share (1 when they differ).
        exit_code: u8,
    },
    /// Some containers of a `verify` of several did not verify (each was reported); the others
    /// did.
    NotVerified {
        /// How many did not verify.
        failed: usize,
        /// How many containers there were.
        total: usize,
        /// The exit code of the worst failure (see `keepsync verify --help`).
        exit_code: u8,
    },
}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An I/O error on `path`.
    pub fn io(action: &'static str, path: impl AsRef<Path>, source: io::Error) -> Self {
        Self::Io { action, path: path.as_ref().to_path_buf(), source }
    }

    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Rejected { .. } | Self::KeyKindMismatch { .. } => exit::DATA,
            Self::Io { source, action, .. } => match (source.kind(), *action) {
                (io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied, "open" | "read key file") => {
                    exit::NO_INPUT
                }
                (_, "create") => exit::CANT_CREATE,
                _ => exit::IO,
            },
            Self::BadKeyFile { .. } => exit::NO_INPUT,
            Self::OutputExists(_) | Self::OutputBusy(_) => exit::CANT_CREATE,
            Self::Network { .. }
            | Self::Protocol {
                fault: ProtoError::TimedOut | ProtoError::HandshakeTimedOut | ProtoError::HungUpInHandshake,
                ..
            } => exit::NETWORK,
            Self::Protocol { .. } | Self::Refused { .. } | Self::Ended { .. } => exit::PROTOCOL,
            Self::NoPassphrase(_) | Self::NoTerminal(_) | Self::Usage(_) | Self::UnknownRun(_) => exit::USAGE,
            Self::Filter(crate::sync::filter::FilterError::IgnoreFile { .. }) => exit::FAILURE,
            Self::Filter(crate::sync::filter::FilterError::ExcludeFrom { .. }) => exit::NO_INPUT,
            Self::Filter(_) => exit::USAGE,
            Self::Internal(_) => exit::SOFTWARE,
            Self::Peer { .. } | Self::History { .. } => exit::FAILURE,
            Self::SomeInputsFailed { exit_code, .. } | Self::NotVerified { exit_code, .. } => *exit_code,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        Some(match self {
            Self::Rejected { fault, .. } => match fault {
                FormatError::NotAContainer => {
                    "pass a file made by `keepsync pack` (check the path and the argument order)".into()
                }
                FormatError::UnsupportedVersion(_) | FormatError::UnsupportedCodec { .. } => {
                    "this file was written by a newer KeepSync: upgrade keepsync to read it".into()
                }
                FormatError::WrongKey => "check --key-file or --passphrase-env; if the key is right, \
                    the header was damaged: restore the file from another copy"
                    .into(),
                FormatError::TruncatedHeader | FormatError::Truncated => {
                    "the file is incomplete (an interrupted copy or transfer?): copy it again".into()
                }
                FormatError::KdfTooCostly { .. } => "keepsync pack never writes such a header: the file was \
                    made by another tool or tampered with (nothing was derived or written)"
                    .into(),
                FormatError::TrailingData => {
                    "bytes were appended to the file after it was packed: restore it from another copy".into()
                }
                FormatError::MalformedHeader
                | FormatError::MalformedRecord { .. }
                | FormatError::ChunkAuthFailed { .. } => {
                    "the file was damaged or modified after packing: restore it from another copy".into()
                }
                FormatError::CorruptChunk { .. } => {
                    "the chunk authenticated but does not decode: please report this as a bug".into()
                }
            },
            Self::Io { source, .. } => match source.kind() {
                io::ErrorKind::NotFound => "check that the path exists".into(),
                io::ErrorKind::PermissionDenied => "check the file's permissions".into(),
                io::ErrorKind::StorageFull => "free some disk space and run the command again".into(),
                _ => return None,
            },
            Self::OutputExists(_) => "choose another output name, or pass --force to replace it".into(),
            Self::OutputBusy(_) => "wait for the other keepsync to finish, or write elsewhere".into(),
            Self::BadKeyFile { .. } => "create a key file with `keepsync keygen -o KEYFILE`".into(),
            Self::NoPassphrase(var) => format!("set it first, e.g. `read -rs {var}; export {var}`"),
            Self::NoTerminal(_) => {
                "pass --key-file FILE (from `keepsync keygen`) or --passphrase-env VAR when no one can type".into()
            }
            Self::KeyKindMismatch { needs_passphrase: true } => {
                "this file was packed with a passphrase: use --passphrase-env VAR".into()
            }
            Self::KeyKindMismatch { needs_passphrase: false } => {
                "this file was packed with a key file: use --key-file FILE".into()
            }
            Self::Usage(_) => "see `keepsync help`".into(),
            Self::Filter(e) => e.hint(),
            Self::Internal(_) => "please report this as a bug, with the command that caused it".into(),
            Self::Network { action: "listen on", source, .. } => match source.kind() {
                io::ErrorKind::AddrInUse => "another program (maybe another `keepsync serve`) listens on that \
                    port: stop it, or choose another with --listen HOST:PORT"
                    .into(),
                _ => "choose another --listen HOST:PORT (ports below 1024 need privileges; the host part \
                      must be an address of this machine)"
                    .into(),
            },
            Self::Network { .. } | Self::Protocol { fault: ProtoError::TimedOut, .. } => {
                "check that `keepsync serve` runs there and the port is reachable; run the same command \
                 again to resume where it stopped"
                    .into()
            }
            Self::Protocol {
                fault: ProtoError::HandshakeTimedOut | ProtoError::HungUpInHandshake, ..
            } => "the server may be busy with many connections or may not be `keepsync serve`: check the \
                 address and the server's log, then run the same command again"
                .into(),
            Self::Protocol {
                fault: ProtoError::PeerNotAuthenticated | ProtoError::HungUpBeforeProof,
                ..
            } => "both sides must use the same --psk-file (made once by `keepsync keygen` and copied)".into(),
            Self::Protocol {
                fault: ProtoError::NotKeepSync | ProtoError::MalformedHello | ProtoError::FrameTooLarge { .. },
                ..
            } => "check the address: the peer does not look like `keepsync serve`".into(),
            Self::Protocol { fault: ProtoError::UnsupportedVersion { .. }, .. } => {
                "run the same keepsync version on both sides".into()
            }
            Self::Protocol { .. } => {
                "the data was damaged in transit or the peer misbehaved; nothing wrong was written: \
                 run the command again to resume"
                    .into()
            }
            Self::Ended { .. } => return None,
            Self::Refused { .. } => {
                "check the path in the ks:// URL (a directory inside the served root) and the server's log, which \
                 names the cause"
                    .into()
            }
            Self::Peer { .. } => {
                "run that command by hand to see its error, or leave the tool out with --peers".into()
            }
            Self::History { path, .. } => format!(
                "{} must be a keepsync bench database in a writable directory; choose another with --db",
                path.display()
            ),
            Self::UnknownRun(name) if name == "baseline" => {
                "no run is marked as the baseline yet: `keepsync bench baseline set RUN` marks one \
                 (`keepsync bench history` lists the runs; `latest` names the newest)"
                    .into()
            }
            Self::UnknownRun(_) => {
                "name a run by its id, its --tag, `latest` or `baseline`; `keepsync bench history` lists them"
                    .into()
            }
            Self::SomeInputsFailed { failed, total, .. } if failed == total => {
                "nothing was written; fix the inputs named above and run the command again".into()
            }
            Self::SomeInputsFailed { .. } => {
                "the other outputs were written; fix the inputs named above and run the command again \
                 with just those"
                    .into()
            }
            Self::NotVerified { failed, total, .. } if failed == total => {
                "none verified: each error above says what to do about its container".into()
            }
            Self::NotVerified { .. } => {
                "the others verified: each error above says what to do about its container".into()
            }
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rejected { input, fault } => write!(f, "{input}: {fault}"),
            Self::Io { action, path, source } => {
                write!(f, "cannot {action} {}: {source}", path.display())
            }
            Self::OutputExists(p) => write!(f, "{} already exists", p.display()),
            Self::OutputBusy(p) => write!(f, "{} is being written by another keepsync", p.display()),
            Self::BadKeyFile { path, reason } => write!(f, "{}: {reason}", path.display()),
            Self::NoPassphrase(var) => write!(f, "environment variable {var} is not set or is empty"),
            Self::NoTerminal(why) => {
                write!(f, "no key given, and no terminal to ask for a passphrase on ({why})")
            }
            Self::KeyKindMismatch { needs_passphrase: true } => {
                f.write_str("this container needs a passphrase, not a key file")
            }
            Self::KeyKindMismatch { needs_passphrase: false } => {
                f.write_str("this container needs a key file, not a passphrase")
            }
            Self::Usage(msg) => f.write_str(msg),
            Self::Filter(e) => e.fmt(f),
            Self::Internal(msg) => write!(f, "internal error: {msg}"),
            Self::Network { peer, action, source } => write!(f, "cannot {action} {peer}: {source}"),
            Self::Protocol { peer, fault } => write!(f, "{peer}: {fault}"),
            Self::Refused { peer, reason } => write!(f, "{peer} refused the request: {reason}"),
            Self::Ended { peer, why } => write!(f, "{peer}: {why}"),
            Self::Peer { command, status } => write!(f, "`{command}` failed ({status})"),
            Self::History { path, reason } => write!(f, "benchmark history {}: {reason}", path.display()),
            Self::UnknownRun(name) if name == "baseline" => {
                write!(f, "no baseline run is set in the history")
            }
            Self::UnknownRun(name) => write!(f, "no benchmark run `{name}` in the history"),
            Self::SomeInputsFailed { failed, total, .. } => {
                write!(f, "{failed} of {total} inputs failed (each is reported above)")
            }
            Self::NotVerified { failed, total, .. } => {
                write!(f, "{failed} of {total} containers did not verify (each is reported above)")
            }
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Rejected { fault, .. } => Some(fault),
            Self::Network { source, .. } => Some(source),
            Self::Protocol { fault, .. } => Some(fault),
            _ => None,
        }
    }
}
