//! A persistent index of file hashes, so `--checksum` re-syncs of a big tree do not re-read
//! every file: a file's BLAKE3 is reused while its size, modification time, change time (both
//! to the nanosecond) and inode are unchanged. The change time (ctime) is what keeps
//! `--checksum` honest: writing a file updates it, and unlike the mtime no tool can set it
//! back, so content rewritten under a restored mtime is still hashed again.
//!
//! One index per tree root, kept in the user's cache directory
//! (`$XDG_CACHE_HOME/keepsync/index/`, else `~/.cache/keepsync/index/`), never inside the tree
//! (a synced tree should not grow our files). A missing, unreadable or corrupt index is simply
//! rebuilt; it is a cache, never a source of truth for what is written.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use std::fs::File;
use std::io::Read;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Stamp {
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    ino: u64,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
            ino: meta.ino(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    files: HashMap<String, (Stamp, [u8; 32])>,
}

const VERSION: u32 = 2;

/// Cached BLAKE3 hashes of the files under one root.
#[derive(Debug)]
pub struct HashIndex {
    file: Option<PathBuf>,
    stored: Stored,
    dirty: bool,
    /// Hashes computed (not found valid in the index) since it was opened.
    pub computed: u64,
}

/// An index shared by the connections of one run.
pub type SharedIndex = Arc<Mutex<HashIndex>>;

impl HashIndex {
    /// The index of the tree at `root` (empty when there is none yet).
    pub fn open(root: &Path) -> Self {
        let file = std::fs::canonicalize(root).ok().and_then(|real| {
            let name = blake3::hash(real.as_os_str().as_encoded_bytes()).to_hex();
            let dir = crate::io::xdg_path("XDG_CACHE_HOME", ".cache", "index", "").ok()?;
            Some(dir.join(format!("{}.json", &name[..32])))
        });
        Self::at(file)
    }

    /// An index stored in `file` (`None`: in memory only).
    pub fn at(file: Option<PathBuf>) -> Self {
        let stored = file
            .as_ref()
            .and_then(|f| std::fs::read(f).ok())
            .and_then(|bytes| serde_json::from_slice::<Stored>(&bytes).ok())
            .filter(|s| s.version == VERSION)
            .unwrap_or(Stored { version: VERSION, files: HashMap::new() });
        Self { file, stored, dirty: false, computed: 0 }
    }

    /// Shares the index of `root` between connections.
    pub fn shared(root: &Path) -> SharedIndex {
        Arc::new(Mutex::new(Self::open(root)))
    }

    /// BLAKE3 of the open file `file` (named `rel` in the tree), from the index when its
    /// size, mtime, ctime and inode still match.
    pub fn hash(&mut self, rel: &str, file: &File) -> std::io::Result<[u8; 32]> {
        let meta = file.metadata()?;
        let stamp = Stamp::of(&meta);
        if let Some((s, h)) = self.stored.files.get(rel)
            && *s == stamp
        {
            return Ok(*h);
        }
        let hash = blake3_of(file)?;
        // A file written during the hashing gets a new stamp: store the one read before.
        self.stored.files.insert(rel.to_owned(), (stamp, hash));
        self.dirty = true;
        self.computed += 1;
        Ok(hash)
    }

    /// Writes the index back if it changed (best effort: a cache that cannot be written is
    /// rebuilt next time).
    pub fn save(&mut self) {
        let Some(file) = &self.file else { return };
        if !self.dirty {
            return;
        }
        if let Some(dir) = file.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Ok(bytes) = serde_json::to_vec(&self.stored)
            && crate::output::write_small_file_atomically(file, &bytes).is_ok()
        {
            self.dirty = false;
        }
    }
}

/// Hashes the open file `file` (named `rel`) through `index`.
pub fn hash_open(index: &SharedIndex, rel: &str, file: &File) -> std::io::Result<[u8; 32]> {
    index.lock().unwrap_or_else(|e| e.into_inner()).hash(rel, file)
}

/// BLAKE3 of an open file's content, read from its start.
pub fn blake3_of(file: &File) -> std::io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut reader = file;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            return Ok(*hasher.finalize().as_bytes());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_reused_until_the_file_changes_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a");
        std::fs::write(&f, b"one").unwrap();
        let store = dir.path().join("index.json");
        let mut idx = HashIndex::at(Some(store.clone()));
        let open = |p: &Path| File::open(p).unwrap();
        let h1 = idx.hash("a", &open(&f)).unwrap();
        assert_eq!(h1, *blake3::hash(b"one").as_bytes());
        assert_eq!(idx.hash("a", &open(&f)).unwrap(), h1);
        assert_eq!(idx.computed, 1, "the second lookup is served from the index");
        idx.save();

        let mut again = HashIndex::at(Some(store.clone()));
        assert_eq!(again.hash("a", &open(&f)).unwrap(), h1);
        assert_eq!(again.computed, 0, "the saved index is reused");

        // Same size, new content, and the old mtime put back: the ctime still moved.
        let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&f, b"two").unwrap();
        std::fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
        assert_eq!(std::fs::metadata(&f).unwrap().modified().unwrap(), mtime);
        assert_eq!(again.hash("a", &open(&f)).unwrap(), *blake3::hash(b"two").as_bytes());
        assert_eq!(again.computed, 1);

        // A corrupt index is ignored, not trusted.
        std::fs::write(&store, b"{not json").unwrap();
        let mut fresh = HashIndex::at(Some(store));
        fresh.hash("a", &open(&f)).unwrap();
        assert_eq!(fresh.computed, 1);
    }
}
