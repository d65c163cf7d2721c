//! The tamper matrix through the real binary: every damaged container is rejected with its own
//! error, exit code 65, and no output file (nor partial file) is left behind.

mod support;

use std::path::Path;

use support::*;

const CS: usize = 4096;

struct Sample {
    dir: tempfile::TempDir,
    container: Vec<u8>,
    chunks: Vec<std::ops::Range<usize>>,
}

fn sample() -> Sample {
    let dir = dir_with_key();
    let d = dir.path();
    std::fs::write(d.join("in"), mixed(3 * CS + 100, 5)).unwrap();
    ks(d, &["pack", "in", "-o", "good.ks", "-k", "key", "--chunk-size", "4KiB"]).ok();
    let container = std::fs::read(d.join("good.ks")).unwrap();
    let chunks = record_ranges(&container);
    assert_eq!(chunks.len(), 4);
    Sample { dir, container, chunks }
}

/// Unpacks `bytes` with one and with four workers, and checks the error, the exit code and
/// that nothing was left behind: a parallel run reports the same first fault.
fn rejects(d: &Path, bytes: &[u8], needle: &str, what: &str) {
    std::fs::write(d.join("bad.ks"), bytes).unwrap();
    let before = listing(d);
    for threads in ["1", "4"] {
        let r = ks(d, &["unpack", "bad.ks", "-o", "out", "-k", "key", "--threads", threads]);
        assert_eq!(r.code, 65, "{what} (-j{threads}): {}", r.stderr);
        assert!(r.stderr.contains(needle), "{what} (-j{threads}): expected `{needle}` in:\n{}", r.stderr);
        assert!(r.stderr.contains("hint:"), "{what} (-j{threads}): no hint in:\n{}", r.stderr);
        assert_eq!(listing(d), before, "{what} (-j{threads}): output left behind");
    }
}

impl Sample {
    fn spliced(&self, order: &[usize]) -> Vec<u8> {
        let mut v = self.container[..112].to_vec();
        for &i in order {
            v.extend_from_slice(&self.container[self.chunks[i].clone()]);
        }
        v
    }
}

#[test]
fn every_header_byte_flipped() {
    let s = sample();
    for i in 0..112 {
        let mut bad = s.container.clone();
        bad[i] ^= 0x40;
        let needle = match i {
            0..=7 => "not a KeepSync container",
            8 => "format version",
            // Reserved bytes, and KDF fields that must be zero in a raw-key header.
            9..=15 | 48..=79 => "header",
            _ => "wrong key or passphrase, or the header was altered",
        };
        rejects(s.dir.path(), &bad, needle, &format!("header byte {i}"));
    }
}

#[test]
fn every_chunk_damaged_truncated_dropped_duplicated_or_swapped() {
    let s = sample();
    let d = s.dir.path();
    for (i, r) in s.chunks.iter().enumerate() {
        let mut bad = s.container.clone();
        bad[r.start + 12] ^= 1;
        rejects(d, &bad, &format!("chunk {i} failed authentication"), &format!("body of chunk {i} flipped"));
        let mut bad = s.container.clone();
        bad[r.end - 1] ^= 1;
        rejects(d, &bad, &format!("chunk {i} failed authentication"), &format!("tag of chunk {i} flipped"));
        rejects(d, &s.container[..r.end - 1], "truncated", &format!("chunk {i} cut short"));
        rejects(d, &s.container[..r.start + 5], "truncated", &format!("record header {i} cut short"));
    }
    rejects(d, &s.container[..s.chunks[2].end], "truncated", "final chunk missing");
    rejects(d, &s.container[..50], "truncated", "header cut short");
    rejects(d, &s.spliced(&[0, 2, 3]), "chunk 1 failed authentication", "chunk 1 dropped");
    rejects(d, &s.spliced(&[0, 0, 1, 2, 3]), "chunk 1 failed authentication", "chunk 0 duplicated");
    rejects(d, &s.spliced(&[1, 0, 2, 3]), "chunk 0 failed authentication", "chunks 0 and 1 swapped");
    rejects(d, &s.spliced(&[0, 1, 3, 2]), "chunk 2 failed authentication", "chunks 2 and 3 swapped");
    let mut trailing = s.container.clone();
    trailing.extend_from_slice(b"garbage");
    rejects(d, &trailing, "after the final chunk", "trailing garbage");
    rejects(d, &s.spliced(&[0, 1, 2, 3, 3]), "after the final chunk", "final chunk appended twice");
}

#[test]
fn wrong_key_and_wrong_kind_of_key() {
    let s = sample();
    let d = s.dir.path();
    ks(d, &["keygen", "-o", "other"]).ok();
    let before = listing(d);
    let r = ks(d, &["unpack", "good.ks", "-o", "out", "-k", "other"]);
    assert_eq!(r.code, 65);
    assert!(r.stderr.contains("wrong key or passphrase"), "{}", r.stderr);
    let r = keepsync(d, &["unpack", "good.ks", "-o", "out", "--passphrase-env", "PW"], None, &[("PW", "x")]);
    assert_eq!(r.code, 65);
    assert!(r.stderr.contains("needs a key file"), "{}", r.stderr);
    assert_eq!(listing(d), before);
}

#[test]
fn stdout_stops_at_the_first_bad_chunk() {
    let s = sample();
    let mut bad = s.container.clone();
    bad[s.chunks[2].start + 20] ^= 1;
    let r = keepsync(s.dir.path(), &["unpack", "-", "-o", "-", "-k", "key"], Some(&bad), &[]);
    assert_eq!(r.code, 65);
    // Only the two chunks that authenticated were released.
    assert_eq!(r.stdout, mixed(3 * CS + 100, 5)[..2 * CS]);
}
