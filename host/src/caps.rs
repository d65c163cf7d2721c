//! `keepsync caps`: what this machine offers KeepSync, with quick measurements.
//!
//! Each measurement seals (or opens) 64 KiB chunks of deterministic mixed data on one core for
//! about a quarter of a second: enough to rank codecs and backends, not a benchmark (use
//! `benches/compare.sh` for that).

use std::time::{Duration, Instant};

use keepsync_core::budget::{RECORD_HEADER_LEN, TAG_LEN, compress_bound};
use keepsync_core::compress::Encoder;
use keepsync_core::crypto::{FileKeys, SecretKey};
use keepsync_core::stream::{open_chunk, seal_chunk};
use keepsync_core::wire::Record;
use serde::Serialize;

use crate::codec::{CodecChoice, CodecPlan, HostDecoder};
use crate::crypto::{CryptoChoice, cpu_crypto_features, hardware_aes};
use crate::keys::{DEFAULT_KDF_LANES, DEFAULT_KDF_MEMORY_KIB, DEFAULT_KDF_PASSES, KDF_TARGET, calibrate};

const CHUNK: usize = 64 << 10;

/// One measured throughput.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    /// What was measured (`lz4`, `rustcrypto`, ...).
    pub name: &'static str,
    /// Plaintext MB/s (10^6 bytes) when sealing, one core.
    pub seal_mb_per_s: f64,
    /// Plaintext MB/s when opening, one core.
    pub open_mb_per_s: f64,
    /// Container bytes per plaintext byte on the sample (1.0 + framing when stored).
    pub ratio: f64,
}

/// The report (also the `--json` output).
#[derive(Debug, Clone, Serialize)]
pub struct Caps {
    /// keepsync's version.
    pub version: &'static str,
    /// Cores this process may use (the default for --threads).
    pub cores: usize,
    /// Total memory in bytes, if known.
    pub memory_bytes: Option<u64>,
    /// CPU model, if known.
    pub cpu: Option<String>,
    /// CPU features that matter to AES-GCM.
    pub cpu_crypto_features: Vec<&'static str>,
    /// Whether AES and carry-less multiply run in hardware.
    pub hardware_aes: bool,
    /// The AES-GCM backend `--crypto auto` uses.
    pub default_crypto: &'static str,
    /// Codec speeds (with the default AES-GCM backend).
    pub codecs: Vec<Speed>,
    /// AES-GCM backend speeds (no compression).
    pub crypto: Vec<Speed>,
    /// Seconds one Argon2id derivation takes with the parameters new passphrase containers
    /// get on this machine (passes calibrated to about 0.5 s).
    pub argon2id_seconds: f64,
    /// Those parameters: memory KiB, passes, lanes.
    pub argon2id_params: (u32, u32, u32),
}

/// Runs `f` repeatedly for about `budget` and returns MB/s of `bytes` per call.
fn rate(budget: Duration, bytes: usize, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut calls = 0u64;
    while calls < 3 || start.elapsed() < budget {
        f();
        calls += 1;
    }
    (calls as f64 * bytes as f64) / start.elapsed().as_secs_f64() / 1e6
}

fn measure(name: &'static str, crypto: CryptoChoice, mut encoder: impl Encoder, budget: Duration) -> Speed {
    let keys = FileKeys::derive(&SecretKey::from_bytes([7; 32]), &[3; 32]);
    let cipher = crypto.cipher(&keys);
    let plain = crate::sample::mixed(CHUNK, 42);
    let mut record = vec![0u8; RECORD_HEADER_LEN + compress_bound(CHUNK) + TAG_LEN];
    let seal = rate(budget, CHUNK, || {
        seal_chunk(&cipher, &mut encoder, 1, false, &plain, &mut record);
    });
    let repr = seal_chunk(&cipher, &mut encoder, 1, false, &plain, &mut record);
    let sealed = record[..repr.record_len()].to_vec();
    let parsed = Record::new_checked(&sealed[..]).and_then(|r| r.parse(1, CHUNK)).expect("own record parses");
    let mut decoder = HostDecoder::new();
    let mut out = vec![0u8; CHUNK];
    let open = rate(budget, CHUNK, || {
        record[..sealed.len()].copy_from_slice(&sealed);
        open_chunk(&cipher, &mut decoder, 1, &parsed, &mut record[..sealed.len()], &mut out)
            .expect("own record opens");
    });
    Speed { name, seal_mb_per_s: seal, open_mb_per_s: open, ratio: sealed.len() as f64 / CHUNK as f64 }
}

