//! `keepsync sync SRC DEST` between local paths: mirror a tree, skipping what is unchanged.
//!
//! The run first walks both trees and makes a [`Plan`] (so `--dry-run` can print it and the
//! progress bar knows the total), then applies it:
//! - regular files whose size and modification time match (or, with `--checksum`, whose
//!   BLAKE3 matches) are skipped; the others are copied through the same crash-safe path as
//!   `pack` output: a locked hidden partial file, fsynced, renamed into place, permissions and
//!   modification time set;
//! - directories are created, symlinks recreated as links (never followed), permissions and
//!   modification times mirrored;
//! - with `--delete`, entries of DEST that SRC does not have are removed, deepest first.
//!
//! Nothing is ever written through a symlink found in DEST, and DEST may not lie inside SRC.
//! An interrupted sync leaves finished files in place and at most hidden partial files, which
//! the next run replaces: it resumes at file granularity. (Over the network, `ks://` paths go
//! through [`crate::transport`], which resumes inside files.)

use std::collections::BTreeMap;
use std::fs::{self, File, Metadata};
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::output::{AtomicFile, commit_batch, place_symlink, sync_parent};

/// Files copied before their batch is committed (see [`commit_batch`]).
const BATCH_FILES: usize = 256;

/// Bytes copied before their batch is committed: bounds what a crash can cost again.
const BATCH_BYTES: u64 = 256 << 20;

/// Settings of one sync.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Remove DEST entries that SRC does not have.
    pub delete: bool,
    /// Only report what would change.
    pub dry_run: bool,
    /// Compare file contents (BLAKE3) instead of size and modification time.
    pub checksum: bool,
}

/// What one entry needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
    /// Create a directory.
    CreateDir {
        /// Relative path.
        path: PathBuf,
    },
    /// Copy a regular file.
    CopyFile {
        /// Relative path.
        path: PathBuf,
        /// Its size.
        bytes: u64,
    },
    /// (Re)create a symlink.
    Symlink {
        /// Relative path.
        path: PathBuf,
        /// Where it points (as stored, not resolved).
        target: PathBuf,
    },
    /// Remove an entry DEST has and SRC does not (`--delete`).
    Delete {
        /// Relative path.
        path: PathBuf,
    },
}

/// The changes a sync makes, plus what it leaves alone.
#[derive(Debug, Default, Serialize)]
pub struct Plan {
    /// Changes, in the order they are applied.
    pub actions: Vec<Action>,
    /// Files already up to date.
    pub files_skipped: u64,
    /// Entries neither files, directories nor symlinks (sockets, devices): not synced.
    pub unsupported: Vec<PathBuf>,
    /// Entries that cannot be synced as they stand (e.g. a directory in DEST where SRC has a
    /// file, without `--delete`).
    pub conflicts: Vec<String>,
}

/// What a sync did (also the `--json` output).
#[derive(Debug, Serialize)]
pub struct SyncSummary {
    /// Regular files copied.
    pub files_transferred: u64,
    /// Regular files already up to date.
    pub files_skipped: u64,
    /// Bytes copied this run.
    pub bytes_sent: u64,
    /// Directories created.
    pub dirs_created: u64,
    /// Symlinks (re)created.
    pub symlinks: u64,
    /// Entries removed by `--delete`.
    pub deleted: u64,
    /// Nothing was changed (`--dry-run`).
    pub dry_run: bool,
    /// Entries that were not synced, with the reason.
    pub problems: Vec<String>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The planned actions (with `--dry-run`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub planned: Vec<Action>,
}

/// Our own temporary files (and the network receiver's `.keepsync-partial/` directory), never
/// synced nor deleted as user data.
pub(crate) fn is_ours(name: &std::ffi::OsStr) -> bool {
    let name = name.to_string_lossy();
    name == crate::transport::recv::PARTIAL_DIR
        || name.starts_with('.')
            && (name.ends_with(".keepsync-partial")
                || name.ends_with(".keepsync-ckpt")
                || name.ends_with(".keepsync-tmp"))
}

/// Entries of a directory, sorted by name, without our temporary files.
pub(crate) fn entries(dir: &Path) -> Result<BTreeMap<std::ffi::OsString, Metadata>> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io("read directory", dir, e))? {
        let entry = entry.map_err(|e| Error::io("read directory", dir, e))?;
        let name = entry.file_name();
        if is_ours(&name) {
            continue;
        }
        let meta = fs::symlink_metadata(entry.path()).map_err(|e| Error::io("read", entry.path(), e))?;
        out.insert(name, meta);
    }
    Ok(out)
}

