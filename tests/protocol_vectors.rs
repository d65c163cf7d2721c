//! The sync protocol's test vectors (`tests/vectors/protocol-v5.json`, shown in section 10 of
//! docs/PROTOCOL.md): generated once, checked forever.
//!
//! Fixed inputs (the PSK, both randoms, both sides' `max_body`) go through the core's own
//! `Connection::client` and `Connection::server`, and every byte they put on the wire must equal
//! the recorded vectors: the three handshake frames, the first sealed frames each way, a
//! server's refusal of a version-4 and a version-3 client, and the postcard encoding of one
//! message of each type (an `Open` with filter rules among them). The recorded secrets are then checked against an independent implementation of
//! sections 3.3 and 4 (ring's SHA-256, HMAC-SHA256 and AES-256-GCM, not the core's crates), and
//! PROTOCOL.md section 10 must show the same bytes. A change to the wire format breaks this test
//! on purpose. Regenerate only for a new protocol version, with `KEEPSYNC_WRITE_VECTORS=1`.

use keepsync_core::budget::{FRAME_HEADER_LEN, MAX_FRAME_BODY};
use keepsync_core::crypto::session::{SessionSecrets, frame_nonce, key_id};
use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::{
    Bytes, CloseCode, Connection, Direction, FileMeta, FilterRules, Have, Kind, Layout, Message, ProtoError,
    RuleKind, Status,
};
use keepsync_core::wire::frame::PROTO_VERSION;
use ring::{aead, digest, hmac};
use serde_json::{Value, json};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/vectors/protocol-v5.json");
const DOC: &str = include_str!("../docs/PROTOCOL.md");

type Conn = Connection<RustCrypto, Vec<u8>>;

fn psk() -> SecretKey {
    SecretKey::from_bytes(core::array::from_fn(|i| i as u8))
}

fn client_random() -> [u8; 32] {
    core::array::from_fn(|i| 0x20 + i as u8)
}

fn server_random() -> [u8; 32] {
    core::array::from_fn(|i| 0x40 + i as u8)
}

/// Buffers for the largest frame, so both sides announce `MAX_FRAME_BODY`, as hosts do.
fn buffer() -> Vec<u8> {
    vec![0; FRAME_HEADER_LEN + MAX_FRAME_BODY]
}

fn new_client() -> Conn {
    Connection::client(RustCrypto, psk(), client_random(), 0, buffer(), buffer()).unwrap()
}

fn new_server() -> Conn {
    Connection::server(RustCrypto, psk(), server_random(), 0, buffer(), buffer()).unwrap()
}

/// Everything `conn` has queued for the wire.
fn take(conn: &mut Conn) -> Vec<u8> {
    let out = conn.pending_transmit().to_vec();
    conn.consume_transmit(out.len());
    out
}

/// Feeds `bytes` to `conn`; the messages it delivers must be `expect`, in order.
fn receive(conn: &mut Conn, bytes: &[u8], expect: &[Message<'_>]) {
    let (mut at, mut got) = (0, 0);
    while at < bytes.len() {
        let n = conn.handle_input(0, &bytes[at..]).unwrap();
        at += n;
        let mut delivered = false;
        while let Some(msg) = conn.poll_message(0) {
            let msg = msg.unwrap();
            assert_eq!(Some(&msg), expect.get(got), "message {got} delivered");
            got += 1;
            delivered = true;
        }
        assert!(n > 0 || delivered, "the connection takes no more input");
    }
    assert_eq!(got, expect.len(), "messages delivered");
}

fn encode(msg: &Message<'_>) -> Vec<u8> {
    let mut buf = [0u8; 512];
    postcard::to_slice(msg, &mut buf).unwrap().to_vec()
}

/// The client's first sealed message (section 10).
fn open_push() -> Message<'static> {
    Message::Open {
        path: "photos",
        direction: Direction::Push,
        delete: false,
        replace: false,
        checksum: false,
        dry_run: false,
        max_files: 1024,
        session: [0; 16],
        part_size: 0,
        delete_excluded: false,
        filters: FilterRules::EMPTY,
    }
}

