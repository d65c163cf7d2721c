//! What `keepsync sync` leaves out, as a user sees it (docs/FILTERS.md): `--include` /
//! `--exclude` order, anchored and unanchored patterns, directory-only patterns, `**`,
//! `--exclude-from`, nested `.keepsyncignore` files with `!`, `--delete` keeping excluded
//! entries and `--delete-excluded` removing them; every case the same locally, pushing and
//! pulling; and the rules against rsync's own, over seeded random trees.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use support::*;

/// Which way a case runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Local,
    Push,
    Pull,
}

const WAYS: [Way; 3] = [Way::Local, Way::Push, Way::Pull];

/// Every entry under `root` (but our partial directory), `/`-separated: a directory with a
/// trailing `/`, a file with its content after `=`.
fn entries(root: &Path) -> BTreeSet<String> {
    fn walk(root: &Path, rel: &str, out: &mut BTreeSet<String>) {
        let Ok(dir) = fs::read_dir(root.join(rel)) else { return };
        for e in dir {
            let name = e.unwrap().file_name().into_string().unwrap();
            if name == ".keepsync-partial" {
                continue;
            }
            let rel = if rel.is_empty() { name } else { format!("{rel}/{name}") };
            let path = root.join(&rel);
            let meta = fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                out.insert(format!("{rel}/"));
                walk(root, &rel, out);
            } else if meta.is_symlink() {
                out.insert(format!("{rel}@{}", fs::read_link(&path).unwrap().display()));
            } else {
                out.insert(format!("{rel}={}", String::from_utf8_lossy(&fs::read(&path).unwrap())));
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(root, "", &mut out);
    out
}

/// Creates `spec`'s entries under `root`: `a/b/` a directory, `a/f` a file holding its name.
fn make(root: &Path, spec: &[&str]) {
    fs::create_dir_all(root).unwrap();
    for e in spec {
        let path = root.join(e.trim_end_matches('/'));
        if e.ends_with('/') {
            fs::create_dir_all(&path).unwrap();
        } else {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, e.as_bytes()).unwrap();
        }
    }
}

/// One scene: a served root and a client directory, and a server on it.
struct Scene {
    dir: tempfile::TempDir,
    server: Server,
    cases: usize,
}

/// Where one case's trees are: on disk, and as `keepsync sync` names them.
struct Case {
    way: Way,
    src: PathBuf,
    dst: PathBuf,
    src_arg: String,
    dst_arg: String,
}

impl Scene {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ks(d, &["keygen", "-o", "psk"]).ok();
        fs::create_dir_all(d.join("srv")).unwrap();
        let server = Server::start(d, "srv", "127.0.0.1:0", &[]);
        Self { dir, server, cases: 0 }
    }

    /// A fresh source and destination for a sync `way`: the source on the server for a pull,
    /// the destination on it for a push.
    fn case(&mut self, way: Way) -> Case {
        self.cases += 1;
        let (d, n) = (self.dir.path(), self.cases);
        let local = |side: &str| (d.join(format!("c{n}/{side}")), format!("c{n}/{side}"));
        let served =
            |side: &str| (d.join(format!("srv/c{n}/{side}")), self.server.url(&format!("c{n}/{side}")));
        let ((src, src_arg), (dst, dst_arg)) = match way {
            Way::Local => (local("src"), local("dst")),
            Way::Push => (local("src"), served("dst")),
            Way::Pull => (served("src"), local("dst")),
        };
        Case { way, src, dst, src_arg, dst_arg }
    }

    /// `keepsync sync` of `case` with `args` (and `--json`).
    fn run(&self, case: &Case, args: &[&str]) -> Run {
        let mut all = vec!["sync", case.src_arg.as_str(), case.dst_arg.as_str(), "--json"];
        if case.way != Way::Local {
            all.extend(["--psk-file", "psk"]);
        }
        all.extend_from_slice(args);
        let run = ks(self.dir.path(), &all);
        assert_eq!(run.code, 0, "{:?} {args:?}\n{}", case.way, run.stderr);
        run
    }

    /// Syncs `src` (each file holding its own name) each way with `args`, and checks the
    /// destination then holds exactly `want`.
    fn expect(&mut self, src: &[&str], args: &[&str], want: &[&str]) {
        let want: BTreeSet<String> = want.iter().map(|e| named(e)).collect();
        for way in WAYS {
            let case = self.case(way);
            make(&case.src, src);
            let run = self.run(&case, args);
            assert_eq!(entries(&case.dst), want, "{way:?} with {args:?}\n{}", run.stderr);
        }
    }
}

