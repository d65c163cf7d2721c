//! The local destination's shared state: the partials a process writes, who writes which
//! range of them ([`Claim`]), the partial directory, and the expiry of unfinished versions.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rustix::fs::{AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use super::super::super::tree::{Stat, Tree};
use super::super::{Fault, MAX_PARTIALS, PARTIAL_MAX_AGE};

/// A partial file a process writes, and the connections writing ranges of it.
struct Writer {
    file: Arc<File>,
    /// Ranges claimed, `start..end` (an assembly claims everything).
    claims: Vec<(u64, u64)>,
    /// The partial holds something worth keeping (a checkpoint, or it was placed): not removed
    /// when the last claim goes.
    keep: bool,
}

/// A tree receiving files, shared by the connections (threads) of one process that write
/// into it.
pub struct Store {
    pub(super) tree: Tree,
    /// The partial directory, once opened (a removed one is found out when creating in it
    /// fails with `ENOENT`, and opened anew).
    partials: Mutex<Option<Arc<OwnedFd>>>,
    writers: Mutex<HashMap<String, Writer>>,
    /// Versions whose resume was counted (a split file's parts resume one by one).
    resumed: Mutex<HashSet<String>>,
    /// Hash their durable prefix in line rather than on a thread beside the transfer
    /// (deterministic, for simulation).
    pub(super) inline: bool,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("tree", &self.tree.path()).finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The key of one version of one file as written: path, size, mtime, the sender's identity
/// of the content, and how it comes (whole: 0; in parts: their size's log2).
pub(super) fn version_key(
    full: &str,
    size: u64,
    mtime: (i64, u32),
    version: &[u8; 16],
    layout: u8,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"keepsync partial v3");
    h.update(&(full.len() as u64).to_le_bytes());
    h.update(full.as_bytes());
    h.update(&size.to_le_bytes());
    h.update(&mtime.0.to_le_bytes());
    h.update(&mtime.1.to_le_bytes());
    h.update(version);
    h.update(&[layout]);
    hex::encode(&h.finalize().as_bytes()[..16])
}

/// Binds a checkpoint to a version and the range it covers.
/// The partial file it describes is part of the binding (its device and inode): a checkpoint
/// written for a partial that was removed meanwhile (and its writer still held open) never
/// vouches for a new partial of the same name.
pub(super) fn binding(vid: &str, start: u64, end: u64, data: &File) -> io::Result<[u8; 32]> {
    let file = Stat::of(data)?;
    let mut h = blake3::Hasher::new();
    h.update(b"keepsync partial range v3");
    h.update(vid.as_bytes());
    for n in [start, end, file.dev, file.ino] {
        h.update(&n.to_le_bytes());
    }
    Ok(*h.finalize().as_bytes())
}

/// A connection's hold on a range of a partial file (see [`Store`]); let go when dropped.
pub struct Claim {
    store: Arc<Store>,
    vid: String,
    range: (u64, u64),
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut writers = lock(&self.store.writers);
        let Some(w) = writers.get_mut(&self.vid) else { return };
        if let Some(at) = w.claims.iter().position(|r| *r == self.range) {
            w.claims.swap_remove(at);
        }
        if w.claims.is_empty() {
            let w = writers.remove(&self.vid).expect("looked up above");
            // Nothing durable in it: a file announced and never (or barely) sent leaves nothing.
            // The flock is still held (through `w.file`), so no other process uses it.
            if !w.keep
                && let Ok(Some(dir)) = self.store.partial_dir(false)
            {
                let _ = rustix::fs::unlinkat(&dir, format!("{}.data", self.vid), AtFlags::empty());
            }
        }
    }
}

impl Store {
    /// Receives into the tree at `tree`.
    pub fn new(tree: Tree) -> Arc<Self> {
        Self::with_inline(tree, false)
    }

    /// Receives into `tree`; `inline`: re-hash resumed prefixes in line (simulation).
    pub fn with_inline(tree: Tree, inline: bool) -> Arc<Self> {
        Arc::new(Self {
            tree,
            partials: Mutex::default(),
            writers: Mutex::default(),
            resumed: Mutex::default(),
            inline,
        })
    }

    /// The partial directory (created when `create` and missing); `None` when it is missing.
    pub(super) fn partial_dir(&self, create: bool) -> io::Result<Option<Arc<OwnedFd>>> {
        let mut cached = lock(&self.partials);
        if let Some(dir) = &*cached {
            return Ok(Some(Arc::clone(dir)));
        }
        let Some(dir) = self.tree.partials(create)? else { return Ok(None) };
        let dir = Arc::new(dir);
        *cached = Some(Arc::clone(&dir));
        Ok(Some(dir))
    }

    /// Forgets the partial directory opened before (it was removed: creating in it failed).
    pub(super) fn forget_partial_dir(&self) {
        *lock(&self.partials) = None;
    }

