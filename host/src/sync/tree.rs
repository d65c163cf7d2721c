//! Confinement: every filesystem operation of a sync happens relative to a handle on the
//! tree's root directory, and no path is ever resolved through a symlink.
//!
//! A path is resolved by `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` (Linux 5.6 and
//! later), else by opening it component by component with `O_NOFOLLOW`. The directory a name
//! lives in is opened that way and the operation (stat, create, rename, remove) then names
//! only the last component relative to that handle, so the check and the write cannot
//! diverge: a directory swapped for a symlink between two steps makes the next step fail
//! (`ELOOP`/`ENOTDIR`), it is never followed out of the tree.
//!
//! Only the root itself is opened by its path (following symlinks, as the user named it).
//! Relative paths are `/`-separated UTF-8 and checked by [`check_rel`]: no empty, `.` or `..`
//! component and none of KeepSync's reserved names.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, Timespec, Timestamps};
use rustix::io::Errno;

use keepsync_core::budget::MAX_PATH_LEN;

/// The directory under a receiving tree's root that holds partial files, checkpoints and the
/// lock that orders the writers of the tree.
pub const PARTIAL_DIR: &str = ".keepsync-partial";

/// How many times [`Tree::partials`] makes the partial directory when another writer keeps
/// removing it (empty) between making and opening it.
const PARTIALS_RETRIES: u32 = 100;

/// Our own names, never synced nor deleted as user data: the partial directory, and the
/// hidden temporary files of earlier versions (`.NAME.keepsync-partial`, ...).
pub fn is_ours(name: &OsStr) -> bool {
    name.as_bytes() == PARTIAL_DIR.as_bytes() || is_leftover(name)
}

/// A hidden temporary file an earlier version of KeepSync left beside the file it wrote
/// (`.NAME.keepsync-partial`, `.NAME.keepsync-ckpt`, `.NAME.keepsync-tmp`): `--delete`
/// removes them.
pub fn is_leftover(name: &OsStr) -> bool {
    // `.NAME.suffix` with a NAME: the partial directory itself (`.keepsync-partial`) is not one.
    let name = name.as_bytes();
    [&b".keepsync-partial"[..], b".keepsync-ckpt", b".keepsync-tmp"]
        .iter()
        .any(|s| name.len() > s.len() + 1 && name.starts_with(b".") && name.ends_with(s))
}

/// Checks a relative path that names an entry of a tree (from the network or a walk): not
/// empty, at most [`MAX_PATH_LEN`] bytes, `/`-separated, no empty, `.` or `..` component,
/// none of our reserved names, no NUL.
pub fn check_rel(rel: &str) -> Result<(), String> {
    if rel.is_empty() || rel.len() > MAX_PATH_LEN || rel.starts_with('/') || rel.contains('\0') {
        return Err(format!("{rel:?}: not a relative path"));
    }
    match rel.split('/').find(|p| strays(p) || is_ours(OsStr::new(p))) {
        Some(p) => Err(format!("{rel:?}: component {p:?} is not allowed")),
        None => Ok(()),
    }
}

/// A path component that does not name an entry below its directory: empty, `.` or `..`.
fn strays(component: &str) -> bool {
    component.is_empty() || component == "." || component == ".."
}

/// Refuses, before any system call, a `rel` that could name something outside the tree:
/// absolute, holding a NUL, or with an empty, `.` or `..` component (`""` alone is the
/// root). Every operation checks its path so, whoever calls it: the kernel's `RESOLVE_BENEATH`
/// guards only the directories on the way, and `unlinkat(dir, "..")` or `mkdirat(dir, "..")`
/// would act on the parent of the root (found by the `paths` fuzz target).
fn confined(rel: &str) -> io::Result<()> {
    let bad = rel.starts_with('/') || rel.contains('\0') || (!rel.is_empty() && rel.split('/').any(strays));
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{rel:?} is not a path under the root"),
        ));
    }
    Ok(())
}

/// `base/rel` (either may be empty).
pub fn join(base: &str, rel: &str) -> String {
    match (base.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_owned(),
        (_, true) => base.to_owned(),
        _ => format!("{base}/{rel}"),
    }
}

