//! rsync's include/exclude pattern syntax, compiled to `globset` globs that match a path
//! relative to the synced root (`/`-separated).
//!
//! The rules, as rsync's manual gives them (docs/FILTERS.md says the same for users):
//!
//! - a trailing `/` matches only a directory (and is not part of the pattern);
//! - a leading `/` anchors the pattern at the root; otherwise it matches the end of the path,
//!   starting at any component (`foo` matches `foo`, `a/foo`; `a/foo` matches `x/a/foo`);
//! - `*` matches within a component, `?` one character but `/`, `[...]` a class (`[!...]` and
//!   `[^...]` negate), and `**` anything, `/` included (`a/**/b` needs a directory between,
//!   an unanchored `**/b` does not);
//! - a trailing `/***` matches the directory and everything in it;
//! - `\` escapes a wildcard in a pattern that has one, and is a plain character otherwise;
//!   `{` and `}` are plain characters.
//!
//! globset's `**` is narrower than rsync's (it spans directories only as a whole component,
//! and `a/**/b` matches `a/b` too), so each rsync `**` becomes the globset globs that together
//! match what it matches: as a whole component, `*/**` (at least one component: rsync's `**`
//! is `.*` between two slashes); elsewhere, `*` (no `/` in it) or `*/**/*` (one or more). A
//! pattern starting with `**` is rsync's one exception: it is matched against the path with a
//! `/` in front, so an unanchored `**/b` also matches `b` at the root (globset's `**/b`).

use globset::{Glob, GlobBuilder};

/// Most `**` that are not a whole component in one pattern (each doubles the globs).
const MAX_INNER_DOUBLE_STARS: usize = 4;

/// A pattern as globs: the pattern matches a path when one of them does (and, for a
/// directory-only one, the path is a directory).
#[derive(Debug)]
pub struct Compiled {
    /// The globs, each with whether it matches directories only.
    pub globs: Vec<(Glob, bool)>,
}

/// One piece of a pattern's body.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    /// Glob text, already escaped for globset.
    Text(String),
    /// rsync's `**`.
    Any,
}

/// Compiles an rsync pattern; `Err` says why it cannot be used.
pub fn compile(pattern: &str) -> Result<Compiled, String> {
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    if let Some(dir) = pattern.strip_suffix("/***").filter(|d| !d.is_empty() && *d != "/") {
        // The directory itself, and everything in it.
        let mut globs = compile(&format!("{dir}/"))?.globs;
        globs.extend(compile(&format!("{dir}/**"))?.globs);
        return Ok(Compiled { globs });
    }
    let dir_only = pattern.ends_with('/');
    let body = pattern.trim_end_matches('/');
    let (anchored, body) = match body.strip_prefix('/') {
        Some(rest) => (true, rest),
        None => (false, body),
    };
    if body.is_empty() {
        return Err("the pattern names no entry (it is only slashes)".into());
    }
    let pieces = pieces(body);
    if pieces == [Piece::Any] {
        // `**` alone: everything.
        let glob = Glob::new("**").map_err(|e| e.kind().to_string())?;
        return Ok(Compiled { globs: vec![(glob, dir_only)] });
    }
    let inner =
        pieces.iter().enumerate().filter(|&(i, p)| *p == Piece::Any && !whole_component(&pieces, i)).count();
    if inner > MAX_INNER_DOUBLE_STARS {
        return Err(format!("more than {MAX_INNER_DOUBLE_STARS} `**` inside components"));
    }
    // Unanchored, a leading `**/` already matches at any depth, the root's entries included.
    let leading_any = !anchored && pieces[0] == Piece::Any && whole_component(&pieces, 0);
    let mut globs = Vec::new();
    for variant in 0..1usize << inner {
        let mut text = String::from(if anchored || leading_any { "" } else { "**/" });
        let mut nth = 0;
        for (i, piece) in pieces.iter().enumerate() {
            match piece {
                Piece::Text(t) => text.push_str(t),
                Piece::Any if whole_component(&pieces, i) => {
                    let last = i + 1 == pieces.len();
                    text.push_str(if last || (i == 0 && leading_any) { "**" } else { "*/**" });
                }
                Piece::Any => {
                    text.push_str(if variant >> nth & 1 == 0 { "*" } else { "*/**/*" });
                    nth += 1;
                }
            }
        }
        let glob = GlobBuilder::new(&text)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| e.kind().to_string())?;
        globs.push((glob, dir_only));
    }
    Ok(Compiled { globs })
}