/// How [`entries`] shows an entry of `make`'s spec.
fn named(e: &str) -> String {
    if e.ends_with('/') { e.to_string() } else { format!("{e}={e}") }
}

const TREE: &[&str] = &[
    "keep.log",
    "a.log",
    "notes.txt",
    "build/out.o",
    "src/build",
    "src/main.rs",
    "docs/build/page.html",
    "deep/b",
    "deep/a/b",
    "deep/a/x/b",
    "deep/c/a/b",
];

/// [`TREE`]'s entries, directories included, but those `gone` names (and what is under a
/// directory it names with its `/`).
fn tree_but(gone: &[&str]) -> Vec<&'static str> {
    let all = [
        "keep.log",
        "a.log",
        "notes.txt",
        "build/",
        "build/out.o",
        "src/",
        "src/build",
        "src/main.rs",
        "docs/",
        "docs/build/",
        "docs/build/page.html",
        "deep/",
        "deep/b",
        "deep/a/",
        "deep/a/b",
        "deep/a/x/",
        "deep/a/x/b",
        "deep/c/",
        "deep/c/a/",
        "deep/c/a/b",
    ];
    all.into_iter()
        .filter(|e| !gone.iter().any(|g| e == g || (g.ends_with('/') && e.starts_with(g))))
        .collect()
}

#[test]
fn the_first_matching_rule_decides_in_command_line_order() {
    let mut s = Scene::new();
    s.expect(TREE, &["--include", "keep.log", "--exclude", "*.log"], &tree_but(&["a.log"]));
    s.expect(TREE, &["--exclude", "*.log", "--include", "keep.log"], &tree_but(&["a.log", "keep.log"]));
    // The rsync idiom for one kind of file: directories, then the files, then nothing else.
    let only_rs =
        tree_but(&["keep.log", "a.log", "notes.txt", "build/out.o", "src/build", "docs/build/page.html"]);
    let only_rs: Vec<&str> = only_rs.into_iter().filter(|e| e.ends_with('/') || e.ends_with(".rs")).collect();
    s.expect(TREE, &["--include", "*/", "--include", "*.rs", "--exclude", "*"], &only_rs);
}

#[test]
fn anchored_unanchored_directory_only_and_double_star_patterns() {
    let mut s = Scene::new();
    // Anchored at the root: only the top build directory.
    s.expect(TREE, &["--exclude", "/build"], &tree_but(&["build/"]));
    // Unanchored: a name at any depth, file or directory.
    s.expect(TREE, &["--exclude", "build"], &tree_but(&["build/", "src/build", "docs/build/"]));
    // Directories only: src/build, a file, stays.
    s.expect(TREE, &["--exclude", "build/"], &tree_but(&["build/", "docs/build/"]));
    // A `/` inside: the end of the path, from a component on.
    s.expect(TREE, &["--exclude", "a/b"], &tree_but(&["deep/a/b", "deep/c/a/b"]));
    // `**`: at least one directory between `deep` and `b`, and `deep` anywhere.
    s.expect(TREE, &["--exclude", "deep/**/b"], &tree_but(&["deep/a/b", "deep/a/x/b", "deep/c/a/b"]));
    // A `b` at any depth; everything under `deep/a`.
    s.expect(TREE, &["--exclude", "**/b"], &tree_but(&["deep/b", "deep/a/b", "deep/a/x/b", "deep/c/a/b"]));
    s.expect(TREE, &["--exclude", "/deep/a/**"], &tree_but(&["deep/a/b", "deep/a/x/"]));
}

