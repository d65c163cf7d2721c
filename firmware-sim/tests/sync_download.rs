//! Scenario 3: the device receives a blob from the host into a flash partition, with power
//! cut at every flash operation in turn (then reboot, reconnect, resume), over a clean and a
//! lossy link. After every boot, whatever the CHECKPOINT slots call valid must be exactly a
//! blob the host sent; at the end the new blob is byte-identical.

mod support;

use keepsync_core::compress::CoreDecoder;
use keepsync_core::crypto::SecretKey;
use keepsync_core::sync::Status;
use keepsync_firmware_sim::device::{DeviceError, Layout};
use keepsync_firmware_sim::downlink::{BlobReport, ValidBlob, receive_blob, valid_blob};
use keepsync_firmware_sim::flash::MemFlash;
use keepsync_firmware_sim::link::LinkConfig;
use keepsync_firmware_sim::net::SyncBuffers;
use support::{DownloadHost, PSK, Sim, blake3};

/// 64 KiB of flash, 4 KiB sectors, 4-byte words: CHECKPOINT slots, then a 48 KiB partition.
type Flash = MemFlash<{ 64 * 1024 }, 4096, 4>;
const LAYOUT: Layout = Layout { checkpoint: 0, data: 8 * 1024, data_len: 48 * 1024 };

/// A configuration-like blob: text (LZ4 shrinks it) with a run of noise (sent stored).
fn blob(len: usize, version: u8) -> Vec<u8> {
    let mut x = 0x9E37_79B9_u64 ^ u64::from(version);
    (0..len)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (6000..10_000).contains(&i) { x as u8 } else { b"key=value v#\n"[i % 13] ^ (version & 1) }
        })
        .collect()
}

struct Device {
    flash: Box<Flash>,
    buffers: Box<SyncBuffers>,
    decoder: Box<CoreDecoder>,
    boots: u64,
}

impl Device {
    fn new() -> Self {
        Self { flash: Box::new(Flash::new()), buffers: Box::default(), decoder: Box::default(), boots: 0 }
    }

    /// One boot: receive from `sim`'s host, maybe with a power cut after `cut` flash operations.
    fn boot(&mut self, sim: &mut Sim<DownloadHost>, cut: Option<u64>) -> Result<BlobReport, DeviceError> {
        self.flash.reboot();
        self.boots += 1;
        if let Some(n) = cut {
            self.flash.cut_power_after(n, self.boots * 7919 + n);
        }
        let psk = SecretKey::from_bytes(PSK);
        // Each boot seeds the TRNG differently, as a hardware RNG would differ.
        let seed = 5000 + self.boots;
        receive_blob(
            &mut *self.flash,
            &LAYOUT,
            "firmware.bin",
            &psk,
            seed,
            sim,
            &mut self.buffers,
            &mut *self.decoder,
        )
    }

    fn partition(&self) -> &[u8] {
        &self.flash.contents()[LAYOUT.data as usize..(LAYOUT.data + LAYOUT.data_len) as usize]
    }

    fn valid(&mut self) -> Option<ValidBlob> {
        self.flash.reboot();
        valid_blob(&mut *self.flash, &LAYOUT).unwrap()
    }

    /// Whatever the slots call valid is one of `allowed`, byte for byte.
    fn check_valid_is_one_of(&mut self, allowed: &[&[u8]], when: &str) {
        if let Some(v) = self.valid() {
            let bytes = &self.partition()[..v.size as usize];
            assert_eq!(blake3(bytes), v.hash, "{when}: a valid record over bytes that do not hash to it");
            assert!(allowed.contains(&bytes), "{when}: a blob the host never sent is marked valid");
        }
    }

    /// Boots until the receive completes (power cut only in the first boot).
    fn receive_until_done(
        &mut self,
        sim: &mut Sim<DownloadHost>,
        cut: Option<u64>,
        allowed: &[&[u8]],
    ) -> BlobReport {
        let mut cut = cut;
        for _ in 0..5 {
            match self.boot(sim, cut.take()) {
                Ok(report) => return report,
                Err(DeviceError::PowerCut) => self.check_valid_is_one_of(allowed, "after a power cut"),
                Err(e) => panic!("the device failed: {e:?}"),
            }
        }
        panic!("never completed");
    }
}

fn host(blob: &[u8]) -> DownloadHost {
    DownloadHost::new("firmware.bin", blob.to_vec(), 1_700_000_000)
}

