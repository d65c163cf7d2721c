//! Key material on the host: key files, passphrases (Argon2id), and the per-file choice of
//! which master key a container needs.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use keepsync_core::budget::{KDF_SALT_LEN, KEY_LEN};
use keepsync_core::crypto::SecretKey;
use keepsync_core::wire::{HeaderRepr, KeySource};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

/// The line prefix of a key file's key line.
pub const KEY_PREFIX: &str = "KEEPSYNC-KEY-1 ";

/// Argon2id memory for new passphrase containers: 64 MiB (OWASP's 2023 floor is 19 MiB;
/// RFC 9106's second recommended option is 64 MiB).
pub const DEFAULT_KDF_MEMORY_KIB: u32 = 64 * 1024;
/// Argon2id passes at least (RFC 9106's second recommended option uses 3).
pub const DEFAULT_KDF_PASSES: u32 = 3;
/// Target time of one passphrase derivation on the machine that packs: passes are added
/// until one derivation takes about this long (a guess costs an attacker that much per try
/// on similar hardware; unpacking pays it once).
pub const KDF_TARGET: std::time::Duration = std::time::Duration::from_millis(500);
/// Argon2id lanes for new passphrase containers.
pub const DEFAULT_KDF_LANES: u32 = 1;

/// Where the user's key comes from.
#[derive(Debug, Clone)]
pub enum KeySpec {
    /// A key file made by `keepsync keygen`.
    KeyFile(PathBuf),
    /// A passphrase in this environment variable.
    PassphraseEnv(String),
}

/// A master key plus how a new header records it.
#[derive(Debug)]
pub struct MasterKey {
    /// The key.
    pub key: SecretKey,
    /// What the header says about it.
    pub source: KeySource,
}

/// Fills `buf` from the OS's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| {
        Error::io("read random bytes from", "the operating system", std::io::Error::other(e.to_string()))
    })
}

/// Writes a new random key to `path` (mode 0600). Refuses to overwrite anything.
pub fn generate_key_file(path: &Path) -> Result<()> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    random_bytes(&mut key[..])?;
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::OutputExists(path.to_path_buf()),
        _ => Error::io("create", path, e),
    })?;
    let text = Zeroizing::new(format!(
        "# KeepSync key file. Anyone holding it can read what it encrypts: keep it secret,\n\
         # and keep a backup: without it the data cannot be recovered.\n{KEY_PREFIX}{}\n",
        hex::encode(&key[..])
    ));
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Error::io("write", path, e));
    }
    Ok(())
}

/// Reads a key file.
pub fn read_key_file(path: &Path) -> Result<SecretKey> {
    let mut file = File::open(path).map_err(|e| Error::io("read key file", path, e))?;
    let mut text = Zeroizing::new(String::new());
    // A key file is tiny; refuse to read a large file that is obviously not one.
    let n = (&mut file)
        .take(4096)
        .read_to_string(&mut text)
        .map_err(|_| Error::BadKeyFile { path: path.into(), reason: "not a KeepSync key file (not text)" })?;
    if n == 4096 {
        return Err(Error::BadKeyFile { path: path.into(), reason: "not a KeepSync key file (too large)" });
    }
    let mut keys = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(line), None) = (keys.next(), keys.next()) else {
        return Err(Error::BadKeyFile {
            path: path.into(),
            reason: "not a KeepSync key file (expected exactly one key line)",
        });
    };
    let Some(hex_key) = line.strip_prefix(KEY_PREFIX) else {
        return Err(Error::BadKeyFile { path: path.into(), reason: "not a KeepSync key file" });
    };
    let mut key = [0u8; KEY_LEN];
    if hex::decode_to_slice(hex_key.trim(), &mut key).is_err() {
        key.zeroize();
        return Err(Error::BadKeyFile { path: path.into(), reason: "key line is not 64 hex digits" });
    }
    let secret = SecretKey::from_bytes(key);
    key.zeroize();
    Ok(secret)
}

fn passphrase(var: &str) -> Result<Zeroizing<String>> {
    match std::env::var(var) {
        Ok(p) if !p.is_empty() => Ok(Zeroizing::new(p)),
        _ => Err(Error::NoPassphrase(var.to_string())),
    }
}

