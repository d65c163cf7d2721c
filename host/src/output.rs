//! Crash-safe output files.
//!
//! Output is written to a hidden partial file beside the destination
//! (`.NAME.keepsync-partial`), locked against a second writer, fsynced, and renamed into place
//! only when the caller commits, after the last chunk authenticated. On any error the partial
//! file is removed, so no half-written output is ever left under the real name. A process that
//! is killed leaves the partial file behind; `pack` resumes from it (see [`crate::pack`]).

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};

/// Nanoseconds this process spent in [`AtomicFile::commit`]'s final fsync, rename and directory
/// fsync: the durability cost on the critical path (the background [`Flusher`]'s syncs overlap
/// with the pipeline and are not counted). Read by `keepsync bench`; two `Instant::now` calls
/// per output file cost nothing next to an fsync.
static COMMIT_NANOS: AtomicU64 = AtomicU64::new(0);

/// Counts `took` as time spent making outputs durable and placing them (a sync's batches).
pub fn add_commit_time(took: std::time::Duration) {
    COMMIT_NANOS.fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Seconds spent committing outputs so far in this process (see [`COMMIT_NANOS`]).
pub fn commit_seconds() -> f64 {
    COMMIT_NANOS.load(Ordering::Relaxed) as f64 / 1e9
}

/// The hidden partial file for `dest`.
pub fn partial_path(dest: &Path) -> PathBuf {
    sibling(dest, "keepsync-partial")
}

/// The hidden checkpoint file for `dest`.
pub fn checkpoint_path(dest: &Path) -> PathBuf {
    sibling(dest, "keepsync-ckpt")
}

fn sibling(dest: &Path, suffix: &str) -> PathBuf {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    dest.with_file_name(format!(".{name}.{suffix}"))
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes a rename (or removal) in `path`'s directory durable.
pub fn sync_parent(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        let dir = parent_dir(path);
        File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io("sync directory", dir, e))?;
    }
    Ok(())
}

/// Checks that `dest` names a file that may be written: one that does not exist, or, with
/// `force`, a regular file (never a directory, a symlink or a device).
pub fn check_replaceable(dest: &Path, force: bool) -> Result<()> {
    if dest.as_os_str().is_empty() || dest.file_name().is_none() {
        return Err(Error::Usage(format!("{} is not a file name", dest.display())));
    }
    match dest.symlink_metadata() {
        Ok(_) if !force => Err(Error::OutputExists(dest.to_path_buf())),
        Ok(m) if !m.is_file() => {
            let what = if m.is_dir() {
                "a directory"
            } else if m.file_type().is_symlink() {
                "a symbolic link"
            } else {
                "not a regular file"
            };
            Err(Error::Usage(format!(
                "{} is {what}; --force replaces only regular files (name the file to write, \
                 or remove it first)",
                dest.display()
            )))
        }
        _ => Ok(()),
    }
}

/// A destination file being written through its partial file.
#[derive(Debug)]
pub struct AtomicFile {
    file: File,
    partial: PathBuf,
    dest: PathBuf,
    force: bool,
    committed: bool,
}

impl AtomicFile {
    /// Opens (creating if needed) the partial file for `dest` without truncating it, locked
    /// for this process. Fails if `dest` exists and `force` is off.
    pub fn open(dest: &Path, force: bool) -> Result<Self> {
        check_replaceable(dest, force)?;
        let partial = partial_path(dest);
        let mut opts = OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&partial).map_err(|e| Error::io("create", &partial, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(Error::OutputBusy(dest.to_path_buf())),
            Err(std::fs::TryLockError::Error(e)) => return Err(Error::io("lock", &partial, e)),
        }
        Ok(Self { file, partial, dest: dest.to_path_buf(), force, committed: false })
    }

    /// The partial file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The partial file's path.
    pub fn partial(&self) -> &Path {
        &self.partial
    }

    /// Empties the partial file (a fresh start).
    pub fn truncate(&self) -> Result<()> {
        self.file.set_len(0).map_err(|e| Error::io("truncate", &self.partial, e))
    }

