//! What a sync leaves out: `--include` / `--exclude` / `--exclude-from` rules (rsync's
//! pattern syntax, first match wins) and `.keepsyncignore` files (gitignore syntax), the same
//! way locally and over `ks://` (docs/FILTERS.md).
//!
//! - The sending end's walker ([`super::walk`]) lists only what the filter lets through, and
//!   never looks inside an excluded directory.
//! - The receiving end's `--delete` keeps what the filter excludes there (its own
//!   `.keepsyncignore` files, which a sync brings over from the source), unless
//!   `--delete-excluded`.
//!
//! For each entry the rules are tried first, in order; the first whose pattern matches
//! decides. If none does, the `.keepsyncignore` files decide, the nearest directory's first
//! (within a file, its last matching line); if none matches either, the entry is synced.
//! Over the network the rules travel in `Open` ([`keepsync_core::sync::FilterRules`]), within
//! the core's bounds.

mod ignore_file;
mod pattern;

pub use ignore_file::{IGNORE_FILE, IgnoreFile, MAX_IGNORE_FILE_LEN};

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{GlobSet, GlobSetBuilder};
use keepsync_core::budget::MAX_FILTER_LEN;
use keepsync_core::sync::{FilterRules, RuleKind};

use super::tree::{Stat, Tree};

/// What the filter says of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Synced (and, at the receiving end, subject to `--delete`).
    Include,
    /// Left out (and kept by `--delete` at the receiving end).
    Exclude,
}

/// Why a filter cannot be used.
#[derive(Debug)]
pub enum FilterError {
    /// An `--include` / `--exclude` pattern does not compile.
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        why: String,
    },
    /// An `--exclude-from` file cannot be read.
    ExcludeFrom {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A `.keepsyncignore` file cannot be read, or a line of it does not compile.
    IgnoreFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        why: String,
    },
    /// The rules do not fit in an `Open` (too many, or too long).
    TooBig(keepsync_core::sync::FilterError),
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPattern { pattern, why } => write!(f, "filter pattern {pattern:?}: {why}"),
            Self::ExcludeFrom { path, source } => {
                write!(f, "cannot read --exclude-from {}: {source}", path.display())
            }
            Self::IgnoreFile { path, why } => write!(f, "{}: {why}", path.display()),
            Self::TooBig(e) => e.fmt(f),
        }
    }
}

impl FilterError {
    /// What the user can do about it.
    pub fn hint(&self) -> String {
        match self {
            Self::BadPattern { .. } => "see FILTERS in `keepsync sync --help` for the pattern syntax".into(),
            Self::ExcludeFrom { .. } => "check the path and its permissions".into(),
            Self::IgnoreFile { .. } => {
                "fix that .keepsyncignore (gitignore syntax; nothing was synced), then run again".into()
            }
            Self::TooBig(_) => {
                "fewer --include/--exclude rules, or .keepsyncignore files in the source tree".into()
            }
        }
    }
}

/// One `--include` / `--exclude` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Include or exclude.
    pub kind: RuleKind,
    /// The pattern, in rsync's syntax.
    pub pattern: String,
}

impl Rule {
    /// `--exclude PATTERN`.
    pub fn exclude(pattern: impl Into<String>) -> Self {
        Self { kind: RuleKind::Exclude, pattern: pattern.into() }
    }

    /// `--include PATTERN`.
    pub fn include(pattern: impl Into<String>) -> Self {
        Self { kind: RuleKind::Include, pattern: pattern.into() }
    }
}

/// The patterns of an `--exclude-from` file: one a line; blank lines and lines starting with
/// `#` or `;` are skipped (as rsync does); a line is taken as it is, spaces included (only a
/// trailing carriage return goes).
pub fn read_exclude_from(path: &Path) -> Result<Vec<Rule>, FilterError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| FilterError::ExcludeFrom { path: path.to_path_buf(), source })?;
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty() && !l.starts_with(['#', ';']))
        .map(Rule::exclude)
        .collect())
}

/// The rules, compiled into one glob set.
#[derive(Debug)]
struct Rules {
    list: Vec<Rule>,
    set: GlobSet,
    /// For each glob of the set: its rule, and whether it matches directories only.
    globs: Vec<(usize, bool)>,
}

