//! Documentation that must match the code.

const FORMAT: &str = include_str!("../docs/FORMAT.md");
const RAM: &str = include_str!("../core/RAM.md");

#[test]
fn format_md_carries_the_checked_ram_table() {
    let start = FORMAT.find("<!-- RAM table").expect("FORMAT.md has the RAM table marker");
    let end = FORMAT.find("<!-- end RAM table -->").expect("FORMAT.md has the end marker");
    let table = FORMAT[start..end].split_once('\n').unwrap().1.trim();
    assert_eq!(
        table,
        RAM.trim(),
        "docs/FORMAT.md's RAM table differs from core/RAM.md (which ram.rs checks)"
    );
}

#[test]
fn format_md_worked_example_is_test_vector_two() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("vectors/v1.json")).expect("vectors parse");
    let container = vectors["vectors"][1]["container"].as_str().unwrap();
    // Every hex run shown in the worked example's container appears in the vector.
    let example = &FORMAT[FORMAT.find("The container, 156 bytes").unwrap()..];
    let example = &example[..example.find("Decrypting the body").unwrap()];
    let mut shown = String::new();
    for line in example.lines().skip(1) {
        // Byte runs: even-length hex words at the start of a line (labels like `aad` are not).
        let is_bytes = |w: &&str| w.len().is_multiple_of(2) && w.chars().all(|c| c.is_ascii_hexdigit());
        for word in line.split_whitespace().take_while(is_bytes) {
            shown.push_str(word);
        }
    }
    assert_eq!(shown, container);
}

#[test]
fn benchmarks_md_explains_every_bench_metric() {
    let doc = include_str!("../docs/BENCHMARKS.md");
    for metric in keepsync::bench::stats::METRICS {
        assert!(
            doc.contains(&format!("`{}`", metric.name)),
            "docs/BENCHMARKS.md does not explain `{}`",
            metric.name
        );
    }
    // The regression rule is stated as the code applies it.
    assert!(doc.contains("3 × 1.4826 × MAD_pool") && doc.contains("2% × |median(B)|"));
    assert_eq!(keepsync::bench::stats::SIGMAS, 3.0);
    assert_eq!(keepsync::bench::stats::MIN_RELATIVE_SHIFT, 0.02);
}

/// docs/PROTOCOL.md's message table names each message's postcard enum index: encode one of
/// each and compare the first byte.
#[test]
fn protocol_message_table_matches_the_encoding() {
    use keepsync_core::sync::{Bytes, CloseCode, Direction, FileMeta, Have, Kind, Message, Status};
    let doc = include_str!("../docs/PROTOCOL.md");
    let meta = FileMeta {
        id: 1,
        path: "a",
        kind: Kind::File,
        size: 1,
        mtime: 0,
        mtime_nsec: 0,
        mode: 0o644,
        target: "",
        hash: None,
        version: [0; 16],
        layout: keepsync_core::sync::Layout::Whole,
    };
    let samples: [(&str, Message<'_>); 13] = [
        ("Open", keepsync_core::sync::open::OpenParams::new(Direction::Push, 32).message("p")),
        ("Opened", Message::Opened { max_files: 32 }),
        ("File", Message::File(meta)),
        ("Have", Message::Have { id: 1, have: Have::Skip }),
        ("Hashes", Message::Hashes { id: 1, first: 0, hashes: Bytes(&[0; 32]) }),
        ("Data", Message::Data { id: 1, offset: 0, codec: 0, raw_len: 1, body: Bytes(b"x") }),
        ("End", Message::End { id: 1, hash: [0; 32] }),
        ("Done", Message::Done { id: 1, status: Status::Ok }),
        ("Finished", Message::Finished),
        ("Ping", Message::Ping),
        ("Pong", Message::Pong),
        ("Close", Message::Close(CloseCode::Done)),
        ("Deleted", Message::Deleted { path: "gone" }),
    ];
    for (name, msg) in samples {
        let row = doc
            .lines()
            .find(|l| l.contains(&format!("| `{name}` |")))
            .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no row for `{name}`"));
        let index: u8 = row.trim_start_matches('|').split('|').next().unwrap().trim().parse().unwrap();
        let mut buf = [0u8; 128];
        let bytes = postcard::to_slice(&msg, &mut buf).unwrap();
        assert_eq!(bytes[0], index, "docs/PROTOCOL.md gives `{name}` index {index}");
    }
    let limits = format!(
        "at most `MAX_FRAME_BODY` = 1 MiB + {}, at least `MIN_FRAME_BODY` = 1 KiB + {}",
        keepsync_core::budget::MAX_FRAME_BODY - (1 << 20),
        keepsync_core::budget::MIN_FRAME_BODY - (1 << 10)
    );
    assert!(
        doc.replace('\n', " ").replace("   ", " ").contains(&limits),
        "frame limits in docs/PROTOCOL.md: {limits}"
    );
}