#[test]
fn exclude_from_reads_one_pattern_a_line_in_its_place_among_the_rules() {
    let mut s = Scene::new();
    let list = "# what stays home\n\n*.log\n; rsync's other comment\n/build/\n";
    fs::write(s.dir.path().join("list"), list).unwrap();
    s.expect(TREE, &["--include", "keep.log", "--exclude-from", "list"], &tree_but(&["a.log", "build/"]));
    s.expect(
        TREE,
        &["--exclude-from", "list", "--include", "keep.log"],
        &tree_but(&["a.log", "keep.log", "build/"]),
    );
    // A missing file is named before anything happens.
    let run = ks(s.dir.path(), &["sync", "c1/src", "elsewhere", "--exclude-from", "missing"]);
    assert_eq!(run.code, 66, "{}", run.stderr);
    assert!(run.stderr.contains("--exclude-from missing"), "{}", run.stderr);
    assert!(!s.dir.path().join("elsewhere").exists());
}

#[test]
fn nested_keepsyncignore_files_apply_below_their_directory_and_bang_reincludes() {
    let mut s = Scene::new();
    let tree = [
        "a.tmp",
        "b.txt",
        "secret/s",
        "sub/secret/s",
        "sub/keep.tmp",
        "sub/x.tmp",
        "sub/deeper/keep.tmp",
        "sub/deeper/r.md",
        "sub/deeper/y.tmp",
        "other/r.md",
    ];
    let ignores = [
        (".keepsyncignore", "# top\n*.tmp\n/secret/\n"),
        ("sub/.keepsyncignore", "!keep.tmp\n"),
        ("sub/deeper/.keepsyncignore", "*.md\n"),
    ];
    let kept = ["b.txt", "sub/", "sub/secret/", "sub/secret/s", "sub/keep.tmp", "sub/deeper/"];
    for way in WAYS {
        for args in [&[][..], &["--include", "a.tmp"]] {
            let case = s.case(way);
            make(&case.src, &tree);
            for (path, text) in ignores {
                fs::write(case.src.join(path), text).unwrap();
            }
            let run = s.run(&case, args);
            let mut want: BTreeSet<String> = kept
                .iter()
                .chain(&["sub/deeper/keep.tmp", "other/", "other/r.md"])
                .map(|e| named(e))
                .collect();
            want.extend(ignores.iter().map(|(path, text)| format!("{path}={text}")));
            if !args.is_empty() {
                // A rule on the command line comes before every .keepsyncignore.
                want.insert(named("a.tmp"));
            }
            assert_eq!(entries(&case.dst), want, "{way:?} {args:?}");
            let excluded = &run.json()["excluded"];
            match way {
                // a.tmp, secret/, sub/x.tmp, sub/deeper/r.md, sub/deeper/y.tmp
                Way::Local | Way::Push => assert_eq!(excluded, 5 - args.len() as u64 / 2, "{way:?} {args:?}"),
                Way::Pull => assert!(excluded.is_null(), "the server filters a pull: {excluded}"),
            }
        }
    }
    // A pattern that does not compile stops the sync before anything is copied.
    let case = s.case(Way::Local);
    make(&case.src, &["a", "sub/b"]);
    fs::write(case.src.join("sub/.keepsyncignore"), "ok\n{unclosed\n").unwrap();
    let run = ks(s.dir.path(), &["sync", &case.src_arg, &case.dst_arg]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("sub/.keepsyncignore: line 2"), "{}", run.stderr);
    assert!(!case.dst.join("a").exists(), "nothing was copied");
}

