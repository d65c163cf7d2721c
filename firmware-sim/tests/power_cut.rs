//! Power cuts at every flash operation: after a reboot the device finishes the container, the
//! result unpacks to exactly the source, nothing is lost or duplicated, and no (salt, chunk)
//! nonce ever appears in flash with two different ciphertexts.

mod support;

use std::collections::HashMap;

use keepsync_core::budget::{HEADER_LEN, RECORD_HEADER_LEN, TAG_LEN};
use keepsync_core::crypto::SecretKey;
use keepsync_core::wire::Header;
use keepsync_core::wire::Record;
use keepsync_firmware_sim::device::{DeviceError, Layout, Report};
use keepsync_firmware_sim::flash::MemFlash;
use support::{KEY, SensorLog, boot_and_pack, unpack};

/// 192 KiB of flash, 4 KiB sectors, 4-byte words (nRF52-like pages).
type Flash = MemFlash<{ 192 * 1024 }, 4096, 4>;
const LAYOUT: Layout = Layout { checkpoint: 0, data: 2 * 4096, data_len: 184 * 1024 };

fn new_flash() -> Box<Flash> {
    Box::new(Flash::new())
}

fn data(flash: &Flash) -> &[u8] {
    &flash.contents()[LAYOUT.data as usize..(LAYOUT.data + LAYOUT.data_len) as usize]
}

/// Every chunk record visible in a snapshot of DATA, as far as its bytes are present:
/// (salt, index) -> record bytes (a torn record contributes its written prefix).
fn visible_records(data: &[u8]) -> Vec<([u8; 32], u64, Vec<u8>)> {
    let Ok(repr) = Header::new_checked(data).and_then(|h| h.parse()) else { return Vec::new() };
    let mut out = Vec::new();
    let mut pos = HEADER_LEN;
    let mut index = 0;
    while pos + RECORD_HEADER_LEN <= data.len() {
        let Ok(r) = Record::new_checked(&data[pos..]).and_then(|r| r.parse(index, repr.chunk_size())) else {
            break;
        };
        let end = (pos + RECORD_HEADER_LEN + r.body_len + TAG_LEN).min(data.len());
        // Trailing erased bytes of a torn record were never written.
        let mut written = &data[pos..end];
        while written.last() == Some(&0xFF) {
            written = &written[..written.len() - 1];
        }
        out.push((repr.file_salt, index, written.to_vec()));
        if r.is_final || end < pos + RECORD_HEADER_LEN + r.body_len + TAG_LEN {
            break;
        }
        pos = end;
        index += 1;
    }
    out
}

/// Ciphertexts seen per (salt, chunk index) across every snapshot: two observations must be
/// prefix-consistent, or the same nonce sealed two different plaintexts.
#[derive(Default)]
struct NonceLedger(HashMap<([u8; 32], u64), Vec<u8>>);

impl NonceLedger {
    fn observe(&mut self, data: &[u8], when: &str) {
        for (salt, index, bytes) in visible_records(data) {
            let seen = self.0.entry((salt, index)).or_default();
            let n = seen.len().min(bytes.len());
            assert_eq!(
                seen[..n],
                bytes[..n],
                "nonce reuse: chunk {index} under one salt has two ciphertexts ({when})"
            );
            if bytes.len() > seen.len() {
                *seen = bytes;
            }
        }
    }
}

/// Runs one device history until it completes, with a power cut after `cut` flash operations
/// in the first boot (and optionally `second_cut` in the second), the source becoming `after`
/// from the second boot on. Every snapshot of DATA goes through one nonce ledger: what this
/// device ever made visible. Returns the reports of the boots that completed.
fn run(
    cut: Option<u64>,
    second_cut: Option<u64>,
    before: &SensorLog,
    after: &SensorLog,
) -> (Box<Flash>, Vec<Report>) {
    let ledger = &mut NonceLedger::default();
    let mut flash = new_flash();
    let key = SecretKey::from_bytes(KEY);
    let mut reports = Vec::new();
    let cuts = [cut, second_cut];
    for boot in 0..10u64 {
        flash.reboot();
        ledger.observe(data(&flash), "at boot");
        if let Some(Some(n)) = cuts.get(boot as usize) {
            flash.cut_power_after(*n, boot * 7919 + n + 1);
        }
        let source = if boot == 0 { before } else { after };
        match boot_and_pack(&mut *flash, &LAYOUT, &key, 1000 + boot, source) {
            Ok(r) => {
                reports.push(r);
                ledger.observe(data(&flash), "at completion");
                return (flash, reports);
            }
            Err(DeviceError::PowerCut) => {
                assert!(flash.power_was_cut());
                ledger.observe(data(&flash), "after a cut");
            }
            Err(e) => panic!("device failed: {e:?}"),
        }
    }
    panic!("device never completed");
}

