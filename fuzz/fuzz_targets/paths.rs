//! The host's path handling: a peer names paths, and every filesystem operation the sync
//! engine makes with them must stay under its root. Each input is a list of operations on
//! arbitrary path strings (`..`, absolute paths, NUL, empty components, `.keepsync-partial`,
//! very long names) against a fresh tree whose root holds symlinks out of it: to a directory
//! and to a file beside the root. After every operation, what lies outside the root must be
//! exactly as it was, and nothing may panic. URL parsing (`ks://`) is fed the same strings.

#![no_main]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use keepsync::sync::tree::{Tree, check_rel};
use libfuzzer_sys::fuzz_target;

/// A scene: `root/` (with `inside/`, `up -> ../outside`, `file-up -> ../outside/file`) beside
/// `outside/` holding `file`.
struct Scene {
    base: PathBuf,
}

impl Scene {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let tmp = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { std::env::temp_dir() };
        let base = tmp.join(format!("keepsync-fuzz-paths-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("root/inside")).unwrap();
        std::fs::create_dir_all(base.join("outside")).unwrap();
        std::fs::write(base.join("outside/file"), b"outside").unwrap();
        std::os::unix::fs::symlink("../outside", base.join("root/up")).unwrap();
        std::os::unix::fs::symlink("../outside/file", base.join("root/file-up")).unwrap();
        Self { base }
    }

    /// Everything outside the root is as it was made.
    fn check_outside(&self) {
        let names: Vec<_> = std::fs::read_dir(self.base.join("outside"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["file"], "something was made outside the root");
        assert_eq!(std::fs::read(self.base.join("outside/file")).unwrap(), b"outside");
        let meta = std::fs::symlink_metadata(self.base.join("outside/file")).unwrap();
        assert!(meta.is_file());
        let mut top: Vec<_> = std::fs::read_dir(&self.base).unwrap().map(|e| e.unwrap().file_name()).collect();
        top.sort();
        assert_eq!(top, ["outside", "root"], "something was made beside the root");
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fuzz_target!(|data: &[u8]| {
    let scene = Scene::new();
    let tree = Tree::open(&scene.base.join("root")).unwrap();
    // Operations: one byte of kind, one byte of length, then that many bytes of path.
    let mut rest = data;
    while let [kind, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (raw, next) = tail.split_at(len);
        rest = next;
        let rel = String::from_utf8_lossy(raw);
        let checked = check_rel(&rel).is_ok();
        if checked {
            assert!(!rel.starts_with('/') && !rel.split('/').any(|c| c.is_empty() || c == "." || c == ".."));
        }
        let _ = keepsync::net::Remote::parse(&format!("ks://{rel}"));
        match kind % 7 {
            0 => drop(tree.make_dirs(&rel)),
            1 => drop(tree.lstat(&rel)),
            2 => drop(tree.open_read(&rel)),
            3 => drop(tree.remove_all(&rel)),
            4 => drop(tree.list(&rel)),
            5 => drop(tree.read_link(&rel)),
            _ => drop(tree.set_dir_meta(&rel, 0o700, (0, 0))),
        }
        scene.check_outside();
    }
});
