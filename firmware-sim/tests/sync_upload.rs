//! Scenario 2: the device packs two sensor logs into containers in flash (scenario 1), then
//! sends them to a host receiver over the sync protocol, over a clean link and over a seeded
//! lossy one (loss, duplication, reordering, corruption). The host must end up with exactly
//! the bytes in the device's flash, which open with the host's `keepsync unpack` path and with
//! the core's `Unpacker`; every connection must use fresh handshake randoms.

mod support;

use std::collections::HashSet;

use keepsync::crypto::CryptoChoice;
use keepsync::io::{Sink, Source};
use keepsync::keys::KeySpec;
use keepsync_core::crypto::SecretKey;
use keepsync_firmware_sim::device::{Layout, finished_container};
use keepsync_firmware_sim::flash::MemFlash;
use keepsync_firmware_sim::link::LinkConfig;
use keepsync_firmware_sim::net::SyncBuffers;
use keepsync_firmware_sim::uplink::{FlashFile, UploadReport, upload};
use support::{KEY, PSK, SensorLog, Sim, UploadHost, boot_and_pack, unpack};

type Flash = MemFlash<{ 96 * 1024 }, 4096, 4>;
/// Two containers, each with its own CHECKPOINT slots and DATA partition.
const LAYOUTS: [Layout; 2] = [
    Layout { checkpoint: 0, data: 8 * 1024, data_len: 36 * 1024 },
    Layout { checkpoint: 44 * 1024, data: 52 * 1024, data_len: 40 * 1024 },
];
const NAMES: [&str; 2] = ["sensor-a.ks", "sensor-b.ks"];

/// A device with two finished containers; returns the flash, the logs and the file table.
fn device() -> (Box<Flash>, [Vec<u8>; 2], Vec<FlashFile<'static>>) {
    let mut flash = Box::new(Flash::new());
    let key = SecretKey::from_bytes(KEY);
    let logs =
        [SensorLog { records: 3000, changed_from: None }, SensorLog { records: 1200, changed_from: Some(0) }];
    let mut files = Vec::new();
    for (i, (layout, log)) in LAYOUTS.iter().zip(&logs).enumerate() {
        boot_and_pack(&mut *flash, layout, &key, 10 + i as u64, log).unwrap();
        let len = finished_container(&mut *flash, layout).unwrap().expect("the pack completed");
        files.push(FlashFile { path: NAMES[i], start: layout.data, len: len as u32, mtime: 1_700_000_000 });
    }
    (flash, logs.map(|l| l.bytes()), files)
}

fn container<'f>(flash: &'f Flash, file: &FlashFile<'_>) -> &'f [u8] {
    &flash.contents()[file.start as usize..(file.start + file.len) as usize]
}

fn run(flash: &mut Flash, files: &[FlashFile<'_>], sim: &mut Sim<UploadHost>, seed: u64) -> UploadReport {
    let mut buffers = Box::new(SyncBuffers::new());
    let psk = SecretKey::from_bytes(PSK);
    upload(flash, files, "device-7", &psk, seed, sim, &mut buffers).expect("the upload completes")
}

/// The host's copy opened by the host library's unpack path (`keepsync unpack`).
fn host_unpack(container: &[u8]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (input, output, key) = (dir.path().join("in.ks"), dir.path().join("out"), dir.path().join("key"));
    std::fs::write(&input, container).unwrap();
    // The key file format of `keepsync keygen`.
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key, format!("KEEPSYNC-KEY-1 {hex}\n")).unwrap();
    let bar = indicatif::ProgressBar::hidden();
    let sink = Sink::File { path: output.clone(), force: false };
    keepsync::unpack::unpack(
        &Source::File(input),
        &sink,
        &KeySpec::KeyFile(key),
        1,
        None,
        CryptoChoice::Soft,
        &bar,
    )
    .expect("the host opens the device's container");
    std::fs::read(output).unwrap()
}

