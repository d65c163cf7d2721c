//! What a sync did: one summary (and one `--json` schema) for local syncs, pushes and pulls,
//! the problems it met, and the exit code they make.

use serde::Serialize;

use super::plan::Action;
use crate::error::exit;

/// Why an entry was not synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The source entry disappeared before it could be read (rsync's "vanished").
    Vanished,
    /// The source file changed while it was read, twice in a row.
    KeptChanging,
    /// Anything else, said in words.
    Other(String),
}

/// One entry that was not synced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The entry (relative path), or empty for the run as a whole.
    pub path: String,
    /// Why.
    pub cause: Cause,
}

impl Problem {
    /// A problem told in words.
    pub fn new(path: impl Into<String>, why: impl Into<String>) -> Self {
        Self { path: path.into(), cause: Cause::Other(why.into()) }
    }
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        self.cause.fmt(f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cause::Vanished => f.write_str("vanished from the source before it was read; skipped"),
            Cause::KeptChanging => {
                f.write_str("kept changing while it was read (tried twice); not synced: run the sync again once it is quiet")
            }
            Cause::Other(why) => f.write_str(why),
        }
    }
}

/// Entries listed one by one per cause of problem; the rest are counted.
pub const SHOWN_PER_CAUSE: u64 = 5;

/// What a sync did (also the `--json` output, the same fields for every direction).
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// `local`, `push` or `pull`.
    pub direction: &'static str,
    /// Regular files written (or, in a dry run, that would be).
    pub files_transferred: u64,
    /// Regular files already up to date.
    pub files_skipped: u64,
    /// Files resumed from what an interrupted run left.
    pub files_resumed: u64,
    /// Local: file bytes copied. Network: bytes the sending side wrote to the link.
    pub bytes_sent: u64,
    /// Network: bytes that crossed the link in both directions.
    pub link_bytes: u64,
    /// File bytes carried by data (before compression), or copied locally.
    pub data_bytes: u64,
    /// Directories created.
    pub dirs_created: u64,
    /// Symlinks (re)created.
    pub symlinks: u64,
    /// Entries removed by `--delete` (in a dry run: that would be).
    pub deleted: u64,
    /// Source entries the filter left out (`--exclude`, `.keepsyncignore`; an excluded
    /// directory counts once, nothing under it is looked at). `null` on a pull: the server
    /// filters, and does not say how much.
    pub excluded: Option<u64>,
    /// Source entries that vanished before they could be read (skipped).
    pub vanished: u64,
    /// Entries that were not synced, with the reason (a reason shared by more than
    /// [`SHOWN_PER_CAUSE`] entries is said once for the rest, with their number).
    pub problems: Vec<String>,
    /// Entries not synced, all told.
    #[serde(skip)]
    pub problem_count: u64,
    /// Problems by cause: how many were met, and how many of them were not listed one by one
    /// (beyond [`SHOWN_PER_CAUSE`]).
    #[serde(skip)]
    pub folded: std::collections::BTreeMap<String, (u64, u64)>,
    /// Nothing was changed (`--dry-run`).
    pub dry_run: bool,
    /// With `--dry-run`: what would be done.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<Action>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Network: connections used.
    pub connections: usize,
    /// Network: connections re-established after a failure.
    pub reconnects: u32,
    /// Pushes: the compression each connection ended on (`auto` follows the bottleneck).
    pub codecs: Vec<String>,
    /// Pushes: the shortest round trip measured, in ms.
    pub rtt_ms: Option<f64>,
    /// Pushes: the most files one connection kept in flight (the window widens on a long link).
    pub files_in_flight: usize,
    /// With `--verify`: what was read again and compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verified: Option<super::verify::Verified>,
}

impl Summary {
    /// Records a problem (a vanished source entry is counted apart: it makes exit code 24 when
    /// it is the only kind).
    pub fn problem(&mut self, p: Problem) {
        if p.cause == Cause::Vanished {
            self.vanished += 1;
        }
        self.problem_count += 1;
        let folded = self.folded.entry(p.cause.to_string()).or_default();
        folded.0 += 1;
        if folded.0 <= SHOWN_PER_CAUSE {
            self.problems.push(p.to_string());
        } else {
            folded.1 += 1;
        }
    }

    /// Says once, for each cause shared by more entries than were listed, how many more.
    pub fn finish(&mut self) {
        for (cause, (_, more)) in std::mem::take(&mut self.folded) {
            if more > 0 {
                self.problems.push(format!("{more} more entries: {cause}"));
            }
        }
    }

    /// Adds what another connection (or pass) of the same run did.
    pub fn absorb(&mut self, other: Summary) {
        self.files_transferred += other.files_transferred;
        self.files_skipped += other.files_skipped;
        self.files_resumed += other.files_resumed;
        self.bytes_sent += other.bytes_sent;
        self.link_bytes += other.link_bytes;
        self.data_bytes += other.data_bytes;
        self.dirs_created += other.dirs_created;
        self.symlinks += other.symlinks;
        self.deleted += other.deleted;
        self.excluded = match (self.excluded, other.excluded) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.vanished += other.vanished;
        self.problems.extend(other.problems);
        self.problem_count += other.problem_count;
        for (cause, (seen, more)) in other.folded {
            let f = self.folded.entry(cause).or_default();
            f.0 += seen;
            f.1 += more;
        }
        self.planned.extend(other.planned);
        self.codecs.extend(other.codecs);
        self.rtt_ms = match (self.rtt_ms, other.rtt_ms) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.files_in_flight = self.files_in_flight.max(other.files_in_flight);
        self.reconnects += other.reconnects;
    }

    /// Adds what a last, metadata-only pass did: what it found up to date was counted by the
    /// data pass, so only its deletions, its problems and what it still had to send count.
    pub fn absorb_last_pass(&mut self, other: Summary) {
        let planned = other.planned.iter().filter(|a| matches!(a, Action::Delete { .. })).cloned().collect();
        let last = Summary {
            deleted: other.deleted,
            planned,
            files_transferred: other.files_transferred,
            data_bytes: other.data_bytes,
            problems: other.problems,
            problem_count: other.problem_count,
            folded: other.folded,
            vanished: other.vanished,
            reconnects: other.reconnects,
            ..Summary::default()
        };
        self.absorb(last);
    }

    /// The exit code: 0, 24 when the only problems are source entries that vanished (rsync's
    /// "some files vanished before they could be transferred"), else 23.
    pub fn exit_code(&self) -> u8 {
        match self.problem_count.max(self.problems.len() as u64) {
            0 => exit::OK,
            n if n == self.vanished => exit::VANISHED,
            _ => exit::PARTIAL,
        }
    }
}
