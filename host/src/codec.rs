//! Codec choice on the host: zstd (host-only), the adaptive `auto` choice, and detection of
//! already-compressed files.
//!
//! `auto` decides per chunk: a byte-entropy estimate over a sample of the chunk says whether
//! compression can pay; chunks that look random (already compressed or encrypted) are stored
//! without spending a compressor on them, the rest go to zstd (or LZ4 for device-readable
//! output). Files whose first bytes or extension say they are already compressed (zip, gzip,
//! zstd, xz, jpeg, png, mp4, ...) are stored whole. Whatever the choice, a chunk that does not
//! shrink is stored: nothing is ever expanded.

use std::path::Path;

use keepsync_core::compress::{
    Codec, CoreDecoder, DecodeError, Decoder, DeflateEncoder, Encoder, Lz4Encoder, StoreEncoder,
};
use zstd::zstd_safe;

/// What the user asked for with `--codec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CodecChoice {
    /// Per chunk: store what looks incompressible, zstd the rest (LZ4 with --for-device).
    Auto,
    /// Store every chunk (encrypt only).
    None,
    /// LZ4: fastest, modest ratio; readable by the core on devices.
    Lz4,
    /// DEFLATE level 6: slow, good ratio; readable by the core on devices without an allocator.
    Deflate,
    /// Zstandard (level from --level, default 1): fast with a good ratio; host-only.
    Zstd,
}

/// Default zstd level: the best speed/ratio trade on a 2-core machine (see docs/BENCHMARKS.md).
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

/// Above this many bits per byte (of 8) a chunk sample looks random: compressing it would
/// cost CPU and save nothing. Uniform random 4 KiB samples measure about 7.95.
pub const STORE_ENTROPY_BITS: f64 = 7.5;

/// The codec decision for one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodecPlan {
    /// The user's choice.
    pub choice: CodecChoice,
    /// zstd level (1..=19).
    pub level: i32,
    /// Only codecs `keepsync-core` can decode (no zstd).
    pub for_device: bool,
    /// The file was detected as already compressed (this format): store everything.
    pub stored_format: Option<&'static str>,
}

impl CodecPlan {
    /// A plan for `choice` with default settings.
    pub fn new(choice: CodecChoice) -> Self {
        Self { choice, level: DEFAULT_ZSTD_LEVEL, for_device: false, stored_format: None }
    }

    /// Rejects combinations a device could not read.
    pub fn check(&self) -> Result<(), String> {
        if self.for_device && self.choice == CodecChoice::Zstd {
            return Err("--codec zstd cannot be read by keepsync-core on devices: drop --for-device, \
                        or use --codec auto, lz4 or deflate"
                .into());
        }
        if !(1..=19).contains(&self.level) {
            return Err(format!("--level {} is outside zstd's 1..=19", self.level));
        }
        Ok(())
    }

    /// A fresh encoder (one per worker).
    pub fn encoder(&self) -> HostEncoder {
        if self.stored_format.is_some() && self.choice == CodecChoice::Auto {
            return HostEncoder::Store(StoreEncoder);
        }
        match self.choice {
            CodecChoice::None => HostEncoder::Store(StoreEncoder),
            CodecChoice::Lz4 => HostEncoder::Lz4(Box::default()),
            CodecChoice::Deflate => HostEncoder::Deflate(DeflateEncoder::new(6)),
            CodecChoice::Zstd => HostEncoder::Zstd(ZstdEncoder::new(self.level)),
            CodecChoice::Auto => {
                let inner = if self.for_device {
                    HostEncoder::Lz4(Box::default())
                } else {
                    HostEncoder::Zstd(ZstdEncoder::new(self.level))
                };
                HostEncoder::Auto(Box::new(inner))
            }
        }
    }
}

