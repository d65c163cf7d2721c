//! `.keepsyncignore` files: gitignore syntax (the `ignore` crate's matcher, as ripgrep uses
//! it), one per directory, applying to that directory and everything below it. Read through
//! the tree's confined handle, never through a symlink.

use std::ffi::OsString;
use std::io::Read;

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::super::tree::{EntryKind, Stat, Tree, join};
use super::{FilterError, Verdict};

/// The name of an ignore file.
pub const IGNORE_FILE: &str = ".keepsyncignore";

/// Longest ignore file read (a longer one is refused, not cut).
pub const MAX_IGNORE_FILE_LEN: u64 = 1 << 20;

/// One directory's `.keepsyncignore`, compiled.
#[derive(Debug)]
pub struct IgnoreFile {
    /// Its directory, relative to the synced root (`""`: the root).
    dir: String,
    matcher: Gitignore,
}

impl IgnoreFile {
    /// The ignore file among `listed` (the entries of `rel_dir`), read from `tree` at
    /// `tree_dir` (the same directory, as `tree` names it); `None` when the directory has no
    /// regular file of that name (a directory or symlink so named is not one).
    pub fn read(
        rel_dir: &str,
        listed: &[(OsString, Stat)],
        tree: &Tree,
        tree_dir: &str,
    ) -> Result<Option<Self>, FilterError> {
        let present =
            listed.iter().any(|(name, stat)| name.as_os_str() == IGNORE_FILE && stat.kind == EntryKind::File);
        if !present {
            return Ok(None);
        }
        let shown = join(rel_dir, IGNORE_FILE);
        let fault =
            |why: String| FilterError::IgnoreFile { path: tree.display(&join(tree_dir, IGNORE_FILE)), why };
        let mut text = String::new();
        let read = tree
            .open_read(&join(tree_dir, IGNORE_FILE))
            .and_then(|f| f.take(MAX_IGNORE_FILE_LEN + 1).read_to_string(&mut text));
        match read {
            Ok(n) if n as u64 > MAX_IGNORE_FILE_LEN => {
                return Err(fault(format!("longer than {} KiB", MAX_IGNORE_FILE_LEN >> 10)));
            }
            Ok(_) => {}
            // It went between the listing and now: as if it were never there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(fault(format!("cannot read it: {e}"))),
        }
        let mut builder = GitignoreBuilder::new(".");
        for (n, line) in text.lines().enumerate() {
            builder
                .add_line(Some(shown.clone().into()), line)
                .map_err(|e| fault(format!("line {}: {}", n + 1, glob_error(&e))))?;
        }
        let matcher = builder.build().map_err(|e| fault(glob_error(&e)))?;
        Ok(Some(Self { dir: rel_dir.to_owned(), matcher }))
    }

    /// What this file says of `rel` (a path under its directory, relative to the synced
    /// root), if anything: its last matching line decides.
    pub fn verdict(&self, rel: &str, is_dir: bool) -> Option<Verdict> {
        let under = if self.dir.is_empty() {
            rel
        } else {
            rel.strip_prefix(self.dir.as_str()).and_then(|r| r.strip_prefix('/'))?
        };
        match self.matcher.matched(under, is_dir) {
            Match::None => None,
            Match::Ignore(_) => Some(Verdict::Exclude),
            Match::Whitelist(_) => Some(Verdict::Include),
        }
    }
}

/// The glob error alone (the `ignore` crate's message also names the file, which ours says).
fn glob_error(e: &ignore::Error) -> String {
    match e {
        ignore::Error::WithPath { err, .. } | ignore::Error::WithLineNumber { err, .. } => glob_error(err),
        other => other.to_string(),
    }
}