/// Stretches a passphrase with Argon2id v1.3 into a 32-byte key.
pub fn stretch(
    passphrase: &[u8],
    salt: &[u8; KDF_SALT_LEN],
    memory_kib: u32,
    passes: u32,
    lanes: u32,
) -> Result<SecretKey> {
    let params = Params::new(memory_kib, passes, lanes, Some(KEY_LEN))
        .map_err(|e| Error::Usage(format!("invalid Argon2id parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|e| Error::Usage(format!("Argon2id failed: {e}")))?;
    Ok(SecretKey::from_bytes(*out))
}

/// Argon2id passes for one derivation of about `target` on this machine, from the time of a
/// single pass; at least [`DEFAULT_KDF_PASSES`], at most the readers' limit (64).
pub fn calibrate_passes(memory_kib: u32, lanes: u32, target: std::time::Duration) -> Result<u32> {
    let started = std::time::Instant::now();
    stretch(b"calibration", &[0; KDF_SALT_LEN], memory_kib, 1, lanes)?;
    let one_pass = started.elapsed().as_secs_f64().max(1e-6);
    let passes = (target.as_secs_f64() / one_pass).round() as u32;
    Ok(passes.clamp(DEFAULT_KDF_PASSES, keepsync_core::budget::MAX_KDF_PASSES))
}

impl KeySpec {
    /// The master key for a new container (a passphrase gets a fresh KDF salt).
    pub fn for_new_container(&self) -> Result<MasterKey> {
        match self {
            Self::KeyFile(path) => Ok(MasterKey { key: read_key_file(path)?, source: KeySource::RawKey }),
            Self::PassphraseEnv(var) => {
                let pass = passphrase(var)?;
                let mut salt = [0u8; KDF_SALT_LEN];
                random_bytes(&mut salt)?;
                let (memory_kib, passes, lanes) =
                    (DEFAULT_KDF_MEMORY_KIB, DEFAULT_KDF_PASSES, DEFAULT_KDF_LANES);
                let key = stretch(pass.as_bytes(), &salt, memory_kib, passes, lanes)?;
                Ok(MasterKey { key, source: KeySource::Argon2id { salt, memory_kib, passes, lanes } })
            }
        }
    }

    /// The master key for an existing container's header (the KDF parameters come from it,
    /// already bounded by the core's header parser).
    pub fn for_header(&self, repr: &HeaderRepr) -> Result<SecretKey> {
        match (self, repr.key_source) {
            (Self::KeyFile(path), KeySource::RawKey) => read_key_file(path),
            (Self::PassphraseEnv(var), KeySource::Argon2id { salt, memory_kib, passes, lanes }) => {
                stretch(passphrase(var)?.as_bytes(), &salt, memory_kib, passes, lanes)
            }
            (Self::KeyFile(_), _) => Err(Error::KeyKindMismatch { needs_passphrase: true }),
            (Self::PassphraseEnv(_), _) => Err(Error::KeyKindMismatch { needs_passphrase: false }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trips_refuses_overwrite_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        generate_key_file(&path).unwrap();
        let a = read_key_file(&path).unwrap();
        assert!(matches!(generate_key_file(&path), Err(Error::OutputExists(_))));
        assert_eq!(read_key_file(&path).unwrap().expose(), a.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let other = dir.path().join("k2");
        generate_key_file(&other).unwrap();
        assert_ne!(read_key_file(&other).unwrap().expose(), a.expose());
    }

    #[test]
    fn malformed_key_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in [
            ("empty", "".to_string()),
            ("short", format!("{KEY_PREFIX}abcd\n")),
            ("two", format!("{KEY_PREFIX}{}\n{KEY_PREFIX}{}\n", "00".repeat(32), "11".repeat(32))),
            ("prefix", format!("AGE-SECRET-KEY-1 {}\n", "00".repeat(32))),
            ("big", "#".repeat(5000)),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            assert!(matches!(read_key_file(&p), Err(Error::BadKeyFile { .. })), "{name}");
        }
    }

    #[test]
    fn calibration_scales_passes_with_the_target_within_bounds() {
        let quick = calibrate_passes(64, 1, std::time::Duration::from_nanos(1)).unwrap();
        assert_eq!(quick, DEFAULT_KDF_PASSES);
        let long = calibrate_passes(64, 1, std::time::Duration::from_secs(3600)).unwrap();
        assert_eq!(long, keepsync_core::budget::MAX_KDF_PASSES);
    }

    #[test]
    fn argon2id_matches_rfc9106_shape_and_depends_on_every_input() {
        let a = stretch(b"pw", &[1; 16], 64, 1, 1).unwrap();
        assert_eq!(a.expose(), stretch(b"pw", &[1; 16], 64, 1, 1).unwrap().expose());
        assert_ne!(a.expose(), stretch(b"pW", &[1; 16], 64, 1, 1).unwrap().expose());
        assert_ne!(a.expose(), stretch(b"pw", &[2; 16], 64, 1, 1).unwrap().expose());
        assert_ne!(a.expose(), stretch(b"pw", &[1; 16], 64, 2, 1).unwrap().expose());
    }
}