    /// The tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Claims `range` of the partial `vid` for one connection: opens (or creates) the partial
    /// file, and `flock`s it for this process if no connection of it holds it yet. `Busy`
    /// when another connection holds an overlapping range, or another process the file.
    pub(super) fn claim(
        self: &Arc<Self>,
        vid: &str,
        range: (u64, u64),
    ) -> Result<(Claim, Arc<File>, bool), Fault> {
        let mut writers = lock(&self.writers);
        let claim = || Claim { store: Arc::clone(self), vid: vid.to_owned(), range };
        if let Some(w) = writers.get_mut(vid) {
            if w.claims.iter().any(|&(s, e)| s < range.1 && range.0 < e) {
                return Err(Fault::Busy);
            }
            w.claims.push(range);
            return Ok((claim(), Arc::clone(&w.file), false));
        }
        let name = format!("{vid}.data");
        let flags = OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut tries = 0;
        let (fd, created) = loop {
            let dir =
                self.partial_dir(true).map_err(|e| Fault::io("cannot create the partial directory", &e))?;
            let dir = dir.ok_or_else(|| Fault::Refused("the partial directory vanished".into()))?;
            let opened = match rustix::fs::openat(
                &dir,
                &name,
                flags | OFlags::CREATE | OFlags::EXCL,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => Ok((fd, true)),
                Err(Errno::EXIST) => {
                    rustix::fs::openat(&dir, &name, flags, Mode::empty()).map(|fd| (fd, false))
                }
                Err(e) => Err(e),
            };
            match opened {
                Ok(x) => break x,
                // The (empty) partial directory was removed by a writer that finished: again.
                Err(Errno::NOENT) if tries < 3 => {
                    tries += 1;
                    self.forget_partial_dir();
                }
                Err(e) => return Err(Fault::io(format!("cannot create partial {name}"), &e.into())),
            }
        };
        match rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(Errno::WOULDBLOCK) => return Err(Fault::Busy),
            Err(e) => return Err(Fault::io(format!("cannot lock partial {name}"), &e.into())),
        }
        let file = Arc::new(File::from(fd));
        writers
            .insert(vid.to_owned(), Writer { file: Arc::clone(&file), claims: vec![range], keep: !created });
        Ok((claim(), file, created))
    }

    /// Notes that `vid`'s partial holds something worth keeping.
    pub(super) fn keep(&self, vid: &str) {
        if let Some(w) = lock(&self.writers).get_mut(vid) {
            w.keep = true;
        }
    }

    /// Whether this is the first resume counted for `vid`.
    pub(super) fn first_resume(&self, vid: &str) -> bool {
        let mut resumed = lock(&self.resumed);
        if resumed.len() >= 4096 {
            resumed.clear();
        }
        resumed.insert(vid.to_owned())
    }

    /// Removes partials nobody finished: those untouched for [`PARTIAL_MAX_AGE`], and the
    /// oldest beyond [`MAX_PARTIALS`]. Partials a writer holds (here or in another process)
    /// are left alone.
    pub fn expire(&self) {
        let Ok(Some(dir)) = self.partial_dir(false) else { return };
        let Ok(files) = list_all(&dir) else { return };
        // Each version's files (data, checkpoints, temporaries) and its newest mtime.
        let mut versions: HashMap<String, (Vec<String>, i64)> = HashMap::new();
        for (name, stat) in files {
            let Some(vid) = name.get(..32).filter(|v| v.bytes().all(|b| b.is_ascii_hexdigit())) else {
                continue;
            };
            let v = versions.entry(vid.to_owned()).or_insert((Vec::new(), i64::MIN));
            v.0.push(name.clone());
            v.1 = v.1.max(stat.mtime.0);
        }
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64); // wall clock: partial ages
        let mut by_age: Vec<(i64, String, Vec<String>)> =
            versions.into_iter().map(|(vid, (names, mtime))| (mtime, vid, names)).collect();
        by_age.sort();
        // Oldest first: those past their age go, and more while too many are left.
        let mut left = by_age.len();
        for (mtime, vid, names) in by_age {
            let old = now.saturating_sub(mtime) > PARTIAL_MAX_AGE.as_secs() as i64;
            if !(old || left > MAX_PARTIALS) || lock(&self.writers).contains_key(&vid) {
                continue;
            }
            // Held by a writer of another process: leave it.
            let data = rustix::fs::openat(
                &dir,
                format!("{vid}.data"),
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            let held = data
                .as_ref()
                .is_ok_and(|fd| rustix::fs::flock(fd, FlockOperation::NonBlockingLockExclusive).is_err());
            if held {
                continue;
            }
            for name in names {
                let _ = rustix::fs::unlinkat(&dir, name, AtFlags::empty());
            }
            left -= 1;
        }
    }
}

/// Every name in an open directory with its metadata (our own names included).
pub(super) fn list_all(dir: &OwnedFd) -> io::Result<Vec<(String, Stat)>> {
    let mut out = Vec::new();
    let mut read = rustix::fs::Dir::read_from(dir)?;
    while let Some(entry) = read.read() {
        let entry = entry?;
        let Ok(name) = entry.file_name().to_str() else { continue };
        if name == "." || name == ".." {
            continue;
        }
        if let Ok(Some(stat)) = Tree::stat_in(dir, name) {
            out.push((name.to_owned(), stat));
        }
    }
    Ok(out)
}

/// Writes `bytes` as `name` in the partial directory atomically and durably.
pub(super) fn write_record(dir: &OwnedFd, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = format!("{name}.tmp");
    let fd = rustix::fs::openat(
        dir,
        &tmp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )?;
    let file = File::from(fd);
    let written = file.write_all_at(bytes, 0).and_then(|()| file.sync_data());
    if let Err(e) = written {
        let _ = rustix::fs::unlinkat(dir, &tmp, AtFlags::empty());
        return Err(e);
    }
    rustix::fs::renameat(dir, &tmp, dir, name)?;
    rustix::fs::fsync(dir)?;
    Ok(())
}