#[test]
fn delete_keeps_what_is_excluded_at_the_receiver_and_delete_excluded_removes_it() {
    let mut s = Scene::new();
    let src = ["a.log", "b.txt", "keep/x"];
    // At the receiver: an extra file, an excluded extra, an excluded copy of a source file
    // (kept as it is, not overwritten), an excluded directory, what the receiver's (synced)
    // .keepsyncignore excludes, an extra directory, and one that holds an excluded file (it
    // stays with that file alone, as with rsync).
    let dst = ["old.txt", "x.log", "a.log", "cache/c", "t.tmp", "gone/g", "mixed/m.log", "mixed/m.txt"];
    let rules = ["--exclude", "*.log", "--exclude", "cache/"];
    for way in WAYS {
        let case = s.case(way);
        make(&case.src, &src);
        fs::write(case.src.join(".keepsyncignore"), "*.tmp\n").unwrap();
        make(&case.dst, &dst);
        fs::write(case.dst.join("a.log"), "the receiver's").unwrap();
        let run = s.run(&case, &[&rules[..], &["--delete"]].concat());
        let mut want: BTreeSet<String> =
            ["b.txt", "keep/", "keep/x", "x.log", "cache/", "cache/c", "t.tmp", "mixed/", "mixed/m.log"]
                .map(named)
                .into();
        want.extend([".keepsyncignore=*.tmp\n".to_string(), "a.log=the receiver's".into()]);
        assert_eq!(entries(&case.dst), want, "{way:?} --delete\n{}", run.stderr);
        assert_eq!(run.json()["deleted"], 3, "{way:?}: old.txt, gone/ and mixed/m.txt");

        // A dry run plans only what is not excluded.
        make(&case.dst, &["new.txt", "new.log"]);
        let run = s.run(&case, &[&rules[..], &["--delete", "--dry-run"]].concat());
        let planned = run.json()["planned"].clone();
        assert_eq!(planned, serde_json::json!([{ "action": "delete", "path": "new.txt" }]), "{way:?}");
        let excluded = &run.json()["excluded"];
        if way == Way::Pull {
            assert!(excluded.is_null(), "{excluded}");
        } else {
            assert_eq!(excluded, 1, "{way:?}: a.log");
        }

        // --delete-excluded: the receiver holds exactly what the filter lets through.
        let run = s.run(&case, &[&rules[..], &["--delete-excluded"]].concat());
        let want: BTreeSet<String> = ["b.txt", "keep/", "keep/x", ".keepsyncignore=*.tmp\n"]
            .map(|e| if e.contains('=') { e.to_string() } else { named(e) })
            .into();
        assert_eq!(entries(&case.dst), want, "{way:?} --delete-excluded\n{}", run.stderr);
        // x.log, a.log, cache/, t.tmp, mixed/, new.txt, new.log
        assert_eq!(run.json()["deleted"], 7, "{way:?}");
    }
}

// ---- the same rules as rsync -------------------------------------------------------------

/// xorshift64: one seed, one run.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }

    fn pick<'a>(&mut self, from: &[&'a str]) -> &'a str {
        from[self.below(from.len())]
    }
}

const NAMES: &[&str] = &["a", "b", "ab", "c", "x.log", "y.txt", "build", "deep", ".hidden"];

const PATTERNS: &[&str] = &[
    "*.log",
    "/a",
    "a",
    "a/",
    "b/",
    "/b/",
    "a/b",
    "a/**/b",
    "**/b",
    "a/**",
    "*",
    "*/",
    "x*",
    "?.txt",
    "[ab]",
    "[!a]*",
    "b/***",
    "**.log",
    "a*/",
    "/a/b/",
    "ab",
    "deep/**",
    "build",
    "/deep/*/c",
    "c/",
    "*.txt",
    "deep/",
    "/*/b",
    "**/a/*",
    ".*",
    "a/*/",
    "**",
    "[[:alpha:]]",
    "/**/b",
    "**b",
    "/a/**",
    "*/**/c",
];

/// The kind of each path of a tree (`true`: a directory).
type Kinds = std::collections::HashMap<String, bool>;

/// A random tree under `root`: up to four entries a directory, three levels deep, its files
/// modified at `mtime` (else now). `kinds` gets what each path is; a path whose kind `avoid`
/// says otherwise (or under a file of `avoid`) is not made, so two trees never disagree
/// about a kind.
fn random_tree(
    rng: &mut Rng,
    root: &Path,
    rel: &str,
    depth: usize,
    mtime: Option<std::time::SystemTime>,
    (avoid, kinds): (&Kinds, &mut Kinds),
) {
    let mut names: Vec<&str> = NAMES.to_vec();
    for _ in 0..1 + rng.below(4) {
        let name = names.remove(rng.below(names.len()));
        let path = if rel.is_empty() { name.to_string() } else { format!("{rel}/{name}") };
        let dir = depth < 3 && rng.below(2) == 0;
        if avoid.get(&path).is_some_and(|&d| d != dir) {
            continue;
        }
        kinds.insert(path.clone(), dir);
        if dir {
            fs::create_dir_all(root.join(&path)).unwrap();
            random_tree(rng, root, &path, depth + 1, mtime, (avoid, kinds));
        } else {
            fs::write(root.join(&path), format!("{path} {}", rng.below(1000))).unwrap();
            if let Some(t) = mtime {
                fs::File::options().write(true).open(root.join(&path)).unwrap().set_modified(t).unwrap();
            }
        }
    }
}

