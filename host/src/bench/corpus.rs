//! Benchmark corpora: seeded trees of files, generated once into a cache and reused.
//!
//! A size class is `files` files of `file_size` bytes. The corpus is a sequence of *pieces*
//! (one per file, or one per MiB inside a single big file), and piece `i` is
//! [`Kind::ALL`]`[i % 5]` generated from a seed derived from (seed, class, i): the bytes depend
//! on nothing else, so every machine benchmarks the same data.
//!
//! On disk (under the cache directory):
//! - `tree/`: the files, 100 per subdirectory, for `sync`;
//! - `bundle.bin`: the same bytes as one file, for `pack` and `unpack` (a single-file class
//!   uses its file directly). Streaming throughput and per-file overhead are different
//!   questions, so `pack` answers the first and `sync` over `small` the second.
//!
//! Generation writes into `NAME.tmp/` and renames it to `NAME/` when complete, so a cache
//! directory that exists is whole; the timing loop never creates or deletes corpus files.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::sample::{Kind, derive_seed, generate};

/// Bump when the generators or the layout change: caches and history rows keyed by the old
/// version were measured on other bytes.
pub const CORPUS_VERSION: u32 = 1;

/// Bytes per piece inside a single-file class.
const PIECE: u64 = 1 << 20;

/// Files per subdirectory of a tree.
const FILES_PER_DIR: u64 = 100;

/// A size class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SizeClass {
    /// Many 4 KiB files: per-file overhead dominates.
    Small,
    /// 1 MiB files.
    Medium,
    /// One 256 MiB file.
    Large,
    /// One 2 GiB file (opt-in: slow to generate and to run).
    VeryLarge,
}

impl SizeClass {
    /// Every class, smallest first.
    pub const ALL: [SizeClass; 4] =
        [SizeClass::Small, SizeClass::Medium, SizeClass::Large, SizeClass::VeryLarge];

    /// The name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            SizeClass::Small => "small",
            SizeClass::Medium => "medium",
            SizeClass::Large => "large",
            SizeClass::VeryLarge => "very-large",
        }
    }

    /// Parses a name as [`SizeClass::name`] prints it.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Bytes per file.
    pub fn file_size(self) -> u64 {
        match self {
            SizeClass::Small => 4 << 10,
            SizeClass::Medium => 1 << 20,
            SizeClass::Large => 256 << 20,
            SizeClass::VeryLarge => 2 << 30,
        }
    }

    /// Files in the class unless overridden (`--files`, for quick tests). 1,000 small files
    /// make per-file costs dominate (keepsync fsyncs each one) while the default run of
    /// small + medium with every peer stays around ten seconds on a slow disk.
    pub fn default_files(self) -> u64 {
        match self {
            SizeClass::Small => 1000,
            SizeClass::Medium => 32,
            SizeClass::Large | SizeClass::VeryLarge => 1,
        }
    }

    fn id(self) -> u64 {
        match self {
            SizeClass::Small => 1,
            SizeClass::Medium => 2,
            SizeClass::Large => 3,
            SizeClass::VeryLarge => 4,
        }
    }
}

/// A corpus ready on disk.
#[derive(Debug, Clone, Serialize)]
pub struct Corpus {
    /// The size class name, or `input` for `--input`.
    pub class: String,
    /// Directory tree for `sync`, if the corpus has one.
    pub tree: Option<PathBuf>,
    /// Single file for `pack` and `unpack`, if the corpus has one.
    pub bundle: Option<PathBuf>,
    /// Files in the tree (1 for a single file).
    pub files: u64,
    /// Total bytes.
    pub bytes: u64,
}

/// The layout of a generated corpus.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// The class.
    pub class: SizeClass,
    /// Files in the tree.
    pub files: u64,
    /// The seed.
    pub seed: u64,
}

impl Layout {
    /// The class's default layout, with `files` overriding the count of multi-file classes.
    pub fn new(class: SizeClass, seed: u64, files: Option<u64>) -> Self {
        let files = match class.default_files() {
            1 => 1,
            n => files.unwrap_or(n).max(1),
        };
        Self { class, files, seed }
    }

    /// The cache directory's name: everything the bytes depend on.
    pub fn key(&self) -> String {
        format!(
            "v{CORPUS_VERSION}-seed{}-{}-{}x{}",
            self.seed,
            self.class.name(),
            self.files,
            self.class.file_size()
        )
    }

    fn piece(&self, index: u64, len: u64) -> Vec<u8> {
        let kind = Kind::ALL[(index % Kind::ALL.len() as u64) as usize];
        generate(kind, len as usize, derive_seed(self.seed, &[self.class.id(), index]))
    }

    /// The tree-relative path of file `index`.
    fn file_path(&self, index: u64) -> PathBuf {
        let kind = Kind::ALL[(index % Kind::ALL.len() as u64) as usize];
        PathBuf::from(format!("d{:03}", index / FILES_PER_DIR))
            .join(format!("f{index:05}-{}.bin", kind.name()))
    }

    /// Writes file `index` to `out`: one piece, or a single file's consecutive 1 MiB pieces.
    fn write_file(&self, index: u64, out: &mut dyn Write) -> std::io::Result<()> {
        if self.files > 1 {
            return out.write_all(&self.piece(index, self.class.file_size()));
        }
        let size = self.class.file_size();
        for (n, at) in (0..size).step_by(PIECE as usize).enumerate() {
            out.write_all(&self.piece(n as u64, PIECE.min(size - at)))?;
        }
        Ok(())
    }