/// The encoder for a plan.
pub enum HostEncoder {
    /// No compression.
    Store(StoreEncoder),
    /// LZ4 (boxed: its hash table is 16 KiB).
    Lz4(Box<Lz4Encoder>),
    /// DEFLATE.
    Deflate(DeflateEncoder),
    /// zstd.
    Zstd(ZstdEncoder),
    /// Entropy-gated: stores chunks that look random, otherwise uses the inner encoder.
    Auto(Box<HostEncoder>),
}

impl Encoder for HostEncoder {
    fn hint(&self) -> Codec {
        match self {
            Self::Store(e) => e.hint(),
            Self::Lz4(e) => e.hint(),
            Self::Deflate(e) => e.hint(),
            Self::Zstd(_) => Codec::Zstd,
            Self::Auto(inner) => inner.hint(),
        }
    }

    fn encode(&mut self, input: &[u8], output: &mut [u8]) -> Option<(Codec, usize)> {
        match self {
            Self::Store(e) => e.encode(input, output),
            Self::Lz4(e) => e.encode(input, output),
            Self::Deflate(e) => e.encode(input, output),
            Self::Zstd(e) => e.encode(input, output),
            Self::Auto(inner) => {
                if sample_entropy_bits(input) > STORE_ENTROPY_BITS {
                    None
                } else {
                    inner.encode(input, output)
                }
            }
        }
    }
}

/// Shannon entropy, in bits per byte, of a sample of `data`: 16 slices of 256 bytes spread
/// over the chunk (all of it when shorter than 4 KiB). Costs about a microsecond per chunk.
pub fn sample_entropy_bits(data: &[u8]) -> f64 {
    const SLICES: usize = 16;
    const SLICE: usize = 256;
    let mut counts = [0u32; 256];
    let mut total = 0u32;
    let mut count = |bytes: &[u8]| {
        for &b in bytes {
            counts[usize::from(b)] += 1;
        }
        total += bytes.len() as u32;
    };
    if data.len() <= SLICES * SLICE {
        count(data);
    } else {
        let stride = data.len() / SLICES;
        for i in 0..SLICES {
            count(&data[i * stride..i * stride + SLICE]);
        }
    }
    if total == 0 {
        return 0.0;
    }
    let n = f64::from(total);
    counts.iter().filter(|&&c| c > 0).map(|&c| f64::from(c) / n).map(|p| -p * p.log2()).sum()
}

/// zstd per chunk, with a context kept across chunks.
pub struct ZstdEncoder {
    cctx: zstd::bulk::Compressor<'static>,
}

impl ZstdEncoder {
    /// An encoder at `level`.
    pub fn new(level: i32) -> Self {
        let mut cctx = zstd::bulk::Compressor::new(level).expect("zstd context allocation");
        // The frame carries its content size (FORMAT.md requires it); the AEAD tag already
        // covers integrity, so no frame checksum.
        let _ = cctx.include_contentsize(true);
        let _ = cctx.include_checksum(false);
        Self { cctx }
    }
}

impl Encoder for ZstdEncoder {
    fn hint(&self) -> Codec {
        Codec::Zstd
    }

    fn encode(&mut self, input: &[u8], output: &mut [u8]) -> Option<(Codec, usize)> {
        if input.is_empty() {
            return None;
        }
        // Room only for a result that saves at least one byte; zstd fails when it runs out.
        let room = output.len().min(input.len() - 1);
        let len = self.cctx.compress_to_buffer(input, &mut output[..room]).ok()?;
        (len < input.len()).then_some((Codec::Zstd, len))
    }
}

/// The largest zstd window a decoder accepts: the largest chunk (4 MiB).
const ZSTD_WINDOW_LOG_MAX: u32 = keepsync_core::budget::MAX_CHUNK_LOG2 as u32;

/// The core's decoders plus zstd.
pub struct HostDecoder {
    core: CoreDecoder,
    zstd: zstd::bulk::Decompressor<'static>,
}