/// The directory part and the last component of `rel` (`("", rel)` at the top).
pub fn split(rel: &str) -> (&str, &str) {
    rel.rsplit_once('/').unwrap_or(("", rel))
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (never followed).
    Symlink,
    /// A socket, device or FIFO: never synced.
    Other,
}

/// An entry's metadata, as `lstat` gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    /// What it is.
    pub kind: EntryKind,
    /// Bytes.
    pub size: u64,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Change time (seconds, nanoseconds): moves on every write and metadata change, and no
    /// tool can set it back.
    pub ctime: (i64, u32),
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Inode number.
    pub ino: u64,
    /// Device.
    pub dev: u64,
}

impl Stat {
    fn from_raw(raw: &rustix::fs::Stat) -> Self {
        let kind = match FileType::from_raw_mode(raw.st_mode) {
            FileType::RegularFile => EntryKind::File,
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            _ => EntryKind::Other,
        };
        Self {
            kind,
            size: raw.st_size as u64,
            mtime: (raw.st_mtime, raw.st_mtime_nsec as u32),
            ctime: (raw.st_ctime, raw.st_ctime_nsec as u32),
            mode: raw.st_mode & 0o7777,
            ino: raw.st_ino,
            dev: raw.st_dev,
        }
    }

    /// The metadata of an open file.
    pub fn of(fd: impl AsFd) -> io::Result<Self> {
        Ok(Self::from_raw(&rustix::fs::fstat(fd)?))
    }

    /// The same file, unchanged: same inode, size, modification and change time. A file
    /// written (or whose metadata changed) in between fails it.
    pub fn same_version(&self, other: &Self) -> bool {
        (self.dev, self.ino, self.size, self.mtime, self.ctime)
            == (other.dev, other.ino, other.size, other.mtime, other.ctime)
    }
}

/// `openat2` is missing (an old kernel, or a sandbox that hides it): walk components.
static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

fn to_io(e: Errno) -> io::Error {
    io::Error::from(e)
}

/// A tree's root directory, and every operation inside it.
#[derive(Debug)]
pub struct Tree {
    root: OwnedFd,
    path: PathBuf,
}

impl Tree {
    /// Opens the directory at `path` (following symlinks in `path` itself: the user named it).
    pub fn open(path: &Path) -> io::Result<Self> {
        let root =
            rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(to_io)?;
        Ok(Self { root, path: path.to_path_buf() })
    }

    /// The directory `rel_dir` under this tree as a tree of its own (opened confined; the
    /// paths of the new tree are relative to it).
    pub fn subtree(&self, rel_dir: &str) -> io::Result<Self> {
        let root = self.dir(rel_dir)?;
        Ok(Self { root, path: self.display(rel_dir) })
    }

    /// The path the tree was opened by (for messages).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `rel` under the tree, for messages.
    pub fn display(&self, rel: &str) -> PathBuf {
        if rel.is_empty() { self.path.clone() } else { self.path.join(rel) }
    }

