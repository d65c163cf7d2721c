//! The format's own test vectors (`tests/vectors/v1.json`): generated once, checked forever.
//!
//! Each vector fixes the key (or passphrase and Argon2id parameters), the salt, the chunk size,
//! the codec and the input, and records the exact container bytes. Packing must reproduce them
//! byte for byte and unpacking must return the input: a change to the format breaks this test
//! on purpose. Regenerate only for a new format version, with `KEEPSYNC_WRITE_VECTORS=1`.

use keepsync::keys::stretch;
use keepsync_core::FormatError;
use keepsync_core::budget::{HEADER_LEN, chunk_log2_from_size, packer_workspace_len, unpacker_workspace_len};
use keepsync_core::compress::{CoreDecoder, DeflateEncoder, Encoder, Lz4Encoder, StoreEncoder};
use keepsync_core::crypto::{FileKeys, RustCrypto, SecretKey, open_header};
use keepsync_core::stream::{Packer, Unpacker};
use keepsync_core::wire::{HeaderRepr, KeySource};
use serde_json::{Value, json};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/v1.json");

struct Spec {
    name: &'static str,
    key: KeySpec,
    chunk_size: usize,
    codec: &'static str,
    input: Vec<u8>,
}

enum KeySpec {
    Raw([u8; 32]),
    Passphrase { passphrase: &'static str, salt: [u8; 16], memory_kib: u32, passes: u32, lanes: u32 },
}

fn specs() -> Vec<Spec> {
    let text: Vec<u8> = b"KeepSync test vector. ".iter().copied().cycle().take(10_000).collect();
    let key = core::array::from_fn(|i| i as u8);
    vec![
        Spec { name: "empty input", key: KeySpec::Raw(key), chunk_size: 4096, codec: "lz4", input: vec![] },
        Spec {
            name: "short text, stored because it does not shrink",
            key: KeySpec::Raw(key),
            chunk_size: 4096,
            codec: "lz4",
            input: b"hello, keepsync\n".to_vec(),
        },
        Spec {
            name: "three lz4 chunks",
            key: KeySpec::Raw(key),
            chunk_size: 4096,
            codec: "lz4",
            input: text.clone(),
        },
        Spec {
            name: "deflate chunks",
            key: KeySpec::Raw(key),
            chunk_size: 4096,
            codec: "deflate",
            input: text[..5000].to_vec(),
        },
        Spec {
            name: "store: one full chunk and a one-byte final chunk",
            key: KeySpec::Raw([0xff; 32]),
            chunk_size: 4096,
            codec: "store",
            input: (0..4097u32).map(|i| (i * 7) as u8).collect(),
        },
        Spec {
            name: "passphrase (Argon2id, small parameters for the vector)",
            key: KeySpec::Passphrase {
                passphrase: "correct horse battery staple",
                salt: [0x5a; 16],
                memory_kib: 64,
                passes: 2,
                lanes: 1,
            },
            chunk_size: 4096,
            codec: "lz4",
            input: b"secret notes secret notes secret notes".to_vec(),
        },
    ]
}

fn master_and_source(key: &KeySpec) -> (SecretKey, KeySource) {
    match *key {
        KeySpec::Raw(k) => (SecretKey::from_bytes(k), KeySource::RawKey),
        KeySpec::Passphrase { passphrase, salt, memory_kib, passes, lanes } => (
            stretch(passphrase.as_bytes(), &salt, memory_kib, passes, lanes).unwrap(),
            KeySource::Argon2id { salt, memory_kib, passes, lanes },
        ),
    }
}

fn encoder(codec: &str) -> Box<dyn Encoder> {
    match codec {
        "store" => Box::new(StoreEncoder),
        "lz4" => Box::new(Lz4Encoder::new()),
        "deflate" => Box::new(DeflateEncoder::new(6)),
        other => panic!("unknown codec {other}"),
    }
}

fn file_salt(index: usize) -> [u8; 32] {
    core::array::from_fn(|i| (0xa0 + index * 32 + i) as u8)
}

fn pack(spec: &Spec, salt: [u8; 32]) -> Vec<u8> {
    let (master, key_source) = master_and_source(&spec.key);
    let mut enc = encoder(spec.codec);
    let repr = HeaderRepr {
        key_source,
        chunk_log2: chunk_log2_from_size(spec.chunk_size).unwrap(),
        codec_hint: enc.hint(),
        file_salt: salt,
    };
    let keys = FileKeys::derive(&master, &salt);
    let mut ws = vec![0u8; packer_workspace_len(spec.chunk_size)];
    let mut p = Packer::new(&RustCrypto, &keys, &repr, &mut *enc, &mut ws).unwrap();
    let mut out = vec![0u8; spec.input.len() * 2 + 1024];
    let (mut input, mut len) = (&spec.input[..], 0);
    while !input.is_empty() {
        let n = p.write(input).unwrap();
        input = &input[n..];
        len += p.read(&mut out[len..]);
    }
    p.finish();
    while !p.is_done() {
        len += p.read(&mut out[len..]);
    }
    out.truncate(len);
    out
}

fn unpack(spec: &Spec, container: &[u8]) -> Result<Vec<u8>, FormatError> {
    let (master, _) = master_and_source(&spec.key);
    let (repr, keys) = open_header::<FormatError>(container, |_| Ok(master))?;
    let mut ws = vec![0u8; unpacker_workspace_len(repr.chunk_size())];
    let mut u = Unpacker::new(&RustCrypto, &keys, &repr, CoreDecoder::new(), &mut ws).unwrap();
    let mut out = vec![0u8; spec.input.len() + 1];
    let (mut input, mut len) = (&container[HEADER_LEN..], 0);
    while !input.is_empty() {
        let n = u.write(input)?;
        input = &input[n..];
        len += u.read(&mut out[len..]);
    }
    u.finish()?;
    out.truncate(len);
    Ok(out)
}

fn key_json(key: &KeySpec) -> Value {
    match key {
        KeySpec::Raw(k) => json!({ "kind": "raw", "key": hex::encode(k) }),
        KeySpec::Passphrase { passphrase, salt, memory_kib, passes, lanes } => json!({
            "kind": "argon2id", "passphrase": passphrase, "kdf_salt": hex::encode(salt),
            "memory_kib": memory_kib, "passes": passes, "lanes": lanes,
        }),
    }
}

#[test]
fn vectors_reproduce_byte_for_byte() {
    let specs = specs();
    if std::env::var_os("KEEPSYNC_WRITE_VECTORS").is_some() {
        let vectors: Vec<Value> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                json!({
                    "name": s.name, "key": key_json(&s.key), "file_salt": hex::encode(file_salt(i)),
                    "chunk_size": s.chunk_size, "codec": s.codec, "input": hex::encode(&s.input),
                    "container": hex::encode(pack(s, file_salt(i))),
                })
            })
            .collect();
        let doc = json!({
            "format": "KeepSync container v1 (docs/FORMAT.md)",
            "note": "Generated once by tests/vectors.rs; checked on every test run. Do not edit.",
            "vectors": vectors,
        });
        std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(PATH).expect("tests/vectors/v1.json exists")).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert_eq!(vectors.len(), specs.len());
    for (i, (spec, v)) in specs.iter().zip(vectors).enumerate() {
        assert_eq!(v["name"], spec.name);
        assert_eq!(v["key"], key_json(&spec.key), "{}", spec.name);
        assert_eq!(v["input"], hex::encode(&spec.input), "{}", spec.name);
        let expected = hex::decode(v["container"].as_str().unwrap()).unwrap();
        let salt: [u8; 32] = hex::decode(v["file_salt"].as_str().unwrap()).unwrap().try_into().unwrap();
        assert_eq!(salt, file_salt(i));
        assert_eq!(hex::encode(pack(spec, salt)), hex::encode(&expected), "packing `{}` changed", spec.name);
        assert_eq!(unpack(spec, &expected).unwrap(), spec.input, "unpacking `{}`", spec.name);
    }
}
