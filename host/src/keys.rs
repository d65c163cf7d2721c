//! Key material on the host: key files, passphrases (Argon2id), and [`SessionKeys`], which
//! obtains each master key once per invocation and keeps it in locked, zeroized memory
//! ([`crate::secret`]).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use argon2::{Algorithm, Argon2, Params, Version};
use keepsync_core::budget::{
    FILE_SALT_LEN, KDF_SALT_LEN, KEY_LEN, MAX_KDF_COST, MAX_KDF_LANES, MAX_KDF_MEMORY_KIB, MAX_KDF_PASSES,
};
use keepsync_core::crypto::{FileKeys, SecretKey};
use keepsync_core::wire::{HeaderRepr, KeySource};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::secret::KeySlots;

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
    /// A passphrase typed on the terminal (without echo), asked once per run; `confirm` asks
    /// twice (packing), as age does, so a typo cannot lock data away.
    Prompt {
        /// Ask twice and require the same answer.
        confirm: bool,
    },
}

impl KeySpec {
    /// Whether the key is a passphrase (stretched with Argon2id) rather than a key file.
    fn is_passphrase(&self) -> bool {
        !matches!(self, Self::KeyFile(_))
    }
}

/// Fills `buf` from the OS's random number generator.
pub fn random_bytes(buf: &mut [u8]) -> Result<()> {
    getrandom::fill(buf).map_err(|e| {
        Error::io("read random bytes from", "the operating system", std::io::Error::other(e.to_string()))
    })
}

/// The text of a new key file holding a fresh random key: two comment lines and the key line
/// that [`read_key_file`] reads (docs/FORMAT.md, section 2).
pub fn new_key_file_text() -> Result<Zeroizing<String>> {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    random_bytes(&mut key[..])?;
    Ok(Zeroizing::new(format!(
        "# KeepSync key file. Anyone holding it can read what it encrypts: keep it secret,\n\
         # and keep a backup: without it the data cannot be recovered.\n{KEY_PREFIX}{}\n",
        hex::encode(&key[..])
    )))
}

/// Writes a new random key to `path` (mode 0600). An existing `path` is replaced only with
/// `force`, and only if it is a regular file: atomically, by a private temporary file beside
/// it that is fsynced and renamed over it, so `path` holds the old key or the new one, whole.
pub fn generate_key_file(path: &Path, force: bool) -> Result<()> {
    crate::output::check_replaceable(path, force)?;
    let text = new_key_file_text()?;
    if !force {
        // Created exclusively: a file that appeared since the check is never overwritten.
        write_new_private(path, &text)?;
        return crate::output::sync_parent(path);
    }
    let mut suffix = [0u8; 6];
    random_bytes(&mut suffix)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.keepsync-tmp-{}", hex::encode(suffix)));
    write_new_private(&tmp, &text)?;
    if let Err(e) = std::fs::rename(&tmp, path) {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("rename into place", path, e));
    }
    crate::output::sync_parent(path)
}

/// Creates `path` with mode 0600 (never opening an existing file, nor following a symlink),
/// writes `text` and fsyncs it; removes it again if writing fails.
fn write_new_private(path: &Path, text: &str) -> Result<()> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut file = opts.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => Error::OutputExists(path.to_path_buf()),
        _ => Error::io("create", path, e),
    })?;
    let written = file.write_all(text.as_bytes()).and_then(|()| file.sync_all());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(Error::io("write", path, e));
    }
    Ok(())
}

/// Says, when group or others may read or write `path` (a key or PSK file), what is wrong
/// and how to mend it, as ssh does for private keys.
pub fn exposure(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then(|| {
        format!(
            "{} is open to group or others (mode {mode:04o}); whoever reads it can read or forge what it \
             protects: run `chmod 600 {}`",
            path.display(),
            path.display()
        )
    })
}

/// [`read_key_file`] for a client: a key file others can read is warned about on stderr.
pub fn read_key_file_warning(path: &Path) -> Result<SecretKey> {
    if let Some(why) = exposure(path) {
        crate::say::say(&format!("warning: {why}"));
    }
    read_key_file(path)
}

