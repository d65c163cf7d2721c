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