    /// Opens `rel` under the root with `flags`, never through a symlink (`""` is the root).
    fn open_beneath(&self, rel: &str, flags: OFlags, mode: Mode) -> io::Result<OwnedFd> {
        confined(rel)?;
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if rel.is_empty() {
            return rustix::fs::openat(&self.root, ".", flags & !OFlags::NOFOLLOW, mode).map_err(to_io);
        }
        if !NO_OPENAT2.load(Ordering::Relaxed) {
            let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
            match rustix::fs::openat2(&self.root, rel, flags, mode, resolve) {
                Err(Errno::NOSYS) => NO_OPENAT2.store(true, Ordering::Relaxed),
                // A race with a rename elsewhere in the tree: the kernel asks to try again.
                Err(Errno::AGAIN) => {}
                other => return other.map_err(to_io),
            }
        }
        let (dir, name) = split(rel);
        let mut at = rustix::fs::openat(
            &self.root,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(to_io)?;
        if !dir.is_empty() {
            for part in dir.split('/') {
                at = rustix::fs::openat(
                    &at,
                    part,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(to_io)?;
            }
        }
        rustix::fs::openat(&at, name, flags, mode).map_err(to_io)
    }

    /// The directory `rel_dir` (`""`: the root), opened for `*at` calls.
    pub fn dir(&self, rel_dir: &str) -> io::Result<OwnedFd> {
        self.open_beneath(rel_dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
    }

    /// Opens the regular file `rel` for reading.
    pub fn open_read(&self, rel: &str) -> io::Result<File> {
        self.open_read_stat(rel).map(|(file, _)| file)
    }

    /// Opens the regular file `rel` for reading, with its metadata as opened.
    pub fn open_read_stat(&self, rel: &str) -> io::Result<(File, Stat)> {
        // Non-blocking: a FIFO swapped in for the file must not block the open.
        let fd = self.open_beneath(rel, OFlags::RDONLY | OFlags::NONBLOCK, Mode::empty())?;
        let file = File::from(fd);
        let stat = Stat::of(&file)?;
        match stat.kind {
            EntryKind::File => Ok((file, stat)),
            _ => Err(io::Error::new(io::ErrorKind::InvalidInput, "no longer a regular file")),
        }
    }

    /// The metadata of `rel` (not following a symlink there): `None` when it, or a directory
    /// on the way to it, does not exist. A symlink or file where a directory on the way should
    /// be is an error (`ELOOP`/`ENOTDIR`): something else is in the way.
    pub fn lstat(&self, rel: &str) -> io::Result<Option<Stat>> {
        confined(rel)?;
        if rel.is_empty() {
            return Stat::of(&self.root).map(Some);
        }
        let (dir, name) = split(rel);
        let dir = match self.dir(dir) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Self::stat_in(&dir, name)
    }

    /// The metadata of `name` in the open directory `dir`, not following a symlink.
    pub fn stat_in(dir: &OwnedFd, name: &str) -> io::Result<Option<Stat>> {
        if name.is_empty() || name.contains('/') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not one name")));
        }
        confined(name)?;
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(raw) => Ok(Some(Stat::from_raw(&raw))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(to_io(e)),
        }
    }

    /// Creates the directories of `rel_dir` that are missing (mode 0755) and opens the last;
    /// fails where a component is not a real directory.
    pub fn make_dirs(&self, rel_dir: &str) -> io::Result<OwnedFd> {
        confined(rel_dir)?;
        let mut at = self.dir("")?;
        if rel_dir.is_empty() {
            return Ok(at);
        }
        for part in rel_dir.split('/') {
            let open = |at: &OwnedFd| {
                rustix::fs::openat(
                    at,
                    part,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
            };
            at = match open(&at) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&at, part, Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(to_io(e)),
                    }
                    open(&at).map_err(to_io)?
                }
                Err(e) => return Err(to_io(e)),
            };
        }
        Ok(at)
    }

    /// Reads the target of the symlink `rel`.
    pub fn read_link(&self, rel: &str) -> io::Result<OsString> {
        confined(rel)?;
        let (dir, name) = split(rel);
        let dir = self.dir(dir)?;
        let target = rustix::fs::readlinkat(&dir, name, Vec::new()).map_err(to_io)?;
        Ok(OsString::from(std::ffi::OsStr::from_bytes(target.as_bytes())))
    }

    /// The entries of directory `rel_dir`, sorted by name, without our own names (entries
    /// that vanish while being listed are left out).
    pub fn list(&self, rel_dir: &str) -> io::Result<Vec<(OsString, Stat)>> {
        let dir = self.dir(rel_dir)?;
        list_fd(&dir)
    }

