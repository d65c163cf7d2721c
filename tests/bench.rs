//! `keepsync bench` as a user runs it: a tiny run stored in a temporary history, listed,
//! compared with itself, reported, and refused with a clear message when misused.

mod support;

use std::path::Path;

use support::*;

/// A bench run small enough for debug builds: 6 files of 4 KiB, one timed run, no warm-up.
/// Only zstd and rsync among the peers (when installed), to exercise the peer path quickly.
fn tiny_bench(dir: &Path, extra: &[&str]) -> Run {
    let mut args = vec![
        "bench",
        "--size-class",
        "small",
        "--files",
        "6",
        "--repeat",
        "1",
        "--warmup",
        "0",
        "--peers",
        "zstd,rsync",
        "--db",
        "h.sqlite",
        "--work-dir",
        "work",
    ];
    args.extend_from_slice(extra);
    ks(dir, &args)
}

#[test]
fn a_run_is_stored_listed_compared_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_bench(dir.path(), &["--json", "--tag", "first", "--report", "r.html"]);
    let json = run.ok().json();
    let id = json["id"].as_i64().expect("the run has an id");
    assert_eq!(json["tag"], "first");
    assert_eq!(json["settings"]["seed"], 1);
    assert!(json["machine"]["cores"].as_u64().unwrap() >= 1);
    let cases = json["cases"].as_array().unwrap();
    let find = |workload: &str, tool: &str| {
        cases
            .iter()
            .find(|c| c["workload"] == workload && c["tool"] == tool)
            .unwrap_or_else(|| panic!("{workload} {tool}"))
    };
    for workload in ["pack", "unpack", "sync"] {
        let case = find(workload, "keepsync");
        assert_eq!(case["size_class"], "small");
        assert_eq!(case["input_bytes"], 6 * 4096);
        assert_eq!(case["files"], 6);
        for metric in ["wall_s", "mb_per_s", "fsync_s"] {
            assert_eq!(case["samples"][metric].as_array().map(Vec::len), Some(1), "{workload} {metric}");
        }
    }
    let pack = find("pack", "keepsync");
    let ratio = pack["samples"]["ratio"][0].as_f64().unwrap();
    assert!(ratio > 0.1 && ratio < 1.1, "{ratio}");
    assert!(pack["samples"].get("compute_busy").is_some());
    // Summaries and peers are there for machines to read.
    let summary = &json["summaries"][0]["metrics"]["wall_s"];
    assert!(summary["median"].as_f64().unwrap() > 0.0 && summary["mad"].as_f64().unwrap() >= 0.0);
    let peers = json["peers"].as_array().unwrap();
    let status = |tool: &str| {
        peers.iter().find(|p| p["tool"] == tool).unwrap()["status"].as_str().unwrap().to_string()
    };
    assert_eq!(status("lz4"), "not requested");
    if status("zstd") == "installed" {
        assert!(
            json["vs_peers"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["peer"].as_str().unwrap().starts_with("zstd"))
        );
    }
    let html = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    assert!(html.contains("<svg") && html.contains("keepsync bench"));

    let history = ks(dir.path(), &["bench", "history", "--db", "h.sqlite"]);
    let text = String::from_utf8(history.ok().stdout.clone()).unwrap();
    assert!(
        text.contains(&format!("{id}")) && text.contains("first") && text.contains("pack small"),
        "{text}"
    );

    let same = ks(dir.path(), &["bench", "compare", &id.to_string(), "first", "--db", "h.sqlite"]);
    let text = String::from_utf8(same.ok().stdout.clone()).unwrap();
    assert!(text.contains("0 keepsync regressions"), "{text}");

    // A stored run can be shown again, with its charts.
    let again =
        ks(dir.path(), &["bench", "report", "first", "--db", "h.sqlite", "--markdown", "--charts", "c"]);
    let text = String::from_utf8(again.ok().stdout.clone()).unwrap();
    assert!(text.contains("| workload |") && text.contains("keepsync pack"), "{text}");
    for chart in ["throughput", "phases", "history"] {
        let svg = std::fs::read_to_string(dir.path().join(format!("c/bench-{chart}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{chart}");
    }

    // Before a baseline is set, comparing with it says how to set one.
    let unset = ks(dir.path(), &["bench", "compare", "baseline", "latest", "--db", "h.sqlite"]);
    assert_eq!(unset.code, 2, "{}", unset.stderr);
    assert!(unset.stderr.contains("bench baseline set RUN"), "{}", unset.stderr);
    ks(dir.path(), &["bench", "baseline", "set", "first", "--db", "h.sqlite"]).ok();
    let json =
        ks(dir.path(), &["bench", "compare", "baseline", "latest", "--db", "h.sqlite", "--json"]).ok().json();
    assert_eq!(json["regressions"], 0);
}

#[test]
fn the_loopback_workload_pushes_the_tree_through_an_in_process_server() {
    let dir = tempfile::tempdir().unwrap();
    let run = tiny_bench(dir.path(), &["--workload", "loopback", "--json"]);
    let json = run.ok().json();
    let case = json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["workload"] == "loopback")
        .expect("a loopback case");
    assert_eq!(case["tool"], "keepsync");
    assert_eq!(case["input_bytes"], 6 * 4096);
    // The link bytes over the input bytes: compressed, plus handshake and framing.
    let ratio = case["samples"]["ratio"][0].as_f64().unwrap();
    assert!(ratio > 0.05 && ratio < 1.5, "{ratio}");
    // Each run's tree was removed after the case, not left in the work dir.
    let out = dir.path().join("work");
    let leftovers: Vec<_> = walk_names(&out).into_iter().filter(|n| n.starts_with("sync-keepsync")).collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

fn walk_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.file_name().to_string_lossy().into_owned());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk_names(&e.path()));
        }
    }
    out
}

