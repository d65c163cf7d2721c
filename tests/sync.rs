//! `keepsync sync SRC DEST` between local paths, as a user runs it.

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

use support::*;

/// A tree with nested directories, an empty directory, text, binary, an empty file, an
/// executable, a symlink and an old modification time.
fn make_tree(root: &Path) {
    fs::create_dir_all(root.join("docs/deep/deeper")).unwrap();
    fs::create_dir_all(root.join("empty")).unwrap();
    fs::write(root.join("docs/readme.txt"), "hello sync\n").unwrap();
    fs::write(root.join("docs/deep/data.bin"), mixed(300_000, 5)).unwrap();
    fs::write(root.join("docs/deep/deeper/empty.txt"), "").unwrap();
    fs::write(root.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    fs::set_permissions(root.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("docs/readme.txt", root.join("link")).unwrap();
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
    fs::File::options().write(true).open(root.join("docs/readme.txt")).unwrap().set_modified(old).unwrap();
}

/// Every entry under `root` with its kind, content (or link target), mode and mtime.
fn snapshot(root: &Path) -> Vec<(String, String, u32, i64)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let what = if m.is_symlink() {
                format!("link {}", fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".into()
            } else {
                format!("file {:x}", md5ish(&fs::read(&p).unwrap()))
            };
            let mtime = if m.is_symlink() { 0 } else { m.mtime() };
            out.push((rel, what, m.mode() & 0o7777, mtime));
        }
    }
    out.sort();
    out
}

fn md5ish(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

fn sync(d: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["sync", "src", "dst", "--json"];
    args.extend_from_slice(extra);
    ks(d, &args)
}

#[test]
fn mirrors_a_tree_then_a_resync_transfers_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    let first = sync(d, &[]).ok().json();
    assert_eq!(first["files_transferred"], 4);
    assert_eq!(first["bytes_sent"], 300_000 + 11 + 18);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
    let again = sync(d, &[]).ok().json();
    assert_eq!(again["files_transferred"], 0);
    assert_eq!(again["files_skipped"], 4);
    assert_eq!(again["bytes_sent"], 0);
}

#[test]
fn a_trailing_slash_on_src_changes_nothing_and_a_dry_run_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    let dry = ks(d, &["sync", "src/", "slash", "--dry-run"]);
    dry.ok();
    assert!(dry.stderr.contains("the contents of src/ would be mirrored into slash"), "{}", dry.stderr);
    assert!(dry.stderr.contains("trailing slash on SRC changes nothing"), "{}", dry.stderr);
    ks(d, &["sync", "src/", "slash"]).ok();
    ks(d, &["sync", "src", "plain"]).ok();
    assert_eq!(snapshot(&d.join("slash")), snapshot(&d.join("src")));
    assert_eq!(snapshot(&d.join("plain")), snapshot(&d.join("src")));
}

#[test]
fn limit_rate_throttles_a_local_copy() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    fs::create_dir(d.join("src")).unwrap();
    fs::write(d.join("src/a.bin"), mixed(1 << 20, 8)).unwrap();
    fs::write(d.join("src/b.bin"), mixed(512 << 10, 9)).unwrap();
    // 1.5 MiB at 512 KiB/s cannot take less than about 3 s (less a 16 KiB first burst),
    // however fast or loaded the machine: a lower bound only.
    let r = sync(d, &["--limit-rate", "512KiB"]).ok().json();
    let seconds = r["seconds"].as_f64().unwrap();
    assert!(seconds >= 2.9, "1.5 MiB at 512 KiB/s took {seconds} s");
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
    let bad = sync(d, &["--limit-rate", "0"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("--limit-rate"), "{}", bad.stderr);
}

#[test]
fn only_changed_files_are_sent() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    sync(d, &[]).ok();
    fs::write(d.join("src/docs/readme.txt"), "hello again\n").unwrap();
    let r = sync(d, &[]).ok().json();
    assert_eq!(r["files_transferred"], 1);
    assert_eq!(r["bytes_sent"], 12);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
}