    /// Removes `rel`, a directory with everything under it (never following a symlink).
    pub fn remove_all(&self, rel: &str) -> io::Result<()> {
        confined(rel)?;
        if rel.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "the root itself is never removed"));
        }
        let (dir, name) = split(rel);
        let dir = self.dir(dir)?;
        remove_in(&dir, name)
    }

    /// Sets the mode and modification time of the directory `rel_dir`.
    pub fn set_dir_meta(&self, rel_dir: &str, mode: u32, mtime: (i64, u32)) -> io::Result<()> {
        let dir = self.dir(rel_dir)?;
        set_meta(&dir, mode, mtime)
    }

    /// The partial directory, created (mode 0700) when `create` and it is missing; `None` when
    /// it does not exist.
    pub fn partials(&self, create: bool) -> io::Result<Option<OwnedFd>> {
        self.partials_with(create, || {})
    }

    /// [`Self::partials`], running `made` after each `mkdir` (tests race it there).
    fn partials_with(&self, create: bool, mut made: impl FnMut()) -> io::Result<Option<OwnedFd>> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        // Another writer that finished may remove the (empty) directory between our `mkdir`
        // and our `open`: make it again. Each round needs that writer to win a window of a
        // few instructions, so the bound is never reached in practice.
        let mut made_times = 0;
        loop {
            match rustix::fs::openat(&self.root, PARTIAL_DIR, flags, Mode::empty()) {
                Ok(fd) => return Ok(Some(fd)),
                Err(Errno::NOENT) if !create => return Ok(None),
                Err(Errno::NOENT) if made_times == PARTIALS_RETRIES => {
                    return Err(io::Error::other(format!(
                        "{PARTIAL_DIR} was removed {PARTIALS_RETRIES} times as soon as it was made; \
                         stop the program that removes it"
                    )));
                }
                Err(Errno::NOENT) => {
                    match rustix::fs::mkdirat(&self.root, PARTIAL_DIR, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(to_io(e)),
                    }
                    made_times += 1;
                    made();
                }
                Err(e) => return Err(to_io(e)),
            }
        }
    }

    /// Takes the tree's write lock: an exclusive `flock` on the partial directory (created if
    /// missing), which every KeepSync process writing into this tree takes around each change
    /// of the tree's names (creating, placing, removing), so no two of them interleave a check
    /// and a change.
    pub fn lock(&self) -> io::Result<TreeLock> {
        loop {
            let dir = self.partials(true)?.ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            rustix::fs::flock(&dir, rustix::fs::FlockOperation::LockExclusive).map_err(to_io)?;
            // The directory may have been removed (when empty) and made anew while we waited:
            // a lock on the old one orders nothing.
            let held = Stat::of(&dir)?;
            match Self::stat_in(&self.root, PARTIAL_DIR) {
                Ok(Some(now)) if (now.dev, now.ino) == (held.dev, held.ino) => return Ok(TreeLock { dir }),
                _ => continue,
            }
        }
    }

    /// Removes the partial directory if it is empty (taking the lock, so no other writer is
    /// using it).
    pub fn remove_partials_if_empty(&self) {
        let Ok(Some(dir)) = self.partials(false) else { return };
        if rustix::fs::flock(&dir, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            return; // another writer holds it
        }
        let empty = rustix::fs::Dir::read_from(&dir).is_ok_and(|mut d| {
            std::iter::from_fn(|| d.read())
                .all(|e| e.is_ok_and(|e| matches!(e.file_name().to_bytes(), b"." | b"..")))
        });
        if empty {
            let _ = rustix::fs::unlinkat(&self.root, PARTIAL_DIR, AtFlags::REMOVEDIR);
        }
    }
}

/// The tree's write lock, held until dropped (see [`Tree::lock`]).
#[derive(Debug)]
pub struct TreeLock {
    dir: OwnedFd,
}

impl TreeLock {
    /// The partial directory.
    pub fn partials(&self) -> &OwnedFd {
        &self.dir
    }
}

/// Entries of an open directory, sorted, without our own names and `.`/`..`.
pub fn list_fd(dir: &OwnedFd) -> io::Result<Vec<(OsString, Stat)>> {
    list_filtered(dir, |name| !is_ours(name))
}

/// The leftovers of earlier versions in the directory `rel_dir` (see [`is_leftover`]).
pub fn leftovers(tree: &Tree, rel_dir: &str) -> io::Result<Vec<OsString>> {
    let dir = tree.dir(rel_dir)?;
    Ok(list_filtered(&dir, is_leftover)?.into_iter().map(|(n, _)| n).collect())
}

fn list_filtered(dir: &OwnedFd, keep: impl Fn(&OsStr) -> bool) -> io::Result<Vec<(OsString, Stat)>> {
    let mut out = Vec::new();
    let mut read = rustix::fs::Dir::read_from(dir).map_err(to_io)?;
    while let Some(entry) = read.read() {
        let entry = entry.map_err(to_io)?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name == "." || name == ".." || !keep(name) {
            continue;
        }
        match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(raw) => out.push((name.to_owned(), Stat::from_raw(&raw))),
            Err(Errno::NOENT) => {} // removed since it was listed
            Err(e) => return Err(to_io(e)),
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Removes `name` in `dir`, a directory with everything under it, never following a symlink.
pub fn remove_in(dir: &OwnedFd, name: impl AsRef<OsStr>) -> io::Result<()> {
    let name = name.as_ref();
    match rustix::fs::unlinkat(dir, name, AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR | Errno::PERM) => {}
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(to_io(e)),
    }
    let sub = match rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(to_io(e)),
    };
    let mut read = rustix::fs::Dir::read_from(&sub).map_err(to_io)?;
    let mut names = Vec::new();
    while let Some(entry) = read.read() {
        let entry = entry.map_err(to_io)?;
        let n = entry.file_name().to_bytes();
        if n != b"." && n != b".." {
            names.push(OsStr::from_bytes(n).to_owned());
        }
    }
    for n in names {
        remove_in(&sub, n)?;
    }
    match rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(to_io(e)),
    }
}