impl HostDecoder {
    /// A new decoder.
    pub fn new() -> Self {
        let mut zstd = zstd::bulk::Decompressor::new().expect("zstd context allocation");
        let _ = zstd.set_parameter(zstd_safe::DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX));
        Self { core: CoreDecoder::new(), zstd }
    }
}

impl Default for HostDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder for HostDecoder {
    fn decode(&mut self, codec: Codec, input: &[u8], output: &mut [u8]) -> Result<(), DecodeError> {
        if codec != Codec::Zstd {
            return self.core.decode(codec, input, output);
        }
        // Exactly one (non-skippable) frame, ending at the end of the body, announcing the
        // record's plaintext length (docs/FORMAT.md, section 4).
        let one_frame = zstd_safe::find_frame_compressed_size(input).is_ok_and(|n| n == input.len())
            && zstd_header_allowed(input);
        let sized =
            matches!(zstd_safe::get_frame_content_size(input), Ok(Some(n)) if n == output.len() as u64);
        if !(one_frame && sized) {
            return Err(DecodeError::Corrupt);
        }
        match self.zstd.decompress_to_buffer(input, output) {
            Ok(n) if n == output.len() => Ok(()),
            _ => Err(DecodeError::Corrupt),
        }
    }
}

/// The frame header's rules that libzstd's one-shot decoder does not enforce by itself
/// (docs/FORMAT.md, section 4): no dictionary, and `Window_Size` at most 4 MiB. (Its
/// `WindowLogMax` binds only streaming decoders: a one-shot decode accepted frames that
/// declared windows from 8 MiB to 2 GiB.) A single-segment frame's window is its content
/// size, which the caller checks against the record.
fn zstd_header_allowed(frame: &[u8]) -> bool {
    const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
    let (Some(magic), Some(&fhd)) = (frame.get(..4), frame.get(4)) else { return false };
    if magic != MAGIC || fhd & 0x08 != 0 {
        return false;
    }
    let single_segment = fhd & 0x20 != 0;
    let dict_len = [0, 1, 2, 4][usize::from(fhd & 0x03)];
    let mut at = 5;
    if !single_segment {
        let Some(&wd) = frame.get(at) else { return false };
        let window_log = 10 + u64::from(wd >> 3);
        let base = 1u64 << window_log;
        let window = base + (base / 8) * u64::from(wd & 0x07);
        if window > 1 << ZSTD_WINDOW_LOG_MAX {
            return false;
        }
        at += 1;
    }
    let Some(dict) = frame.get(at..at + dict_len) else { return false };
    dict.iter().all(|&b| b == 0)
}