#[test]
fn checksum_finds_changes_that_keep_size_and_mtime() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    sync(d, &[]).ok();
    let p = d.join("dst/docs/readme.txt");
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    fs::write(&p, "HELLO SYNC\n").unwrap();
    fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
    assert_eq!(sync(d, &[]).ok().json()["files_transferred"], 0, "size+mtime cannot see it");
    assert_eq!(sync(d, &["--checksum"]).ok().json()["files_transferred"], 1);
    assert_eq!(fs::read(&p).unwrap(), b"hello sync\n");
}

#[test]
fn verify_reads_both_trees_again_and_names_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    let r = sync(d, &["--verify"]).ok().json();
    assert_eq!(r["verified"]["entries"], 9, "4 dirs, 4 files, 1 link: {r}");
    assert_eq!(r["verified"]["bytes"], 300_000 + 11 + 18, "{r}");
    assert_eq!(r["verified"]["differ"], 0, "{r}");
    // A change a size-and-time sync cannot see: content rewritten under a restored mtime.
    let p = d.join("dst/docs/readme.txt");
    let mtime = fs::metadata(&p).unwrap().modified().unwrap();
    fs::write(&p, "HELLO SYNC\n").unwrap();
    fs::File::options().write(true).open(&p).unwrap().set_modified(mtime).unwrap();
    assert_eq!(sync(d, &[]).ok().json()["files_transferred"], 0, "the sync itself sees nothing");
    let r = sync(d, &["--verify"]);
    assert_eq!(r.code, 23, "{}", r.stderr);
    assert!(r.stderr.contains("docs/readme.txt: --verify: the contents differ"), "{}", r.stderr);
    assert_eq!(r.json()["verified"]["differ"], 1);
    // --checksum repairs the content; with --delete, DEST holds nothing more.
    fs::write(d.join("dst/extra"), "x").unwrap();
    let r = sync(d, &["--verify", "--delete", "--checksum"]).ok().json();
    assert_eq!(r["verified"]["differ"], 0, "{r}");
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
    // What the filter leaves out is not compared, on either side.
    fs::write(d.join("src/only-here.log"), "src").unwrap();
    fs::write(d.join("dst/kept.log"), "dst").unwrap();
    let r = sync(d, &["--verify", "--delete", "--exclude", "*.log"]).ok().json();
    assert_eq!(r["verified"]["differ"], 0, "{r}");
    assert!(d.join("dst/kept.log").exists() && !d.join("dst/only-here.log").exists());
    // Over the network it is refused with what to run instead.
    let r = ks(d, &["sync", "src", "ks://127.0.0.1:1/x", "--psk-file", "k", "--verify"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--checksum --dry-run"), "{}", r.stderr);
}

#[test]
fn delete_removes_extras_only_when_asked_and_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    sync(d, &[]).ok();
    fs::write(d.join("dst/extra.txt"), "x").unwrap();
    fs::create_dir_all(d.join("dst/old/stuff")).unwrap();
    fs::write(d.join("dst/old/stuff/f"), "y").unwrap();
    sync(d, &[]).ok();
    assert!(d.join("dst/extra.txt").exists(), "no --delete: extras stay");
    let before = snapshot(&d.join("dst"));
    let dry = sync(d, &["--delete", "--dry-run"]).ok().json();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["planned"].as_array().unwrap().len(), 2);
    assert_eq!(snapshot(&d.join("dst")), before, "--dry-run changed DEST");
    let r = sync(d, &["--delete"]).ok().json();
    assert_eq!(r["deleted"], 2);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
}

#[test]
fn a_different_kind_of_entry_is_a_conflict_unless_delete() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    fs::create_dir_all(d.join("dst/run.sh")).unwrap();
    let r = sync(d, &[]);
    assert_eq!(r.code, 23, "{}", r.stderr);
    assert!(r.stderr.contains("run.sh") && r.stderr.contains("--delete"), "{}", r.stderr);
    assert!(d.join("dst/docs/readme.txt").exists(), "the rest is still synced");
    sync(d, &["--delete"]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
}