    /// Generates the corpus under `cache` unless it is already there.
    pub fn ensure(&self, cache: &Path) -> Result<Corpus> {
        let dir = cache.join(self.key());
        let corpus = Corpus {
            class: self.class.name().into(),
            tree: Some(dir.join("tree")),
            bundle: Some(if self.files > 1 {
                dir.join("bundle.bin")
            } else {
                dir.join("tree").join(self.file_path(0))
            }),
            files: self.files,
            bytes: self.files * self.class.file_size(),
        };
        if dir.is_dir() {
            return Ok(corpus);
        }
        let tmp = cache.join(format!("{}.tmp", self.key()));
        if tmp.exists() {
            // Left by an interrupted generation: it may be incomplete.
            fs::remove_dir_all(&tmp).map_err(|e| Error::io("remove", &tmp, e))?;
        }
        let mut bundle = match self.files {
            1 => None,
            _ => {
                fs::create_dir_all(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
                let path = tmp.join("bundle.bin");
                let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
                Some((BufWriter::with_capacity(1 << 20, file), path))
            }
        };
        for index in 0..self.files {
            let path = tmp.join("tree").join(self.file_path(index));
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
            }
            let file = File::create(&path).map_err(|e| Error::io("create", &path, e))?;
            let mut out = BufWriter::with_capacity(1 << 20, file);
            if let Some((b, bundle_path)) = bundle.as_mut() {
                // Small pieces: generate once, write to both.
                let bytes = self.piece(index, self.class.file_size());
                b.write_all(&bytes).map_err(|e| Error::io("write", &*bundle_path, e))?;
                out.write_all(&bytes).map_err(|e| Error::io("write", &path, e))?;
            } else {
                self.write_file(index, &mut out).map_err(|e| Error::io("write", &path, e))?;
            }
            out.flush().map_err(|e| Error::io("write", &path, e))?;
        }
        if let Some((mut b, path)) = bundle {
            b.flush().map_err(|e| Error::io("write", &path, e))?;
        }
        fs::rename(&tmp, &dir).map_err(|e| Error::io("rename into place", &dir, e))?;
        Ok(corpus)
    }
}

/// A corpus of the user's own data (`--input`): a directory is synced, a file is packed.
pub fn from_input(path: &Path) -> Result<Corpus> {
    let meta = fs::metadata(path).map_err(|e| Error::io("open", path, e))?;
    if meta.is_file() {
        return Ok(Corpus {
            class: "input".into(),
            tree: None,
            bundle: Some(path.into()),
            files: 1,
            bytes: meta.len(),
        });
    }
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "--input {}: not a file or a directory; pass a file to pack or a directory to sync",
            path.display()
        )));
    }
    let (mut files, mut bytes) = (0u64, 0u64);
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).map_err(|e| Error::io("read directory", &dir, e))? {
            let entry = entry.map_err(|e| Error::io("read directory", &dir, e))?;
            let meta = entry.metadata().map_err(|e| Error::io("read", entry.path(), e))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    Ok(Corpus { class: "input".into(), tree: Some(path.into()), bundle: None, files, bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_tree(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.push((p.strip_prefix(root).unwrap().to_path_buf(), fs::read(&p).unwrap()));
                }
            }
        }
        out.sort();
        out
    }

    #[test]
    fn corpora_are_byte_identical_for_a_seed_and_differ_for_another() {
        let (a, b, c) =
            (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let layout = Layout::new(SizeClass::Small, 1, Some(12));
        let one = layout.ensure(a.path()).unwrap();
        let two = layout.ensure(b.path()).unwrap();
        let other = Layout::new(SizeClass::Small, 2, Some(12)).ensure(c.path()).unwrap();
        let (t1, t2, t3) = (
            read_tree(one.tree.as_ref().unwrap()),
            read_tree(two.tree.as_ref().unwrap()),
            read_tree(other.tree.as_ref().unwrap()),
        );
        assert_eq!(t1.len(), 12);
        assert_eq!(t1, t2);
        assert_ne!(t1.iter().map(|f| &f.1).collect::<Vec<_>>(), t3.iter().map(|f| &f.1).collect::<Vec<_>>());
        // The bundle is the tree's bytes in file order.
        let bundle = fs::read(one.bundle.unwrap()).unwrap();
        assert_eq!(bundle, t1.iter().flat_map(|f| f.1.clone()).collect::<Vec<u8>>());
        assert_eq!(one.bytes, 12 * 4096);
        // Every kind is there, named.
        for kind in Kind::ALL {
            assert!(t1.iter().any(|f| f.0.to_string_lossy().contains(kind.name())), "{kind:?}");
        }
    }

    #[test]
    fn a_cached_corpus_is_reused_and_a_stale_tmp_is_replaced() {
        let cache = tempfile::tempdir().unwrap();
        let layout = Layout::new(SizeClass::Small, 3, Some(3));
        fs::create_dir_all(cache.path().join(format!("{}.tmp/junk", layout.key()))).unwrap();
        let first = layout.ensure(cache.path()).unwrap();
        let marker = first.tree.as_ref().unwrap().join("marker");
        fs::write(&marker, b"kept").unwrap();
        layout.ensure(cache.path()).unwrap();
        assert!(marker.exists(), "the cached corpus was regenerated");
        assert!(!cache.path().join(format!("{}.tmp", layout.key())).exists());
    }

    #[test]
    fn single_file_classes_ignore_the_files_override() {
        assert_eq!(Layout::new(SizeClass::Large, 1, Some(5)).files, 1);
        assert_eq!(Layout::new(SizeClass::Medium, 1, Some(5)).files, 5);
        assert_eq!(Layout::new(SizeClass::Small, 1, None).files, 1000);
        assert_eq!(SizeClass::parse("very-large"), Some(SizeClass::VeryLarge));
        assert_eq!(SizeClass::parse("huge"), None);
    }
}
