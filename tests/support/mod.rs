//! Helpers for the end-to-end tests: run the real `keepsync` binary and a `keepsync serve`, make
//! test data, hand-make protocol frames.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What one run of the binary did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "expected success, stderr:\n{}", self.stderr);
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.stdout).expect("stdout is JSON")
    }
}

/// The `keepsync` binary as every test runs it: without a controlling terminal, and blind to
/// the user's own config file (a test that wants one sets `KEEPSYNC_CONFIG`).
pub fn command() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keepsync"));
    without_terminal(&mut cmd);
    cmd.env("KEEPSYNC_CONFIG", "");
    cmd
}

/// Runs `keepsync ARGS` in `dir` with `env` set and `stdin` piped in.
pub fn keepsync(dir: &Path, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
    let mut cmd = command();
    cmd.current_dir(dir).args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() });
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn keepsync");
    if let Some(bytes) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let out = child.wait_with_output().expect("wait for keepsync");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// Runs `cmd` in a session of its own, without a controlling terminal, so a run that would
/// ask for a passphrase fails as it does in CI rather than waiting for someone to type,
/// whether or not the tests were started from a terminal.
#[allow(unsafe_code)] // pre_exec is unsafe to call; the closure only calls setsid
pub fn without_terminal(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| if libc::setsid() == -1 { Err(std::io::Error::last_os_error()) } else { Ok(()) });
    }
}

/// Shorthand for runs without stdin or environment.
pub fn ks(dir: &Path, args: &[&str]) -> Run {
    keepsync(dir, args, None, &[])
}

/// Sorted names of the entries in `dir` (hidden ones included).
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[allow(unused_imports)] // not every test file needs sample data
pub use keepsync::sample::mixed;

/// A temp dir with a fresh key file named `key`.
pub fn dir_with_key() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ks(dir.path(), &["keygen", "-o", "key"]).ok();
    dir
}

/// The byte ranges of a container's chunk records (each a 12-byte header, its body and a
/// 16-byte tag, after the 112-byte file header), as FORMAT.md lays them out.
pub fn record_ranges(container: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut pos = 112;
    while pos + 4 <= container.len() {
        let body = u32::from_le_bytes(container[pos..pos + 4].try_into().unwrap()) as usize;
        ranges.push(pos..pos + 12 + body + 16);
        pos += 12 + body + 16;
    }
    ranges
}

/// A running `keepsync serve` whose log is collected.
pub struct Server {
    pub child: Child,
    pub addr: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start(dir: &Path, root: &str, listen: &str, extra: &[&str]) -> Self {
        let mut cmd = command();
        cmd.args(["serve", "--root", root, "--listen", listen, "--psk-file", "psk"]).args(extra);
        Self::spawn(dir, cmd)
    }

    /// Runs `cmd` (a `keepsync serve`, maybe wrapped) in `dir`.
    pub fn spawn(dir: &Path, mut cmd: Command) -> Self {
        let mut child = cmd
            .current_dir(dir)
            .env("XDG_CACHE_HOME", dir.join("server-cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keepsync serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().expect("serve prints its address").unwrap();
        let addr = first.rsplit(" on ").next().unwrap().to_owned();
        let log = Arc::new(Mutex::new(first + "\n"));
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        Self { child, addr, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("ks://{}/{path}", self.addr)
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The log once it has at least `n` lines containing `needle` (a connection's line comes
    /// after its client may have exited: waiting on it, not on time, keeps tests exact).
    pub fn log_with(&self, needle: &str, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log = self.log();
            if log.lines().filter(|l| l.contains(needle)).count() >= n {
                return log;
            }
            assert!(Instant::now() < deadline, "fewer than {n} lines with {needle:?} in the log:\n{log}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The sealed frame a client would send as its sealed frame number `counter` if its message
/// encoded to `plaintext`: for handing a server what no client of this build sends (the
/// core's own encoder refuses it). `client_hello` and `server_hello` are the two hello frames
/// as sent (with their length prefixes).
pub fn seal_as_client(
    psk: &keepsync_core::crypto::SecretKey,
    client_hello: &[u8],
    server_hello: &[u8],
    counter: u64,
    plaintext: &[u8],
) -> Vec<u8> {
    use keepsync_core::crypto::session::{SessionSecrets, frame_nonce};
    use keepsync_core::crypto::{ChunkCipher, CryptoProvider, RustCrypto, SecretKey};
    let mut th = ring::digest::Context::new(&ring::digest::SHA256);
    th.update(&client_hello[4..]);
    th.update(&server_hello[4..48]);
    let th: [u8; 32] = th.finish().as_ref().try_into().unwrap();
    let random = |hello: &[u8]| -> [u8; 32] { hello[16..48].try_into().unwrap() };
    let secrets = SessionSecrets::derive(psk, &random(client_hello), &random(server_hello), &th);
    let cipher = RustCrypto.aes256gcm(&SecretKey::from_bytes(secrets.c2s));
    let len = ((plaintext.len() + 16) as u32).to_le_bytes();
    let mut body = plaintext.to_vec();
    let tag = cipher.seal_in_place(&frame_nonce(counter), &len, &mut body);
    [&len[..], &body, &tag].concat()
}

/// The postcard bytes of an `Open` for `path` (a push, nothing else asked) whose rule list is
/// `rules` as they stand, checked or not.
pub fn open_with_raw_rules(path: &str, rules: &[u8]) -> Vec<u8> {
    use keepsync_core::sync::Direction;
    use keepsync_core::sync::open::OpenParams;
    let open = OpenParams::new(Direction::Push, 32).message(path);
    let mut buf = vec![0u8; 512 + path.len()];
    let n = postcard::to_slice(&open, &mut buf).unwrap().len();
    // The rule list is the last field: its (empty) length byte goes, the rules come instead.
    assert_eq!(buf[n - 1], 0);
    let mut len = Vec::new();
    let mut l = rules.len();
    while l >= 0x80 {
        len.push((l as u8 & 0x7f) | 0x80);
        l >>= 7;
    }
    len.push(l as u8);
    [&buf[..n - 1], &len, rules].concat()
}