#[test]
fn never_writes_through_a_symlink_in_dest() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    fs::create_dir_all(d.join("outside")).unwrap();
    fs::create_dir_all(d.join("dst")).unwrap();
    // DEST/docs is a symlink to a directory outside DEST, where SRC/docs is a directory.
    symlink(d.join("outside"), d.join("dst/docs")).unwrap();
    let r = sync(d, &[]);
    assert_eq!(r.code, 23, "{}", r.stderr);
    assert_eq!(fs::read_dir(d.join("outside")).unwrap().count(), 0, "wrote outside DEST");
    sync(d, &["--delete"]).ok();
    assert_eq!(fs::read_dir(d.join("outside")).unwrap().count(), 0, "wrote outside DEST");
    assert!(fs::symlink_metadata(d.join("dst/docs")).unwrap().is_dir());
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
}

#[test]
fn refuses_overlapping_or_wrong_roots_and_network_urls() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    for (args, needle) in [
        (vec!["sync", "src", "src/docs"], "overlap"),
        (vec!["sync", "src/docs", "src"], "overlap"),
        (vec!["sync", "src", "src/not-yet/created"], "overlap"),
        (vec!["sync", "src", "./src/../src/x"], "overlap"),
        (vec!["sync", "src/run.sh", "dst"], "not a directory"),
        (vec!["sync", "missing", "dst"], "cannot open missing"),
        (vec!["sync", "src", "ks://host:7000/x"], "keepsync serve"),
        // What looks like a URL KeepSync does not reach is refused, never made a local
        // directory named `s3:` or `ks:`.
        (vec!["sync", "src", "s3://bucket/x"], "does not reach s3:// stores"),
        (vec!["sync", "s3://bucket/x", "dst"], "does not reach s3:// stores"),
        (vec!["sync", "src", "ks:/host:7373/x"], "(two slashes)"),
        (vec!["sync", "src", "KS:host/x"], "(two slashes)"),
        (vec!["sync", "src", "backup.lan:/srv/x"], "rsync's HOST:PATH"),
    ] {
        let r = ks(d, &args);
        assert_ne!(r.code, 0, "{args:?}");
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    for made in ["dst", "s3:", "ks:", "KS:host", "backup.lan:"] {
        assert!(!d.join(made).exists(), "{made} was made");
    }
    // The hint's spelling of a local path works.
    ks(d, &["sync", "src", "./s3://bucket"]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("s3:/bucket")));
    assert!(!d.join("src/not-yet").exists() && !d.join("src/x").exists());
}

#[test]
fn leftover_partial_files_are_ignored_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    // An interrupted earlier sync left a partial file for readme.txt in DEST.
    fs::create_dir_all(d.join("dst/docs")).unwrap();
    fs::write(d.join("dst/docs/.readme.txt.keepsync-partial"), "half").unwrap();
    sync(d, &["--delete"]).ok();
    assert!(!d.join("dst/docs/.readme.txt.keepsync-partial").exists());
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
}