/// Two rules as `Open` carries them: `--include '*.txt' --exclude /build/`.
const RULES: &[u8] = b"\x01\x05*.txt\x00\x07/build/";

fn file_a() -> Message<'static> {
    Message::File(FileMeta {
        id: 1,
        path: "a/b.txt",
        kind: Kind::File,
        size: 5,
        mtime: 1_700_000_000,
        mtime_nsec: 5,
        mode: 0o644,
        target: "",
        hash: None,
        version: [0xaa; 16],
        layout: Layout::Whole,
    })
}

fn opened() -> Message<'static> {
    Message::Opened { max_files: 1024 }
}

/// One message of each type (and each variant of `Have`, `Layout` and `Kind`), named as
/// section 10 lists them.
fn samples() -> Vec<(&'static str, Message<'static>)> {
    let big = |id, hash, layout| FileMeta {
        id,
        path: "big",
        kind: Kind::File,
        size: 3 << 20,
        mtime: -1,
        mtime_nsec: 0,
        mode: 0o644,
        target: "",
        hash,
        version: [0; 16],
        layout,
    };
    const HASHES: [u8; 32] = [0x22; 32];
    let hello = *blake3::hash(b"hello").as_bytes();
    let empty = *blake3::hash(b"").as_bytes();
    vec![
        (
            "Open, a pull of `.` in a session, --checksum, parts of 32 MiB",
            Message::Open {
                path: ".",
                direction: Direction::Pull,
                delete: false,
                replace: false,
                checksum: true,
                dry_run: false,
                max_files: 32,
                session: [0x5c; 16],
                part_size: 32 << 20,
                delete_excluded: false,
                filters: FilterRules::EMPTY,
            },
        ),
        (
            "Open, a push with --delete-excluded, --include '*.txt' --exclude /build/",
            Message::Open {
                path: "t",
                direction: Direction::Push,
                delete: true,
                replace: true,
                checksum: false,
                dry_run: false,
                max_files: 1024,
                session: [0; 16],
                part_size: 0,
                delete_excluded: true,
                filters: FilterRules::parse(RULES).unwrap(),
            },
        ),
        ("File, a 5-byte file, whole", file_a()),
        (
            "File, part 2 of a 3 MiB file",
            Message::File(big(300, Some([0x11; 32]), Layout::Part { log2: 20, index: 2 })),
        ),
        (
            "File, the assembly of its parts",
            Message::File(big(301, Some([0x11; 32]), Layout::Assemble { log2: 20 })),
        ),
        (
            "File, a symlink",
            Message::File(FileMeta {
                id: 2,
                path: "l",
                kind: Kind::Symlink,
                size: 0,
                mtime: 0,
                mtime_nsec: 0,
                mode: 0o777,
                target: "a",
                hash: None,
                version: [0; 16],
                layout: Layout::Whole,
            }),
        ),
        (
            "File, a directory",
            Message::File(FileMeta {
                id: 3,
                path: "a",
                kind: Kind::Dir,
                size: 0,
                mtime: 1_700_000_000,
                mtime_nsec: 0,
                mode: 0o755,
                target: "",
                hash: None,
                version: [0; 16],
                layout: Layout::Whole,
            }),
        ),
        ("Have, Skip", Message::Have { id: 1, have: Have::Skip }),
        (
            "Have, Need from 0 in 1 MiB blocks, no hashes",
            Message::Have { id: 1, have: Have::Need { resume_from: 0, block_log2: 20, blocks: 0 } },
        ),
        (
            "Have, Need from 2 MiB in 64 KiB blocks, 3 hashes",
            Message::Have { id: 300, have: Have::Need { resume_from: 2 << 20, block_log2: 16, blocks: 3 } },
        ),
        ("Hashes, one hash", Message::Hashes { id: 1, first: 0, hashes: Bytes(&HASHES) }),
        (
            "Data, 5 bytes stored",
            Message::Data { id: 1, offset: 0, codec: 0, raw_len: 5, body: Bytes(b"hello") },
        ),
        ("End, BLAKE3 of \"hello\"", Message::End { id: 1, hash: hello }),
        ("End, BLAKE3 of no bytes (an empty file)", Message::End { id: 2, hash: empty }),
        ("Done, Ok", Message::Done { id: 1, status: Status::Ok }),
        ("Done, Denied", Message::Done { id: 1, status: Status::Denied }),
        ("Done, Busy", Message::Done { id: 1, status: Status::Busy }),
        ("Finished", Message::Finished),
        ("Ping", Message::Ping),
        ("Pong", Message::Pong),
        ("Close, Done", Message::Close(CloseCode::Done)),
        ("Close, Refused", Message::Close(CloseCode::Refused)),
        ("Deleted", Message::Deleted { path: "old.txt" }),
    ]
}

fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    ctx.finish().as_ref().try_into().unwrap()
}

/// Runs the handshake and the first sealed frames through the core, checks what each side
/// makes of the other's bytes, and records every byte sent.
fn produce() -> Value {
    // The handshake.
    let mut client = new_client();
    let client_hello = take(&mut client);
    let mut server = new_server();
    receive(&mut server, &client_hello, &[]);
    assert_eq!(server.key_request(), None, "a server with one PSK answers at once");
    let server_hello = take(&mut server);
    // A server with a clients file asks for the key the id names, then answers the same.
    let mut many =
        Connection::server_for_clients(RustCrypto, server_random(), 0, buffer(), buffer()).unwrap();
    receive(&mut many, &client_hello, &[]);
    assert_eq!(many.key_request(), Some(key_id(&psk())), "the key id the client named");
    assert!(many.pending_transmit().is_empty(), "nothing is sent before the key is known");
    many.set_key(0, psk()).unwrap();
    assert_eq!(take(&mut many), server_hello, "the ServerHello of a server with a clients file");
    receive(&mut client, &server_hello, &[]);
    assert!(client.is_open(), "the server's proof checked out");
    let client_proof = take(&mut client);

    // What the frames imply, by the core's key schedule.
    let th = sha256(&[&client_hello[4..], &server_hello[4..48]]);
    let secrets = SessionSecrets::derive(&psk(), &client_random(), &server_random(), &th);
    assert_eq!(server_hello[48..], secrets.server_proof);
    assert_eq!(client_proof[4..], secrets.client_proof);

    // The first sealed frames: Open and a File from the client, Opened from the server.
    let mut sealed = Vec::new();
    let mut record = |name: &str, direction: &str, counter: u64, msg: &Message<'_>, frame: Vec<u8>| {
        sealed.push(json!({
            "name": name,
            "direction": direction,
            "counter": counter,
            "nonce": hex::encode(frame_nonce(counter)),
            "plaintext": hex::encode(encode(msg)),
            "frame": hex::encode(frame),
        }));
    };
    client.send(0, &open_push()).unwrap();
    let open_frame = take(&mut client);
    client.send(0, &file_a()).unwrap();
    let file_frame = take(&mut client);
    let to_server = [&client_proof[..], &open_frame, &file_frame].concat();
    receive(&mut server, &to_server, &[open_push(), file_a()]);
    assert!(server.is_open(), "the client's proof checked out");
    server.send(0, &opened()).unwrap();
    let opened_frame = take(&mut server);
    receive(&mut client, &opened_frame, &[opened()]);
    record("the client's first sealed frame: Open", "c2s", 0, &open_push(), open_frame);
    record("the client's second sealed frame: File", "c2s", 1, &file_a(), file_frame);
    record("the server's first sealed frame: Opened", "s2c", 0, &opened(), opened_frame);

    // A client of version 4 (the same 52-byte hello, versions 4 and 4) and one of version 3 (a
    // 44-byte hello, no key id) are told which versions the server speaks, with no proof.
    let mut v4_hello = client_hello.clone();
    (v4_hello[8], v4_hello[9]) = (4, 4);
    let mut refusing = new_server();
    assert_eq!(refusing.handle_input(0, &v4_hello), Err(ProtoError::UnsupportedVersion { min: 4, max: 4 }));
    let refusal = take(&mut refusing);
    let mut old_hello = client_hello[..48].to_vec();
    old_hello[..4].copy_from_slice(&44u32.to_le_bytes());
    (old_hello[8], old_hello[9]) = (3, 3);
    let mut refusing = new_server();
    assert_eq!(refusing.handle_input(0, &old_hello), Err(ProtoError::UnsupportedVersion { min: 3, max: 3 }));
    assert_eq!(take(&mut refusing), refusal, "the same refusal for either");
    // A 44-byte hello whose range holds this version lacks the key id: closed without a word.
    let mut short = new_server();
    let mut short_hello = old_hello.clone();
    (short_hello[8], short_hello[9]) = (PROTO_VERSION, PROTO_VERSION);
    assert_eq!(short.handle_input(0, &short_hello), Err(ProtoError::MalformedHello));
    assert!(short.pending_transmit().is_empty());

    let messages: Vec<Value> = samples()
        .iter()
        .map(|(name, msg)| json!({ "name": name, "plaintext": hex::encode(encode(msg)) }))
        .collect();
    json!({
        "inputs": {
            "psk": hex::encode(psk().expose()),
            "client_random": hex::encode(client_random()),
            "server_random": hex::encode(server_random()),
            "max_body": MAX_FRAME_BODY,
        },
        "handshake": {
            "client_hello": hex::encode(&client_hello),
            "server_hello": hex::encode(&server_hello),
            "client_proof": hex::encode(&client_proof),
        },
        "secrets": {
            "key_id": hex::encode(key_id(&psk())),
            "th": hex::encode(th),
            "server_proof": hex::encode(secrets.server_proof),
            "client_proof": hex::encode(secrets.client_proof),
            "c2s_key": hex::encode(secrets.c2s),
            "s2c_key": hex::encode(secrets.s2c),
        },
        "sealed": sealed,
        "refusal": {
            "client_hello_v4": hex::encode(&v4_hello),
            "client_hello_v3": hex::encode(&old_hello),
            "server_hello": hex::encode(&refusal),
        },
        "messages": messages,
    })
}

