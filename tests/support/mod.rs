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

#[allow(unused_imports)] // not every test file needs sample data
pub use keepsync::sample::mixed;

/// A temp dir with a fresh key file named `key`.
pub fn dir_with_key() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ks(dir.path(), &["keygen", "-o", "key"]).ok();
    dir
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
    use keepsync_core::sync::{Direction, FilterRules, Message};
    let open = Message::Open {
        path,
        direction: Direction::Push,
        delete: false,
        replace: false,
        checksum: false,
        dry_run: false,
        max_files: 32,
        session: [0; 16],
        part_size: 0,
        delete_excluded: false,
        filters: FilterRules::EMPTY,
    };
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