#[test]
fn a_source_file_that_vanishes_or_changes_while_syncing_is_reported_and_the_rest_completes() {
    use keepsync::sync::{SyncOptions, sync_listed, walk::walk};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..21 {
        fs::create_dir_all(d.join(format!("src/d{}", i % 3))).unwrap();
        fs::write(d.join(format!("src/d{}/f{i:02}", i % 3)), vec![i as u8; 5000 + i]).unwrap();
    }
    let bar = indicatif::ProgressBar::hidden();
    // Listed first; then one file vanishes, one is rewritten, one directory goes.
    let summary = sync_listed(
        &d.join("src"),
        &d.join("dst"),
        &SyncOptions::default(),
        &bar,
        |tree, filter, problems| {
            let entries = walk(tree, filter, problems)?;
            fs::remove_file(d.join("src/d1/f04")).unwrap();
            fs::write(d.join("src/d2/f08"), b"changed after the listing").unwrap();
            fs::remove_dir_all(d.join("src/d0")).unwrap();
            Ok(entries)
        },
    )
    .unwrap();
    // d0's 7 files and d1/f04 vanished; f08 was read again as it is now.
    assert_eq!(summary.vanished, 8, "{:?}", summary.problems);
    assert_eq!(summary.problem_count, 8, "{:?}", summary.problems);
    // Five named, the rest counted: one cause is said once.
    assert_eq!(summary.problems.len(), 6, "{:?}", summary.problems);
    assert!(summary.problems[5].starts_with("3 more entries: vanished"), "{:?}", summary.problems);
    assert_eq!(summary.exit_code(), 24);
    assert_eq!(summary.files_transferred, 13);
    assert_eq!(fs::read(d.join("dst/d2/f08")).unwrap(), b"changed after the listing");
    assert!(!d.join("dst/d1/f04").exists());

    // And as a user sees it: exit 24 names what vanished.
    fs::write(d.join("src/d1/f04"), b"back").unwrap();
    let r = ks(d, &["sync", "src", "dst"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_local_sync_writes_partials_only_in_dests_partial_directory() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for i in 0..400 {
        fs::create_dir_all(d.join(format!("src/d{}", i % 4))).unwrap();
        fs::write(d.join(format!("src/d{}/f{i:03}", i % 4)), mixed(20_000, i as u64)).unwrap();
    }
    let mut child = command()
        .current_dir(d)
        .args(["sync", "src", "dst"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Looked at while it runs: no hidden partial ever shows in the user's folders.
    let mut looks = 0;
    while child.try_wait().unwrap().is_none() {
        for i in 0..4 {
            if let Ok(rd) = fs::read_dir(d.join(format!("dst/d{i}"))) {
                for e in rd.filter_map(|e| e.ok()) {
                    let name = e.file_name().to_string_lossy().into_owned();
                    assert!(!name.starts_with('.'), "a temporary file in a user folder: {name}");
                }
            }
        }
        looks += 1;
    }
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(looks > 0);
    assert!(!d.join("dst/.keepsync-partial").exists(), "no partial left after a clean run");
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
}

/// Lines a running `keepsync` writes to one of its pipes, as they come.
fn lines(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for the next line that satisfies `want` (earlier lines are skipped). Not a timing
/// assumption: the limit only keeps a broken run from hanging the suite.
fn next_line(rx: &std::sync::mpsc::Receiver<String>, what: &str, want: impl Fn(&str) -> bool) -> String {
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(300)) {
            Ok(line) if want(&line) => return line,
            Ok(_) => {}
            Err(e) => panic!("no line {what}: {e}"),
        }
    }
}

#[test]
fn watch_follows_changes_survives_a_missing_dest_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    make_tree(&d.join("src"));
    let mut child = command()
        .current_dir(d)
        .args(["sync", "src", "dst", "--watch", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(child.stdout.take().unwrap());
    let err = lines(child.stderr.take().unwrap());
    let pass = |what: &str| -> serde_json::Value {
        serde_json::from_str(&next_line(&out, what, |l| l.starts_with('{'))).unwrap()
    };
    assert_eq!(pass("for the first pass")["files_transferred"], 4);
    // A new file and a new directory, written after the first pass: the watch was set up
    // before it, so they cannot be missed.
    fs::create_dir(d.join("src/new")).unwrap();
    fs::write(d.join("src/new/file"), "fresh").unwrap();
    while fs::read(d.join("dst/new/file")).ok().as_deref() != Some(&b"fresh"[..]) {
        pass("after a change");
    }
    // DEST goes away (a file stands where it was): the pass fails, is said, and is retried.
    fs::remove_dir_all(d.join("dst")).unwrap();
    fs::write(d.join("dst"), "not a directory").unwrap();
    fs::write(d.join("src/second"), "2").unwrap();
    next_line(&err, "saying a pass failed", |l| l.contains("pass failed"));
    fs::remove_file(d.join("dst")).unwrap();
    while fs::read(d.join("dst/second")).ok().as_deref() != Some(&b"2"[..]) {
        pass("once DEST is back");
    }
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("dst")));
    let killed = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "Ctrl-C ends a watch cleanly");
}