/// `produced` and `stored` are the same, leaf by leaf (named by `at` when not).
fn assert_same(at: &str, produced: &Value, stored: &Value) {
    match (produced, stored) {
        (Value::Object(p), Value::Object(s)) => {
            let (mut pk, mut sk) = (p.keys().collect::<Vec<_>>(), s.keys().collect::<Vec<_>>());
            pk.sort();
            sk.sort();
            assert_eq!(pk, sk, "{at}: fields");
            for (k, v) in p {
                assert_same(&format!("{at}.{k}"), v, &s[k]);
            }
        }
        (Value::Array(p), Value::Array(s)) => {
            assert_eq!(p.len(), s.len(), "{at}: length");
            for (i, (pv, sv)) in p.iter().zip(s).enumerate() {
                assert_same(&format!("{at}[{i}]"), pv, sv);
            }
        }
        _ => assert_eq!(produced, stored, "{at}: the wire format changed"),
    }
}

/// The vectors as `tests/vectors/protocol-v5.json` holds them.
fn document(vectors: Value) -> Value {
    let mut doc = vectors;
    doc["protocol"] =
        json!(format!("KeepSync sync protocol v{PROTO_VERSION} (docs/PROTOCOL.md, section 10)"));
    doc["note"] = json!(
        "Generated once by tests/protocol_vectors.rs; checked on every test run. Do not edit. \
         Hex; frames include their 4-byte length."
    );
    doc
}

/// The stored vectors (while they are regenerated, the new ones: the tests run at once).
fn stored() -> Value {
    if std::env::var_os("KEEPSYNC_WRITE_VECTORS").is_some() {
        return document(produce());
    }
    let text = std::fs::read_to_string(PATH).expect("tests/vectors/protocol-v5.json exists");
    serde_json::from_str(&text).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("a hex string")).unwrap()
}

fn array32(v: &Value) -> [u8; 32] {
    bytes(v).try_into().expect("32 bytes")
}

