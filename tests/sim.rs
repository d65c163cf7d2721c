//! Seeded, deterministic simulation of network sync (TigerBeetle / FoundationDB style): two
//! source trees pushing into one server tree and two clients pulling from it, at once, over
//! in-memory connections ([`keepsync::sync::sim::Pair`]) that move random amounts of bytes,
//! get cut, and lose either end to a `kill -9` at any step, with a simulated clock that also
//! jumps; meanwhile the sources change under the senders (files grow, shrink, vanish, turn
//! into directories or into symlinks to a directory outside every tree).
//!
//! After every step it checks the rules of docs/PROTOCOL.md section 7:
//! - nothing outside the trees changes, and nothing lands in the served root outside the tree
//!   the clients name;
//! - every regular file any receiver holds is one complete version a sender had at that path;
//! - at most `MAX_PARTIALS` unfinished versions are kept;
//!
//! and every `SETTLE_EVERY` steps, once the faults stop, that a clean push and a clean pull
//! converge (the receiving tree equals the source exactly, with no problem reported) and
//! leave no partial behind.
//!
//! `KEEPSYNC_SIM_SEEDS=a..b` and `KEEPSYNC_SIM_STEPS=n` choose the work (the defaults are a
//! CI-sized budget); a failure names its seed and step, and the same seed replays the same
//! run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use keepsync::net::clock::{SharedClock, SimClock};
use keepsync::net::open::OpenRequest;
use keepsync::net::server::Served;
use keepsync::sync::dest::{Dest, DestOptions, DirMeta, MAX_PARTIALS, Store};
use keepsync::sync::filter::Filter;
use keepsync::sync::recv::RecvApp;
use keepsync::sync::send::effort::SyncCodec;
use keepsync::sync::send::{Job, SendApp};
use keepsync::sync::sim::{ClientApp, Pair, State};
use keepsync::sync::summary::Summary;
use keepsync::sync::tree::Tree;
use keepsync::sync::walk::{Entry, walk};
use keepsync_core::crypto::SecretKey;
use keepsync_core::sync::{Direction, Kind};

/// Steps per seed, and seeds, by default (about a few seconds on a 2-core machine).
const DEFAULT_STEPS: u64 = 400;
const DEFAULT_SEEDS: std::ops::Range<u64> = 1..13;

/// Steps between two convergence checks.
const SETTLE_EVERY: u64 = 150;

/// A connection is given up after this many failures in a row (as the client does).
const MAX_ATTEMPTS: u32 = 5;

/// The tree the clients name under the served root.
const TREE: &str = "t";

/// Deterministic randomness (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        // Compressible and not: runs of one byte, then noise.
        let mut out = Vec::with_capacity(len);
        while out.len() < len {
            let run = (self.below(4096) as usize + 1).min(len - out.len());
            if self.chance(500) {
                out.extend(std::iter::repeat_n(self.next() as u8, run));
            } else {
                out.extend((0..run).map(|_| self.next() as u8));
            }
        }
        out
    }
}

/// Names the sources draw from: few enough that paths collide, turn into each other's
/// parents, and get written by both sources.
const DIRS: [&str; 5] = ["", "a", "a/b", "c", "a/d"];
const FILES: [&str; 4] = ["f", "g", "h.txt", "b"];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RunKind {
    Push { src: usize },
    Pull { dst: usize },
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Data,
    LastPass,
}

struct SimConn {
    pair: Option<Pair>,
    failures: u32,
    delete: bool,
    session: [u8; 16],
    done: bool,
}

struct Run {
    kind: RunKind,
    delete: bool,
    checksum: bool,
    codec: SyncCodec,
    phase: Phase,
    job: Option<Arc<Job>>,
    store: Option<Arc<Store>>,
    conns: Vec<SimConn>,
    summary: Summary,
    dirs: Vec<DirMeta>,
    failed: bool,
}

struct World {
    seed: u64,
    step: u64,
    rng: Rng,
    clock: Arc<SimClock>,
    _dir: tempfile::TempDir,
    base: PathBuf,
    psk: SecretKey,
    served: Arc<Served>,
    /// Every content each path ever had in any source.
    versions: HashMap<String, HashSet<[u8; 32]>>,
    outside: BTreeMap<String, String>,
    runs: Vec<Run>,
    mtime: i64,
    stats: Stats,
}