fn mtime(meta: &Metadata) -> (i64, i64) {
    (meta.mtime(), meta.mtime_nsec())
}

pub(crate) fn blake3_of(path: &Path) -> Result<[u8; 32]> {
    let mut file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    let mut hasher = keepsync_core::checkpoint::SourceHasher::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io("read", path, e))?;
        if n == 0 {
            return Ok(hasher.digest());
        }
        hasher.update(&buf[..n]);
    }
}

fn file_unchanged(src: &Path, s: &Metadata, dst: &Path, d: &Metadata, checksum: bool) -> Result<bool> {
    if s.len() != d.len() {
        return Ok(false);
    }
    if checksum {
        return Ok(blake3_of(src)? == blake3_of(dst)?);
    }
    Ok(mtime(s) == mtime(d))
}

/// Walks SRC and DEST and decides what to do. `rel` is the relative directory being planned.
fn plan_dir(src: &Path, dst: Option<&Path>, rel: &Path, opts: &SyncOptions, plan: &mut Plan) -> Result<()> {
    let src_entries = entries(&src.join(rel))?;
    let dst_entries = match dst {
        Some(d) => entries(&d.join(rel))?,
        None => BTreeMap::new(),
    };
    for (name, s) in &src_entries {
        let path = rel.join(name);
        let there = dst_entries.get(name);
        let kind = s.file_type();
        // A DEST entry of another type stands in the way: it goes only with --delete.
        let conflict = there.is_some_and(|d| {
            let dt = d.file_type();
            !(dt.is_dir() && kind.is_dir()
                || dt.is_file() && kind.is_file()
                || dt.is_symlink() && kind.is_symlink())
        });
        if conflict {
            if opts.delete {
                plan.actions.push(Action::Delete { path: path.clone() });
            } else {
                plan.conflicts.push(format!(
                    "{}: DEST has a different kind of entry there (use --delete to replace it)",
                    path.display()
                ));
                continue;
            }
        }
        let there = there.filter(|_| !conflict);
        if kind.is_dir() {
            if there.is_none() {
                plan.actions.push(Action::CreateDir { path: path.clone() });
            }
            plan_dir(src, dst.filter(|_| there.is_some()), &path, opts, plan)?;
        } else if kind.is_file() {
            let same = match (there, dst) {
                (Some(d), Some(root)) => {
                    file_unchanged(&src.join(&path), s, &root.join(&path), d, opts.checksum)?
                }
                _ => false,
            };
            if same {
                plan.files_skipped += 1;
            } else {
                plan.actions.push(Action::CopyFile { path, bytes: s.len() });
            }
        } else if kind.is_symlink() {
            let target =
                fs::read_link(src.join(&path)).map_err(|e| Error::io("read link", src.join(&path), e))?;
            let same = match (there, dst) {
                (Some(_), Some(root)) => fs::read_link(root.join(&path)).is_ok_and(|t| t == target),
                _ => false,
            };
            if !same {
                plan.actions.push(Action::Symlink { path, target });
            }
        } else {
            plan.unsupported.push(path);
        }
    }
    if opts.delete {
        let mut gone: Vec<PathBuf> =
            dst_entries.keys().filter(|n| !src_entries.contains_key(*n)).map(|n| rel.join(n)).collect();
        gone.sort();
        plan.actions.extend(gone.into_iter().map(|path| Action::Delete { path }));
    }
    Ok(())
}