#[test]
fn the_core_reproduces_every_byte() {
    let produced = produce();
    if std::env::var_os("KEEPSYNC_WRITE_VECTORS").is_some() {
        let doc = document(produced.clone());
        std::fs::write(PATH, serde_json::to_string_pretty(&doc).unwrap() + "\n").unwrap();
    }
    let mut stored = stored();
    assert_eq!(stored["protocol"], json!("KeepSync sync protocol v5 (docs/PROTOCOL.md, section 10)"));
    assert_eq!(PROTO_VERSION, 5, "a new protocol version needs vectors of its own");
    let map = stored.as_object_mut().unwrap();
    map.remove("protocol");
    map.remove("note");
    assert_same("vectors", &produced, &stored);
    // The rules of the sample `Open` are what the core encodes for them.
    let mut buf = [0u8; 64];
    let rules = [(RuleKind::Include, "*.txt"), (RuleKind::Exclude, "/build/")];
    assert_eq!(FilterRules::encode(rules, &mut buf).unwrap().as_bytes(), RULES);
    // The stored messages decode to what they were made of.
    for ((name, msg), v) in samples().iter().zip(stored["messages"].as_array().unwrap()) {
        let plaintext = bytes(&v["plaintext"]);
        assert_eq!(postcard::from_bytes::<Message<'_>>(&plaintext).unwrap(), *msg, "{name}");
    }
}

/// Sections 3.3 and 4 again, with ring instead of the core's `sha2`, `hkdf` and `aes-gcm`.
#[test]
fn the_vectors_follow_sections_3_and_4() {
    let v = stored();
    let psk = bytes(&v["inputs"]["psk"]);
    let (client_random, server_random) =
        (bytes(&v["inputs"]["client_random"]), bytes(&v["inputs"]["server_random"]));
    let max_body = (v["inputs"]["max_body"].as_u64().unwrap() as u32).to_le_bytes();
    let hs = &v["handshake"];
    let (ch, sh, cp) = (bytes(&hs["client_hello"]), bytes(&hs["server_hello"]), bytes(&hs["client_proof"]));

    // The key id: SHA-256("keepsync key id v1" | key), first 8 bytes.
    let key_id = &sha256(&[b"keepsync key id v1", &psk])[..8];
    assert_eq!(bytes(&v["secrets"]["key_id"]), key_id);

    // ClientHello: length 52 | KSYN | 5 5 | 0 0 | max_body | client_random | key id.
    let hello = |len: u32, v_min: u8, v_max: u8, random: &[u8], tail: &[u8]| {
        [&len.to_le_bytes()[..], b"KSYN", &[v_min, v_max, 0, 0], &max_body, random, tail].concat()
    };
    assert_eq!(ch, hello(52, 5, 5, &client_random, key_id));

    // th, prk and the four expansions, each a single HMAC block: HMAC(prk, label | th | 01).
    let th = sha256(&[&ch[4..], &sh[4..48]]);
    assert_eq!(bytes(&v["secrets"]["th"]), th);
    let salt = [&client_random[..], &server_random].concat();
    let prk = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &salt), &psk);
    let prk = hmac::Key::new(hmac::HMAC_SHA256, prk.as_ref());
    let expand = |label: &str| -> [u8; 32] {
        let info = [label.as_bytes(), &th, &[1]].concat();
        hmac::sign(&prk, &info).as_ref().try_into().unwrap()
    };
    let server_proof = expand("keepsync sync v1 server proof");
    let client_proof = expand("keepsync sync v1 client proof");
    for (name, value) in [
        ("server_proof", server_proof),
        ("client_proof", client_proof),
        ("c2s_key", expand("keepsync sync v1 c2s")),
        ("s2c_key", expand("keepsync sync v1 s2c")),
    ] {
        assert_eq!(array32(&v["secrets"][name]), value, "{name}");
    }

    // ServerHello: length 76 | KSYN | 5 5 | 0 0 | max_body | server_random | server_proof.
    assert_eq!(sh, hello(76, 5, 5, &server_random, &server_proof));
    // ClientProof: length 32 | client_proof.
    assert_eq!(cp, [&32u32.to_le_bytes()[..], &client_proof].concat());

    // Sealed frames: AES-256-GCM under the direction's key, nonce 0000 0000 | counter (BE),
    // aad the 4 length bytes, the tag appended.
    for f in v["sealed"].as_array().unwrap() {
        let name = f["name"].as_str().unwrap();
        let key = match f["direction"].as_str().unwrap() {
            "c2s" => array32(&v["secrets"]["c2s_key"]),
            "s2c" => array32(&v["secrets"]["s2c_key"]),
            other => panic!("{name}: direction {other}"),
        };
        let counter = f["counter"].as_u64().unwrap();
        let mut nonce = [0u8; 12];
        nonce[4..].copy_from_slice(&counter.to_be_bytes());
        assert_eq!(bytes(&f["nonce"]), nonce, "{name}");
        let frame = bytes(&f["frame"]);
        let plaintext = bytes(&f["plaintext"]);
        assert_eq!(frame[..4], ((plaintext.len() + 16) as u32).to_le_bytes(), "{name}: length");
        let key = aead::LessSafeKey::new(aead::UnboundKey::new(&aead::AES_256_GCM, &key).unwrap());
        let mut body = frame[4..].to_vec();
        let opened = key
            .open_in_place(aead::Nonce::assume_unique_for_key(nonce), aead::Aad::from(&frame[..4]), &mut body)
            .unwrap_or_else(|_| panic!("{name}: does not authenticate"));
        assert_eq!(opened, &plaintext[..], "{name}");
    }

    // The refusal of a version-4 and a version-3 ClientHello: the server's range (5, 5) and 32
    // zero bytes.
    let r = &v["refusal"];
    assert_eq!(bytes(&r["client_hello_v4"]), hello(52, 4, 4, &client_random, key_id));
    assert_eq!(bytes(&r["client_hello_v3"]), hello(44, 3, 3, &client_random, &[]));
    assert_eq!(bytes(&r["server_hello"]), hello(76, 5, 5, &server_random, &[0; 32]));
}

