//! Deterministic sample data for measurements and tests: the same bytes for the same seed on
//! every machine.
//!
//! Every generator is driven by one xorshift64 stream seeded from the caller's seed, and uses
//! only integer arithmetic and fixed tables, so the output does not depend on the platform,
//! the thread count or the standard library's hashing. The one exception to "no library in
//! the loop" is [`Kind::Compressed`], which runs the zstd version pinned in `Cargo.lock` at a
//! fixed level on one thread; zstd's output is deterministic for a given version.

/// `len` bytes of mixed data: log lines, little-endian integer tables, executable-like byte
/// runs and pseudo-random stretches, interleaved as a seeded xorshift picks. Compresses to
/// roughly half, like a mix of real files.
pub fn mixed(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 64);
    while out.len() < len {
        let x = rng.next();
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

/// What a piece of sample data looks like, so benchmarks cover the cases a codec treats
/// differently: text compresses well, binaries moderately, compressed and random data not at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// English-like prose from a fixed, Zipf-skewed vocabulary.
    Text,
    /// Executable-like bytes: instruction idioms, integer tables, symbol strings, zero padding.
    Binary,
    /// Real zstd frames of text and binary, as in archives, images and video containers.
    AlreadyCompressed,
    /// Uniformly random bytes, as in encrypted files.
    Random,
    /// The interleaving of [`mixed`]: log lines, tables, binary runs and random stretches.
    Mixed,
}

impl Kind {
    /// Every kind, in the order a multi-file corpus rotates through them.
    pub const ALL: [Kind; 5] = [Kind::Text, Kind::Binary, Kind::AlreadyCompressed, Kind::Random, Kind::Mixed];

    /// The name used in file names and reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Binary => "binary",
            Kind::AlreadyCompressed => "already-compressed",
            Kind::Random => "random",
            Kind::Mixed => "mixed",
        }
    }
}

/// `len` bytes of `kind` for `seed`.
pub fn generate(kind: Kind, len: usize, seed: u64) -> Vec<u8> {
    match kind {
        Kind::Text => text(len, seed),
        Kind::Binary => binary(len, seed),
        Kind::AlreadyCompressed => compressed(len, seed),
        Kind::Random => random(len, seed),
        Kind::Mixed => mixed(len, seed),
    }
}

/// A seed for one piece of a larger corpus, so pieces can be generated independently (and in
/// any order) and still give the same bytes: a SplitMix64 step over the parts.
pub fn derive_seed(seed: u64, parts: &[u64]) -> u64 {
    parts.iter().fold(seed, |acc, &p| {
        let mut z = acc.wrapping_add(p.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    })
}

/// xorshift64: tiny, fast, and identical everywhere.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A value below `n`, skewed towards 0 (the minimum of two draws), a cheap stand-in for the
    /// Zipf-like frequencies of words and instructions.
    fn skewed(&mut self, n: usize) -> usize {
        let (a, b) = (self.next() % n as u64, self.next() % n as u64);
        a.min(b) as usize
    }
}

const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "it",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "they",
    "be",
    "at",
    "one",
    "have",
    "this",
    "from",
    "or",
    "had",
    "by",
    "not",
    "word",
    "but",
    "what",
    "some",
    "we",
    "can",
    "out",
    "other",
    "were",
    "all",
    "there",
    "when",
    "up",
    "use",
    "your",
    "how",
    "said",
    "each",
    "which",
    "their",
    "time",
    "will",
    "way",
    "about",
    "many",
    "then",
    "them",
    "write",
    "would",
    "like",
    "so",
    "these",
    "long",
    "make",
    "thing",
    "see",
    "two",
    "has",
    "look",
    "more",
    "day",
    "could",
    "come",
    "number",
    "sound",
    "most",
    "people",
    "over",
    "know",
    "water",
    "than",
    "call",
    "first",
    "who",
    "down",
    "side",
    "been",
    "now",
    "find",
    "backup",
    "archive",
    "stream",
    "chunk",
    "checkpoint",
    "resume",
    "network",
    "device",
    "storage",
    "journal",
    "mirror",
    "replica",
    "snapshot",
];

fn text(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 16);
    let mut words_in_sentence = 0;
    while out.len() < len {
        let word = WORDS[rng.skewed(WORDS.len())];
        if words_in_sentence == 0 {
            out.push(word.as_bytes()[0].to_ascii_uppercase());
            out.extend_from_slice(&word.as_bytes()[1..]);
        } else {
            out.extend_from_slice(word.as_bytes());
        }
        words_in_sentence += 1;
        let r = rng.next() % 100;
        if words_in_sentence > 4 && r < 12 {
            out.extend_from_slice(if r < 2 { b".\n\n" } else { b". " });
            words_in_sentence = 0;
        } else if r < 18 {
            out.extend_from_slice(b", ");
        } else {
            out.push(b' ');
        }
    }
    out.truncate(len);
    out
}