/// Total memory in bytes (Linux `/proc/meminfo`), if known.
pub fn meminfo_total() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

/// The CPU model name (Linux `/proc/cpuinfo`), if known.
pub fn cpu_model() -> Option<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// Measures everything, spending about `budget` per measurement.
pub fn caps(budget: Duration) -> Caps {
    let codecs = [
        ("store", CodecChoice::None),
        ("lz4", CodecChoice::Lz4),
        ("zstd", CodecChoice::Zstd),
        ("auto", CodecChoice::Auto),
        ("deflate", CodecChoice::Deflate),
    ]
    .into_iter()
    .map(|(name, choice)| measure(name, CryptoChoice::Auto, CodecPlan::new(choice).encoder(), budget))
    .collect();
    let store = || CodecPlan::new(CodecChoice::None).encoder();
    let crypto = vec![
        measure("rustcrypto", CryptoChoice::Soft, store(), budget),
        measure("ring", CryptoChoice::Hw, store(), budget),
    ];
    // What `pack` would choose, and what one derivation then costs, from the same timings
    // (a derivation of its own would add half a second).
    let (passes, argon2id_seconds) = calibrate(DEFAULT_KDF_MEMORY_KIB, DEFAULT_KDF_LANES, KDF_TARGET)
        .unwrap_or((DEFAULT_KDF_PASSES, f64::NAN));
    Caps {
        version: env!("CARGO_PKG_VERSION"),
        cores: crate::pack::default_threads(),
        memory_bytes: meminfo_total(),
        cpu: cpu_model(),
        cpu_crypto_features: cpu_crypto_features(),
        hardware_aes: hardware_aes(),
        default_crypto: CryptoChoice::Auto.provider_name(),
        codecs,
        crypto,
        argon2id_seconds,
        argon2id_params: (DEFAULT_KDF_MEMORY_KIB, passes, DEFAULT_KDF_LANES),
    }
}

impl std::fmt::Display for Caps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::units::human_bytes as h;
        writeln!(f, "keepsync {}", self.version)?;
        writeln!(f, "cores:         {} (default --threads)", self.cores)?;
        writeln!(f, "memory:        {}", self.memory_bytes.map_or("unknown".into(), h))?;
        writeln!(f, "cpu:           {}", self.cpu.as_deref().unwrap_or("unknown"))?;
        writeln!(
            f,
            "aes-gcm:       {} in hardware; features: {}",
            if self.hardware_aes { "AES and carry-less multiply" } else { "no AES instructions: software" },
            if self.cpu_crypto_features.is_empty() {
                "none".into()
            } else {
                self.cpu_crypto_features.join(" ")
            }
        )?;
        writeln!(f, "default crypto: {} (--crypto auto)", self.default_crypto)?;
        writeln!(f, "\none core, 64 KiB chunks of mixed data     seal MB/s   open MB/s   size")?;
        for s in self.codecs.iter().chain(&self.crypto) {
            let kind = if self.crypto.iter().any(|c| c.name == s.name) { "crypto" } else { "codec" };
            writeln!(
                f,
                "  {kind:<7}{:<34}{:>9.0}   {:>9.0}   {:.3}",
                s.name, s.seal_mb_per_s, s.open_mb_per_s, s.ratio
            )?;
        }
        let (m, t, p) = self.argon2id_params;
        write!(
            f,
            "\nargon2id:      {:.2} s per passphrase derivation ({}, {t} passes, {p} lane)",
            self.argon2id_seconds,
            h(u64::from(m) * 1024)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_measure_every_codec_and_backend() {
        let c = caps(Duration::from_millis(5));
        assert_eq!(
            c.codecs.iter().map(|s| s.name).collect::<Vec<_>>(),
            ["store", "lz4", "zstd", "auto", "deflate"]
        );
        assert_eq!(c.crypto.len(), 2);
        assert!(c.codecs.iter().chain(&c.crypto).all(|s| s.seal_mb_per_s > 0.0 && s.open_mb_per_s > 0.0));
        // The sample compresses: every real codec beats storing it.
        let store = c.codecs[0].ratio;
        assert!(store > 1.0 && c.codecs[1..].iter().all(|s| s.ratio < store), "{:?}", c.codecs);
        assert!(c.cores >= 1 && c.argon2id_seconds > 0.0);
        let text = c.to_string();
        assert!(text.contains("zstd") && text.contains("ring") && text.contains("argon2id"));
    }
}
