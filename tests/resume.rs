//! Interrupted packs resume at the last durable chunk, re-verify the source, and never seal
//! different plaintext under a nonce already used.

mod support;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use keepsync_core::budget::packer_workspace_len;
use keepsync_core::checkpoint::Checkpoint;
use keepsync_core::crypto::{FileKeys, RustCrypto};
use keepsync_core::stream::Packer;
use keepsync_core::wire::Header;
use support::*;

const CS: usize = 4096;

/// Recreates what a run killed after sealing `written` bytes would leave: the partial file
/// holding the first `written` bytes of `container`, and a checkpoint at chunk `k`.
fn simulate_crash(d: &Path, source: &[u8], container: &[u8], k: usize, written: usize) {
    let repr = Header::new_checked(container).unwrap().parse().unwrap();
    let master = keepsync::keys::read_key_file(&d.join("key")).unwrap();
    let keys = FileKeys::derive(&master, &repr.file_salt);
    let mut ws = vec![0u8; packer_workspace_len(CS)];
    // The CLI's default codec plan (`--codec auto`), as the crashed run used it.
    let encoder = keepsync::codec::CodecPlan::new(keepsync::codec::CodecChoice::Auto).encoder();
    let mut p = Packer::new(&RustCrypto, &keys, &repr, encoder, &mut ws).unwrap().track_source();
    let mut out = Vec::new();
    let mut input = &source[..k * CS + 1];
    while !input.is_empty() {
        let n = p.write(input).unwrap();
        input = &input[n..];
        let o = p.output();
        let len = o.len();
        out.extend_from_slice(o);
        p.consume(len);
    }
    let ckpt = p.checkpoint().unwrap();
    assert_eq!(ckpt.chunks_done, k as u64);
    assert!(out[..] == container[..out.len()], "packing is deterministic for a given salt");
    assert!(written >= out.len());
    let mut buf = [0u8; Checkpoint::MAX_ENCODED_LEN];
    std::fs::write(d.join(".c.ks.keepsync-ckpt"), ckpt.encode(&mut buf).unwrap()).unwrap();
    std::fs::write(d.join(".c.ks.keepsync-partial"), &container[..written]).unwrap();
}

fn setup() -> (tempfile::TempDir, Vec<u8>, Vec<u8>) {
    let dir = dir_with_key();
    let d = dir.path();
    let source = mixed(40 * CS + 123, 21);
    std::fs::write(d.join("in"), &source).unwrap();
    ks(d, &["pack", "in", "-o", "full.ks", "-k", "key", "--chunk-size", "4KiB"]).ok();
    let container = std::fs::read(d.join("full.ks")).unwrap();
    (dir, source, container)
}

fn pack_again(d: &Path) -> Run {
    let r = ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--chunk-size", "4KiB", "--json"]);
    r.ok();
    r
}

/// Container offset just past the first `k` chunk records.
fn after_records(container: &[u8], k: usize) -> usize {
    if k == 0 { 112 } else { record_ranges(container)[k - 1].end }
}

fn salt(container: &[u8]) -> &[u8] {
    &container[16..48]
}

#[test]
fn unchanged_source_resumes_and_produces_the_identical_container() {
    let (dir, source, container) = setup();
    let d = dir.path();
    // Crashed after chunk 10 was checkpointed and 5 more chunks (plus a torn one) were written.
    let written = after_records(&container, 15) + 7;
    simulate_crash(d, &source, &container, 10, written);
    let r = pack_again(d);
    assert!(r.stderr.contains("resuming the interrupted pack"), "{}", r.stderr);
    assert_eq!(r.json()["resumed_at"], 10 * CS);
    assert!(std::fs::read(d.join("c.ks")).unwrap() == container, "resumed container differs");
    assert_eq!(listing(d), ["c.ks", "full.ks", "in", "key"]);
}