/// PROTOCOL.md's section 10 shows the same bytes: every frame, secret and plaintext of the
/// vectors appears in it (spaces and line breaks aside; a run written `1111…11 (32)` is 32
/// bytes `11`).
#[test]
fn protocol_md_section_10_shows_the_vectors() {
    let start = DOC.find("## 10. Test vectors").expect("PROTOCOL.md has section 10");
    let shown: String = DOC[start..].chars().filter(|c| !c.is_whitespace()).collect();
    let shown = expand_runs(&shown);
    let v = stored();
    let mut wanted: Vec<(String, &Value)> = Vec::new();
    for part in ["handshake", "secrets", "refusal"] {
        for (k, x) in v[part].as_object().unwrap() {
            wanted.push((format!("{part}.{k}"), x));
        }
    }
    for (i, f) in v["sealed"].as_array().unwrap().iter().enumerate() {
        for k in ["nonce", "plaintext", "frame"] {
            wanted.push((format!("sealed[{i}].{k}"), &f[k]));
        }
    }
    for m in v["messages"].as_array().unwrap() {
        wanted.push((format!("message {}", m["name"]), &m["plaintext"]));
    }
    for (name, x) in wanted {
        let hex = x.as_str().unwrap();
        assert!(shown.contains(hex), "docs/PROTOCOL.md section 10 does not show {name}: {hex}");
    }
}

/// `HHHH…HH(N)` (a byte written twice, an ellipsis, the byte again and a count) as the N bytes.
fn expand_runs(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('…') {
        let (before, after) = (&rest[..at], &rest[at + '…'.len_utf8()..]);
        let run = before
            .len()
            .checked_sub(4)
            .and_then(|i| before.get(i..))
            .filter(|r| r.bytes().all(|b| b.is_ascii_hexdigit()) && r[..2] == r[2..]);
        let count = after
            .strip_prefix(run.map_or("-", |r| &r[..2]))
            .and_then(|a| a.strip_prefix('('))
            .and_then(|a| a.split_once(')'))
            .and_then(|(n, tail)| Some((n.parse::<usize>().ok()?, tail)));
        match (run, count) {
            (Some(r), Some((n, tail))) => {
                out.push_str(&before[..before.len() - 4]);
                out.push_str(&r[..2].repeat(n));
                rest = tail;
            }
            _ => {
                out.push_str(before);
                out.push('…');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}