/// What a simulation did, to show it did something.
#[derive(Default, Debug)]
struct Stats {
    runs_finished: u64,
    runs_failed: u64,
    files_placed: u64,
    files_resumed: u64,
    cuts: u64,
    server_kills: u64,
    client_kills: u64,
    problems: BTreeMap<String, u64>,
}

thread_local! {
    /// File hashes by path and (inode, size, mtime, ctime): the checks after every step read
    /// only what changed.
    static HASHES: std::cell::RefCell<HashMap<(PathBuf, [i64; 6]), blake3::Hash>> = Default::default();
}

fn hash_file(path: &Path, meta: &std::fs::Metadata) -> blake3::Hash {
    let key = (
        path.to_path_buf(),
        [
            meta.ino() as i64,
            meta.size() as i64,
            meta.mtime(),
            meta.mtime_nsec(),
            meta.ctime(),
            meta.ctime_nsec(),
        ],
    );
    if let Some(h) = HASHES.with(|c| c.borrow().get(&key).copied()) {
        return h;
    }
    let h = blake3::hash(&std::fs::read(path).unwrap_or_default());
    HASHES.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 100_000 {
            c.clear();
        }
        c.insert(key, h);
    });
    h
}

/// Every entry under `root` but our partial directory: kind, content or target, mode and
/// mtime (directories' too).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(root.join(rel)) else { return };
        for e in rd {
            let e = e.unwrap();
            if e.file_name() == ".keepsync-partial" {
                continue;
            }
            let rel = rel.join(e.file_name());
            let Ok(meta) = std::fs::symlink_metadata(root.join(&rel)) else { continue };
            let what = if meta.is_dir() {
                walk(root, &rel, out);
                format!("dir {:o} {}.{}", meta.mode() & 0o7777, meta.mtime(), meta.mtime_nsec())
            } else if meta.is_symlink() {
                format!("link {}", std::fs::read_link(root.join(&rel)).unwrap().display())
            } else {
                let hash = hash_file(&root.join(&rel), &meta);
                format!("file {:o} {}.{} {hash}", meta.mode() & 0o7777, meta.mtime(), meta.mtime_nsec())
            };
            out.insert(rel.display().to_string(), what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

impl World {
    fn new(seed: u64) -> Self {
        // tmpfs when there is one: the receivers flush their filesystem on every batch.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
        let base = dir.path().to_path_buf();
        for d in ["src0", "src1", "server", "pull0", "pull1", "outside/sub"] {
            std::fs::create_dir_all(base.join(d)).unwrap();
        }
        std::fs::write(base.join("outside/secret"), b"not to be touched").unwrap();
        std::fs::write(base.join("outside/sub/also"), b"nor this").unwrap();
        let clock = Arc::new(SimClock::default());
        clock.advance(Duration::from_secs(1));
        let psk = SecretKey::from_bytes([seed as u8; 32]);
        let served = Self::serve(&base, &psk, &clock);
        let outside = snapshot(&base.join("outside"));
        Self {
            seed,
            step: 0,
            rng: Rng(seed),
            clock,
            _dir: dir,
            base,
            psk,
            served,
            versions: HashMap::new(),
            outside,
            runs: Vec::new(),
            mtime: 1_600_000_000,
            stats: Stats::default(),
        }
    }

    fn serve(base: &Path, psk: &SecretKey, clock: &Arc<SimClock>) -> Arc<Served> {
        let store = Store::with_inline(Tree::open(&base.join("server")).unwrap(), true);
        let clock: SharedClock = Arc::clone(clock) as SharedClock;
        Served::over(store, psk.clone(), 64 << 10, clock)
    }

    fn shared_clock(&self) -> SharedClock {
        Arc::clone(&self.clock) as SharedClock
    }

    fn ctx(&self) -> String {
        format!(
            "seed {} step {} (rerun: KEEPSYNC_SIM_SEEDS={}..{})",
            self.seed,
            self.step,
            self.seed,
            self.seed + 1
        )
    }

    // ---- the sources change ---------------------------------------------------------

    fn random_path(&mut self) -> String {
        let dir = *self.rng.pick(&DIRS);
        let file = *self.rng.pick(&FILES);
        if dir.is_empty() { file.to_owned() } else { format!("{dir}/{file}") }
    }

    /// Makes every ancestor of `rel` in `src` a real directory (whatever stood there goes).
    fn make_parents(src: &Path, rel: &str) {
        let mut at = src.to_path_buf();
        for part in Path::new(rel).parent().into_iter().flat_map(|p| p.components()) {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    std::fs::remove_file(&at).unwrap();
                    std::fs::create_dir(&at).unwrap();
                }
                Err(_) => std::fs::create_dir(&at).unwrap(),
            }
        }
    }

    fn remove(path: &Path) {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => std::fs::remove_dir_all(path).unwrap(),
            Ok(_) => std::fs::remove_file(path).unwrap(),
            Err(_) => {}
        }
    }

    fn mutate(&mut self) {
        let src = self.base.join(format!("src{}", self.rng.below(2)));
        let rel = self.random_path();
        let at = src.join(&rel);
        match self.rng.below(100) {
            // Write a file: small mostly, sometimes a few MiB (split into 1 MiB parts).
            0..=54 => {
                Self::make_parents(&src, &rel);
                if std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) {
                    std::fs::remove_dir_all(&at).unwrap();
                }
                if std::fs::symlink_metadata(&at).is_ok_and(|m| m.is_symlink()) {
                    std::fs::remove_file(&at).unwrap();
                }
                let len = if self.rng.chance(80) {
                    (1 << 20) + self.rng.below(5 << 19) as usize
                } else {
                    self.rng.below(20_000) as usize
                };
                let bytes = self.rng.bytes(len);
                // Grow or shrink in place sometimes (the inode stays), or write anew.
                if self.rng.chance(300) && at.is_file() {
                    let f = std::fs::OpenOptions::new().write(true).open(&at).unwrap();
                    f.set_len(bytes.len() as u64).unwrap();
                    std::os::unix::fs::FileExt::write_all_at(&f, &bytes, 0).unwrap();
                } else {
                    let _ = std::fs::remove_file(&at);
                    std::fs::write(&at, &bytes).unwrap();
                }
                // Each write its own mtime: same size and mtime would mean "unchanged".
                self.mtime += 1;
                let t = std::time::UNIX_EPOCH + Duration::from_secs(self.mtime as u64);
                std::fs::File::options().write(true).open(&at).unwrap().set_modified(t).unwrap();
                if self.rng.chance(100) {
                    std::fs::set_permissions(&at, std::fs::Permissions::from_mode(0o600)).unwrap();
                }
                self.versions.entry(rel).or_default().insert(*blake3::hash(&bytes).as_bytes());
            }
            // Remove a file or a whole subtree.
            55..=69 => Self::remove(&at),
            // A symlink: to a sibling, or to the directory outside every tree.
            70..=79 => {
                Self::make_parents(&src, &rel);
                Self::remove(&at);
                let target = if self.rng.chance(500) {
                    self.base.join("outside").display().to_string()
                } else {
                    "f".to_owned()
                };
                std::os::unix::fs::symlink(target, &at).unwrap();
            }
            // A directory turned into a symlink to outside (what a hostile pusher does), or
            // made empty.
            80..=89 => {
                let dir = *self.rng.pick(&DIRS[1..]);
                let d = src.join(dir);
                Self::make_parents(&src, &format!("{dir}/x"));
                Self::remove(&d);
                if self.rng.chance(600) {
                    std::os::unix::fs::symlink(self.base.join("outside"), &d).unwrap();
                } else {
                    std::fs::create_dir(&d).unwrap();
                }
            }
            // Rename one entry over another.
            _ => {
                let to = self.random_path();
                if at.exists()
                    && to != rel
                    && !to.starts_with(&format!("{rel}/"))
                    && !rel.starts_with(&format!("{to}/"))
                {
                    Self::make_parents(&src, &to);
                    Self::remove(&src.join(&to));
                    if std::fs::rename(&at, src.join(&to)).is_ok() {
                        // The moved file's content is now a version at its new path too.
                        self.record_tree(&src);
                    }
                }
            }
        }
    }

    /// Records every file under `src` as a version of its path (after a rename).
    fn record_tree(&mut self, src: &Path) {
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(src.join(&rel)) else { continue };
            for e in rd {
                let e = e.unwrap();
                let r = rel.join(e.file_name());
                let m = std::fs::symlink_metadata(src.join(&r)).unwrap();
                if m.is_dir() {
                    stack.push(r);
                } else if m.is_file() {
                    let hash = *blake3::hash(&std::fs::read(src.join(&r)).unwrap()).as_bytes();
                    self.versions.entry(r.display().to_string()).or_default().insert(hash);
                }
            }
        }
    }

    // ---- runs ------------------------------------------------------------------------

    fn start_run(&mut self) {
        let kind = if self.rng.chance(550) {
            RunKind::Push { src: self.rng.below(2) as usize }
        } else {
            RunKind::Pull { dst: self.rng.below(2) as usize }
        };
        let (delete, checksum, n) =
            (self.rng.chance(400), self.rng.chance(150), 1 + self.rng.below(3) as usize);
        let run = self.new_run(kind, delete, checksum, n);
        self.runs.push(run);
    }

    fn new_run(&mut self, kind: RunKind, delete: bool, checksum: bool, connections: usize) -> Run {
        let codec = *self.rng.pick(&[SyncCodec::None, SyncCodec::Lz4, SyncCodec::Zstd]);
        let mut run = Run {
            kind,
            delete,
            checksum,
            codec,
            phase: Phase::Data,
            job: None,
            store: None,
            conns: Vec::new(),
            summary: Summary::default(),
            dirs: Vec::new(),
            failed: false,
        };
        match kind {
            RunKind::Push { src } => {
                let tree = Arc::new(Tree::open(&self.base.join(format!("src{src}"))).unwrap());
                let mut problems = Vec::new();
                let entries = walk(&tree, &Filter::default(), &mut problems).unwrap().entries;
                problems.into_iter().for_each(|p| run.summary.problem(p));
                let split = (connections > 1).then_some(20);
                run.job = Some(
                    Job::new(tree, entries, split, None, ProgressBar::hidden(), self.shared_clock()).inline(),
                );
                let delete_inline = delete && connections == 1;
                for _ in 0..connections {
                    run.conns.push(SimConn {
                        pair: None,
                        failures: 0,
                        delete: delete_inline,
                        session: [0; 16],
                        done: false,
                    });
                }
            }
            RunKind::Pull { dst } => {
                let tree = Tree::open(&self.base.join(format!("pull{dst}"))).unwrap();
                let store = Store::with_inline(tree, true);
                store.expire();
                run.store = Some(store);
                let session = if connections > 1 { [self.rng.next() as u8 | 1; 16] } else { [0; 16] };
                for _ in 0..connections {
                    run.conns.push(SimConn {
                        pair: None,
                        failures: 0,
                        delete: delete && connections == 1,
                        session,
                        done: false,
                    });
                }
            }
        }
        run
    }

    /// Opens (or reopens) connection `c` of run `r`.
    fn connect(&mut self, r: usize, c: usize) {
        let clock = self.shared_clock();
        let run = &self.runs[r];
        let conn = &run.conns[c];
        let several = run.conns.len() > 1 && run.phase == Phase::Data;
        let (direction, app) = match run.kind {
            RunKind::Push { .. } => {
                let app = SendApp::new(Arc::clone(run.job.as_ref().unwrap()), run.codec, false);
                (Direction::Push, ClientApp::Push(Box::new(app)))
            }
            RunKind::Pull { .. } => {
                let opts = DestOptions {
                    delete: conn.delete,
                    replace: run.delete,
                    dry_run: false,
                    checkpoint_every: 64 << 10,
                    append_only: false,
                };
                let dest = Dest::new(Arc::clone(run.store.as_ref().unwrap()), "", opts);
                let mut app = RecvApp::new(dest, run.checksum, Arc::clone(&clock));
                if several {
                    app = app.defer_dirs();
                }
                (Direction::Pull, ClientApp::Pull(Box::new(app)))
            }
        };
        let request = OpenRequest {
            path: TREE.into(),
            direction,
            delete: conn.delete,
            replace: run.delete,
            checksum: run.checksum,
            dry_run: false,
            max_files: 1024,
            session: conn.session,
            part_size: if conn.session == [0; 16] { 0 } else { 1 << 20 },
            delete_excluded: false,
            filters: Vec::new(),
        };
        let pair = Pair::open(&self.served, request, app, self.psk.clone(), clock).unwrap();
        self.runs[r].conns[c].pair = Some(pair);
    }

    fn absorb(run: &mut Run, app: Option<ClientApp>) {
        match app {
            Some(ClientApp::Push(mut a)) => run.summary.absorb(std::mem::take(&mut a.summary)),
            Some(ClientApp::Pull(mut a)) => {
                run.summary.absorb(std::mem::take(&mut a.summary));
                run.dirs.extend(a.take_dirs());
            }
            None => {}
        }
    }

    /// Steps every connection of every run once; `budget` bounds the bytes each moves.
    fn advance(&mut self, budget: impl Fn(&mut Rng) -> usize) {
        for r in 0..self.runs.len() {
            for c in 0..self.runs[r].conns.len() {
                if self.runs[r].conns[c].done || self.runs[r].failed {
                    continue;
                }
                if self.runs[r].conns[c].pair.is_none() {
                    self.connect(r, c);
                }
                let b = budget(&mut self.rng);
                let pair = self.runs[r].conns[c].pair.as_mut().unwrap();
                match pair.step(b) {
                    Ok(State::Running) => {}
                    Ok(State::Done) => {
                        let pair = self.runs[r].conns[c].pair.take().unwrap();
                        Self::absorb(&mut self.runs[r], pair.finish());
                        self.runs[r].conns[c].done = true;
                    }
                    Err(_) => self.fail_conn(r, c),
                }
            }
            self.next_phase(r);
        }
        for run in self.runs.iter().filter(|run| !run.failed && run.conns.iter().all(|c| c.done)) {
            self.stats.runs_finished += 1;
            self.stats.files_placed += run.summary.files_transferred;
            self.stats.files_resumed += run.summary.files_resumed;
            for p in &run.summary.problems {
                let kind = p.split(": ").skip(1).collect::<Vec<_>>().join(": ");
                let kind: String = kind.chars().take(48).collect();
                *self.stats.problems.entry(kind).or_default() += 1;
            }
        }
        self.runs.retain(|run| !run.failed && !run.conns.iter().all(|c| c.done));
    }

    fn fail_conn(&mut self, r: usize, c: usize) {
        self.stats.cuts += 1;
        let pair = self.runs[r].conns[c].pair.take().unwrap();
        Self::absorb(&mut self.runs[r], pair.cut());
        self.runs[r].conns[c].failures += 1;
        if self.runs[r].conns[c].failures >= MAX_ATTEMPTS {
            self.runs[r].failed = true;
            self.kill_run(r);
        }
    }

    /// After the data pass of several connections: the last, metadata-only pass (as the
    /// client runs it).
    fn next_phase(&mut self, r: usize) {
        let run = &self.runs[r];
        if run.failed || run.phase != Phase::Data || run.conns.len() < 2 || !run.conns.iter().all(|c| c.done)
        {
            return;
        }
        let clock = self.shared_clock();
        let run = &mut self.runs[r];
        run.phase = Phase::LastPass;
        match run.kind {
            RunKind::Push { src } => {
                let tree = Arc::new(Tree::open(&self.base.join(format!("src{src}"))).unwrap());
                let mut problems = Vec::new();
                let mut entries = walk(&tree, &Filter::default(), &mut problems).unwrap().entries;
                if !run.delete {
                    entries.retain(|e: &Entry| e.kind == Kind::Dir);
                }
                run.job = Some(Job::new(tree, entries, None, None, ProgressBar::hidden(), clock).inline());
            }
            RunKind::Pull { .. } => {
                let dest = Dest::new(Arc::clone(run.store.as_ref().unwrap()), "", DestOptions::default());
                dest.finish_dirs(std::mem::take(&mut run.dirs));
                if !run.delete {
                    run.conns.clear();
                    return;
                }
            }
        }
        run.conns =
            vec![SimConn { pair: None, failures: 0, delete: run.delete, session: [0; 16], done: false }];
    }

    fn kill_run(&mut self, r: usize) {
        self.stats.client_kills += 1;
        if !self.runs[r].failed {
            self.stats.runs_failed += 1;
        }
        for conn in &mut self.runs[r].conns {
            if let Some(pair) = conn.pair.take() {
                pair.kill_client();
            }
            conn.done = true;
        }
        self.runs[r].failed = true;
    }

    fn kill_server(&mut self) {
        self.stats.server_kills += 1;
        for r in 0..self.runs.len() {
            for c in 0..self.runs[r].conns.len() {
                if let Some(pair) = self.runs[r].conns[c].pair.take() {
                    Self::absorb(&mut self.runs[r], pair.kill_server());
                    self.runs[r].conns[c].failures += 1;
                }
            }
        }
        self.served = Self::serve(&self.base, &self.psk, &self.clock);
    }

    // ---- the rules ---------------------------------------------------------------------

    fn check(&self) {
        let ctx = self.ctx();
        if let Ok(watch) = std::env::var("KEEPSYNC_SIM_WATCH") {
            for t in ["server/t", "pull0", "pull1", "src0", "src1"] {
                let p = self.base.join(t).join(&watch);
                let bytes = std::fs::read(&p).unwrap_or_default();
                let chunks: Vec<String> =
                    bytes.chunks(1 << 20).map(|c| blake3::hash(c).to_string()[..8].to_owned()).collect();
                let m = std::fs::symlink_metadata(&p).map(|m| (m.ino(), m.mtime())).ok();
                eprintln!("  watch {t}/{watch}: {} {chunks:?} {m:?}", bytes.len());
            }
        }
        assert_eq!(
            snapshot(&self.base.join("outside")),
            self.outside,
            "{ctx}: something changed outside the trees"
        );
        // The served root holds the named tree and our partial directory, nothing else.
        for e in std::fs::read_dir(self.base.join("server")).unwrap() {
            let name = e.unwrap().file_name();
            assert!(
                name == TREE || name == ".keepsync-partial",
                "{ctx}: {name:?} appeared in the served root"
            );
        }
        for tree in ["server/t", "pull0", "pull1"] {
            for (rel, what) in snapshot(&self.base.join(tree)) {
                let Some(hash) = what.strip_prefix("file ").and_then(|w| w.split(' ').nth(2)) else {
                    continue;
                };
                let known = self
                    .versions
                    .get(&rel)
                    .is_some_and(|v| v.iter().any(|h| blake3::Hash::from(*h).to_string() == hash));
                if !known {
                    for t in [tree, "server/t", "src0", "src1"] {
                        let p = self.base.join(t).join(&rel);
                        let bytes = std::fs::read(&p).unwrap_or_default();
                        let chunks: Vec<String> = bytes
                            .chunks(1 << 20)
                            .map(|c| blake3::hash(c).to_string()[..8].to_owned())
                            .collect();
                        eprintln!(
                            "{t}/{rel}: {} bytes {chunks:?} {:?}",
                            bytes.len(),
                            std::fs::metadata(&p).map(|m| m.mtime())
                        );
                    }
                }
                assert!(known, "{ctx}: {tree}/{rel} holds content no sender ever had there");
            }
            let partials = self.base.join(tree.split('/').next().unwrap()).join(".keepsync-partial");
            let kept: HashSet<String> = std::fs::read_dir(&partials)
                .map(|rd| {
                    rd.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy()[..32.min(e.file_name().len())].to_owned())
                        .collect()
                })
                .unwrap_or_default();
            assert!(
                kept.len() <= MAX_PARTIALS + 4,
                "{ctx}: {} unfinished versions kept in {tree}",
                kept.len()
            );
        }
    }

    // ---- one step ----------------------------------------------------------------------

    fn trace(&self, what: impl FnOnce() -> String) {
        if std::env::var_os("KEEPSYNC_SIM_TRACE").is_some() {
            eprintln!("[{} {}] {}", self.seed, self.step, what());
        }
    }

    fn step(&mut self) {
        self.step += 1;
        let roll = self.rng.below(1000);
        self.trace(|| {
            format!(
                "roll {roll}, runs {:?}",
                self.runs.iter().map(|r| (r.kind, r.phase, r.conns.len(), r.delete)).collect::<Vec<_>>()
            )
        });
        match roll {
            0..=199 => self.mutate(),
            200..=269 if self.runs.len() < 4 => self.start_run(),
            270..=289 if !self.runs.is_empty() => {
                // Cut a connection.
                let r = self.rng.below(self.runs.len() as u64) as usize;
                let c = self.rng.below(self.runs[r].conns.len() as u64) as usize;
                if self.runs[r].conns[c].pair.is_some() {
                    self.fail_conn(r, c);
                }
            }
            290..=294 if !self.runs.is_empty() => {
                let r = self.rng.below(self.runs.len() as u64) as usize;
                self.kill_run(r);
                self.runs.remove(r);
            }
            295..=299 => self.kill_server(),
            300..=309 => self.clock.advance(Duration::from_secs(10 + self.rng.below(80))),
            _ => {
                self.clock.advance(Duration::from_millis(self.rng.below(300)));
                self.advance(|rng| match rng.below(10) {
                    0 => 0,
                    1..=6 => rng.below(64 << 10) as usize,
                    _ => 4 << 20,
                });
            }
        }
        self.check();
    }

    /// Runs `run` to the end with no faults; returns what it did.
    fn run_clean(&mut self, kind: RunKind, delete: bool, connections: usize) -> Summary {
        let checksum = self.rng.chance(200);
        let run = self.new_run(kind, delete, checksum, connections);
        self.runs.push(run);
        let r = self.runs.len() - 1;
        for _ in 0..100_000 {
            self.clock.advance(Duration::from_millis(5));
            // No byte limit and no faults; keep the run's summary once it ends.
            for c in 0..self.runs[r].conns.len() {
                if self.runs[r].conns[c].done {
                    continue;
                }
                if self.runs[r].conns[c].pair.is_none() {
                    self.connect(r, c);
                }
                let ctx = self.ctx();
                let pair = self.runs[r].conns[c].pair.as_mut().unwrap();
                match pair.step(16 << 20) {
                    Ok(State::Running) => {}
                    Ok(State::Done) => {
                        let pair = self.runs[r].conns[c].pair.take().unwrap();
                        Self::absorb(&mut self.runs[r], pair.finish());
                        self.runs[r].conns[c].done = true;
                    }
                    Err(e) => panic!("{ctx}: a clean {kind:?} failed: {e}"),
                }
            }
            self.next_phase(r);
            if self.runs[r].conns.iter().all(|c| c.done) {
                self.check();
                return self.runs.remove(r).summary;
            }
        }
        panic!("{}: a clean {kind:?} did not finish", self.ctx());
    }

    /// Faults stop; what runs is killed; old partials age past their expiry. Then a clean
    /// push must make the server's tree equal the source, a second one find nothing to do and
    /// leave no partial, and a clean pull make the client's tree equal the server's.
    fn settle(&mut self) {
        for r in 0..self.runs.len() {
            self.kill_run(r);
        }
        self.runs.clear();
        let week_ago = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
        for tree in ["server", "pull0", "pull1"] {
            if let Ok(rd) = std::fs::read_dir(self.base.join(tree).join(".keepsync-partial")) {
                for e in rd.filter_map(|e| e.ok()) {
                    if let Ok(f) = std::fs::File::options().write(true).open(e.path()) {
                        let _ = f.set_modified(week_ago);
                    }
                }
            }
        }
        let src = self.rng.below(2) as usize;
        let connections = 1 + self.rng.below(3) as usize;
        let ctx = self.ctx();
        let push = self.run_clean(RunKind::Push { src }, true, connections);
        assert!(push.problems.is_empty(), "{ctx}: a clean push reported {:?}", push.problems);
        let source = snapshot(&self.base.join(format!("src{src}")));
        assert_eq!(snapshot(&self.base.join("server/t")), source, "{ctx}: a clean push did not converge");
        let again = self.run_clean(RunKind::Push { src }, true, 1);
        assert!(again.problems.is_empty(), "{ctx}: {:?}", again.problems);
        assert_eq!(again.files_transferred, 0, "{ctx}: a second clean push moved files");
        assert!(
            !self.base.join("server/.keepsync-partial").exists(),
            "{ctx}: a clean push left partials behind"
        );
        let dst = self.rng.below(2) as usize;
        let n = 1 + self.rng.below(3) as usize;
        let pull = self.run_clean(RunKind::Pull { dst }, true, n);
        assert!(pull.problems.is_empty(), "{ctx}: a clean pull reported {:?}", pull.problems);
        assert_eq!(
            snapshot(&self.base.join(format!("pull{dst}"))),
            source,
            "{ctx}: a clean pull did not converge"
        );
        assert!(
            !self.base.join(format!("pull{dst}/.keepsync-partial")).exists(),
            "{ctx}: a clean pull left partials"
        );
    }
}