#[test]
fn mistakes_are_explained() {
    let dir = tempfile::tempdir().unwrap();
    let unknown = ks(dir.path(), &["bench", "compare", "1", "2", "--db", "h.sqlite"]);
    assert_eq!(unknown.code, 2, "{}", unknown.stderr);
    assert!(unknown.stderr.contains("no benchmark run `1`") && unknown.stderr.contains("bench history"));
    let class = ks(dir.path(), &["bench", "--size-class", "huge"]);
    assert_eq!(class.code, 2);
    assert!(class.stderr.contains("not a size class"), "{}", class.stderr);
    let peer = tiny_bench(dir.path(), &["--peers", "gzip"]);
    assert_eq!(peer.code, 2);
    assert!(peer.stderr.contains("not a known peer"), "{}", peer.stderr);
    std::fs::write(dir.path().join("bad.sqlite"), vec![b'x'; 4096]).unwrap();
    let db = ks(dir.path(), &["bench", "history", "--db", "bad.sqlite"]);
    assert_eq!(db.code, 1);
    assert!(db.stderr.contains("hint:") && db.stderr.contains("--db"), "{}", db.stderr);
    let help = ks(dir.path(), &["bench", "--help"]);
    let text = String::from_utf8(help.ok().stdout.clone()).unwrap();
    assert!(text.contains("Regression rule") && text.contains("--size-class"), "{text}");
}

/// Two synthetic runs in a history: the head's keepsync pack is 20% slower.
fn history_with_a_slowdown(db: &Path) {
    let run = |wall: f64| keepsync::bench::Run {
        id: None,
        started_at: "2026-11-25T12:00:00Z".into(),
        unix_time: 1_795_000_000,
        tag: None,
        git_rev: None,
        version: "0.1.0".into(),
        settings: serde_json::json!({"seed": 1}),
        machine: serde_json::json!({"cores": 2}),
        peers: Vec::new(),
        cases: vec![keepsync::bench::Case {
            workload: "pack".into(),
            size_class: "medium".into(),
            tool: "keepsync".into(),
            command: "keepsync pack".into(),
            input_bytes: 32 << 20,
            files: 32,
            samples: [("wall_s".to_string(), [1.0, 1.01, 0.99, 1.005, 0.995].map(|w| w * wall).to_vec())]
                .into_iter()
                .collect(),
        }],
    };
    let mut store = keepsync::bench::store::Store::open(db).unwrap();
    store.insert(&run(1.0)).unwrap();
    store.insert(&run(1.2)).unwrap();
}

#[test]
fn compare_exits_3_on_a_regression_and_0_the_other_way() {
    let dir = tempfile::tempdir().unwrap();
    history_with_a_slowdown(&dir.path().join("h.sqlite"));
    let worse = ks(dir.path(), &["bench", "compare", "1", "2", "--db", "h.sqlite"]);
    assert_eq!(worse.code, 3, "{}", worse.stderr);
    let text = String::from_utf8_lossy(&worse.stdout);
    assert!(text.contains("REGRESSION") && text.contains("+20.0%"), "{text}");
    let better = ks(dir.path(), &["bench", "compare", "2", "1", "--db", "h.sqlite"]);
    assert_eq!(better.code, 0, "{}", better.stderr);
    assert!(String::from_utf8_lossy(&better.stdout).contains("better"));
}
