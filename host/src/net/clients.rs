//! Who may do what on `keepsync serve --clients FILE`: each client has its own key, a subtree
//! of the served root it is confined to, and a mode.
//!
//! ```toml
//! [[client]]
//! name = "laptop"
//! key_file = "keys/laptop.key"   # from `keepsync keygen`; relative to this file
//! root = "laptop"                # the client's subtree under --root ("." for all of it)
//! mode = "append-only"           # read-write | append-only | read-only
//! ```
//!
//! A client names its key by the key's id in its hello ([`key_id`]), never by the key; the
//! server looks the id up. An unknown id gets a random key, so the client fails the server's
//! proof exactly as with a wrong key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use keepsync_core::crypto::SecretKey;
use keepsync_core::crypto::session::key_id;
use keepsync_core::wire::frame::KEY_ID_LEN;
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::sync::tree::{check_rel, join};

/// What a client may do in its subtree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Push (with `--delete`) and pull.
    ReadWrite,
    /// Push new files and pull; never overwrite, replace or delete anything that exists.
    AppendOnly,
    /// Pull only.
    ReadOnly,
}

impl Mode {
    /// How the mode is written in the clients file.
    pub fn name(self) -> &'static str {
        match self {
            Self::ReadWrite => "read-write",
            Self::AppendOnly => "append-only",
            Self::ReadOnly => "read-only",
        }
    }
}

/// One client of a server.
#[derive(Debug)]
pub struct Client {
    /// Its name, for the log.
    pub name: String,
    /// Its key.
    pub key: SecretKey,
    /// Its subtree under the served root (empty: the whole root).
    pub root: String,
    /// What it may do there.
    pub mode: Mode,
}

impl Client {
    /// The one client of a server run with `--psk-file` alone: full rights on the whole root.
    pub fn whole_root(key: SecretKey) -> Self {
        Self { name: String::new(), key, root: String::new(), mode: Mode::ReadWrite }
    }

    /// `path` from the client (relative to its subtree, `.` for all of it) as a path under
    /// the served root; `Err` says why it is not allowed.
    pub fn base(&self, path: &str) -> std::result::Result<String, String> {
        let rel = match path {
            "." => "",
            "" => {
                return Err(
                    "the request names no tree (a client asking for the whole served root writes `.`)".into(),
                );
            }
            path => {
                check_rel(path)?;
                path
            }
        };
        Ok(join(&self.root, rel))
    }

    /// The client as the log names it.
    pub fn shown(&self) -> String {
        if self.name.is_empty() { String::new() } else { format!("client {:?} ", self.name) }
    }
}

/// The clients of a server, by key id.
#[derive(Debug, Default)]
pub struct Clients {
    by_id: HashMap<[u8; KEY_ID_LEN], Arc<Client>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    client: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    key_file: PathBuf,
    root: String,
    mode: Mode,
}