/// `path` made absolute through its nearest existing ancestor (which is canonicalized, so
/// symlinks and `..` in the existing part are resolved); the missing rest is appended.
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut existing = path;
    let mut rest = Vec::new();
    loop {
        if let Ok(real) = fs::canonicalize(existing) {
            return Some(rest.iter().rev().fold(real, |acc, part| acc.join(part)));
        }
        rest.push(existing.file_name()?.to_owned());
        existing = match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
}

/// Refuses SRC/DEST pairs that cannot be mirrored safely.
fn check_roots(src: &Path, dst: &Path) -> Result<()> {
    let s = fs::symlink_metadata(src).map_err(|e| Error::io("open", src, e))?;
    if !s.is_dir() {
        return Err(Error::Usage(format!(
            "{} is not a directory: sync mirrors a directory tree",
            src.display()
        )));
    }
    if let Ok(d) = fs::symlink_metadata(dst)
        && !d.is_dir()
    {
        return Err(Error::Usage(format!("{} exists and is not a directory", dst.display())));
    }
    // Also when DEST does not exist yet: it would be created inside SRC.
    if let (Some(s), Some(d)) = (resolve(src), resolve(dst))
        && (d.starts_with(&s) || s.starts_with(&d))
    {
        return Err(Error::Usage(format!(
            "{} and {} overlap: DEST may not be SRC, inside SRC, or contain it",
            src.display(),
            dst.display()
        )));
    }
    Ok(())
}

/// Makes the plan for mirroring `src` into `dst`.
pub fn plan(src: &Path, dst: &Path, opts: &SyncOptions) -> Result<Plan> {
    check_roots(src, dst)?;
    let mut plan = Plan::default();
    let dst_exists = dst.is_dir();
    plan_dir(src, dst_exists.then_some(dst), Path::new(""), opts, &mut plan)?;
    Ok(plan)
}

/// Refuses to write through a symlink: every ancestor of `rel` under `root` must be a real
/// directory (a symlink in DEST could otherwise point the write outside DEST).
fn confined(root: &Path, rel: &Path) -> Result<PathBuf> {
    let mut at = root.to_path_buf();
    if let Some(parent) = rel.parent() {
        for part in parent.components() {
            at.push(part);
            let meta = fs::symlink_metadata(&at).map_err(|e| Error::io("open", &at, e))?;
            if !meta.is_dir() {
                return Err(Error::Usage(format!(
                    "{} is not a real directory; refusing to write through it",
                    at.display()
                )));
            }
        }
    }
    Ok(root.join(rel))
}

/// Copies `src` into `dst`'s partial file with `meta`'s permissions and mtime; the caller
/// commits it (in a batch).
fn copy_file(src: &Path, dst: &Path, meta: &Metadata, bar: &ProgressBar) -> Result<(AtomicFile, u64)> {
    let mut input = File::open(src).map_err(|e| Error::io("open", src, e))?;
    let out = AtomicFile::open(dst, true)?;
    out.truncate()?;
    let mut writer = std::io::BufWriter::with_capacity(1 << 20, out.file());
    let mut buf = vec![0u8; 1 << 18];
    let mut copied = 0u64;
    loop {
        let n = input.read(&mut buf).map_err(|e| Error::io("read", src, e))?;
        if n == 0 {
            break;
        }
        writer.write_all(&buf[..n]).map_err(|e| Error::io("write", out.partial(), e))?;
        copied += n as u64;
        bar.inc(n as u64);
    }
    writer.flush().map_err(|e| Error::io("write", out.partial(), e))?;
    drop(writer);
    out.file()
        .set_permissions(meta.permissions())
        .map_err(|e| Error::io("set permissions of", out.partial(), e))?;
    let times = fs::FileTimes::new().set_modified(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
    out.file().set_times(times).map_err(|e| Error::io("set times of", out.partial(), e))?;
    Ok((out, copied))
}

pub(crate) fn remove(path: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("remove", path, e))?;
    if meta.is_dir() {
        fs::remove_dir_all(path).map_err(|e| Error::io("remove", path, e))
    } else {
        fs::remove_file(path).map_err(|e| Error::io("remove", path, e))
    }
}