#[test]
fn a_blob_is_received_verified_resent_never_and_replaced_in_place() {
    let v1 = blob(20_000, 1);
    let mut device = Device::new();
    let mut sim = Sim::new(host(&v1), LinkConfig::clean(1));
    let report = device.receive_until_done(&mut sim, None, &[]);
    assert_eq!((report.connections.made, report.blocks_written, report.already_valid), (1, 5, false));
    assert_eq!(&device.partition()[..v1.len()], &v1[..]);
    assert_eq!(device.valid(), Some(ValidBlob { size: v1.len() as u64, hash: blake3(&v1) }));
    assert_eq!(sim.host.results, [Status::Ok]);
    // The same version again: answered with Skip, nothing written.
    let mut sim = Sim::new(host(&v1), LinkConfig::clean(2));
    let report = device.receive_until_done(&mut sim, None, &[]);
    assert!(report.already_valid && report.blocks_written == 0);
    // A new version replaces it.
    let v2 = blob(13_000, 2);
    let mut sim = Sim::new(host(&v2), LinkConfig::clean(3));
    device.receive_until_done(&mut sim, None, &[]);
    assert_eq!(device.valid(), Some(ValidBlob { size: v2.len() as u64, hash: blake3(&v2) }));
    assert_eq!(&device.partition()[..v2.len()], &v2[..]);
}

#[test]
fn a_wrong_whole_file_hash_is_never_marked_valid() {
    let v1 = blob(9000, 1);
    let mut device = Device::new();
    let mut sim = Sim::new(host(&v1), LinkConfig::clean(4));
    sim.host.wrong_end_hash_once = true;
    device.receive_until_done(&mut sim, None, &[&v1]);
    // The first End carried a wrong hash: refused; the re-offer landed.
    assert_eq!(sim.host.results, [Status::HashMismatch, Status::Ok]);
    assert_eq!(device.valid().map(|v| v.hash), Some(blake3(&v1)));
}

/// Flash operations of an uninterrupted replacement of `old` by `new` (clean link).
fn ops_to_replace(old: &[u8], new: &[u8]) -> u64 {
    let mut device = Device::new();
    device.receive_until_done(&mut Sim::new(host(old), LinkConfig::clean(9)), None, &[]);
    device.receive_until_done(&mut Sim::new(host(new), LinkConfig::clean(10)), None, &[]);
    device.flash.ops()
}

#[test]
fn power_cut_at_every_flash_operation_of_a_replacement() {
    let (v1, v2) = (blob(14_000, 1), blob(40_000, 2));
    let ops = ops_to_replace(&v1, &v2);
    assert!(ops >= 30, "too few flash operations to be interesting: {ops}");
    let mut resumed = 0;
    for cut in 0..ops {
        let mut device = Device::new();
        device.receive_until_done(&mut Sim::new(host(&v1), LinkConfig::clean(11)), None, &[]);
        let mut sim = Sim::new(host(&v2), LinkConfig::clean(12 + cut));
        let report = device.receive_until_done(&mut sim, Some(cut), &[&v1, &v2]);
        assert_eq!(&device.partition()[..v2.len()], &v2[..], "cut at {cut}");
        assert_eq!(device.valid().map(|v| v.hash), Some(blake3(&v2)), "cut at {cut}");
        resumed += usize::from(report.resumed_from.is_some());
    }
    // Cuts after the first progress record resume instead of starting over.
    assert!(resumed * 3 > ops as usize, "only {resumed} of {ops} reboots resumed");
    eprintln!(
        "power cut at each of {ops} flash operations: all recovered, {resumed} resumed a durable prefix"
    );
}

#[test]
fn power_cuts_over_a_lossy_link() {
    let (v1, v2) = (blob(14_000, 1), blob(32_000, 2));
    let ops = ops_to_replace(&v1, &v2);
    let (mut points, mut resumed) = (0, 0);
    for seed in 1..=4u64 {
        for cut in (seed % 3..ops).step_by(3) {
            let mut device = Device::new();
            device.receive_until_done(&mut Sim::new(host(&v1), LinkConfig::clean(seed)), None, &[]);
            // 10% of segments hit by a fault, as in the upload test.
            let mut sim = Sim::new(host(&v2), LinkConfig::clean(seed * 100 + cut).faulty(100));
            let report = device.receive_until_done(&mut sim, Some(cut), &[&v1, &v2]);
            resumed += usize::from(report.resumed_from.is_some());
            assert_eq!(&device.partition()[..v2.len()], &v2[..], "seed {seed}, cut at {cut}");
            assert_eq!(device.valid().map(|v| v.hash), Some(blake3(&v2)), "seed {seed}, cut at {cut}");
            let mut randoms: Vec<_> = sim.client_randoms.clone();
            randoms.sort_unstable();
            randoms.dedup();
            assert_eq!(randoms.len(), sim.client_randoms.len(), "a handshake random was reused");
            points += 1;
        }
    }
    assert!(resumed * 3 > points, "only {resumed} of {points} runs resumed a durable prefix");
    eprintln!("{points} power-cut points over a lossy link, 4 seeds: all recovered, {resumed} resumed");
}