#[test]
fn containers_upload_over_a_clean_link_and_open_on_the_host() {
    let (mut flash, logs, files) = device();
    assert!(files.iter().all(|f| f.len > 2 * 4096), "several blocks per container: {files:?}");
    let mut sim = Sim::new(UploadHost::default(), LinkConfig::clean(1));
    let report = run(&mut flash, &files, &mut sim, 1);
    eprintln!(
        "containers: {:?} bytes; clean link: {report:?}",
        files.iter().map(|f| f.len).collect::<Vec<_>>()
    );
    assert_eq!(report.connections.made, 1);
    assert_eq!(report.files_done, 2);
    for (file, log) in files.iter().zip(&logs) {
        let got = &sim.host.files[file.path];
        assert!(got[..] == *container(&flash, file), "{}: the host's bytes differ", file.path);
        assert!(host_unpack(got) == *log, "{}: does not unpack to the log", file.path);
    }
    // A second upload: the host has both (same BLAKE3) and answers Skip; no data moves.
    let again = run(&mut flash, &files, &mut sim, 2);
    assert_eq!((again.files_skipped, again.blocks_sent), (2, 0));
}

#[test]
fn containers_upload_over_a_lossy_link_with_reconnects_and_resume() {
    let (mut flash, logs, files) = device();
    let blocks: u32 = files.iter().map(|f| f.len.div_ceil(4096)).sum();
    let mut randoms = HashSet::new();
    let mut resent_less_than_restarting = 0;
    let (mut auth_failures, mut timeouts) = (0, 0);
    for seed in 1..=6u64 {
        // 10% of segments hit: lost, duplicated, reordered or corrupted (2.5% each).
        let mut sim = Sim::new(UploadHost::default(), LinkConfig::clean(seed).faulty(100));
        let report = run(&mut flash, &files, &mut sim, 100 + seed);
        assert!(
            sim.faults.faults() > 0 && report.connections.made > 1,
            "seed {seed}: the link must break connections"
        );
        for (file, log) in files.iter().zip(&logs) {
            let got = &sim.host.files[file.path];
            assert!(got[..] == *container(&flash, file), "seed {seed}: {} differs", file.path);
            assert!(unpack(got).unwrap() == *log, "seed {seed}: {} does not authenticate", file.path);
        }
        assert!(sim.host.partial.is_empty());
        // The durable prefix never shrinks: each offer of a file resumes at least where the
        // one before did.
        for name in NAMES {
            let offsets: Vec<u64> = sim.host.resumes.iter().filter(|(p, _)| p == name).map(|r| r.1).collect();
            assert!(offsets.is_sorted(), "seed {seed}: {name} lost durable progress: {offsets:?}");
            assert!(
                offsets.iter().any(|&o| o > 0) || offsets.len() == 1,
                "seed {seed}: {name} never resumed"
            );
        }
        // Resume: a broken connection costs only the blocks not yet durable at the host,
        // so the device sends far fewer blocks than a restart-from-zero per connection would.
        auth_failures += report.connections.auth_failed;
        timeouts += report.connections.timed_out;
        if report.blocks_sent < blocks * report.connections.made / 2 {
            resent_less_than_restarting += 1;
        }
        // Fresh randoms on both sides of every connection (fresh session keys, so the frame
        // counters restarting at 0 never repeat a nonce under a key).
        assert_eq!(sim.client_randoms.len(), report.connections.made as usize);
        for r in sim.client_randoms.iter().chain(&sim.server_randoms) {
            assert!(randoms.insert(*r), "seed {seed}: a handshake random was used twice");
        }
        eprintln!(
            "seed {seed}: {:?}, {} blocks sent for {blocks}, faults {:?}, host hang-ups {:?}",
            report.connections,
            report.blocks_sent,
            sim.faults,
            sim.host_errors.iter().map(|e| format!("{e:?}")).collect::<std::collections::BTreeSet<_>>()
        );
    }
    // Both ways a lossy link breaks a connection, as seen by the device, were exercised.
    assert!(auth_failures > 0 && timeouts > 0, "auth failures {auth_failures}, timeouts {timeouts}");
    assert!(
        resent_less_than_restarting >= 5,
        "resume must save resending ({resent_less_than_restarting} of 6)"
    );
}