/// Mirrors `src` into `dst`.
pub fn sync(src: &Path, dst: &Path, opts: &SyncOptions, bar: &ProgressBar) -> Result<SyncSummary> {
    let started = Instant::now();
    let plan = plan(src, dst, opts)?;
    let mut summary = SyncSummary {
        files_transferred: 0,
        files_skipped: plan.files_skipped,
        bytes_sent: 0,
        dirs_created: 0,
        symlinks: 0,
        deleted: 0,
        dry_run: opts.dry_run,
        problems: plan.conflicts.clone(),
        seconds: 0.0,
        planned: Vec::new(),
    };
    summary.problems.extend(
        plan.unsupported
            .iter()
            .map(|p| format!("{}: not a file, directory or symlink; skipped", p.display())),
    );
    if opts.dry_run {
        summary.planned = plan.actions;
        summary.seconds = started.elapsed().as_secs_f64();
        return Ok(summary);
    }
    let total: u64 =
        plan.actions.iter().map(|a| if let Action::CopyFile { bytes, .. } = a { *bytes } else { 0 }).sum();
    bar.set_length(total);
    if !dst.exists() {
        fs::create_dir_all(dst).map_err(|e| Error::io("create", dst, e))?;
    }
    // Copied files are committed in batches: one flush for many files (see `commit_batch`).
    let mut batch = Vec::new();
    let mut batch_bytes = 0u64;
    for action in &plan.actions {
        match action {
            Action::CreateDir { path } => {
                let at = confined(dst, path)?;
                fs::create_dir(&at).map_err(|e| Error::io("create", &at, e))?;
                summary.dirs_created += 1;
            }
            Action::CopyFile { path, .. } => {
                let at = confined(dst, path)?;
                let from = src.join(path);
                let meta = fs::symlink_metadata(&from).map_err(|e| Error::io("read", &from, e))?;
                let (file, len) = copy_file(&from, &at, &meta, bar)?;
                summary.bytes_sent += len;
                summary.files_transferred += 1;
                batch_bytes += len;
                batch.push((file, len));
                if batch.len() >= BATCH_FILES || batch_bytes >= BATCH_BYTES {
                    commit_batch(std::mem::take(&mut batch))?;
                    batch_bytes = 0;
                }
            }
            Action::Symlink { path, target } => {
                place_symlink(target, &confined(dst, path)?)?;
                summary.symlinks += 1;
            }
            Action::Delete { path } => {
                let at = confined(dst, path)?;
                remove(&at)?;
                summary.deleted += 1;
            }
        }
    }
    commit_batch(batch)?;
    mirror_dir_metadata(src, dst, Path::new(""))?;
    sync_parent(&dst.join("x"))?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Sets every DEST directory's permissions and modification time from SRC, children first
/// (writing into a directory changes its mtime).
fn mirror_dir_metadata(src: &Path, dst: &Path, rel: &Path) -> Result<()> {
    for (name, meta) in entries(&src.join(rel))? {
        if meta.is_dir() {
            let path = rel.join(&name);
            if fs::symlink_metadata(dst.join(&path)).is_ok_and(|m| m.is_dir()) {
                mirror_dir_metadata(src, dst, &path)?;
            }
        }
    }
    let (s, d) = (src.join(rel), dst.join(rel));
    let meta = fs::metadata(&s).map_err(|e| Error::io("read", &s, e))?;
    fs::set_permissions(&d, fs::Permissions::from_mode(meta.permissions().mode()))
        .map_err(|e| Error::io("set permissions of", &d, e))?;
    let dir = File::open(&d).map_err(|e| Error::io("open", &d, e))?;
    let times = fs::FileTimes::new().set_modified(meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
    dir.set_times(times).map_err(|e| Error::io("set times of", &d, e))?;
    Ok(())
}