/// x86-64-like instruction encodings: prologues, moves, calls with 32-bit displacements.
const IDIOMS: &[&[u8]] = &[
    b"\x55\x48\x89\xe5",
    b"\x5d\xc3",
    b"\x48\x89\xc7",
    b"\x48\x8b\x45\xf8",
    b"\x48\x83\xec\x20",
    b"\x31\xc0",
    b"\x0f\x1f\x44\x00\x00",
    b"\x48\x85\xc0\x74\x05",
    b"\x41\x57\x41\x56\x41\x55",
    b"\x48\x8d\x3d",
    b"\xcc\xcc\xcc\xcc",
    b"\x89\x45\xfc",
];

fn binary(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 4096);
    out.extend_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x03\0\x3e\0\x01\0\0\0");
    while out.len() < len {
        let section = 256 + (rng.next() % 4096) as usize;
        match rng.next() % 10 {
            // Code: idioms, each call or jump with a random 32-bit displacement.
            0..=5 => {
                let end = out.len() + section;
                while out.len() < end {
                    out.extend_from_slice(IDIOMS[rng.skewed(IDIOMS.len())]);
                    if rng.next().is_multiple_of(4) {
                        out.push(0xe8);
                        out.extend_from_slice(&(rng.next() as u32 & 0x00ff_ffff).to_le_bytes());
                    }
                }
            }
            // An offset table: increasing little-endian u32s.
            6 | 7 => {
                let mut at = (rng.next() % 65536) as u32;
                for _ in 0..section / 4 {
                    at += (rng.next() % 64) as u32;
                    out.extend_from_slice(&at.to_le_bytes());
                }
            }
            // Symbol strings.
            8 => {
                let end = out.len() + section;
                while out.len() < end {
                    out.extend_from_slice(b"_ZN8keepsync");
                    out.extend_from_slice(WORDS[rng.skewed(WORDS.len())].as_bytes());
                    out.extend_from_slice(format!("17h{:016x}E\0", rng.next()).as_bytes());
                }
            }
            // Section alignment.
            _ => out.resize(out.len() + section, 0),
        }
    }
    out.truncate(len);
    out
}

fn random(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        out.extend_from_slice(&rng.next().to_le_bytes());
    }
    out.truncate(len);
    out
}

/// zstd frames (level 3, zstd's default) of text and binary, concatenated until `len` is
/// reached. If compression ever failed, random bytes stand in: also
/// incompressible, so the kind still means what it says.
fn compressed(len: usize, seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + (64 << 10));
    let mut piece = 0u64;
    while out.len() < len {
        let piece_seed = derive_seed(seed, &[piece]);
        let plain =
            if piece.is_multiple_of(2) { text(64 << 10, piece_seed) } else { binary(64 << 10, piece_seed) };
        match zstd::bulk::compress(&plain, 3) {
            Ok(frame) => out.extend_from_slice(&frame),
            Err(_) => out.extend_from_slice(&random(16 << 10, piece_seed)),
        }
        piece += 1;
    }
    out.truncate(len);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        assert_eq!(super::mixed(10_000, 1), super::mixed(10_000, 1));
        assert_ne!(super::mixed(10_000, 1), super::mixed(10_000, 2));
        assert_eq!(super::mixed(777, 3).len(), 777);
        for kind in Kind::ALL {
            let a = generate(kind, 50_000, 1);
            assert_eq!(a.len(), 50_000, "{kind:?}");
            assert_eq!(a, generate(kind, 50_000, 1), "{kind:?}");
            assert_ne!(a, generate(kind, 50_000, 2), "{kind:?}");
        }
    }

    /// Pins the generators: a change here changes every benchmark corpus, which must be a
    /// deliberate decision (old history rows were measured on other bytes).
    #[test]
    fn corpus_bytes_are_pinned() {
        let digest = |kind| {
            let bytes = generate(kind, 100_000, 1);
            let mut h = keepsync_core::checkpoint::SourceHasher::new();
            h.update(&bytes);
            hex::encode(&h.digest()[..8])
        };
        let got: Vec<String> = Kind::ALL.iter().map(|&k| digest(k)).collect();
        assert_eq!(got, PINNED, "generators changed: update PINNED only on purpose");
    }

    const PINNED: [&str; 5] =
        ["42f9c0929317fc3f", "3b9a880a9a1d2332", "99cfb87afa963db0", "268e649c869ed950", "75d3c9fa270890b5"];

    #[test]
    fn kinds_compress_as_their_names_say() {
        let ratio = |kind| {
            let plain = generate(kind, 256 << 10, 7);
            zstd::bulk::compress(&plain, 1).unwrap().len() as f64 / plain.len() as f64
        };
        assert!(ratio(Kind::Text) < 0.45, "text {}", ratio(Kind::Text));
        assert!(ratio(Kind::Binary) < 0.8, "binary {}", ratio(Kind::Binary));
        assert!(ratio(Kind::AlreadyCompressed) > 0.95, "compressed {}", ratio(Kind::AlreadyCompressed));
        assert!(ratio(Kind::Random) > 0.99, "random {}", ratio(Kind::Random));
    }

    #[test]
    fn derived_seeds_differ_per_part() {
        assert_ne!(derive_seed(1, &[0]), derive_seed(1, &[1]));
        assert_ne!(derive_seed(1, &[0, 1]), derive_seed(1, &[1, 0]));
        assert_eq!(derive_seed(5, &[2, 3]), derive_seed(5, &[2, 3]));
    }
}