fn env_range(name: &str, default: std::ops::Range<u64>) -> std::ops::Range<u64> {
    match std::env::var(name) {
        Ok(v) => {
            let (a, b) = v.split_once("..").unwrap_or((&v, ""));
            let a: u64 = a.parse().expect("a seed");
            a..b.parse().unwrap_or(a + 1)
        }
        Err(_) => default,
    }
}

#[test]
fn network_sync_keeps_its_rules_under_faults_concurrency_and_a_changing_tree() {
    let steps: u64 =
        std::env::var("KEEPSYNC_SIM_STEPS").ok().and_then(|s| s.parse().ok()).unwrap_or(DEFAULT_STEPS);
    let seeds = env_range("KEEPSYNC_SIM_SEEDS", DEFAULT_SEEDS);
    let mut total = 0;
    for seed in seeds {
        let mut world = World::new(seed);
        while world.step < steps {
            world.step();
            total += 1;
            if world.step.is_multiple_of(SETTLE_EVERY) {
                world.settle();
            }
        }
        world.settle();
        if std::env::var_os("KEEPSYNC_SIM_VERBOSE").is_some() {
            eprintln!("seed {seed}: {:#?}", world.stats);
        }
    }
    eprintln!("simulated {total} steps");
}

// ---- sources that change under the sender ----------------------------------------------