/// Copies the tree `from` to `to`, with the files' modification times.
fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let (src, dst) = (e.path(), to.join(e.file_name()));
        if e.file_type().unwrap().is_dir() {
            copy_tree(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
            let mtime = fs::metadata(&src).unwrap().modified().unwrap();
            fs::File::options().write(true).open(&dst).unwrap().set_modified(mtime).unwrap();
        }
    }
}

/// Runs rsync, failing the test clearly when it is missing.
fn rsync(args: &[String]) -> std::process::Output {
    let out = std::process::Command::new("rsync").args(args).output().unwrap_or_else(|e| {
        panic!("rsync cannot be run ({e}): this test compares keepsync's filters with rsync's; install it (apt-get install rsync)")
    });
    let stderr = String::from_utf8_lossy(&out.stderr);
    // rsync keeps a directory that holds a protected entry, and says so.
    let noise = stderr.lines().all(|l| l.starts_with("cannot delete non-empty directory"));
    assert!(out.status.success() && noise, "rsync {args:?}: {}\n{stderr}", out.status);
    out
}

#[test]
fn the_rules_select_and_protect_what_rsyncs_do_on_random_trees() {
    // KEEPSYNC_FILTER_SEEDS=N runs seeds 0..N; =A..B replays those.
    let seeds = std::env::var("KEEPSYNC_FILTER_SEEDS").unwrap_or_else(|_| "40".into());
    let (from, to) = match seeds.split_once("..") {
        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
        None => (0u64, seeds.parse().unwrap()),
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for seed in from..to {
        let mut rng = Rng::new(seed);
        let base = d.join(format!("s{seed}"));
        let mut src_kinds = Kinds::new();
        fs::create_dir_all(base.join("src")).unwrap();
        random_tree(&mut rng, &base.join("src"), "", 0, None, (&Kinds::new(), &mut src_kinds));
        // The old tree's files are older, so that both tools see them as changed.
        let long_ago = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
        fs::create_dir_all(base.join("old")).unwrap();
        random_tree(&mut rng, &base.join("old"), "", 0, Some(long_ago), (&src_kinds, &mut Kinds::new()));
        let mut rules = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let kind = if rng.below(3) == 0 { "--include" } else { "--exclude" };
            rules.extend([kind.to_string(), rng.pick(PATTERNS).to_string()]);
        }
        for mode in [None, Some("--delete"), Some("--delete-excluded")] {
            let tag = mode.unwrap_or("plain");
            let (r, k) = (base.join(format!("rsync{tag}")), base.join(format!("keepsync{tag}")));
            for to in [&r, &k] {
                // Both start from the same old tree.
                copy_tree(&base.join("old"), to);
            }
            let mut args: Vec<String> = vec!["-r".into()];
            args.extend(mode.map(String::from));
            args.extend(rules.iter().cloned());
            args.extend([format!("{}/", base.join("src").display()), format!("{}/", r.display())]);
            rsync(&args);
            let mut args: Vec<String> =
                vec!["sync".into(), base.join("src").display().to_string(), k.display().to_string()];
            args.extend(mode.map(String::from));
            args.extend(rules.iter().cloned());
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ks(d, &args).ok();
            assert_eq!(
                entries(&k),
                entries(&r),
                "seed {seed}, {tag}, rules {rules:?}\nsource: {:?}\nold destination: {:?}\n\
                 (KEEPSYNC_FILTER_SEEDS={seed}..{} replays it)",
                entries(&base.join("src")),
                entries(&base.join("old")),
                seed + 1,
            );
        }
    }
}