    /// Makes the written data durable (without renaming).
    pub fn sync_data(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io("sync", &self.partial, e))
    }

    /// Trims the file to `len` (stale bytes from an interrupted run past the end).
    fn trim(&self, len: u64) -> Result<()> {
        // Truncating updates the modification time, which a sync has already set: only trim
        // when stale bytes (from an interrupted run) lie past the end.
        let current = self.file.metadata().map_err(|e| Error::io("read", &self.partial, e))?.len();
        if current != len {
            self.file.set_len(len).map_err(|e| Error::io("truncate", &self.partial, e))?;
        }
        Ok(())
    }

    /// Trims the file to `len`, fsyncs it and renames it to the destination.
    pub fn commit(mut self, len: u64) -> Result<()> {
        self.trim(len)?;
        let started = Instant::now();
        let committed = self.sync_and_rename();
        let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        COMMIT_NANOS.fetch_add(nanos, Ordering::Relaxed);
        committed
    }

    fn sync_and_rename(&mut self) -> Result<()> {
        self.file.sync_all().map_err(|e| Error::io("sync", &self.partial, e))?;
        if !self.force && self.dest.symlink_metadata().is_ok() {
            return Err(Error::OutputExists(self.dest.clone()));
        }
        std::fs::rename(&self.partial, &self.dest)
            .map_err(|e| Error::io("rename into place", &self.dest, e))?;
        self.committed = true;
        sync_parent(&self.dest)
    }
}