/// Whether the `**` at `i` stands as a whole component: at the start or after a `/`, and at
/// the end or before a `/`.
fn whole_component(pieces: &[Piece], i: usize) -> bool {
    let before = i == 0 || matches!(&pieces[i - 1], Piece::Text(t) if t.ends_with('/'));
    let after = i + 1 == pieces.len() || matches!(&pieces[i + 1], Piece::Text(t) if t.starts_with('/'));
    before && after
}

/// Characters globset reads as syntax.
fn is_glob_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\' | '!' | ',')
}

fn push_literal(out: &mut String, c: char) {
    if is_glob_meta(c) {
        out.push('\\');
    }
    out.push(c);
}

/// Splits a pattern body into escaped glob text and rsync `**`s.
fn pieces(body: &str) -> Vec<Piece> {
    let wild = body.contains(['*', '?', '[']);
    let cs: Vec<char> = body.chars().collect();
    let mut out = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        i += 1;
        match c {
            // Without wildcards every character is itself, a backslash too.
            _ if !wild => push_literal(&mut text, c),
            '\\' => {
                push_literal(&mut text, cs.get(i).copied().unwrap_or('\\'));
                i += 1;
            }
            '*' if cs.get(i) == Some(&'*') => {
                while cs.get(i) == Some(&'*') {
                    i += 1;
                }
                out.push(Piece::Text(std::mem::take(&mut text)));
                out.push(Piece::Any);
            }
            '*' | '?' => text.push(c),
            '[' => match class(&cs, i) {
                Some((glob, end)) => {
                    text.push_str(&glob);
                    i = end;
                }
                // Never closed: a plain `[`.
                None => push_literal(&mut text, '['),
            },
            _ => push_literal(&mut text, c),
        }
    }
    out.push(Piece::Text(text));
    out.retain(|p| *p != Piece::Text(String::new()));
    out
}

