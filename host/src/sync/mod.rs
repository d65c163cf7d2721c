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
//! - [`verify`]: `--verify`, SRC and DEST read again and compared after a sync.
//! - [`watch`]: `--watch`, a pass after every settled burst of changes in SRC.

pub mod dest;
pub mod filter;
pub mod local;
pub mod plan;
pub mod recv;
pub mod send;
pub mod sim;
pub mod summary;
pub mod tree;
pub mod verify;
pub mod walk;
pub mod watch;

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

/// DEST as a sync made it (with any missing parents): if the sync fails before anything
/// lands, [`NewRoot::undo`] removes what was made, so a refused or unreachable pull leaves no
/// empty DEST behind.
#[must_use = "call undo() when the sync fails"]
pub(crate) struct NewRoot {
    /// The directories made, innermost first.
    made: Vec<PathBuf>,
}

impl NewRoot {
    /// Makes `path` and its missing parents; nothing when it exists.
    pub(crate) fn create(path: &Path) -> Result<Self> {
        let mut missing = Vec::new();
        let mut at = Some(path);
        while let Some(p) = at.filter(|p| !p.as_os_str().is_empty() && std::fs::symlink_metadata(p).is_err())
        {
            missing.push(p.to_path_buf());
            at = p.parent();
        }
        std::fs::create_dir_all(path).map_err(|e| Error::io("create", path, e))?;
        Ok(Self { made: missing })
    }

    /// Removes the directories made, innermost first, as long as each is empty but for an
    /// empty partial directory (a partial holding data is kept: it resumes the next run).
    pub(crate) fn undo(self) {
        for dir in &self.made {
            let _ = std::fs::remove_dir(dir.join(tree::PARTIAL_DIR));
            if std::fs::remove_dir(dir).is_err() {
                return;
            }
        }
    }
}