/// The format of an already-compressed file, from its first bytes or, failing that, its
/// extension. `None` for anything that may compress.
pub fn detect_compressed(head: &[u8], path: Option<&Path>) -> Option<&'static str> {
    const MAGIC: &[(&[u8], &str)] = &[
        (b"PK\x03\x04", "zip"),
        (b"\x1f\x8b", "gzip"),
        (b"\x28\xb5\x2f\xfd", "zstd"),
        (b"\xfd7zXZ\x00", "xz"),
        (b"BZh", "bzip2"),
        (b"7z\xbc\xaf\x27\x1c", "7z"),
        (b"Rar!\x1a\x07", "rar"),
        (b"\x04\x22\x4d\x18", "lz4"),
        (b"\xff\xd8\xff", "jpeg"),
        (b"\x89PNG\r\n\x1a\n", "png"),
        (b"GIF8", "gif"),
        (b"OggS", "ogg"),
        (b"fLaC", "flac"),
        (b"ID3", "mp3"),
        (b"\x1a\x45\xdf\xa3", "matroska/webm"),
        (b"\x89KSYNC\r\n", "keepsync"),
        (b"age-encryption.org/", "age"),
    ];
    if let Some((_, name)) = MAGIC.iter().find(|(m, _)| head.starts_with(m)) {
        return Some(name);
    }
    if head.len() >= 12 && &head[..4] == b"RIFF" && &head[8..12] == b"WEBP" {
        return Some("webp");
    }
    if head.len() >= 12 && &head[4..8] == b"ftyp" {
        return Some("mp4/mov/heic");
    }
    let ext = path?.extension()?.to_str()?.to_ascii_lowercase();
    const EXT: &[&str] = &[
        "zip", "gz", "tgz", "zst", "xz", "txz", "bz2", "7z", "rar", "lz4", "jpg", "jpeg", "png", "gif",
        "webp", "avif", "heic", "mp4", "m4v", "mov", "mkv", "webm", "mp3", "m4a", "aac", "ogg", "opus",
        "flac", "jar", "apk", "docx", "xlsx", "pptx", "ks", "age",
    ];
    EXT.iter().find(|e| **e == ext).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keepsync_core::budget::compress_bound;

    fn random(len: usize, seed: u64) -> Vec<u8> {
        crate::sample::generate(crate::sample::Kind::Random, len, seed)
    }

    fn text(len: usize) -> Vec<u8> {
        b"It was the best of times, it was the worst of times; 42 records read.\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    }

    #[test]
    fn entropy_separates_random_from_text() {
        assert!(sample_entropy_bits(&random(65536, 1)) > 7.9);
        assert!(sample_entropy_bits(&text(65536)) < 5.0);
        assert!(sample_entropy_bits(&[0u8; 65536]) < 0.01);
        assert_eq!(sample_entropy_bits(&[]), 0.0);
    }

    #[test]
    fn auto_stores_random_and_compresses_text() {
        let mut out = vec![0u8; compress_bound(65536)];
        let mut auto = CodecPlan::new(CodecChoice::Auto).encoder();
        assert_eq!(auto.encode(&random(65536, 2), &mut out), None);
        assert!(matches!(auto.encode(&text(65536), &mut out), Some((Codec::Zstd, n)) if n < 2000));
        let mut device = CodecPlan { for_device: true, ..CodecPlan::new(CodecChoice::Auto) }.encoder();
        assert!(matches!(device.encode(&text(65536), &mut out), Some((Codec::Lz4, _))));
        let stored = CodecPlan { stored_format: Some("zip"), ..CodecPlan::new(CodecChoice::Auto) };
        assert_eq!(stored.encoder().encode(&text(65536), &mut out), None);
    }

    #[test]
    fn zstd_round_trips_and_the_decoder_enforces_one_sized_frame() {
        let data = text(50_000);
        let mut out = vec![0u8; compress_bound(data.len())];
        let (codec, n) = ZstdEncoder::new(3).encode(&data, &mut out).unwrap();
        assert_eq!(codec, Codec::Zstd);
        let frame = out[..n].to_vec();
        let mut dec = HostDecoder::new();
        let mut plain = vec![0u8; data.len()];
        dec.decode(Codec::Zstd, &frame, &mut plain).unwrap();
        assert_eq!(plain, data);
        // Wrong announced length, two frames, a trailing byte, a skippable frame: all refused.
        assert_eq!(
            dec.decode(Codec::Zstd, &frame, &mut vec![0u8; data.len() - 1]),
            Err(DecodeError::Corrupt)
        );
        let mut two = frame.clone();
        two.extend_from_slice(&frame);
        assert_eq!(dec.decode(Codec::Zstd, &two, &mut vec![0u8; 2 * data.len()]), Err(DecodeError::Corrupt));
        let mut trailing = frame.clone();
        trailing.push(0);
        assert_eq!(dec.decode(Codec::Zstd, &trailing, &mut plain), Err(DecodeError::Corrupt));
        let skippable = [0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(dec.decode(Codec::Zstd, &skippable, &mut plain), Err(DecodeError::Corrupt));
        // Hand-made frames of one raw block: a declared window of 4 MiB decodes, 8 MiB (and up
        // to 2 GiB) is refused although libzstd's one-shot decoder would take it; so is a
        // dictionary id.
        let raw = |descriptor: u8, dict: Option<u8>| {
            let body = &data[..1000];
            // 2-byte content size (value - 256), no single segment, maybe a 1-byte dictionary id.
            let fhd = 0x40 | u8::from(dict.is_some());
            let mut f = vec![0x28, 0xb5, 0x2f, 0xfd, fhd, descriptor];
            f.extend(dict);
            f.extend_from_slice(&(1000u16 - 256).to_le_bytes());
            let block = 1u32 | (1000 << 3);
            f.extend_from_slice(&block.to_le_bytes()[..3]);
            f.extend_from_slice(body);
            f
        };
        let mut small = vec![0u8; 1000];
        dec.decode(Codec::Zstd, &raw(12 << 3, None), &mut small).unwrap();
        assert_eq!(small, data[..1000]);
        for too_big in [(12 << 3) | 1, 13 << 3, 21 << 3, 0xff] {
            assert_eq!(dec.decode(Codec::Zstd, &raw(too_big, None), &mut small), Err(DecodeError::Corrupt));
        }
        // The check is ours: libzstd, even told WindowLogMax(22), decodes 8 MiB to 2 GiB.
        for declared in [13 << 3, 21 << 3] {
            let mut alone = zstd::bulk::Decompressor::new().unwrap();
            alone.set_parameter(zstd_safe::DParameter::WindowLogMax(ZSTD_WINDOW_LOG_MAX)).unwrap();
            assert_eq!(alone.decompress_to_buffer(&raw(declared, None), &mut small).ok(), Some(1000));
        }
        assert_eq!(dec.decode(Codec::Zstd, &raw(12 << 3, Some(7)), &mut small), Err(DecodeError::Corrupt));
        dec.decode(Codec::Zstd, &raw(12 << 3, Some(0)), &mut small).unwrap();
        // Store and LZ4 still go to the core decoder.
        let mut lz = vec![0u8; compress_bound(data.len())];
        let (_, m) = Lz4Encoder::new().encode(&data, &mut lz).unwrap();
        dec.decode(Codec::Lz4, &lz[..m], &mut plain).unwrap();
        assert_eq!(plain, data);
    }

    #[test]
    fn zstd_never_expands() {
        let data = random(4096, 3);
        let mut out = vec![0u8; compress_bound(data.len())];
        assert_eq!(ZstdEncoder::new(1).encode(&data, &mut out), None);
    }

    #[test]
    fn compressed_formats_are_detected_by_magic_or_extension() {
        assert_eq!(detect_compressed(b"PK\x03\x04rest", None), Some("zip"));
        assert_eq!(detect_compressed(b"\x1f\x8b\x08\x00", None), Some("gzip"));
        assert_eq!(detect_compressed(b"\x00\x00\x00\x18ftypmp42", None), Some("mp4/mov/heic"));
        assert_eq!(detect_compressed(b"RIFF\x00\x00\x00\x00WEBPVP8 ", None), Some("webp"));
        assert_eq!(detect_compressed(b"plain text", Some(Path::new("photo.JPG"))), Some("jpg"));
        assert_eq!(detect_compressed(b"plain text", Some(Path::new("notes.txt"))), None);
        assert_eq!(detect_compressed(b"\x7fELF\x02\x01", Some(Path::new("a.out"))), None);
        assert_eq!(detect_compressed(b"", None), None);
    }

    #[test]
    fn device_plans_refuse_zstd() {
        let p = CodecPlan { for_device: true, ..CodecPlan::new(CodecChoice::Zstd) };
        assert!(p.check().unwrap_err().contains("--for-device"));
        assert!(CodecPlan { level: 20, ..CodecPlan::new(CodecChoice::Zstd) }.check().is_err());
        assert!(CodecPlan::new(CodecChoice::Auto).check().is_ok());
    }
}