fn check_result(flash: &Flash, report: &Report, expected: &[u8]) {
    let container = &data(flash)[..report.container_len as usize];
    assert!(unpack(container).unwrap() == expected, "container does not unpack to the source");
}

/// Flash operations an uninterrupted pack of `log` takes.
fn total_ops(log: &SensorLog) -> u64 {
    let mut flash = new_flash();
    let r = boot_and_pack(&mut *flash, &LAYOUT, &SecretKey::from_bytes(KEY), 1, log).unwrap();
    check_result(&flash, &r, &log.bytes());
    flash.ops()
}

#[test]
fn uninterrupted_pack_unpacks_and_a_second_boot_finds_it_complete() {
    let log = SensorLog { records: 2000, changed_from: None };
    let mut flash = new_flash();
    let key = SecretKey::from_bytes(KEY);
    let r = boot_and_pack(&mut *flash, &LAYOUT, &key, 1, &log).unwrap();
    assert!(r.started_fresh && !r.already_complete);
    check_result(&flash, &r, &log.bytes());
    flash.reboot();
    let again = boot_and_pack(&mut *flash, &LAYOUT, &key, 2, &log).unwrap();
    assert!(again.already_complete);
    assert_eq!(again.container_len, r.container_len);
    assert_eq!(flash.ops(), 0, "a completed container is not rewritten");
}

#[test]
fn power_cut_at_every_flash_operation() {
    // 64 KiB of records: 16 chunks of 4 KiB, several checkpoints.
    let log = SensorLog { records: 2048, changed_from: None };
    let expected = log.bytes();
    let ops = total_ops(&log);
    assert!(ops > 20, "scenario too small to be interesting: {ops} operations");
    let mut resumed = 0;
    for cut in 0..ops {
        let (flash, reports) = run(Some(cut), None, &log, &log);
        let last = reports.last().unwrap();
        check_result(&flash, last, &expected);
        if last.resumed_at.is_some_and(|at| at > 0) {
            resumed += 1;
        }
    }
    // Most cuts come after a checkpoint: the reboot continues instead of starting over.
    assert!(resumed * 2 > ops as usize, "only {resumed} of {ops} reboots resumed");
    eprintln!("power cut at each of {ops} flash operations: all recovered, {resumed} resumed mid-container");
}

#[test]
fn source_changed_after_a_cut_never_reuses_a_nonce() {
    let before = SensorLog { records: 2048, changed_from: None };
    let ops = total_ops(&before);
    // The log changes from record 700 (chunk 5) or from record 1900 (chunk 14, likely past the
    // last checkpoint, so the change is found by comparing re-sealed words).
    for changed in [700, 1900] {
        let after = SensorLog { records: 2048, changed_from: Some(changed) };
        let mut fresh = 0;
        for cut in (0..ops).step_by(3) {
            let (flash, reports) = run(Some(cut), None, &before, &after);
            let last = reports.last().unwrap();
            if last.already_complete {
                // The cut came after completion was recorded: the old container stands.
                check_result(&flash, last, &before.bytes());
            } else {
                check_result(&flash, last, &after.bytes());
                fresh += usize::from(last.started_fresh);
            }
        }
        assert!(fresh > 0, "a changed source must start a new container at least once");
    }
}

#[test]
fn a_second_power_cut_during_recovery_is_survived() {
    let log = SensorLog { records: 1024, changed_from: None };
    let ops = total_ops(&log);
    for cut in (0..ops).step_by(2) {
        for second in [0, 1, 3, 7] {
            let (flash, reports) = run(Some(cut), Some(second), &log, &log);
            check_result(&flash, reports.last().unwrap(), &log.bytes());
        }
    }
}

#[test]
fn a_repeating_rng_is_refused_instead_of_reusing_nonces() {
    let before = SensorLog { records: 2048, changed_from: None };
    let after = SensorLog { records: 2048, changed_from: Some(700) };
    let key = SecretKey::from_bytes(KEY);
    let mut flash = new_flash();
    // First boot packs with the TRNG seeded 5, and is cut after writing several chunks.
    flash.cut_power_after(40, 9);
    assert_eq!(boot_and_pack(&mut *flash, &LAYOUT, &key, 5, &before), Err(DeviceError::PowerCut));
    // The source changed; a broken TRNG replays the same seed, hence the same salt.
    flash.reboot();
    let snapshot = data(&flash).to_vec();
    assert_eq!(boot_and_pack(&mut *flash, &LAYOUT, &key, 5, &after), Err(DeviceError::RngFailure));
    assert!(data(&flash) == snapshot, "nothing may be written when the RNG repeats");
    // A working TRNG recovers.
    let r = boot_and_pack(&mut *flash, &LAYOUT, &key, 6, &after).unwrap();
    check_result(&flash, &r, &after.bytes());
}