/// Commits many finished files with two filesystem flushes instead of two fsyncs each: one
/// `syncfs` puts every file's data on disk, then each is renamed into place, then a second
/// `syncfs` makes the renames durable. No file gets its name before its bytes are on disk.
/// A tree of small files spends most of its time in per-file fsyncs otherwise. All files must
/// live on one filesystem (the destination tree's); each entry is `(file, final length)`.
pub fn commit_batch(batch: Vec<(AtomicFile, u64)>) -> Result<()> {
    let mut batch = batch;
    if batch.len() <= 1 {
        return batch.pop().map_or(Ok(()), |(file, len)| file.commit(len));
    }
    for (file, len) in &batch {
        file.trim(*len)?;
    }
    let started = Instant::now();
    let first = &batch[0].0;
    rustix::fs::syncfs(&first.file).map_err(|e| Error::io("sync", &first.partial, e.into()))?;
    for (file, _) in &mut batch {
        if !file.force && file.dest.symlink_metadata().is_ok() {
            return Err(Error::OutputExists(file.dest.clone()));
        }
        std::fs::rename(&file.partial, &file.dest)
            .map_err(|e| Error::io("rename into place", &file.dest, e))?;
        file.committed = true;
    }
    let first = &batch[0].0;
    rustix::fs::syncfs(&first.file).map_err(|e| Error::io("sync", &first.dest, e.into()))?;
    let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
    COMMIT_NANOS.fetch_add(nanos, Ordering::Relaxed);
    Ok(())
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: an error path already reports the original failure.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

/// Makes a partial file durable in the background while the writer keeps writing.
///
/// A request syncs everything written to the file before the request was made (`sync_data`
/// on a second handle), and only then, if the request carries one, writes a record (a
/// checkpoint pointing at those bytes) atomically. Requests never queue: while the flusher is
/// busy a new one is refused and the caller asks again later. Besides checkpoints, the writer
/// asks for a sync every [`WRITE_BEHIND`] bytes, so the final fsync before the rename has only
/// a tail left to write. Dropping the flusher waits for it, so no record is written after an
/// error path removed the files.
pub struct Flusher {
    tx: Option<std::sync::mpsc::SyncSender<FlushRequest>>,
    handle: Option<std::thread::JoinHandle<Result<()>>>,
    last: u64,
}

/// A sync, then optionally a record (path, bytes) to write once the sync is done.
type FlushRequest = Option<(PathBuf, Vec<u8>)>;

/// Bytes written between write-behind syncs.
pub const WRITE_BEHIND: u64 = 16 << 20;

impl Flusher {
    /// Starts a flusher for `out`'s partial file.
    pub fn start(out: &AtomicFile) -> Result<Self> {
        let file = out.file().try_clone().map_err(|e| Error::io("open", out.partial(), e))?;
        let partial = out.partial().to_path_buf();
        let (tx, rx) = std::sync::mpsc::sync_channel::<FlushRequest>(0);
        let handle = std::thread::Builder::new()
            .name("keepsync-flush".into())
            .spawn(move || {
                for request in rx {
                    file.sync_data().map_err(|e| Error::io("sync", &partial, e))?;
                    if let Some((path, bytes)) = request {
                        write_small_file_atomically(&path, &bytes)?;
                    }
                }
                Ok(())
            })
            .map_err(|e| Error::io("start a thread for", out.partial(), e))?;
        Ok(Self { tx: Some(tx), handle: Some(handle), last: 0 })
    }

    /// Asks for a sync of what is written now, then `record` (path, bytes) if given. Returns
    /// `false`, queuing nothing, while the previous request is still running.
    pub fn request(&mut self, record: FlushRequest) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.try_send(record).is_ok())
    }

    /// Called after the file holds `written` bytes: asks for a write-behind sync every
    /// [`WRITE_BEHIND`] bytes.
    pub fn wrote(&mut self, written: u64) {
        if written >= self.last + WRITE_BEHIND && self.request(None) {
            self.last = written;
        }
    }

    /// Waits for the last request and reports the first error any request met.
    pub fn finish(mut self) -> Result<()> {
        self.tx = None;
        match self.handle.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Usage("the background flush thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Makes `at` a symlink to `target`, replacing whatever link or file is there atomically: the
/// link is made beside it (`.NAME.keepsync-tmp`) and renamed over it.
pub fn place_symlink(target: &Path, at: &Path) -> Result<()> {
    let tmp = sibling(at, "keepsync-tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).map_err(|e| Error::io("create", &tmp, e))?;
    std::fs::rename(&tmp, at).map_err(|e| Error::io("rename into place", at, e))
}

/// Writes `bytes` to `path` atomically (temp file, fsync, rename, directory fsync).
pub fn write_small_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = sibling(path, "tmp");
    // A temp file that cannot be made means the output cannot be created (exit 73).
    let mut f = File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let mut write = || -> io::Result<()> {
        use std::io::Write;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("write", path, e)
    })?;
    sync_parent(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_batch_places_every_file_trimmed_and_refuses_to_overwrite_without_force() {
        let dir = tempfile::tempdir().unwrap();
        let mut batch = Vec::new();
        for i in 0..5u8 {
            let dest = dir.path().join(format!("f{i}"));
            let out = AtomicFile::open(&dest, false).unwrap();
            // Stale bytes past the end (an interrupted run) are trimmed at commit.
            out.file().write_all_at(&[i; 10], 0).unwrap();
            batch.push((out, 4));
        }
        commit_batch(batch).unwrap();
        for i in 0..5u8 {
            assert_eq!(std::fs::read(dir.path().join(format!("f{i}"))).unwrap(), [i; 4]);
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 5, "no partial file left");

        // Without force, a destination that appeared meanwhile is not replaced.
        let a = AtomicFile::open(&dir.path().join("new"), false).unwrap();
        let b = AtomicFile::open(&dir.path().join("taken"), false).unwrap();
        std::fs::write(dir.path().join("taken"), b"theirs").unwrap();
        assert!(matches!(commit_batch(vec![(a, 0), (b, 0)]), Err(Error::OutputExists(_))));
        assert_eq!(std::fs::read(dir.path().join("taken")).unwrap(), b"theirs");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(!left.iter().any(|n| n.to_string_lossy().ends_with("keepsync-partial")), "{left:?}");
    }

    #[test]
    fn dropped_without_commit_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.ks");
        let f = AtomicFile::open(&dest, false).unwrap();
        f.file().write_all_at(b"partial", 0).unwrap();
        assert!(partial_path(&dest).exists());
        drop(f);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn commit_renames_and_refuses_to_clobber() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.ks");
        let f = AtomicFile::open(&dest, false).unwrap();
        f.file().write_all_at(b"hello world", 0).unwrap();
        f.commit(5).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
        assert!(!partial_path(&dest).exists());
        assert!(matches!(AtomicFile::open(&dest, false), Err(Error::OutputExists(_))));
        let f = AtomicFile::open(&dest, true).unwrap();
        f.file().write_all_at(b"new", 0).unwrap();
        f.commit(3).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
    }

    #[test]
    fn flusher_writes_records_only_after_syncing_and_reports_done() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.ks");
        let out = AtomicFile::open(&dest, false).unwrap();
        out.file().write_all_at(b"0123456789", 0).unwrap();
        let mut flusher = Flusher::start(&out).unwrap();
        let ckpt = dir.path().join("ckpt");
        // A rendezvous channel: the request is taken once the thread is idle.
        let mut sent = false;
        for _ in 0..1000 {
            if flusher.request(Some((ckpt.clone(), b"record".to_vec()))) {
                sent = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(sent);
        flusher.finish().unwrap();
        assert_eq!(std::fs::read(&ckpt).unwrap(), b"record");
        out.commit(10).unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"0123456789");
    }

    #[test]
    fn second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.ks");
        let _first = AtomicFile::open(&dest, false).unwrap();
        assert!(matches!(AtomicFile::open(&dest, false), Err(Error::OutputBusy(_))));
    }
}
