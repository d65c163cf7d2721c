//! Helpers for the end-to-end tests: run the real `keepsync` binary, make test data.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

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