/// Pushes `src` into `server/t` over one in-memory connection from a listing made first,
/// calling `between` before every step (the source changing beside the sync).
fn push_listed(base: &Path, between: &mut dyn FnMut(u64)) -> Summary {
    let clock = Arc::new(SimClock::default());
    let shared: SharedClock = Arc::clone(&clock) as SharedClock;
    let psk = SecretKey::from_bytes([3; 32]);
    let store = Store::with_inline(Tree::open(&base.join("server")).unwrap(), true);
    let served = Served::over(store, psk.clone(), 64 << 10, Arc::clone(&shared));
    let tree = Arc::new(Tree::open(&base.join("src")).unwrap());
    let mut problems = Vec::new();
    let entries = walk(&tree, &Filter::default(), &mut problems).unwrap().entries;
    between(0);
    let job = Job::new(tree, entries, None, None, ProgressBar::hidden(), Arc::clone(&shared)).inline();
    let app = ClientApp::Push(Box::new(SendApp::new(job, SyncCodec::Zstd, false)));
    let request = OpenRequest {
        path: TREE.into(),
        direction: Direction::Push,
        delete: false,
        replace: false,
        checksum: false,
        dry_run: false,
        max_files: 1024,
        session: [0; 16],
        part_size: 0,
        delete_excluded: false,
        filters: Vec::new(),
    };
    let mut pair = Pair::open(&served, request, app, psk, shared).unwrap();
    for step in 1..100_000 {
        clock.advance(Duration::from_millis(1));
        if pair.step(64 << 10).unwrap() == State::Done {
            let Some(ClientApp::Push(app)) = pair.finish() else { panic!("a push") };
            return app.summary;
        }
        between(step);
    }
    panic!("the push did not finish");
}

