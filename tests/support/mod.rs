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

/// Runs `keepsync ARGS` in `dir` with `env` set and `stdin` piped in.
pub fn keepsync(dir: &Path, args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keepsync"));
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

/// Mixed, realistic-ish data: text lines, little-endian counters (binary tables) and noise.
pub fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        match x % 4 {
            0 => out.extend_from_slice(
                format!("line {} of the log: status=ok latency={}us\n", out.len(), x % 997).as_bytes(),
            ),
            1 => out.extend_from_slice(&(out.len() as u32).to_le_bytes()),
            2 => out.extend_from_slice(&x.to_le_bytes()),
            _ => out.extend_from_slice(b"\0\0\0\0\0\0\0\0\x7fELF\x02\x01\x01\0"),
        }
    }
    out.truncate(len);
    out
}

/// A temp dir with a fresh key file named `key`.
pub fn dir_with_key() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ks(dir.path(), &["keygen", "-o", "key"]).ok();
    dir
}