impl Rules {
    fn compile(list: Vec<Rule>) -> Result<Self, FilterError> {
        let mut set = GlobSetBuilder::new();
        let mut globs = Vec::new();
        for (i, rule) in list.iter().enumerate() {
            let compiled = pattern::compile(&rule.pattern)
                .map_err(|why| FilterError::BadPattern { pattern: rule.pattern.clone(), why })?;
            for (glob, dir_only) in compiled.globs {
                set.add(glob);
                globs.push((i, dir_only));
            }
        }
        let set = set
            .build()
            .map_err(|e| FilterError::BadPattern { pattern: String::new(), why: e.to_string() })?;
        Ok(Self { list, set, globs })
    }

    /// The kind of the first rule that matches `rel`.
    fn first_match(&self, rel: &str, is_dir: bool) -> Option<RuleKind> {
        if self.list.is_empty() {
            return None;
        }
        self.set
            .matches(rel)
            .into_iter()
            .map(|g| self.globs[g])
            .filter(|&(_, dir_only)| is_dir || !dir_only)
            .map(|(rule, _)| rule)
            .min()
            .map(|rule| self.list[rule].kind)
    }
}

/// A sync's filter: its rules, and the `.keepsyncignore` files of the tree it is applied to.
#[derive(Debug, Clone)]
pub struct Filter {
    rules: Arc<Rules>,
}

impl Default for Filter {
    /// No rules: only `.keepsyncignore` files leave anything out.
    fn default() -> Self {
        Self::new(Vec::new()).expect("no rules compile")
    }
}

impl Filter {
    /// A filter of `rules`, in order.
    pub fn new(rules: Vec<Rule>) -> Result<Self, FilterError> {
        Ok(Self { rules: Arc::new(Rules::compile(rules)?) })
    }

    /// The rules as a peer sent them in `Open`.
    pub fn from_wire(rules: &FilterRules<'_>) -> Result<Self, FilterError> {
        Self::new(rules.iter().map(|(kind, pattern)| Rule { kind, pattern: pattern.to_owned() }).collect())
    }

    /// The rules as `Open` carries them; `Err` when they exceed its bounds.
    pub fn to_wire(&self) -> Result<Vec<u8>, FilterError> {
        let mut buf = vec![0; MAX_FILTER_LEN];
        let rules = self.rules.list.iter().map(|r| (r.kind, r.pattern.as_str()));
        let len = FilterRules::encode(rules, &mut buf).map_err(FilterError::TooBig)?.as_bytes().len();
        buf.truncate(len);
        Ok(buf)
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules.list
    }

    /// The filter at the root of a tree whose entries are `listed`, with the root's
    /// `.keepsyncignore` (read from `tree` at `tree_dir`, the root as `tree` names it).
    pub fn root(
        &self,
        listed: &[(OsString, Stat)],
        tree: &Tree,
        tree_dir: &str,
    ) -> Result<Scope, FilterError> {
        Scope { rules: Arc::clone(&self.rules), files: Vec::new() }.enter("", listed, tree, tree_dir)
    }
}

/// The filter inside one directory: the rules, and the `.keepsyncignore` files of that
/// directory and those above it.
#[derive(Debug, Clone)]
pub struct Scope {
    rules: Arc<Rules>,
    /// Ignore files, the root's first.
    files: Vec<Arc<IgnoreFile>>,
}

impl Scope {
    /// What the filter says of `rel` (relative to the synced root; a directory when `is_dir`).
    pub fn verdict(&self, rel: &str, is_dir: bool) -> Verdict {
        if let Some(kind) = self.rules.first_match(rel, is_dir) {
            return match kind {
                RuleKind::Include => Verdict::Include,
                RuleKind::Exclude => Verdict::Exclude,
            };
        }
        self.files.iter().rev().find_map(|f| f.verdict(rel, is_dir)).unwrap_or(Verdict::Include)
    }

    /// Whether the filter leaves `rel` out.
    pub fn excludes(&self, rel: &str, is_dir: bool) -> bool {
        self.verdict(rel, is_dir) == Verdict::Exclude
    }