/// Largest key file a reader accepts, in bytes.
pub const MAX_KEY_FILE_LEN: u64 = 4096;

/// Reads a key file (the grammar is in docs/FORMAT.md, section 2): UTF-8, at most 4 KiB, an
/// optional byte-order mark, lines ended by LF (a CR before it is white space), each line
/// trimmed of ASCII spaces and tabs; blank lines and `#` lines are skipped, and exactly one
/// line remains: `KEEPSYNC-KEY-1`, one space, 64 hex digits.
pub fn read_key_file(path: &Path) -> Result<SecretKey> {
    let file = File::open(path).map_err(|e| Error::io("read key file", path, e))?;
    let mut text = Zeroizing::new(String::new());
    // A key file is tiny; refuse to read a large file that is obviously not one.
    let n = file
        .take(MAX_KEY_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|_| Error::BadKeyFile { path: path.into(), reason: "not a KeepSync key file (not text)" })?;
    if n as u64 > MAX_KEY_FILE_LEN {
        return Err(Error::BadKeyFile { path: path.into(), reason: "not a KeepSync key file (over 4 KiB)" });
    }
    let body = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let blank = |c: char| matches!(c, ' ' | '\t' | '\r');
    let mut keys =
        body.split('\n').map(|l| l.trim_matches(blank)).filter(|l| !l.is_empty() && !l.starts_with('#'));
    let (Some(line), None) = (keys.next(), keys.next()) else {
        return Err(Error::BadKeyFile {
            path: path.into(),
            reason: "not a KeepSync key file (expected exactly one key line)",
        });
    };
    let Some(hex_key) = line.strip_prefix(KEY_PREFIX) else {
        return Err(Error::BadKeyFile { path: path.into(), reason: "not a KeepSync key file" });
    };
    if hex_key.len() != 2 * KEY_LEN {
        return Err(Error::BadKeyFile {
            path: path.into(),
            reason: "key line is not `KEEPSYNC-KEY-1`, one space and 64 hex digits",
        });
    }
    let mut key = [0u8; KEY_LEN];
    if hex::decode_to_slice(hex_key, &mut key).is_err() {
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

/// Asks for a passphrase on the terminal (`/dev/tty`, without echo), twice when `confirm`.
fn prompt_passphrase(confirm: bool) -> Result<Zeroizing<String>> {
    let no_terminal = |e: std::io::Error| Error::NoTerminal(e.to_string());
    let ask = |prompt: &str| rpassword::prompt_password(prompt).map(Zeroizing::new).map_err(no_terminal);
    let first = ask("keepsync: passphrase: ")?;
    if first.is_empty() {
        return Err(Error::Usage("the passphrase is empty: type one, or pass --key-file FILE".into()));
    }
    if confirm && *ask("keepsync: the same passphrase again: ")? != *first {
        return Err(Error::Usage("the two passphrases differ: nothing was written; run again".into()));
    }
    Ok(first)
}

/// Stretches a passphrase with Argon2id v1.3 into a 32-byte key.
pub fn stretch(
    passphrase: &[u8],
    salt: &[u8; KDF_SALT_LEN],
    memory_kib: u32,
    passes: u32,
    lanes: u32,
) -> Result<SecretKey> {
    let mut out = Zeroizing::new([0u8; KEY_LEN]);
    stretch_into(passphrase, salt, KdfParams { memory_kib, passes, lanes }, &mut out)?;
    Ok(SecretKey::from_bytes(*out))
}

/// [`stretch`] into memory the caller chose (a locked slot of a [`SessionKeys`]).
fn stretch_into(
    passphrase: &[u8],
    salt: &[u8; KDF_SALT_LEN],
    kdf: KdfParams,
    out: &mut [u8; KEY_LEN],
) -> Result<()> {
    let params = Params::new(kdf.memory_kib, kdf.passes, kdf.lanes, Some(KEY_LEN))
        .map_err(|e| Error::Usage(format!("invalid Argon2id parameters: {e}")))?;
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
        .hash_password_into(passphrase, salt, out)
        .map_err(|e| Error::Usage(format!("Argon2id failed: {e}")))
}

/// Most passes calibration picks: with 64 MiB, a derivation then takes at most about
/// 16 / 3 of what the minimum takes wherever the file is opened.
pub const MAX_CALIBRATED_PASSES: u32 = 16;

/// Timed runs of each size during calibration: the fastest of them is the machine's cost, the
/// others were slowed by whatever else ran.
const CALIBRATION_TRIALS: usize = 3;

/// Argon2id passes for one derivation of about `target` on this machine, from
/// [`DEFAULT_KDF_PASSES`] to [`MAX_CALIBRATED_PASSES`].
///
/// Times one and two passes: their difference is the cost of a pass, and the rest of the
/// one-pass run is the fixed cost (mostly faulting in the memory), which a single timed pass
/// would count as pass time. With 64 MiB that made 7 passes take 0.3 s for a 0.5 s target.
/// Each is timed several times and the fastest kept: on a loaded machine single timings made
/// the difference anything from negative to several passes, and the choice anything from 3
/// to 64 passes. A pass is also taken to cost at least a quarter of a one-pass run.
pub fn calibrate_passes(memory_kib: u32, lanes: u32, target: std::time::Duration) -> Result<u32> {
    calibrate(memory_kib, lanes, target).map(|(passes, _)| passes)
}

/// [`calibrate_passes`], and the seconds one derivation with those passes takes here (from
/// the same fastest timings: fixed cost plus passes times the cost of a pass).
pub fn calibrate(memory_kib: u32, lanes: u32, target: std::time::Duration) -> Result<(u32, f64)> {
    calibrate_with(target, |passes| {
        let started = std::time::Instant::now();
        stretch(b"calibration", &[0; KDF_SALT_LEN], memory_kib, passes, lanes)?;
        Ok(started.elapsed().as_secs_f64())
    })
}

/// [`calibrate`] with `time(passes)` measuring one derivation, in seconds.
fn calibrate_with(
    target: std::time::Duration,
    mut time: impl FnMut(u32) -> Result<f64>,
) -> Result<(u32, f64)> {
    let mut fastest = |passes| -> Result<f64> {
        let mut best = f64::INFINITY;
        for _ in 0..CALIBRATION_TRIALS {
            best = best.min(time(passes)?);
        }
        Ok(best)
    };
    let one = fastest(1)?;
    let two = fastest(2)?;
    let per_pass = (two - one).max(one / 4.0).max(1e-6);
    let fixed = (one - per_pass).max(0.0);
    let passes = ((target.as_secs_f64() - fixed) / per_pass).round().max(0.0) as u32;
    let passes = passes.clamp(DEFAULT_KDF_PASSES, MAX_CALIBRATED_PASSES);
    Ok((passes, fixed + per_pass * f64::from(passes)))
}

/// Argon2id cost parameters for new passphrase containers (the header records them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Passes over the memory.
    pub passes: u32,
    /// Lanes (parallelism).
    pub lanes: u32,
}

impl Default for KdfParams {
    fn default() -> Self {
        Self { memory_kib: DEFAULT_KDF_MEMORY_KIB, passes: DEFAULT_KDF_PASSES, lanes: DEFAULT_KDF_LANES }
    }
}

/// The master keys of one invocation (a *session*): each is obtained once, however many
/// containers use it, and kept in locked memory that is zeroized on drop.
///
/// - Packing: the first container draws the session's random Argon2id salt and stretches the
///   passphrase once; every container of the session records that salt and the same parameters
///   in its header, so they share one master key, as containers packed with one key file do.
///   Each container still draws its own 32-byte file salt, from which its own header and
///   payload keys are derived (HKDF), so no two containers share a key or a nonce.
/// - Unpacking: master keys are cached by the header's (salt, memory, passes, lanes), so a batch
///   packed in one session costs one Argon2id run, and a key file is read once.
#[derive(Debug)]
pub struct SessionKeys {
    spec: KeySpec,
    kdf: KdfParams,
    /// The key sources obtained so far, with the slot holding each master key.
    known: Vec<(KeySource, usize)>,
    /// What new containers of this session record (set by the first one).
    new_source: Option<KeySource>,
    slots: KeySlots,
    argon2id_runs: u32,
    /// Whether the first passphrase container calibrates the passes to [`KDF_TARGET`] (the
    /// default); sessions with explicit parameters keep them.
    calibrate: bool,
    /// A passphrase typed at the prompt, kept so the run asks once.
    typed: Option<Zeroizing<String>>,
}

impl SessionKeys {
    /// A session for `spec`; new passphrase containers get the default Argon2id memory and lanes,
    /// and passes calibrated on this machine to [`KDF_TARGET`] (once, when the first one is packed).
    pub fn new(spec: KeySpec) -> Self {
        Self {
            spec,
            kdf: KdfParams::default(),
            known: Vec::new(),
            new_source: None,
            slots: KeySlots::new(),
            argon2id_runs: 0,
            calibrate: true,
            typed: None,
        }
    }

    /// A session whose new passphrase containers use `kdf`, which must lie within the limits
    /// every reader accepts (at most 1 GiB, 64 passes, 16 lanes, 64 MiB x 64 passes of work;
    /// at least 8 KiB per lane).
    pub fn with_kdf_params(spec: KeySpec, kdf: KdfParams) -> Result<Self> {
        let lanes_ok = (1..=MAX_KDF_LANES).contains(&kdf.lanes);
        let memory_ok =
            u64::from(kdf.memory_kib) >= 8 * u64::from(kdf.lanes) && kdf.memory_kib <= MAX_KDF_MEMORY_KIB;
        let cost_ok = u64::from(kdf.memory_kib) * u64::from(kdf.passes) <= MAX_KDF_COST;
        if !(lanes_ok && memory_ok && cost_ok && (1..=MAX_KDF_PASSES).contains(&kdf.passes)) {
            return Err(Error::Usage(format!("Argon2id parameters {kdf:?} are outside what readers accept")));
        }
        Ok(Self { kdf, calibrate: false, ..Self::new(spec) })
    }

    /// Where the key comes from.
    pub fn spec(&self) -> &KeySpec {
        &self.spec
    }

    /// Fails now, rather than once per file, if the key cannot be had: reads the key file (and
    /// keeps it), or checks that the passphrase variable is set.
    pub fn preflight(&mut self) -> Result<()> {
        match &self.spec {
            KeySpec::KeyFile(_) => self.master(KeySource::RawKey).map(drop),
            KeySpec::PassphraseEnv(_) | KeySpec::Prompt { .. } => self.passphrase().map(drop),
        }
    }

    /// The passphrase: from its variable, or typed at the prompt once per session.
    fn passphrase(&mut self) -> Result<Zeroizing<String>> {
        match &self.spec {
            KeySpec::PassphraseEnv(var) => passphrase(var),
            KeySpec::Prompt { confirm } => {
                if self.typed.is_none() {
                    self.typed = Some(prompt_passphrase(*confirm)?);
                }
                Ok(self.typed.clone().expect("typed above"))
            }
            KeySpec::KeyFile(path) => {
                Err(Error::Internal(format!("no passphrase: the key is {}", path.display())))
            }
        }
    }

    /// The keys of a new container whose header will carry `file_salt`, and the key source
    /// that header records (the same for every container of the session).
    pub fn for_new_container(&mut self, file_salt: &[u8; FILE_SALT_LEN]) -> Result<(KeySource, FileKeys)> {
        let source = match (self.new_source, &self.spec) {
            (Some(source), _) => source,
            (None, KeySpec::KeyFile(_)) => KeySource::RawKey,
            (None, KeySpec::PassphraseEnv(_) | KeySpec::Prompt { .. }) => {
                // Once per session: the passes set so that one derivation takes about
                // KDF_TARGET here (3 to 16).
                if std::mem::take(&mut self.calibrate) {
                    self.kdf.passes = calibrate_passes(self.kdf.memory_kib, self.kdf.lanes, KDF_TARGET)?;
                }
                let mut salt = [0u8; KDF_SALT_LEN];
                random_bytes(&mut salt)?;
                let KdfParams { memory_kib, passes, lanes } = self.kdf;
                KeySource::Argon2id { salt, memory_kib, passes, lanes }
            }
        };
        let slot = self.master(source)?;
        self.new_source = Some(source);
        Ok((source, self.file_keys(slot, file_salt)))
    }

    /// The keys of an existing container, from its header (whose KDF parameters the core's
    /// parser has already bounded). The header MAC is not checked here.
    pub fn for_header(&mut self, repr: &HeaderRepr) -> Result<FileKeys> {
        let slot = self.master(repr.key_source)?;
        Ok(self.file_keys(slot, &repr.file_salt))
    }

    /// How many times this session ran Argon2id.
    pub fn argon2id_runs(&self) -> u32 {
        self.argon2id_runs
    }

    /// Why the master keys could not be locked in RAM (e.g. `ulimit -l` too low); `None` when
    /// they are locked or none is held yet.
    pub fn memory_lock_error(&self) -> Option<&str> {
        self.slots.lock_error()
    }

    /// The slot holding the master key for `source`, obtaining it on first use.
    fn master(&mut self, source: KeySource) -> Result<usize> {
        if let Some(&(_, slot)) = self.known.iter().find(|(s, _)| *s == source) {
            return Ok(slot);
        }
        let slot = match (&self.spec, source) {
            (KeySpec::KeyFile(path), KeySource::RawKey) => {
                let key = read_key_file_warning(path)?;
                let slot = self.slots.push();
                self.slots.get_mut(slot).copy_from_slice(key.expose());
                slot
            }
            (spec, KeySource::Argon2id { salt, memory_kib, passes, lanes }) if spec.is_passphrase() => {
                let pass = self.passphrase()?;
                let slot = self.slots.push();
                let kdf = KdfParams { memory_kib, passes, lanes };
                stretch_into(pass.as_bytes(), &salt, kdf, self.slots.get_mut(slot))?;
                self.argon2id_runs += 1;
                slot
            }
            (KeySpec::KeyFile(_), _) => return Err(Error::KeyKindMismatch { needs_passphrase: true }),
            (KeySpec::PassphraseEnv(_) | KeySpec::Prompt { .. }, _) => {
                return Err(Error::KeyKindMismatch { needs_passphrase: false });
            }
        };
        self.known.push((source, slot));
        Ok(slot)
    }

    fn file_keys(&self, slot: usize, file_salt: &[u8; FILE_SALT_LEN]) -> FileKeys {
        let master = SecretKey::from_bytes(*self.slots.get(slot));
        FileKeys::derive(&master, file_salt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calibration_keeps_the_fastest_trials_and_stays_within_its_bounds() {
        let target = KDF_TARGET;
        // A machine where a pass costs 40 ms and the memory 20 ms: 12 passes make 0.5 s.
        let true_time = |passes: u32| 0.020 + 0.040 * f64::from(passes);
        let (passes, seconds) = calibrate_with(target, |p| Ok(true_time(p))).unwrap();
        assert_eq!(passes, 12);
        assert!((seconds - true_time(12)).abs() < 1e-9, "{seconds}");
        // Load only ever slows a run down (here up to 4x, on a random half of the runs).
        for seed in 1..=1000u64 {
            let mut rng = seed;
            let mut clean = [false; 2];
            let mut calls = 0;
            let passes = calibrate_with(target, |p| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let slowed = rng % 2 == 0;
                clean[calls / CALIBRATION_TRIALS] |= !slowed;
                calls += 1;
                let factor = if slowed { 1.0 + (rng >> 8) as f64 / (1u64 << 56) as f64 * 3.0 } else { 1.0 };
                Ok(true_time(p) * factor)
            })
            .unwrap()
            .0;
            assert!((DEFAULT_KDF_PASSES..=MAX_CALIBRATED_PASSES).contains(&passes), "seed {seed}: {passes}");
            if clean == [true, true] {
                assert_eq!(passes, 12, "seed {seed}: one clean run of each size gives the true cost");
            }
        }
    }

    #[test]
    fn key_file_round_trips_refuses_overwrite_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        generate_key_file(&path, false).unwrap();
        let a = read_key_file(&path).unwrap();
        assert!(matches!(generate_key_file(&path, false), Err(Error::OutputExists(_))));
        assert_eq!(read_key_file(&path).unwrap().expose(), a.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let other = dir.path().join("k2");
        generate_key_file(&other, false).unwrap();
        assert_ne!(read_key_file(&other).unwrap().expose(), a.expose());
    }

    #[test]
    fn force_replaces_a_regular_file_with_a_private_key_and_leaves_no_temporary_file() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "old, readable by all").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        generate_key_file(&path, true).unwrap();
        let first = read_key_file(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        generate_key_file(&path, true).unwrap();
        assert_ne!(read_key_file(&path).unwrap().expose(), first.expose());
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["k"]);
        // A symlink is not replaced (nor written through), even with force.
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("k", &link).unwrap();
        let before = std::fs::read(&path).unwrap();
        assert!(matches!(generate_key_file(&link, true), Err(Error::Usage(_))));
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&path).unwrap(), before);
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
            ("4097 bytes", format!("{KEY_PREFIX}{}\n{}", "00".repeat(32), "#".repeat(4097 - 80))),
            ("two spaces", format!("KEEPSYNC-KEY-1  {}\n", "00".repeat(32))),
            ("tab", format!("KEEPSYNC-KEY-1\t{}\n", "00".repeat(32))),
            ("no-break space", format!("{KEY_PREFIX}{}\u{a0}\n", "00".repeat(32))),
            ("bom twice", format!("\u{feff}\u{feff}{KEY_PREFIX}{}\n", "00".repeat(32))),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, text).unwrap();
            assert!(matches!(read_key_file(&p), Err(Error::BadKeyFile { .. })), "{name}");
        }
        // What the grammar allows: exactly 4 KiB, a BOM, CRLF, spaces and tabs around a line,
        // comments, upper-case digits.
        let key = |hex: &str| {
            let mut k = [0u8; 32];
            hex::decode_to_slice(hex, &mut k).unwrap();
            k
        };
        let hex = "0123456789abcdef".repeat(4);
        for (name, text) in [
            ("4096 bytes", format!("{KEY_PREFIX}{hex}\n{}", "#".repeat(4096 - 80))),
            ("bom and crlf", format!("\u{feff}# made by hand\r\n\r\n{KEY_PREFIX}{hex}\r\n")),
            ("padded", format!(" \t{KEY_PREFIX}{} \t\n# end", hex.to_uppercase())),
        ] {
            let p = dir.path().join(name);
            std::fs::write(&p, &text).unwrap();
            assert!(std::fs::metadata(&p).unwrap().len() <= 4096, "{name}");
            assert_eq!(read_key_file(&p).unwrap().expose(), &key(&hex), "{name}");
        }
    }

    #[test]
    fn calibration_scales_passes_with_the_target_within_bounds() {
        let quick = calibrate_passes(64, 1, std::time::Duration::from_nanos(1)).unwrap();
        assert_eq!(quick, DEFAULT_KDF_PASSES);
        let long = calibrate_passes(64, 1, std::time::Duration::from_secs(3600)).unwrap();
        assert_eq!(long, MAX_CALIBRATED_PASSES);
    }

    #[test]
    fn argon2id_matches_rfc9106_shape_and_depends_on_every_input() {
        let a = stretch(b"pw", &[1; 16], 64, 1, 1).unwrap();
        assert_eq!(a.expose(), stretch(b"pw", &[1; 16], 64, 1, 1).unwrap().expose());
        assert_ne!(a.expose(), stretch(b"pW", &[1; 16], 64, 1, 1).unwrap().expose());
        assert_ne!(a.expose(), stretch(b"pw", &[2; 16], 64, 1, 1).unwrap().expose());
        assert_ne!(a.expose(), stretch(b"pw", &[1; 16], 64, 2, 1).unwrap().expose());
    }

    /// An environment variable that is set (edition 2024 makes `set_var` unsafe, and tests
    /// run on threads): its value serves as the passphrase, whatever it is.
    fn passphrase_vars() -> (String, String) {
        let mut vars: Vec<(String, String)> = std::env::vars().filter(|(_, v)| !v.is_empty()).collect();
        vars.sort();
        let (a, va) = vars.first().cloned().expect("some environment variable is set");
        let b = vars.iter().find(|(_, v)| *v != va).expect("two variables with different values").0.clone();
        (a, b)
    }

    const SMALL: KdfParams = KdfParams { memory_kib: 64, passes: 1, lanes: 1 };

    fn header(key_source: KeySource, file_salt: [u8; FILE_SALT_LEN]) -> HeaderRepr {
        HeaderRepr {
            key_source,
            chunk_log2: 12,
            codec_hint: keepsync_core::compress::Codec::Store,
            file_salt,
        }
    }

    #[test]
    fn a_default_session_calibrates_its_passes_once_for_all_its_containers() {
        let (var, _) = passphrase_vars();
        let mut session = SessionKeys::new(KeySpec::PassphraseEnv(var));
        let (first, _) = session.for_new_container(&[1; FILE_SALT_LEN]).unwrap();
        let (second, _) = session.for_new_container(&[2; FILE_SALT_LEN]).unwrap();
        let KeySource::Argon2id { memory_kib, passes, lanes, .. } = first else { panic!("{first:?}") };
        assert_eq!((memory_kib, lanes), (DEFAULT_KDF_MEMORY_KIB, DEFAULT_KDF_LANES));
        assert!((DEFAULT_KDF_PASSES..=keepsync_core::budget::MAX_KDF_PASSES).contains(&passes), "{passes}");
        assert_eq!(first, second, "one salt and one calibration per session");
        assert_eq!(session.argon2id_runs(), 1);
    }

    #[test]
    fn one_session_stretches_once_and_every_container_keeps_its_own_keys() {
        let (var, _) = passphrase_vars();
        let mut packing = SessionKeys::with_kdf_params(KeySpec::PassphraseEnv(var.clone()), SMALL).unwrap();
        let reprs: Vec<HeaderRepr> = (1..=3u8)
            .map(|i| {
                let (source, _) = packing.for_new_container(&[i; FILE_SALT_LEN]).unwrap();
                header(source, [i; FILE_SALT_LEN])
            })
            .collect();
        assert_eq!(packing.argon2id_runs(), 1);
        assert!(matches!(
            reprs[0].key_source,
            KeySource::Argon2id { memory_kib: 64, passes: 1, lanes: 1, .. }
        ));
        assert!(reprs.iter().all(|r| r.key_source == reprs[0].key_source), "one Argon2id salt per session");
        // Distinct file salts give distinct keys: each header verifies only under its own.
        let sealed: Vec<_> = reprs.iter().map(|r| packing.for_header(r).unwrap().seal_header(r)).collect();
        assert_eq!(packing.argon2id_runs(), 1, "reopening the session's own containers is cached");

        let mut opening = SessionKeys::new(KeySpec::PassphraseEnv(var.clone()));
        for (i, (repr, bytes)) in reprs.iter().zip(&sealed).enumerate() {
            let header = keepsync_core::wire::Header::new_unchecked(&bytes[..]);
            assert!(opening.for_header(repr).unwrap().verify_header(&header).is_ok());
            let other = &reprs[(i + 1) % reprs.len()];
            assert!(opening.for_header(other).unwrap().verify_header(&header).is_err());
        }
        assert_eq!(opening.argon2id_runs(), 1, "three containers of one session, one derivation");

        // Another session draws another salt: one more derivation to open its container.
        let mut second = SessionKeys::with_kdf_params(KeySpec::PassphraseEnv(var), SMALL).unwrap();
        let (source, _) = second.for_new_container(&[9; FILE_SALT_LEN]).unwrap();
        assert_ne!(source, reprs[0].key_source);
        opening.for_header(&header(source, [9; FILE_SALT_LEN])).unwrap();
        opening.for_header(&reprs[2]).unwrap();
        assert_eq!(opening.argon2id_runs(), 2);
    }

    #[test]
    fn a_wrong_passphrase_is_cached_too_and_fails_every_header_of_the_session() {
        let (right, wrong) = passphrase_vars();
        let mut packing = SessionKeys::with_kdf_params(KeySpec::PassphraseEnv(right), SMALL).unwrap();
        let mut opening = SessionKeys::new(KeySpec::PassphraseEnv(wrong));
        for i in 0..3u8 {
            let (source, keys) = packing.for_new_container(&[i; FILE_SALT_LEN]).unwrap();
            let repr = header(source, [i; FILE_SALT_LEN]);
            let bytes = keys.seal_header(&repr);
            let header = keepsync_core::wire::Header::new_unchecked(&bytes[..]);
            assert!(opening.for_header(&repr).unwrap().verify_header(&header).is_err());
        }
        assert_eq!(opening.argon2id_runs(), 1);
    }

    #[test]
    fn a_key_file_is_read_once_per_session() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        generate_key_file(&path, false).unwrap();
        let mut session = SessionKeys::new(KeySpec::KeyFile(path.clone()));
        session.preflight().unwrap();
        std::fs::remove_file(&path).unwrap();
        let (source, _) = session.for_new_container(&[1; FILE_SALT_LEN]).unwrap();
        assert_eq!(source, KeySource::RawKey);
        assert_eq!(session.argon2id_runs(), 0);
        // A fresh session has no copy, and the file is gone.
        let mut fresh = SessionKeys::new(KeySpec::KeyFile(path));
        assert!(matches!(fresh.preflight(), Err(Error::Io { .. })));
    }

    #[test]
    fn sessions_refuse_the_other_key_kind_and_parameters_readers_reject() {
        let (var, _) = passphrase_vars();
        let argon = KeySource::Argon2id { salt: [1; 16], memory_kib: 64, passes: 1, lanes: 1 };
        let mut by_file = SessionKeys::new(KeySpec::KeyFile("unused".into()));
        assert!(matches!(
            by_file.for_header(&header(argon, [0; 32])),
            Err(Error::KeyKindMismatch { needs_passphrase: true })
        ));
        let mut by_pass = SessionKeys::new(KeySpec::PassphraseEnv(var.clone()));
        assert!(matches!(
            by_pass.for_header(&header(KeySource::RawKey, [0; 32])),
            Err(Error::KeyKindMismatch { needs_passphrase: false })
        ));
        let unset = SessionKeys::new(KeySpec::PassphraseEnv("KEEPSYNC_TEST_UNSET_VAR".into())).preflight();
        assert!(matches!(unset, Err(Error::NoPassphrase(_))));
        for bad in [
            KdfParams { passes: 0, ..SMALL },
            KdfParams { passes: 65, ..SMALL },
            KdfParams { lanes: 0, ..SMALL },
            KdfParams { lanes: 17, memory_kib: 1 << 20, ..SMALL },
            KdfParams { memory_kib: 7, ..SMALL },
            KdfParams { memory_kib: (1 << 20) + 1, ..SMALL },
        ] {
            assert!(
                SessionKeys::with_kdf_params(KeySpec::PassphraseEnv(var.clone()), bad).is_err(),
                "{bad:?}"
            );
        }
        assert_eq!(SessionKeys::new(KeySpec::PassphraseEnv(var)).kdf, KdfParams::default());
    }
}