#[test]
fn source_changed_before_the_checkpoint_starts_over_with_a_fresh_salt() {
    let (dir, mut source, container) = setup();
    let d = dir.path();
    simulate_crash(d, &source, &container, 10, container.len() / 2);
    source[100] ^= 1;
    std::fs::write(d.join("in"), &source).unwrap();
    let r = pack_again(d);
    assert!(r.stderr.contains("the source changed"), "{}", r.stderr);
    assert_eq!(r.json()["resumed_at"], 0);
    let new = std::fs::read(d.join("c.ks")).unwrap();
    assert_ne!(salt(&new), salt(&container));
    ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key"]).ok();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), source);
}

#[test]
fn source_changed_after_the_checkpoint_is_caught_before_any_nonce_is_reused() {
    let (dir, mut source, container) = setup();
    let d = dir.path();
    // The interrupted run wrote chunks 10..30 past its checkpoint at chunk 10. Chunk 20 of the
    // source now differs: resealing it under the old key would reuse chunk 20's nonce.
    simulate_crash(d, &source, &container, 10, after_records(&container, 30));
    source[20 * CS + 7] ^= 1;
    std::fs::write(d.join("in"), &source).unwrap();
    let r = pack_again(d);
    assert!(r.stderr.contains("resuming"), "{}", r.stderr);
    assert!(r.stderr.contains("starting over with a fresh salt"), "{}", r.stderr);
    let new = std::fs::read(d.join("c.ks")).unwrap();
    assert_ne!(salt(&new), salt(&container));
    ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key"]).ok();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), source);
}

#[test]
fn damaged_checkpoint_or_other_key_starts_over() {
    let (dir, source, container) = setup();
    let d = dir.path();
    simulate_crash(d, &source, &container, 10, container.len() / 2);
    let ck = d.join(".c.ks.keepsync-ckpt");
    let mut bytes = std::fs::read(&ck).unwrap();
    bytes[10] ^= 1;
    std::fs::write(&ck, bytes).unwrap();
    let r = pack_again(d);
    assert!(r.stderr.contains("checkpoint is damaged"), "{}", r.stderr);
    std::fs::remove_file(d.join("c.ks")).unwrap();

    simulate_crash(d, &source, &container, 10, container.len() / 2);
    std::fs::rename(d.join("key"), d.join("key.old")).unwrap();
    ks(d, &["keygen", "-o", "key"]).ok();
    let r = pack_again(d);
    assert!(r.stderr.contains("made with another key"), "{}", r.stderr);
    ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key"]).ok();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), source);
}

#[test]
fn a_run_stopped_before_its_first_checkpoint_says_why_it_starts_over() {
    let (dir, source, container) = setup();
    let d = dir.path();
    std::fs::write(d.join(".c.ks.keepsync-partial"), &container[..after_records(&container, 3)]).unwrap();
    let r = pack_again(d);
    assert!(r.stderr.contains("stopped before its first checkpoint"), "{}", r.stderr);
    assert!(r.stderr.contains("--checkpoint-every"), "{}", r.stderr);
    assert_eq!(r.json()["resumed_at"], 0);
    ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key"]).ok();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), source);
}

#[test]
fn killed_pack_resumes_where_it_stopped() {
    let dir = dir_with_key();
    let d = dir.path();
    let source = mixed(48 << 20, 99);
    std::fs::write(d.join("in"), &source).unwrap();
    let mut child = command()
        .current_dir(d)
        .args(["pack", "in", "-o", "c.ks", "-k", "key", "--checkpoint-every", "256KiB", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ckpt = d.join(".c.ks.keepsync-ckpt");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ckpt.exists() {
        assert!(Instant::now() < deadline, "no checkpoint appeared");
        assert!(child.try_wait().unwrap().is_none(), "pack finished before it could be interrupted");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap(); // SIGKILL: no destructor runs, exactly like a crash
    child.wait().unwrap();
    assert!(!d.join("c.ks").exists(), "no output under the real name before completion");
    assert!(d.join(".c.ks.keepsync-partial").exists());
    let r = ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--json"]);
    r.ok();
    let resumed_at = r.json()["resumed_at"].as_u64().unwrap();
    assert!(resumed_at > 0 && resumed_at < source.len() as u64, "resumed at {resumed_at}");
    ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key"]).ok();
    assert!(std::fs::read(d.join("out")).unwrap() == source);
    assert_eq!(listing(d), ["c.ks", "in", "key", "out"]);
}