/// The character class whose body starts at `cs[at]` (after its `[`), as globset writes it,
/// and the index after its `]`; `None` when it is never closed.
fn class(cs: &[char], mut at: usize) -> Option<(String, usize)> {
    let mut glob = String::from("[");
    if matches!(cs.get(at), Some('!' | '^')) {
        glob.push('!');
        at += 1;
    }
    let first = at;
    loop {
        let c = *cs.get(at)?;
        at += 1;
        match c {
            // A `]` first in the class is a member.
            ']' if at - 1 > first => {
                glob.push(']');
                return Some((glob, at));
            }
            // `[:alpha:]` and the like go through whole.
            '[' if cs.get(at) == Some(&':') => {
                let close =
                    (at + 1..cs.len().saturating_sub(1)).find(|&j| cs[j] == ':' && cs[j + 1] == ']')?;
                glob.extend(&cs[at - 1..close + 2]);
                at = close + 2;
            }
            '\\' => {
                glob.push('\\');
                glob.push(*cs.get(at)?);
                at += 1;
            }
            _ => glob.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `pattern` matches `path` (a directory when `dir`).
    fn hit(pattern: &str, path: &str, dir: bool) -> bool {
        compile(pattern)
            .unwrap()
            .globs
            .iter()
            .any(|(g, dir_only)| (dir || !dir_only) && g.compile_matcher().is_match(path))
    }

    #[test]
    fn unanchored_patterns_match_the_end_of_the_path_at_a_component() {
        assert!(hit("foo", "foo", false) && hit("foo", "a/b/foo", false));
        assert!(!hit("foo", "a/foo/b", false) && !hit("foo", "xfoo", false));
        assert!(hit("*.log", "a/b.log", false) && !hit("*.log", "a.log/b", false));
        assert!(hit("a/foo", "x/a/foo", false) && hit("a/foo", "a/foo", false));
        assert!(!hit("a/foo", "xa/foo", false));
        assert!(hit("a/*/c", "x/a/b/c", false) && !hit("a/*/c", "a/b/b/c", false));
    }

    #[test]
    fn a_leading_slash_anchors_and_a_trailing_one_wants_a_directory() {
        assert!(hit("/foo", "foo", false) && !hit("/foo", "a/foo", false));
        assert!(hit("/a/b", "a/b", false) && !hit("/a/b", "x/a/b", false));
        assert!(hit("build/", "x/build", true) && !hit("build/", "x/build", false));
        assert!(hit("/build/", "build", true) && !hit("/build/", "a/build", true));
    }

    #[test]
    fn double_stars_span_directories_as_rsync_does() {
        // As a whole component: at least one component (rsync: a/**/b is not a/b).
        assert!(hit("a/**/b", "a/x/b", false) && hit("a/**/b", "a/x/y/b", false));
        assert!(!hit("a/**/b", "a/b", false) && hit("a/**/b", "z/a/x/b", false));
        assert!(!hit("/a/**/b", "z/a/x/b", false));
        // Leading, unanchored: any depth, the root's too; anchored: a directory or more.
        assert!(hit("**/b", "a/b", false) && hit("**/b", "b", false) && hit("**/b", "x/y/b", false));
        assert!(hit("/**/b", "a/b", false) && !hit("/**/b", "b", false));
        assert!(hit("**b", "b", false) && hit("**b", "a/xb", false) && !hit("**b", "b/a", false));
        assert!(hit("a/**", "a/x", false) && hit("a/**", "a/x/y", false) && !hit("a/**", "a", true));
        assert!(hit("**", "a", false) && hit("**", "a/b/c", true));
        // Inside a component: anything, `/` included.
        assert!(hit("/x**y", "xy", false) && hit("/x**y", "xa/by", false) && !hit("/x**y", "xa/b", false));
        assert!(hit("foo**", "foobar", false) && hit("foo**", "a/foo/b/c", false));
        // `*` and `?` stop at `/`.
        assert!(!hit("/a*", "ab/c", false) && !hit("/a?c", "a/c", false) && hit("/a?c", "abc", false));
    }

    #[test]
    fn triple_star_is_the_directory_and_all_in_it() {
        assert!(hit("dir/***", "dir", true) && hit("dir/***", "dir/a/b", false));
        assert!(!hit("dir/***", "dir", false) && !hit("dir/***", "dirx", true));
    }

    #[test]
    fn classes_escapes_and_plain_characters() {
        assert!(hit("[ab].txt", "a.txt", false) && !hit("[ab].txt", "c.txt", false));
        assert!(hit("[!ab].txt", "c.txt", false) && hit("[^ab].txt", "c.txt", false));
        assert!(!hit("[^ab].txt", "a.txt", false));
        assert!(hit("[]x]", "]", false) && hit("[[:digit:]]*", "7up", false));
        assert!(hit("\\*.txt", "*.txt", false) && !hit("\\*.txt", "a.txt", false));
        // No wildcard: a backslash is itself, and so are braces and commas.
        assert!(hit("a\\b", "a\\b", false) && hit("{a,b}", "{a,b}", false) && !hit("{a,b}", "a", false));
        assert!(hit("[x", "[x", false), "an unclosed class is a plain `[`");
        assert!(compile("").is_err() && compile("/").is_err() && compile("//").is_err());
        // Each `**` inside a name doubles the globs: a few at most.
        assert_eq!(compile("a**b**c**d**e").unwrap().globs.len(), 16);
        assert!(compile("a**b**c**d**e**f").is_err());
    }
}