/// Sets an open file's or directory's mode and modification time.
pub fn set_meta(fd: impl AsFd, mode: u32, (secs, nsec): (i64, u32)) -> io::Result<()> {
    let fd = fd.as_fd();
    rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777)).map_err(to_io)?;
    set_mtime(fd, (secs, nsec))
}

/// Sets an open file's modification time (its access time too, to the same value).
pub fn set_mtime(fd: impl AsFd, (secs, nsec): (i64, u32)) -> io::Result<()> {
    let t = Timespec { tv_sec: secs, tv_nsec: i64::from(nsec.min(999_999_999)) as _ };
    rustix::fs::futimens(fd, &Timestamps { last_access: t, last_modification: t }).map_err(to_io)
}

/// An error's `errno`, when it has one (for telling the peer why a write failed).
pub fn errno(e: &io::Error) -> Option<i32> {
    e.raw_os_error()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Found by the `paths` fuzz target: `remove_all("..")` emptied the root's parent, and
    /// `make_dirs("../x")` created beside the root.
    #[test]
    fn dot_dot_empty_and_absolute_names_are_refused_by_every_operation() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(dir.path().join("beside"), b"x").unwrap();
        let t = Tree::open(&root).unwrap();
        for rel in ["..", "../beside", "d/..", "d/../..", ".", "d//e", "/etc", "d/", "a\0b"] {
            let refused = |r: io::Result<()>| r.is_err_and(|e| e.kind() == io::ErrorKind::InvalidInput);
            assert!(refused(t.remove_all(rel)), "remove_all({rel:?})");
            assert!(refused(t.make_dirs(rel).map(drop)), "make_dirs({rel:?})");
            assert!(refused(t.lstat(rel).map(drop)), "lstat({rel:?})");
            assert!(refused(t.read_link(rel).map(drop)), "read_link({rel:?})");
            assert!(refused(t.dir(rel).map(drop)), "dir({rel:?})");
            assert!(refused(t.set_dir_meta(rel, 0o700, (0, 0))), "set_dir_meta({rel:?})");
        }
        assert!(t.remove_all("").is_err(), "the root itself");
        let dir_fd = t.dir("").unwrap();
        assert!(Tree::stat_in(&dir_fd, "..").is_err() && Tree::stat_in(&dir_fd, "d/x").is_err());
        let mut beside: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        beside.sort();
        assert_eq!(beside, ["beside", "root"]);
        assert!(root.join("d").is_dir());
    }

    fn tree() -> (tempfile::TempDir, Tree, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), b"secret").unwrap();
        let t = Tree::open(&root).unwrap();
        (dir, t, outside)
    }

    #[test]
    fn relative_paths_are_checked() {
        for ok in ["a", "a/b", "a.b/c..d", ".hidden"] {
            assert!(check_rel(ok).is_ok(), "{ok}");
        }
        for bad in
            ["", "/a", "a//b", "a/./b", "../a", "a/..", "a/\0", ".keepsync-partial/x", "a/.x.keepsync-tmp"]
        {
            assert!(check_rel(bad).is_err(), "{bad:?}");
        }
        assert!(check_rel(&"a".repeat(MAX_PATH_LEN + 1)).is_err());
        // Earlier versions' temporaries are leftovers (--delete removes them); the partial
        // directory, where writers keep what they have not placed yet, never is.
        assert!(is_leftover(OsStr::new(".f.keepsync-partial")) && is_leftover(OsStr::new(".x.keepsync-tmp")));
        assert!(!is_leftover(OsStr::new(PARTIAL_DIR)) && is_ours(OsStr::new(PARTIAL_DIR)));
        assert!(!is_leftover(OsStr::new("f.keepsync-partial")));
    }

    #[test]
    fn nothing_resolves_through_a_symlink_in_the_tree() {
        let (_dir, t, outside) = tree();
        symlink(&outside, t.path().join("link")).unwrap();
        symlink(outside.join("secret"), t.path().join("d/file-link")).unwrap();
        // Reading, listing, stat'ing and creating through the link all fail.
        assert!(t.open_read("link/secret").is_err());
        assert!(t.open_read("d/file-link").is_err(), "a symlink as the last component is not followed");
        assert!(t.list("link").is_err());
        assert!(t.lstat("link/secret").is_err());
        assert!(t.make_dirs("link/new").is_err());
        assert!(!outside.join("new").exists());
        assert!(t.dir("link").is_err());
        // The link itself is seen as a link, and removing it removes the link only.
        assert_eq!(t.lstat("link").unwrap().unwrap().kind, EntryKind::Symlink);
        assert_eq!(t.read_link("link").unwrap(), outside.as_os_str());
        t.remove_all("link").unwrap();
        assert!(outside.join("secret").exists());
        // A file where a directory should be.
        std::fs::write(t.path().join("f"), b"x").unwrap();
        assert!(t.lstat("f/x").is_err());
        assert!(t.make_dirs("f/x").is_err());
    }

    #[test]
    fn removing_a_tree_never_follows_links_inside_it() {
        let (_dir, t, outside) = tree();
        std::fs::create_dir_all(t.path().join("d/e")).unwrap();
        std::fs::write(t.path().join("d/e/f"), b"1").unwrap();
        symlink(&outside, t.path().join("d/e/out")).unwrap();
        t.remove_all("d").unwrap();
        assert!(!t.path().join("d").exists());
        assert_eq!(std::fs::read(outside.join("secret")).unwrap(), b"secret");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_after_it_was_opened_keeps_writes_inside() {
        let (_dir, t, outside) = tree();
        let d = t.make_dirs("d").unwrap();
        // Swap d for a link to outside: the handle still names the old directory, never the link.
        std::fs::rename(t.path().join("d"), t.path().join("old-d")).unwrap();
        symlink(&outside, t.path().join("d")).unwrap();
        rustix::fs::mkdirat(&d, "made", Mode::from_raw_mode(0o755)).unwrap();
        assert!(t.path().join("old-d/made").is_dir());
        assert!(!outside.join("made").exists());
        // And a fresh lookup refuses the link.
        assert!(t.dir("d").is_err());
    }

    #[test]
    fn the_partial_dir_is_made_again_when_another_writer_removes_it_before_it_is_opened() {
        let (_dir, t, _) = tree();
        let other = Tree::open(t.path()).unwrap();
        // Another writer finishing removes the empty directory right after each `mkdir`,
        // 99 times: the 100th is opened.
        let mut removed = 0;
        let made = t
            .partials_with(true, || {
                if removed < PARTIALS_RETRIES - 1 {
                    other.remove_partials_if_empty();
                    removed += 1;
                }
            })
            .unwrap();
        assert!(made.is_some());
        assert!(t.path().join(PARTIAL_DIR).is_dir());
        // One more than that: a clear error, not a loop.
        other.remove_partials_if_empty();
        let err = t.partials_with(true, || other.remove_partials_if_empty()).unwrap_err();
        assert!(err.to_string().contains("was removed 100 times"), "{err}");
        // Without `create`, a missing directory is no error.
        assert!(t.partials(false).unwrap().is_none());
    }

    #[test]
    fn the_lock_is_exclusive_and_survives_a_removed_partial_dir() {
        let (_dir, t, _) = tree();
        let held = t.lock().unwrap();
        let t2 = Tree::open(t.path()).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let _l = t2.lock().unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx.recv_timeout(std::time::Duration::from_millis(100)).is_err(), "waits while held");
        drop(held);
        waiter.join().unwrap();
        // Empty: removed; then locked again on a new directory.
        t.remove_partials_if_empty();
        assert!(!t.path().join(PARTIAL_DIR).exists());
        let _l = t.lock().unwrap();
        assert!(t.path().join(PARTIAL_DIR).is_dir());
    }
}