impl Clients {
    /// Reads a clients file; key files are relative to its directory and must be private.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |why: String| Error::Usage(format!("{}: {why}", path.display()));
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        let file: File = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if file.client.is_empty() {
            return Err(bad("no [[client]] entries: a server with no clients serves no one".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut by_id = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for e in file.client {
            let what = format!("client {:?}", e.name);
            if e.name.is_empty() || !names.insert(e.name.clone()) {
                return Err(bad(format!("{what}: every client needs a name of its own")));
            }
            let root = match e.root.trim_end_matches('/') {
                "." | "" => String::new(),
                root => {
                    check_rel(root).map_err(|why| bad(format!("{what}: root {root:?}: {why}")))?;
                    root.to_owned()
                }
            };
            let key_path = dir.join(&e.key_file);
            if let Some(why) = crate::keys::exposure(&key_path) {
                return Err(bad(format!("{what}: {why}")));
            }
            let key = crate::keys::read_key_file(&key_path)?;
            let id = key_id(&key);
            let client = Arc::new(Client { name: e.name, key, root, mode: e.mode });
            if by_id.insert(id, client).is_some() {
                return Err(bad(format!("{what}: its key is another client's too: give each its own")));
            }
        }
        Ok(Self { by_id })
    }

    /// The client whose key has the id `id`.
    pub fn get(&self, id: &[u8; KEY_ID_LEN]) -> Option<&Arc<Client>> {
        self.by_id.get(id)
    }

    /// Whether `client` is still one of these, with the same key, subtree and mode.
    pub fn still_has(&self, client: &Client) -> bool {
        self.by_id
            .get(&key_id(&client.key))
            .is_some_and(|c| c.name == client.name && c.root == client.root && c.mode == client.mode)
    }

    /// How many clients there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// No clients.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded random paths from an alphabet of the dangerous pieces: whatever a client sends,
    /// an accepted path resolves, component by component, to somewhere inside its subtree.
    #[test]
    fn no_path_a_client_sends_leaves_its_subtree() {
        let client = Client {
            name: "c".into(),
            key: SecretKey::from_bytes([1; 32]),
            root: "homes/c".into(),
            mode: Mode::ReadWrite,
        };
        let pieces = ["a", ".", "..", "/", "//", "\0", "é", ".keepsync-partial", "~", "\\", " ", "-"];
        for seed in 1..=20_000u64 {
            let mut rng = seed;
            let mut path = String::new();
            for _ in 0..(seed % 9) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                path.push_str(pieces[(rng % pieces.len() as u64) as usize]);
            }
            let Ok(base) = client.base(&path) else { continue };
            // Resolve it as a filesystem would, without symlinks (the tree refuses those).
            let mut depth = 0i32;
            for part in base.split('/') {
                match part {
                    "" | "." => panic!("seed {seed}: {path:?} -> {base:?} has an empty or `.` part"),
                    ".." => depth -= 1,
                    _ => depth += 1,
                }
                assert!(depth > 0, "seed {seed}: {path:?} -> {base:?} climbs out");
            }
            assert!(base == "homes/c" || base.starts_with("homes/c/"), "seed {seed}: {path:?} -> {base:?}");
            assert!(!base.contains('\0'), "seed {seed}: {base:?}");
            assert!(
                !base.split('/').any(|p| p == ".keepsync-partial"),
                "seed {seed}: {base:?} names our partials"
            );
        }
    }

    #[test]
    fn a_clients_file_is_read_checked_and_confines_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        crate::keys::generate_key_file(&d.join("a.key"), false).unwrap();
        crate::keys::generate_key_file(&d.join("b.key"), false).unwrap();
        let write = |text: &str| {
            std::fs::write(d.join("clients.toml"), text).unwrap();
            Clients::load(&d.join("clients.toml"))
        };
        let ok = write(
            "[[client]]\nname = \"a\"\nkey_file = \"a.key\"\nroot = \"homes/a\"\nmode = \"append-only\"\n\
             [[client]]\nname = \"b\"\nkey_file = \"b.key\"\nroot = \".\"\nmode = \"read-only\"\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        let a_key = crate::keys::read_key_file(&d.join("a.key")).unwrap();
        let a = ok.get(&key_id(&a_key)).unwrap();
        assert_eq!((a.name.as_str(), a.root.as_str(), a.mode), ("a", "homes/a", Mode::AppendOnly));
        assert_eq!(a.base("."), Ok("homes/a".into()));
        assert_eq!(a.base("x/y"), Ok("homes/a/x/y".into()));
        assert!(a.base("../b").is_err() && a.base("").is_err() && a.base("/etc").is_err());
        assert!(ok.still_has(a));
        for (text, says) in [
            (
                "[[client]]\nname = \"a\"\nkey_file = \"a.key\"\nroot = \"../up\"\nmode = \"read-only\"\n",
                "root",
            ),
            ("[[client]]\nname = \"a\"\nkey_file = \"a.key\"\nroot = \"x\"\nmode = \"write-only\"\n", "mode"),
            (
                "[[client]]\nname = \"a\"\nkey_file = \"a.key\"\nroot = \"x\"\nmode = \"read-only\"\nkye = 1\n",
                "kye",
            ),
            ("", "no [[client]]"),
            (
                "[[client]]\nname = \"a\"\nkey_file = \"a.key\"\nroot = \"x\"\nmode = \"read-only\"\n\
                 [[client]]\nname = \"b\"\nkey_file = \"a.key\"\nroot = \"y\"\nmode = \"read-only\"\n",
                "another client's",
            ),
        ] {
            let e = write(text).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("clients.toml"), "{says}: {e}");
        }
    }
}