fn scene() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    std::fs::create_dir_all(base.join("src/sub")).unwrap();
    std::fs::create_dir_all(base.join("server")).unwrap();
    for i in 0..21 {
        std::fs::write(base.join(format!("src/sub/f{i:02}")), vec![i as u8; 1000 + i * 100]).unwrap();
    }
    (dir, base)
}

#[test]
fn a_push_skips_a_source_file_that_vanished_and_resends_one_that_changed_once() {
    let (_dir, base) = scene();
    let summary = push_listed(&base, &mut |step| {
        if step == 0 {
            std::fs::remove_file(base.join("src/sub/f03")).unwrap();
            std::fs::write(base.join("src/sub/f07"), b"rewritten after it was listed").unwrap();
        }
    });
    assert_eq!(summary.vanished, 1, "{:?}", summary.problems);
    assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
    assert!(summary.problems[0].starts_with("sub/f03: vanished"), "{:?}", summary.problems);
    assert_eq!(summary.exit_code(), keepsync::error::exit::VANISHED);
    // (The directory's mtime moved when its files changed after the listing: files only.)
    let files = |p: &Path| snapshot(p).into_iter().filter(|(_, w)| w.starts_with("file")).collect::<Vec<_>>();
    assert_eq!(files(&base.join("src")), files(&base.join("server/t")), "the rest of the tree completes");
}

#[test]
fn a_push_reports_a_source_file_that_keeps_changing_after_one_retry() {
    let (_dir, base) = scene();
    let big = base.join("src/sub/big");
    std::fs::write(&big, vec![7u8; 3 << 20]).unwrap();
    let mut n = 0u8;
    let summary = push_listed(&base, &mut |_| {
        // Rewritten in place all the time: each read of it sees another version.
        n = n.wrapping_add(1);
        let f = std::fs::OpenOptions::new().write(true).open(&big).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&f, &[n], 5).unwrap();
    });
    assert_eq!(summary.problems.len(), 1, "{:?}", summary.problems);
    assert!(summary.problems[0].starts_with("sub/big: kept changing"), "{:?}", summary.problems);
    assert_eq!(summary.exit_code(), keepsync::error::exit::PARTIAL);
    assert!(!base.join("server/t/sub/big").exists(), "no version of it was placed");
    assert_eq!(summary.files_transferred, 21, "the rest of the tree completes");
}
