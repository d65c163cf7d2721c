//! `keepsync sync`: one engine for local and network sync.
//!
//! - [`tree`]: confinement: every filesystem operation relative to a root handle, never
//!   through a symlink.
//! - [`walk`]: the one walker of a source tree, which consults the [`filter`]
//!   (`--include`/`--exclude` rules and `.keepsyncignore` files).
//! - [`plan`]: the rules every direction applies (the typed plan, "unchanged", what stands in
//!   the way).
//! - [`dest`]: where files land: partials keyed by version, ordered writers, placement only
//!   of what verified and only over what the writer saw.
//! - [`local`]: a local sync; [`send`] and [`recv`]: the two ends of a network sync, as apps
//!   over the core's sans-IO `Sender` and `Receiver` (driven by [`crate::net`] over a socket,
//!   or by [`sim`] in memory).
//! - [`summary`]: one summary, `--json` schema and exit code for every direction.

pub mod dest;
pub mod filter;
pub mod local;
pub mod plan;
pub mod recv;
pub mod send;
pub mod sim;
pub mod summary;
pub mod tree;
pub mod walk;

pub use local::{SyncOptions, sync_listed, sync_local};
pub use plan::Action;
pub use summary::Summary;

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An empty directory of our own (a dry run into a DEST that does not exist compares with
/// it), removed when dropped.
pub(crate) struct EmptyDir(PathBuf);

impl EmptyDir {
    pub(crate) fn new() -> Result<Self> {
        let name = format!("keepsync-empty-{}", hex::encode(&crate::net::fresh_random()?[..8]));
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path).map_err(|e| Error::io("create", &path, e))?;
        Ok(Self(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for EmptyDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}