    /// The filter inside `rel_dir` (a directory in this scope, whose entries are `listed`),
    /// with its `.keepsyncignore`, read from `tree` at `tree_dir` (`rel_dir` as `tree` names
    /// it).
    pub fn enter(
        &self,
        rel_dir: &str,
        listed: &[(OsString, Stat)],
        tree: &Tree,
        tree_dir: &str,
    ) -> Result<Scope, FilterError> {
        let mut scope = self.clone();
        if let Some(file) = IgnoreFile::read(rel_dir, listed, tree, tree_dir)? {
            scope.files.push(Arc::new(file));
        }
        Ok(scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[(RuleKind, &str)]) -> Filter {
        Filter::new(list.iter().map(|&(kind, p)| Rule { kind, pattern: p.into() }).collect()).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides() {
        use RuleKind::{Exclude, Include};
        let f = rules(&[(Include, "keep.log"), (Exclude, "*.log"), (Include, "*/"), (Exclude, "*")]);
        let m = |rel, dir| f.rules.first_match(rel, dir);
        assert_eq!(m("a/keep.log", false), Some(Include));
        assert_eq!(m("a/other.log", false), Some(Exclude));
        assert_eq!(m("a", true), Some(Include));
        assert_eq!(m("a/x.txt", false), Some(Exclude));
        assert_eq!(Filter::default().rules.first_match("x", false), None);
    }

    #[test]
    fn rules_cross_the_wire_unchanged_and_within_bounds() {
        use RuleKind::{Exclude, Include};
        let f = rules(&[(Include, "a/**/b"), (Exclude, "/build/")]);
        let wire = f.to_wire().unwrap();
        let back = Filter::from_wire(&FilterRules::parse(&wire).unwrap()).unwrap();
        assert_eq!(back.rules(), f.rules());
        let many =
            Filter::new(vec![Rule::exclude("x"); keepsync_core::budget::MAX_FILTER_RULES + 1]).unwrap();
        assert!(matches!(many.to_wire(), Err(FilterError::TooBig(_))));
    }

    #[test]
    fn exclude_from_skips_comments_and_blank_lines_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        std::fs::write(&path, "# comment\n; also\n\n*.tmp\r\n/build/\n trailing \n").unwrap();
        let got: Vec<String> = read_exclude_from(&path).unwrap().into_iter().map(|r| r.pattern).collect();
        assert_eq!(got, ["*.tmp", "/build/", " trailing "]);
        assert!(matches!(read_exclude_from(&dir.path().join("none")), Err(FilterError::ExcludeFrom { .. })));
    }

    #[test]
    fn ignore_files_apply_below_their_directory_nearest_first() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("a/b")).unwrap();
        std::fs::write(r.join(IGNORE_FILE), "*.log\n/top-only\n").unwrap();
        std::fs::write(r.join("a").join(IGNORE_FILE), "!keep.log\nsecret/\n").unwrap();
        let tree = Tree::open(r).unwrap();
        let root = Filter::default().root(&tree.list("").unwrap(), &tree, "").unwrap();
        let a = root.enter("a", &tree.list("a").unwrap(), &tree, "a").unwrap();
        let b = a.enter("a/b", &tree.list("a/b").unwrap(), &tree, "a/b").unwrap();
        assert!(root.excludes("x.log", false) && root.excludes("top-only", false));
        assert!(!root.excludes("a/top-only", false), "anchored to its directory");
        assert!(b.excludes("a/b/x.log", false) && !b.excludes("a/b/keep.log", false));
        assert!(root.excludes("a/keep.log", false), "a file below does not reach up");
        assert!(b.excludes("a/b/secret", true) && !b.excludes("a/b/secret", false));
        // The rules come first: an --include beats a .keepsyncignore.
        let f = rules(&[(RuleKind::Include, "x.log")]);
        assert!(!f.root(&tree.list("").unwrap(), &tree, "").unwrap().excludes("x.log", false));
        std::fs::write(r.join("a").join(IGNORE_FILE), "ok\n{a\n").unwrap();
        let err = root.enter("a", &tree.list("a").unwrap(), &tree, "a").unwrap_err();
        assert!(err.to_string().contains(".keepsyncignore: line 2"), "{err}");
    }
}
