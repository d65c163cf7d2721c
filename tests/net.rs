//! Network sync end to end: `keepsync serve` and `keepsync sync ks://...` on loopback, a
//! hostile client speaking the protocol by hand, and `kill -9` of either side mid-transfer.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keepsync_core::crypto::session::key_id;
use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::{
    Connection, Direction, FileMeta, Have, Kind, Message, ProtoError, Sender, SenderEvent, Status,
};
use support::*;

/// A temp dir with a PSK file `psk`, a served root `srv/` and a source tree `src/`.
fn setup() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    std::fs::create_dir_all(d.join("src/sub/deeper")).unwrap();
    for i in 0..12 {
        std::fs::write(d.join(format!("src/f{i}.log")), mixed(1000 + i * 9000, i as u64)).unwrap();
    }
    std::fs::write(d.join("src/sub/big.bin"), mixed(3 << 20, 77)).unwrap();
    std::fs::write(d.join("src/sub/deeper/empty"), b"").unwrap();
    std::os::unix::fs::symlink("../f1.log", d.join("src/sub/link")).unwrap();
    dir
}

/// Every entry under `root` (but our partial dir): kind, content or link target, mode and,
/// for files and directories, mtime (a directory's is set after everything under it).
fn snapshot(root: &Path) -> BTreeMap<String, String> {
    fn walk(root: &Path, rel: &Path, out: &mut BTreeMap<String, String>) {
        for e in std::fs::read_dir(root.join(rel)).unwrap() {
            let e = e.unwrap();
            let name = e.file_name();
            if name == ".keepsync-partial" {
                continue;
            }
            let rel = rel.join(&name);
            let meta = std::fs::symlink_metadata(root.join(&rel)).unwrap();
            use std::os::unix::fs::MetadataExt;
            let what = if meta.is_dir() {
                walk(root, &rel, out);
                format!("dir {:o} {}", meta.mode() & 0o7777, meta.mtime())
            } else if meta.is_symlink() {
                format!("link {}", std::fs::read_link(root.join(&rel)).unwrap().display())
            } else {
                let hash = blake3::hash(&std::fs::read(root.join(&rel)).unwrap());
                format!("file {:o} {} {}", meta.mode() & 0o7777, meta.mtime(), hash)
            };
            out.insert(rel.display().to_string(), what);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, Path::new(""), &mut out);
    out
}

fn json_u64(run: &Run, key: &str) -> u64 {
    run.json()[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} missing in {}", String::from_utf8_lossy(&run.stdout)))
}

#[test]
fn push_noop_delta_and_pull_over_loopback() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let dst = srv.url("backup/tree");

    let run = ks(d, &["sync", "src", &dst, "--psk-file", "psk", "--codec", "zstd", "--json"]);
    run.ok();
    let total: u64 = 12 * 1000 + 9000 * 66 + (3 << 20);
    assert_eq!(json_u64(&run, "files_transferred"), 14);
    assert!(json_u64(&run, "bytes_sent") < total, "compressed on the way");
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/backup/tree")));
    assert!(!d.join("srv/.keepsync-partial").exists(), "nothing left behind");

    // No-op: every file skipped, only metadata crosses the link.
    let run = ks(d, &["sync", "src", &dst, "--psk-file", "psk", "--json"]);
    run.ok();
    assert_eq!(json_u64(&run, "files_transferred"), 0);
    assert_eq!(json_u64(&run, "files_skipped"), 14);
    assert!(json_u64(&run, "bytes_sent") < 8 << 10, "{}", json_u64(&run, "bytes_sent"));

    // Two bytes changed in a 3 MiB file: one block crosses, 8 KiB (sized to the file).
    let big = d.join("src/sub/big.bin");
    let mut data = std::fs::read(&big).unwrap();
    data[1_000_000] ^= 0x55;
    data[1_000_001] ^= 0x55;
    std::fs::write(&big, &data).unwrap();
    let run = ks(d, &["sync", "src", &dst, "--psk-file", "psk", "--json"]);
    run.ok();
    assert_eq!(json_u64(&run, "files_transferred"), 1);
    assert_eq!(json_u64(&run, "data_bytes"), 8 << 10);
    assert!(json_u64(&run, "bytes_sent") < 24 << 10);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/backup/tree")));

    // --delete removes what SRC lacks (over several connections: a final listing pass).
    std::fs::remove_file(d.join("src/f3.log")).unwrap();
    let run = ks(d, &["sync", "src", &dst, "--psk-file", "psk", "--delete", "--connections", "3"]);
    run.ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/backup/tree")));

    // Pull it back into a new directory.
    let run = ks(d, &["sync", &dst, "restored", "--psk-file", "psk", "--json"]);
    run.ok();
    assert_eq!(json_u64(&run, "files_transferred"), 13);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("restored")));
    srv.log_with("push into \"backup/tree\" done", 1);
}

#[test]
fn a_server_alias_from_the_config_file_names_host_port_base_and_key() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let conf = d.join("config.toml");
    std::fs::write(
        &conf,
        format!("[remotes.backup]\nurl = \"ks://{}/base\"\npsk_file = \"psk\"\n", srv.addr),
    )
    .unwrap();
    let env = [("KEEPSYNC_CONFIG", conf.to_str().unwrap())];
    keepsync(d, &["sync", "src", "ks://backup/tree"], None, &env).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/base/tree")));
    keepsync(d, &["sync", "ks://backup/tree", "back"], None, &env).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("back")));
    // --psk-file wins over the alias's key.
    ks(d, &["keygen", "-o", "other"]).ok();
    let r = keepsync(d, &["sync", "src", "ks://backup/tree", "--psk-file", "other"], None, &env);
    assert_eq!(r.code, 12, "{}", r.stderr);
}

#[test]
fn dry_run_over_the_network_lists_what_would_change_and_changes_nothing() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    // Push into a tree that does not exist yet: nothing may be created, not even the tree.
    let run = ks(d, &["sync", "src", &srv.url("dry/tree"), "--psk-file", "psk", "--dry-run"]);
    run.ok();
    let out = String::from_utf8_lossy(&run.stdout);
    assert!(out.contains("copy        sub/big.bin (3.0 MiB)"), "{out}");
    assert!(out.contains("create dir  sub/deeper"), "{out}");
    assert!(out.contains("symlink     sub/link -> ../f1.log"), "{out}");
    assert!(!d.join("srv/dry").exists(), "a dry run creates nothing");

    // After a real push, a dry run lists only the change, and --delete's removal.
    ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk"]).ok();
    std::fs::write(d.join("src/f2.log"), b"changed").unwrap();
    std::fs::write(d.join("srv/t/extra"), b"only there").unwrap();
    let before = snapshot(&d.join("srv/t"));
    let run = ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk", "--dry-run", "--delete", "--json"]);
    run.ok();
    let json = run.json();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["files_transferred"], 1);
    let mut planned: Vec<String> = json["planned"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{} {}", v["action"].as_str().unwrap(), v["path"].as_str().unwrap()))
        .collect();
    planned.sort_unstable();
    assert_eq!(planned, ["copy_file f2.log", "delete extra"]);
    assert_eq!(json["deleted"], 1, "the server's deletion reaches the client");
    assert_eq!(snapshot(&d.join("srv/t")), before, "nothing changed at the server");
    // The real run deletes it and says so.
    let run = ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk", "--delete", "--json"]);
    run.ok();
    assert_eq!(run.json()["deleted"], 1);
    assert!(!d.join("srv/t/extra").exists());

    // A pull dry run into a missing directory creates nothing locally.
    let run =
        ks(d, &["sync", &srv.url("t"), "restore", "--psk-file", "psk", "--dry-run", "--delete", "--json"]);
    run.ok();
    let json = run.json();
    // The tree as pushed (the real --delete run above removed `extra`).
    assert_eq!(json["files_transferred"], 14);
    assert!(!d.join("restore").exists());
}

#[test]
fn many_connections_creating_the_same_directories_do_not_trip_over_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    for i in 0..120 {
        let sub = d.join(format!("src/d{}/e{}", i % 30, i % 7));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}")), mixed(100 + i * 50, i as u64)).unwrap();
    }
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let run = ks(d, &["sync", "src", &srv.url("m"), "--psk-file", "psk", "--connections", "6", "--json"]);
    run.ok();
    assert_eq!(json_u64(&run, "files_transferred"), 120);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/m")));
}

#[test]
fn a_pull_over_several_connections_sends_each_file_once() {
    let dir = setup();
    let d = dir.path();
    for i in 0..60 {
        let sub = d.join(format!("src/p{}", i % 6));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("g{i}")), mixed(2000 + i * 700, 500 + i as u64)).unwrap();
    }
    // Directory mtimes in the past: a connection writing into a directory after another one
    // finished it would leave today's time there.
    for i in 0..6 {
        let f = std::fs::File::open(d.join(format!("src/p{i}"))).unwrap();
        f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000 + i)).unwrap();
    }
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let url = srv.url("tree");
    ks(d, &["sync", "src", &url, "--psk-file", "psk", "--connections", "3"]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/tree")));

    let run = ks(d, &["sync", &url, "back", "--psk-file", "psk", "--connections", "3", "--json"]);
    run.ok();
    let files = 60 + 14;
    assert_eq!(json_u64(&run, "connections"), 3);
    assert_eq!(json_u64(&run, "files_transferred"), files);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("back")));
    // The three connections shared one listing: their sent counts add up to the tree once.
    let log = srv.log_with("pull of \"tree\" done", 3);
    let sent: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("pull of \"tree\" done"))
        .map(|l| l.split(": ").nth(3).unwrap().split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(sent.len(), 3, "{log}");
    assert_eq!(sent.iter().sum::<u64>(), files, "{log}");

    // --delete over several connections: the last, listing-only pass removes what the server
    // lacks; a no-op pull moves no file.
    std::fs::write(d.join("back/p2/extra"), b"not on the server").unwrap();
    let run = ks(d, &["sync", &url, "back", "--psk-file", "psk", "--connections", "3", "--delete", "--json"]);
    run.ok();
    assert_eq!(json_u64(&run, "files_transferred"), 0);
    assert_eq!(json_u64(&run, "deleted"), 1);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("back")));
}

/// Threads of a running process (Linux).
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn an_idle_server_keeps_no_thread_for_the_connections_it_served() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let pid = srv.child.id();
    for round in 0..3 {
        ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk", "--connections", "4"]).ok();
        ks(d, &["sync", &srv.url("t"), &format!("back{round}"), "--psk-file", "psk", "--connections", "3"])
            .ok();
    }
    // Each connection had a thread of its own while it ran; once they all ended, only the
    // accept loop's is left (no pool of idle workers, no thread per past connection).
    let deadline = Instant::now() + Duration::from_secs(10);
    while threads(pid) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(threads(pid), 1, "{}", srv.log());
}

#[test]
fn connections_beyond_max_connections_wait_for_one_to_end() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &["--max-connections", "1"]);
    // A throttled push holds the only place (a place is taken once a client proved the key).
    std::fs::create_dir_all(d.join("slow")).unwrap();
    std::fs::write(d.join("slow/big.bin"), noise(4 << 20, 5)).unwrap();
    let slow = ["sync", "slow", &srv.url("s"), "--psk-file", "psk", "--connections", "1"];
    let mut holder = spawn_sync(d, &[&slow[..], &["--limit-rate", "1MiB"]].concat());
    wait_for_partial(&d.join("srv"), 1, &mut holder, partial_bytes);
    let sync =
        spawn_sync(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk", "--connections", "1", "-q"]);
    // Once the server says the only place is taken, the sync can only wait.
    srv.log_with("1 connections are open; new ones wait", 1);
    let held = holder.wait_with_output().unwrap();
    assert!(held.status.success(), "{}", String::from_utf8_lossy(&held.stderr));
    let out = sync.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/t")));
    assert_eq!(snapshot(&d.join("slow")), snapshot(&d.join("srv/s")));
}

#[test]
fn a_connection_waiting_for_a_place_is_kept_alive() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &["--max-connections", "1"]);
    std::fs::create_dir_all(d.join("slow")).unwrap();
    std::fs::write(d.join("slow/big.bin"), noise(8 << 20, 5)).unwrap();
    let slow = ["sync", "slow", &srv.url("s"), "--psk-file", "psk", "--connections", "1"];
    let mut holder = spawn_sync(d, &[&slow[..], &["--limit-rate", "1MiB"]].concat());
    wait_for_partial(&d.join("srv"), 1, &mut holder, partial_bytes);
    // A client that proved its key and sent Open waits for the place; its ping is answered
    // while it waits (before Opened), so it can wait longer than an idle timeout.
    let psk = keepsync::keys::read_key_file(&d.join("psk")).unwrap();
    let mut raw = Raw::connect(&srv.addr, &psk);
    raw.send_open("w", Direction::Push, false);
    srv.log_with("1 connections are open; new ones wait", 1);
    raw.ep.send(0, &Message::Ping).unwrap();
    raw.flush();
    let mut buf = [0u8; 4096];
    // The first frame back is the Pong (no message for the caller), not Opened.
    let n = raw.stream.read(&mut buf).unwrap();
    assert!(n > 0);
    let mut at = 0;
    while at < n {
        at += raw.ep.handle_input(0, &buf[at..n]).unwrap();
        assert!(raw.ep.poll_message(0).is_none(), "Opened came before the pong: the wait was not kept alive");
    }
    keepsync::net::raise_open_file_limit();
    assert_eq!(raw.read_message(), Some(Message::Opened { max_files: keepsync::net::files_in_flight() }));
    let held = holder.wait_with_output().unwrap();
    assert!(held.status.success(), "{}", String::from_utf8_lossy(&held.stderr));
}

/// Resident memory of a process, at most ever (Linux's VmHWM), in bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn connections_that_prove_nothing_cost_little_and_hold_no_place() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &["--max-connections", "1"]);
    let pid = srv.child.id();
    // 400 hostile connections, held open: silent ones, half hellos, huge length prefixes,
    // random bytes; more than the server keeps in their handshake at once.
    let mut hostile = Vec::new();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..400 {
        let mut s = TcpStream::connect(&srv.addr).unwrap();
        let sent = match i % 8 {
            0..5 => Vec::new(),
            5 => [&44u32.to_le_bytes()[..], b"KSYN\x03"].concat(),
            6 => u32::MAX.to_le_bytes().to_vec(),
            _ => (0..64 << 10)
                .map(|_| {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng as u8
                })
                .collect(),
        };
        // A peer that already hung up refuses the rest; that is fine.
        let _ = s.write_all(&sent);
        hostile.push(s);
    }
    // A legitimate push still gets through and is exact.
    ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk", "--connections", "1"]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/t")));
    let log = srv.log_with("still in their handshake: dropped the oldest", 1);
    // Each cause is named as what it is.
    srv.log_with("malformed hello", 1);
    let peak = peak_rss(pid);
    assert!(peak < 64 << 20, "serve peaked at {} MiB resident\n{log}", peak >> 20);
    drop(hostile);
}

#[test]
fn wrong_psk_missing_psk_and_paths_outside_the_root_fail_clearly() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    ks(d, &["keygen", "-o", "other"]).ok();

    let run = ks(d, &["sync", "src", &srv.url("x"), "--psk-file", "other"]);
    assert_eq!(run.code, 12, "{}", run.stderr);
    assert!(run.stderr.contains("did not prove the pre-shared key"), "{}", run.stderr);
    assert!(run.stderr.contains("same --psk-file"), "{}", run.stderr);
    assert!(!d.join("srv/x").exists(), "nothing written for a client without the key");

    let run = ks(d, &["sync", "src", &srv.url("x")]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--psk-file"), "{}", run.stderr);

    // Refused before connecting (the server refuses them too: see the hostile client).
    for bad in ["../escape", "a/../../escape"] {
        let run = ks(d, &["sync", "src", &srv.url(bad), "--psk-file", "psk"]);
        assert_eq!(run.code, 2, "{bad}: {}", run.stderr);
        assert!(run.stderr.contains("is not allowed"), "{}", run.stderr);
    }
    assert!(!d.join("escape").exists());

    let run = ks(d, &["sync", "src", "ks://127.0.0.1:1/x", "--psk-file", "psk"]);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert!(run.stderr.contains("cannot connect"), "{}", run.stderr);
    // The server logged the failed handshake and still serves.
    ks(d, &["sync", "src", &srv.url("ok"), "--psk-file", "psk"]).ok();
    srv.log_with("hung up without proving the pre-shared key", 1);

    // A pull that fails leaves no DEST behind (nor the parents it would have made), and
    // spares a DEST that existed.
    std::fs::create_dir(d.join("kept")).unwrap();
    let pulls: [(&str, &str, &str, i32); 4] = [
        (&srv.url("ok"), "new/deep/dest", "other", 12),
        (&srv.url("missing"), "new/deep/dest", "psk", 12),
        ("ks://127.0.0.1:1/x", "new/deep/dest", "psk", 10),
        (&srv.url("ok"), "kept", "other", 12),
    ];
    for (url, dest, psk, code) in pulls {
        let run = ks(d, &["sync", url, dest, "--psk-file", psk]);
        assert_eq!(run.code, code, "{url} -> {dest}: {}", run.stderr);
    }
    assert!(!d.join("new").exists(), "a failed pull left the directories it made");
    assert!(d.join("kept").is_dir(), "a failed pull removed a DEST that existed");
}

#[test]
fn names_from_a_peer_cannot_forge_log_lines_and_a_busy_port_is_named() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    // The server has a file where the client pushes a directory of that name: the problem
    // names the entry, whose name carries a newline and a fake log line.
    let evil = "a\nkeepsync: 9.9.9.9:1: FAKE LOG LINE";
    std::fs::create_dir_all(d.join("srv/t")).unwrap();
    std::fs::write(d.join("srv/t").join(evil), b"a file").unwrap();
    std::fs::create_dir_all(d.join("src").join(evil)).unwrap();
    std::fs::write(d.join("src").join(evil).join("inside"), b"x").unwrap();
    let run = ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk"]);
    assert_eq!(run.code, 23, "{}", run.stderr);
    let log = srv.log_with("push into", 1);
    assert!(log.contains("a\\x0akeepsync: 9.9.9.9:1: FAKE"), "{log}");
    for text in [&log, &run.stderr] {
        assert!(!text.lines().any(|l| l.starts_with("keepsync: 9.9.9.9:1: FAKE")), "{text}");
    }
    // A second server on the same port is told the port is taken, not to resume.
    let run = ks(d, &["serve", "--root", "srv", "--listen", &srv.addr, "--psk-file", "psk"]);
    assert_eq!(run.code, 10, "{}", run.stderr);
    assert!(run.stderr.contains("another program"), "{}", run.stderr);
    assert!(!run.stderr.contains("resume"), "{}", run.stderr);
}

/// A `keepsync serve --clients clients.toml` over `srv`.
fn serve_clients(d: &Path) -> Server {
    let mut cmd = command();
    cmd.args(["serve", "--root", "srv", "--listen", "127.0.0.1:0", "--clients", "clients.toml"]);
    Server::spawn(d, cmd)
}

fn clients_file(d: &Path, clients: &[(&str, &str, &str)]) {
    let mut text = String::new();
    for (name, root, mode) in clients {
        if !d.join(format!("{name}.key")).exists() {
            ks(d, &["keygen", "-o", &format!("{name}.key")]).ok();
        }
        text += &format!(
            "[[client]]\nname = \"{name}\"\nkey_file = \"{name}.key\"\nroot = \"{root}\"\nmode = \"{mode}\"\n"
        );
    }
    std::fs::write(d.join("clients.toml"), text).unwrap();
}

#[test]
fn each_client_has_its_own_key_subtree_and_mode() {
    let dir = setup();
    let d = dir.path();
    clients_file(
        d,
        &[("alice", "alice", "read-write"), ("bob", "bob", "append-only"), ("carol", "alice", "read-only")],
    );
    ks(d, &["keygen", "-o", "eve.key"]).ok();
    let srv = serve_clients(d);
    let sync = |key: &str, args: &[&str]| ks(d, &[args, &["--psk-file", key]].concat());
    // Paths are the client's own: alice's `t` is srv/alice/t, and `.` is her subtree only.
    sync("alice.key", &["sync", "src", &srv.url("t")]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/alice/t")));
    sync("alice.key", &["sync", &srv.url("."), "alice-all"]).ok();
    assert_eq!(listing(&d.join("alice-all")), ["t"]);
    let run = sync("alice.key", &["sync", "src", &srv.url("../bob")]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    // Append-only: new files land, a changed one is refused and kept, --delete is refused
    // before anything runs.
    sync("bob.key", &["sync", "src", &srv.url("t")]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/bob/t")));
    let kept = std::fs::read(d.join("srv/bob/t/f3.log")).unwrap();
    std::fs::write(d.join("src/f3.log"), b"ransomware was here").unwrap();
    std::fs::write(d.join("src/new.txt"), b"a new file").unwrap();
    let run = sync("bob.key", &["sync", "src", &srv.url("t")]);
    assert_eq!(run.code, 23, "{}", run.stderr);
    assert!(run.stderr.contains("f3.log") && run.stderr.contains("append-only"), "{}", run.stderr);
    assert_eq!(std::fs::read(d.join("srv/bob/t/f3.log")).unwrap(), kept);
    assert_eq!(std::fs::read(d.join("srv/bob/t/new.txt")).unwrap(), b"a new file");
    std::fs::remove_file(d.join("src/f1.log")).unwrap();
    let run = sync("bob.key", &["sync", "src", &srv.url("t"), "--delete"]);
    assert_eq!(run.code, 12, "{}", run.stderr);
    assert!(d.join("srv/bob/t/f1.log").exists(), "nothing deleted");
    sync("bob.key", &["sync", &srv.url("t"), "bob-back"]).ok();
    // Read-only: carol reads alice's subtree and writes nothing.
    let run = sync("carol.key", &["sync", "src", &srv.url("t2")]);
    assert_eq!(run.code, 12, "{}", run.stderr);
    assert!(!d.join("srv/alice/t2").exists());
    sync("carol.key", &["sync", &srv.url("t"), "carol-back"]).ok();
    assert_eq!(snapshot(&d.join("srv/alice/t")), snapshot(&d.join("carol-back")));
    // An unknown key fails like a wrong one; the server's log says which it was.
    let run = sync("eve.key", &["sync", "src", &srv.url("t")]);
    assert_eq!(run.code, 12, "{}", run.stderr);
    assert!(run.stderr.contains("did not prove the pre-shared key"), "{}", run.stderr);
    let log = srv.log_with("unknown key id", 1);
    assert!(log.contains("client \"bob\" is append-only: --delete"), "{log}");
    assert!(log.contains("client \"carol\" is read-only"), "{log}");
    assert!(log.contains("client \"alice\" push into \"t\" done"), "{log}");
    // Nothing landed outside each client's subtree.
    let names = listing(&d.join("srv"));
    assert!(names.iter().all(|n| ["alice", "bob", ".keepsync-partial"].contains(&n.as_str())), "{names:?}");
}

#[test]
fn a_hello_naming_another_clients_key_id_opens_nothing() {
    let dir = setup();
    let d = dir.path();
    clients_file(d, &[("alice", "alice", "read-write")]);
    ks(d, &["keygen", "-o", "eve.key"]).ok();
    let srv = serve_clients(d);
    let alice = keepsync::keys::read_key_file(&d.join("alice.key")).unwrap();
    let eve = keepsync::keys::read_key_file(&d.join("eve.key")).unwrap();
    // Eve's hello, with alice's key id in place of her own: the server looks up alice's key.
    let mut raw = Raw::connect(&srv.addr, &eve);
    let (eve_id, alice_id) = (key_id(&eve), key_id(&alice));
    let mut hello = raw.ep.pending_transmit().to_vec();
    raw.ep.consume_transmit(hello.len());
    let at = hello.windows(eve_id.len()).position(|w| w == eve_id).expect("the hello carries the key id");
    hello[at..at + alice_id.len()].copy_from_slice(&alice_id);
    raw.stream.write_all(&hello).unwrap();
    // The server proves alice's key, which eve cannot check; and eve cannot prove it either.
    let mut buf = [0u8; 4096];
    let refused = loop {
        let n = raw.stream.read(&mut buf).expect("the server answers the hello");
        assert!(n > 0, "the server hung up before its hello");
        match raw.ep.handle_input(0, &buf[..n]) {
            Err(e) => break e,
            Ok(_) => assert!(raw.ep.poll_message(0).is_none(), "a session opened on a forged key id"),
        }
    };
    assert_eq!(refused, ProtoError::PeerNotAuthenticated);
    drop(raw);
    let log = srv.log_with("hung up without proving the pre-shared key", 1);
    assert!(!log.contains("unknown key id"), "the forged id was alice's, known: {log}");
    assert!(!log.contains("client \"alice\""), "{log}");
    // Alice herself is unaffected.
    ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "alice.key"]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/alice/t")));
}

fn hangup(srv: &Server) {
    let pid = srv.child.id().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
}

#[test]
fn reading_the_clients_file_again_revokes_and_adds_clients_and_spares_the_others() {
    let dir = setup();
    let d = dir.path();
    clients_file(d, &[("alice", "a", "read-write"), ("bob", "b", "read-write")]);
    ks(d, &["keygen", "-o", "dave.key"]).ok();
    let srv = serve_clients(d);
    std::fs::create_dir_all(d.join("big")).unwrap();
    std::fs::write(d.join("big/data.bin"), noise(6 << 20, 3)).unwrap();
    // Two throttled pushes in flight, alice's and bob's.
    let push = |key: &str, to: &str| {
        spawn_sync(
            d,
            &["sync", "big", &srv.url(to), "--psk-file", key, "--limit-rate", "1MiB", "--connections", "1"],
        )
    };
    let mut alice = push("alice.key", "x");
    let bob = push("bob.key", "y");
    wait_for_partial(&d.join("srv"), 2 << 20, &mut alice, partial_bytes);
    // Alice is removed, dave added; the file is read again on SIGHUP.
    clients_file(d, &[("bob", "b", "read-write"), ("dave", "d", "read-write")]);
    hangup(&srv);
    srv.log_with("read 2 clients", 1);
    let out = alice.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!d.join("srv/a/x/data.bin").exists());
    srv.log_with("was revoked", 1);
    let out = bob.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(snapshot(&d.join("big")), snapshot(&d.join("srv/b/y")));
    ks(d, &["sync", "src", &srv.url("z"), "--psk-file", "dave.key"]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/d/z")));
    // A file that does not load changes nothing.
    std::fs::write(d.join("clients.toml"), "[[client]]\nname = 1\n").unwrap();
    hangup(&srv);
    srv.log_with("kept the clients as they were", 1);
    ks(d, &["sync", "src", &srv.url("z2"), "--psk-file", "dave.key"]).ok();
}

#[test]
fn checksum_catches_content_changed_under_a_restored_mtime_and_keeps_an_index() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let url = srv.url("c");
    let cache = d.join("client-cache");
    let env = [("XDG_CACHE_HOME", cache.to_str().unwrap())];
    let sync = |extra: &[&str]| {
        let mut args = vec!["sync", "src", &url, "--psk-file", "psk", "--json"];
        args.extend_from_slice(extra);
        let run = keepsync(d, &args, None, &env);
        run.ok();
        run
    };
    sync(&["--checksum"]);
    let index_files = std::fs::read_dir(cache.join("keepsync/index")).unwrap().count();
    assert_eq!(index_files, 1, "the source tree's hash index is kept in the cache dir");
    assert_eq!(
        std::fs::read_dir(d.join("server-cache/keepsync/index")).map_or(0, |r| r.count()),
        0,
        "the receiver had nothing to compare yet"
    );

    // Same size, other bytes, the old mtime put back: only --checksum sees it.
    let f = d.join("src/f5.log");
    let mtime = std::fs::metadata(&f).unwrap().modified().unwrap();
    let mut data = std::fs::read(&f).unwrap();
    data[10] ^= 0xff;
    std::fs::write(&f, &data).unwrap();
    std::fs::File::options().write(true).open(&f).unwrap().set_modified(mtime).unwrap();
    assert_eq!(json_u64(&sync(&[]), "files_transferred"), 0, "size and mtime match: skipped");
    let run = sync(&["--checksum"]);
    assert_eq!(json_u64(&run, "files_transferred"), 1);
    assert_eq!(json_u64(&run, "files_skipped"), 13);
    assert_eq!(std::fs::read(d.join("srv/c/f5.log")).unwrap(), data);
    assert_eq!(std::fs::read_dir(d.join("server-cache/keepsync/index")).unwrap().count(), 1);
}

// ---- a hostile client, speaking the protocol by hand -----------------------------------

type Ep = Sender<RustCrypto, Vec<u8>>;

struct Raw {
    stream: TcpStream,
    ep: Ep,
}

impl Raw {
    fn connect(addr: &str, psk: &SecretKey) -> Self {
        Self::connect_sized(addr, psk, 70_000)
    }

    /// A client whose buffers (and so frames) are `len` bytes, as small as a device's.
    fn connect_sized(addr: &str, psk: &SecretKey, len: usize) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let conn =
            Connection::client(RustCrypto, psk.clone(), [9; 32], 0, vec![0; len], vec![0; len]).unwrap();
        Self { stream, ep: Sender::new(conn) }
    }

    fn flush(&mut self) {
        let pending = self.ep.pending_transmit().to_vec();
        self.stream.write_all(&pending).unwrap();
        self.ep.consume_transmit(pending.len());
    }

    /// Reads until the connection yields a message (handshake frames yield none).
    /// Reads until a message arrives (the server sends one at a time in these tests).
    fn read_message(&mut self) -> Option<Message<'static>> {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            let mut at = 0;
            while at < n {
                at += self.ep.handle_input(0, &buf[at..n]).unwrap();
                if let Some(m) = self.ep.poll_message(0) {
                    return Some(match m.unwrap() {
                        Message::Opened { max_files } => Message::Opened { max_files },
                        Message::Close(c) => Message::Close(c),
                        other => panic!("unexpected {other:?}"),
                    });
                }
            }
        }
    }

    fn open(addr: &str, psk: &SecretKey, path: &str) -> Self {
        let (raw, answer) = Self::try_open(addr, psk, path, Direction::Push);
        // The server announces what its table and open-file limit allow (the same limit as
        // this process's: the server raised its soft limit to the hard one, as this does).
        keepsync::net::raise_open_file_limit();
        let max_files = keepsync::net::files_in_flight();
        assert_eq!(answer, Some(Message::Opened { max_files }));
        raw
    }

    /// Opens `path` for `direction` and returns the server's answer.
    fn try_open(
        addr: &str,
        psk: &SecretKey,
        path: &str,
        direction: Direction,
    ) -> (Self, Option<Message<'static>>) {
        Self::try_open_with(addr, psk, path, direction, false)
    }

    /// The same, asking that entries in the way be replaced (`--delete`).
    fn try_open_with(
        addr: &str,
        psk: &SecretKey,
        path: &str,
        direction: Direction,
        replace: bool,
    ) -> (Self, Option<Message<'static>>) {
        Self::open_raw(Self::connect(addr, psk), path, direction, replace)
    }

    fn open_raw(
        mut raw: Self,
        path: &str,
        direction: Direction,
        replace: bool,
    ) -> (Self, Option<Message<'static>>) {
        raw.send_open(path, direction, replace);
        let answer = raw.read_message();
        (raw, answer)
    }

    /// Finishes the handshake and sends `Open` (the answer is left unread).
    fn send_open(&mut self, path: &str, direction: Direction, replace: bool) {
        self.flush();
        let mut buf = [0u8; 4096];
        while !self.ep.is_open() {
            let n = self.stream.read(&mut buf).unwrap();
            let mut at = 0;
            while at < n {
                at += self.ep.handle_input(0, &buf[at..n]).unwrap();
            }
            self.flush();
        }
        let open = keepsync_core::sync::open::OpenParams {
            replace,
            ..keepsync_core::sync::open::OpenParams::new(direction, 32)
        }
        .message(path);
        self.ep.send(0, &open).unwrap();
        self.flush();
    }

    /// Next sender event, owned.
    fn event(&mut self) -> Option<(u32, Option<Status>, Option<Have>)> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(ev) = self.ep.poll_event(0) {
                match ev.unwrap() {
                    SenderEvent::Done { id, status } => return Some((id, Some(status), None)),
                    SenderEvent::Have { id, have } => return Some((id, None, Some(have))),
                    SenderEvent::Hashes { .. } => continue,
                    SenderEvent::Closed(_) | SenderEvent::Deleted(_) => return None,
                }
            }
            let n = self.stream.read(&mut buf).ok()?;
            if n == 0 {
                return None;
            }
            let mut at = 0;
            while at < n {
                at += self.ep.handle_input(0, &buf[at..n]).unwrap();
                if let Some(ev) = self.ep.poll_event(0) {
                    let owned = match ev.unwrap() {
                        SenderEvent::Done { id, status } => Some((id, Some(status), None)),
                        SenderEvent::Have { id, have } => Some((id, None, Some(have))),
                        _ => None,
                    };
                    if owned.is_some() {
                        assert_eq!(at, n, "one reply per read in this test");
                        return owned;
                    }
                }
            }
        }
    }
}

#[test]
fn a_receiver_sizes_its_hashes_for_a_sender_with_small_frames() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    // An old copy large enough that its block hashes fill many small frames.
    std::fs::create_dir_all(d.join("srv/t")).unwrap();
    std::fs::write(d.join("srv/t/old.bin"), noise(4 << 20, 1)).unwrap();
    let psk = keepsync::keys::read_key_file(&d.join("psk")).unwrap();
    // A device-sized sender: frames of at most 4 KiB (about 120 hashes each).
    let raw = Raw::connect_sized(&srv.addr, &psk, 4 + 4096);
    let (mut raw, answer) = Raw::open_raw(raw, "t", Direction::Push, false);
    assert!(matches!(answer, Some(Message::Opened { .. })), "{answer:?}");
    raw.ep.offer(0, &file(1, "old.bin", 4 << 20)).unwrap();
    raw.flush();
    let (mut announced, mut got) = (None, 0usize);
    let mut buf = [0u8; 4096];
    while announced.is_none_or(|n| got < n) {
        let n = raw.stream.read(&mut buf).unwrap();
        assert!(n > 0, "the server ended the connection after {got} hashes of {announced:?}\n{}", srv.log());
        let mut at = 0;
        while at < n {
            at += raw.ep.handle_input(0, &buf[at..n]).unwrap();
            while let Some(ev) = raw.ep.poll_event(0) {
                match ev.unwrap() {
                    SenderEvent::Have { have: Have::Need { blocks, .. }, .. } => {
                        announced = Some(blocks as usize)
                    }
                    SenderEvent::Hashes { hashes, .. } => got += hashes.len() / 32,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    assert!(got > 4096 / 32, "the hashes needed several frames: {got}");
}

fn file(id: u32, path: &str, size: u64) -> FileMeta<'_> {
    FileMeta {
        id,
        path,
        kind: Kind::File,
        size,
        mtime: 0,
        mtime_nsec: 0,
        mode: 0o644,
        target: "",
        hash: None,
        version: [0; 16],
        layout: keepsync_core::sync::Layout::Whole,
    }
}

/// A client whose `Open` carries one filter rule more than `MAX_FILTER_RULES` is cut off at
/// its first sealed message (the core refuses the list before the host builds a rule), and
/// the server goes on serving.
#[test]
fn an_open_with_too_many_filter_rules_ends_the_connection_and_the_server_keeps_serving() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let psk = keepsync::keys::read_key_file(&d.join("psk")).unwrap();
    let mut raw = Raw::connect(&srv.addr, &psk);
    let client_hello = raw.ep.pending_transmit().to_vec();
    raw.flush();
    let mut server_hello = [0u8; 80];
    raw.stream.read_exact(&mut server_hello).unwrap();
    raw.ep.handle_input(0, &server_hello).unwrap();
    assert!(raw.ep.is_open());
    raw.flush();
    let rules = [0u8, 1, b'x'].repeat(keepsync_core::budget::MAX_FILTER_RULES + 1);
    let open = seal_as_client(&psk, &client_hello, &server_hello, 0, &open_with_raw_rules("t", &rules));
    raw.stream.write_all(&open).unwrap();
    assert_eq!(raw.read_message(), None, "no answer: the connection ends");
    srv.log_with("does not decode", 1);
    assert!(!d.join("srv/t").exists());
    ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk"]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/t")));
}

#[test]
fn a_hostile_client_is_confined_to_the_root_and_the_server_keeps_serving() {
    let dir = setup();
    let d = dir.path();
    let psk = keepsync::keys::read_key_file(&d.join("psk")).unwrap();
    std::fs::create_dir_all(d.join("srv/t")).unwrap();
    std::fs::create_dir_all(d.join("outside")).unwrap();
    std::os::unix::fs::symlink(d.join("outside"), d.join("srv/t/evil")).unwrap();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);

    // Trees that would escape, or name no tree at all (the whole served root is only ever
    // asked for as "."): refused before anything runs, both ways.
    for bad in ["../escape", "a/../../escape", "/etc", "", "t/evil", "t/evil/x", ".keepsync-partial"] {
        for direction in [Direction::Push, Direction::Pull] {
            let (_, answer) = Raw::try_open(&srv.addr, &psk, bad, direction);
            assert_eq!(answer, Some(Message::Close(keepsync_core::sync::CloseCode::Refused)), "{bad:?}");
        }
    }
    assert_eq!(std::fs::read_dir(d.join("outside")).unwrap().count(), 0);

    // Paths that would escape: each refused, nothing written outside the root.
    let mut raw = Raw::open(&srv.addr, &psk, "t");
    let hostile =
        ["../escape", "/etc/escape", "a/../../escape", "evil/escape", "./x", "a//b", ".keepsync-partial/x"];
    for (id, path) in hostile.iter().enumerate() {
        raw.ep.offer(0, &file(id as u32, path, 5)).unwrap();
        raw.flush();
        assert_eq!(raw.event(), Some((id as u32, Some(Status::Rejected), None)), "{path}");
    }
    // A symlink entry may point anywhere (it is only a link) but is never written through.
    let link = FileMeta { kind: Kind::Symlink, target: "/etc", ..file(50, "lnk", 0) };
    raw.ep.offer(0, &link).unwrap();
    raw.flush();
    assert_eq!(raw.event(), Some((50, Some(Status::Ok), None)));
    raw.ep.offer(0, &file(51, "lnk/passwd", 5)).unwrap();
    raw.flush();
    assert_eq!(raw.event(), Some((51, Some(Status::Rejected), None)));
    // A file announced with one hash but sent with other bytes never lands.
    raw.ep.offer(0, &file(52, "liar", 5)).unwrap();
    raw.flush();
    let (_, _, have) = raw.event().unwrap();
    assert!(matches!(have, Some(Have::Need { resume_from: 0, .. })));
    raw.ep.send_data(0, 52, 0, 0, 5, b"hello").unwrap();
    raw.ep.end_file(0, 52, [7; 32]).unwrap();
    raw.flush();
    assert_eq!(raw.event(), Some((52, Some(Status::HashMismatch), None)));
    assert!(!d.join("srv/t/liar").exists());
    assert_eq!(std::fs::read_dir(d.join("outside")).unwrap().count(), 0);
    assert!(!d.join("escape").exists() && !d.join("srv/escape").exists());
    drop(raw);

    // An oversized length prefix right after the handshake: the server hangs up.
    let mut raw = Raw::open(&srv.addr, &psk, "t");
    raw.stream.write_all(&u32::MAX.to_le_bytes()).unwrap();
    let mut buf = [0u8; 64];
    assert!(matches!(raw.stream.read(&mut buf), Ok(0) | Err(_)), "connection closed");

    // A tampered frame, and a replayed one: the server hangs up on each.
    for replay in [false, true] {
        let mut raw = Raw::open(&srv.addr, &psk, "t");
        raw.ep.offer(0, &file(1, "a", 5)).unwrap();
        let mut frame = raw.ep.pending_transmit().to_vec();
        raw.ep.consume_transmit(frame.len());
        if replay {
            raw.stream.write_all(&frame).unwrap();
        } else {
            let last = frame.len() - 1;
            frame[last] ^= 1;
        }
        raw.stream.write_all(&frame).unwrap();
        let mut got = Vec::new();
        let _ = raw.stream.read_to_end(&mut got);
        assert!(got.len() < 200, "no file transfer after a bad frame");
    }
    assert!(!d.join("srv/t/a").exists(), "an offer alone never creates the file");

    // The server still serves honest clients, and logged each fault.
    ks(d, &["sync", "src", &srv.url("t/honest"), "--psk-file", "psk"]).ok();
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/t/honest")));
    srv.log_with("frame failed authentication", 1);
    srv.log_with("bytes are accepted", 1);
    let log = srv.log_with("is not allowed", 1);
    assert!(log.contains("is not allowed"), "{log}");
    assert!(log.contains("frame failed authentication"), "{log}");
    assert!(log.contains("bytes are accepted"), "{log}");
}

// ---- kill -9 -------------------------------------------------------------------------

/// Incompressible bytes, so link bytes track file bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    keepsync::sample::generate(keepsync::sample::Kind::Random, len, seed)
}

fn partial_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir.join(".keepsync-partial")) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
        .map(|e| e.metadata().map_or(0, |m| m.len()))
        .sum()
}

fn spawn_sync(d: &Path, args: &[&str]) -> Child {
    command().current_dir(d).args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// Waits until the receiver's partial data under `dst`, as `measure` counts it, reaches
/// `bytes`.
fn wait_for_partial(dst: &Path, bytes: u64, child: &mut Child, measure: fn(&Path) -> u64) {
    let start = Instant::now();
    while measure(dst) < bytes {
        assert!(child.try_wait().unwrap().is_none(), "the sync ended before it could be interrupted");
        assert!(start.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

const SIZE: usize = 24 << 20;

/// Bytes the filesystem holds for the partial files under `dst` (split files are written at
/// their parts' offsets, so their length says little).
fn allocated_partial_bytes(dst: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dst.join(".keepsync-partial")) else { return 0 };
    rd.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".data"))
        .map(|e| e.metadata().map_or(0, |m| m.blocks() * 512))
        .sum()
}

/// The numbers after `key` in each of the server's log lines that have it.
fn log_counts(log: &str, key: &str) -> Vec<u64> {
    log.lines()
        .filter_map(|l| {
            let before = l.split(key).next().filter(|_| l.contains(key))?;
            before.rsplit([' ', '(']).find(|w| !w.is_empty())?.parse().ok()
        })
        .collect()
}

#[test]
fn a_large_file_goes_as_parts_over_several_connections_both_ways() {
    let dir = setup();
    let d = dir.path();
    std::fs::write(d.join("src/sub/huge.bin"), mixed(7 << 20, 8)).unwrap();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let url = srv.url("split");
    let split = ["--psk-file", "psk", "--connections", "3", "--part-size", "1MiB", "--json"];
    let run = ks(d, &[&["sync", "src", &url][..], &split].concat());
    run.ok();
    assert_eq!(json_u64(&run, "files_transferred"), 15);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/split")));
    assert!(!d.join("srv/.keepsync-partial").exists(), "parts' checkpoints cleaned up");
    // 7 parts of huge.bin and 3 of big.bin (3 MiB), taken by whichever connection is free
    // (and a last connection for the directories' mtimes). How many connections took parts
    // depends on scheduling, so it is not asserted: on a loaded machine one connection can
    // take them all before the others are open.
    let connections = json_u64(&run, "connections") as usize + 1;
    let log = srv.log_with("push into \"split\" done", connections);
    let parts = log_counts(&log, " parts of split files");
    assert_eq!(parts.iter().sum::<u64>(), 10, "{log}");
    assert_eq!(log_counts(&log, " files received").iter().sum::<u64>(), 15, "{log}");

    // A pull splits on the server, at the client's part size.
    let run = ks(d, &[&["sync", &url, "back"][..], &split].concat());
    run.ok();
    assert_eq!(json_u64(&run, "files_transferred"), 15);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("back")));
    assert!(!d.join("back/.keepsync-partial").exists());

    // A changed block of a split file: only that block's part sends data (16 KiB blocks for a
    // 7 MiB file).
    let huge = d.join("src/sub/huge.bin");
    let mut data = std::fs::read(&huge).unwrap();
    data[5_500_000] ^= 1;
    std::fs::write(&huge, &data).unwrap();
    let run = ks(d, &[&["sync", "src", &url][..], &split].concat());
    run.ok();
    assert_eq!(json_u64(&run, "data_bytes"), 16 << 10);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/split")));
}

/// A temp dir with a PSK, `src/data.bin` (`SIZE` bytes of noise from `seed`) and a server on
/// `srv/` that checkpoints every MiB: the scene of the `kill -9` tests.
fn resume_scene(seed: u64) -> (tempfile::TempDir, Server) {
    scene_serving_with(seed, &["--checkpoint-every", "1MiB"])
}

/// The same scene, its server started with `args`.
fn scene_serving_with(seed: u64, args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    std::fs::write(d.join("src/data.bin"), noise(SIZE, seed)).unwrap();
    let srv = Server::start(d, "srv", "127.0.0.1:0", args);
    (dir, srv)
}

#[test]
fn kill_9_mid_split_file_resumes_every_part_where_it_stopped() {
    let (dir, srv) = resume_scene(4);
    let d = dir.path();
    let url = srv.url("dst");
    let dst = d.join("srv/dst");
    // Partials live at the served root, whatever tree a push writes.
    let partials = d.join("srv");
    let split = ["sync", "src", &url, "--psk-file", "psk", "--connections", "3", "--part-size", "4MiB"];
    let mut child = spawn_sync(d, &[&split[..], &["--limit-rate", "12MiB"]].concat());
    wait_for_partial(&partials, SIZE as u64 / 2, &mut child, allocated_partial_bytes);
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dst.join("data.bin").exists(), "an unfinished file never appears under its name");
    let written = allocated_partial_bytes(&partials);

    let run = ks(d, &[&split[..], &["--json"]].concat());
    run.ok();
    let sent = json_u64(&run, "bytes_sent");
    // Each of the three connections loses at most the 1 MiB since its part's last checkpoint.
    let bound = SIZE as u64 - written + (3 << 20) + SIZE as u64 / 100;
    assert!(sent <= bound, "sent {sent}, written {written}, bound {bound}");
    assert_eq!(std::fs::read(dst.join("data.bin")).unwrap(), std::fs::read(d.join("src/data.bin")).unwrap());
    assert!(!partials.join(".keepsync-partial").exists(), "partials cleaned up");
    let log = srv.log_with("push into \"dst\" done", json_u64(&run, "connections") as usize);
    assert_eq!(log_counts(&log, " resumed").iter().sum::<u64>(), 1, "{log}");
}

#[test]
fn kill_9_of_the_client_at_several_points_resumes_sending_only_what_is_missing() {
    let (dir, srv) = resume_scene(3);
    let d = dir.path();
    std::fs::write(d.join("src/small.txt"), b"small").unwrap();
    let url = srv.url("dst");
    let dst = d.join("srv/dst");
    // Partials live at the served root, whatever tree a push writes.
    let partials = d.join("srv");
    // Throttled so the kills land mid-file; each kill point is further along.
    for percent in [20u64, 45, 70] {
        let mut child = spawn_sync(d, &["sync", "src", &url, "--psk-file", "psk", "--limit-rate", "12MiB"]);
        wait_for_partial(&partials, SIZE as u64 * percent / 100, &mut child, partial_bytes);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!dst.join("data.bin").exists(), "an unfinished file never appears under its name");
    }
    let durable = partial_bytes(&partials);
    let run = ks(d, &["sync", "src", &url, "--psk-file", "psk", "--json"]);
    run.ok();
    let sent = json_u64(&run, "bytes_sent");
    // What was durable is not sent again (checkpoints every 1 MiB; frame overhead < 1%).
    let missing = SIZE as u64 - durable.min(SIZE as u64);
    assert!(durable >= SIZE as u64 * 60 / 100, "durable {durable}");
    assert!(sent <= missing + (1 << 20) + SIZE as u64 / 100, "sent {sent}, missing {missing}");
    assert_eq!(std::fs::read(dst.join("data.bin")).unwrap(), std::fs::read(d.join("src/data.bin")).unwrap());
    assert!(!partials.join(".keepsync-partial").exists(), "partials cleaned up");
}

#[test]
fn a_broken_push_keeps_every_byte_that_arrived_not_only_the_last_checkpoint() {
    // The default --checkpoint-every of 16 MiB: no periodic checkpoint before the kill.
    let (dir, srv) = scene_serving_with(11, &[]);
    let d = dir.path();
    let url = srv.url("dst");
    let dst = d.join("srv/dst");
    // Partials live at the served root, whatever tree a push writes.
    let partials = d.join("srv");
    let mut child = spawn_sync(d, &["sync", "src", &url, "--psk-file", "psk", "--limit-rate", "12MiB"]);
    wait_for_partial(&partials, SIZE as u64 * 40 / 100, &mut child, partial_bytes);
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = partial_bytes(&partials);
    assert!((SIZE as u64 * 40 / 100..(16 << 20)).contains(&kept), "kept {kept}");
    // Run again at once: the server keeps what arrived (an fsync and a checkpoint) as it sees
    // the connection break, and the new connection waits for that before it resumes.
    let run = ks(d, &["sync", "src", &url, "--psk-file", "psk", "--json"]);
    run.ok();
    let sent = json_u64(&run, "bytes_sent");
    assert!(sent <= SIZE as u64 - kept + SIZE as u64 / 100, "sent {sent} of {SIZE}, kept {kept}");
    assert_eq!(std::fs::read(dst.join("data.bin")).unwrap(), std::fs::read(d.join("src/data.bin")).unwrap());
}

#[test]
fn a_damaged_durable_prefix_is_caught_and_the_file_sent_again_whole() {
    let (dir, srv) = resume_scene(5);
    let d = dir.path();
    let url = srv.url("dst");
    let dst = d.join("srv/dst");
    // Partials live at the served root, whatever tree a push writes.
    let partials = d.join("srv");
    let mut child = spawn_sync(d, &["sync", "src", &url, "--psk-file", "psk", "--limit-rate", "12MiB"]);
    wait_for_partial(&partials, SIZE as u64 / 2, &mut child, partial_bytes);
    child.kill().unwrap();
    child.wait().unwrap();
    // Flip a byte inside what the checkpoint vouches for: the receiver answers with the resume
    // offset at once, re-hashes the prefix beside the transfer, finds it damaged, and the
    // file's End fails to verify; the sender then sends it whole.
    let partial = std::fs::read_dir(partials.join(".keepsync-partial"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "data"))
        .unwrap();
    let mut bytes = std::fs::read(&partial).unwrap();
    bytes[4096] ^= 0x40;
    std::fs::write(&partial, &bytes).unwrap();
    let run = ks(d, &["sync", "src", &url, "--psk-file", "psk", "--json"]);
    run.ok();
    assert!(json_u64(&run, "bytes_sent") >= SIZE as u64, "sent again whole");
    assert_eq!(std::fs::read(dst.join("data.bin")).unwrap(), std::fs::read(d.join("src/data.bin")).unwrap());
    assert!(!partials.join(".keepsync-partial").exists());
}

#[test]
fn kill_9_of_the_server_mid_push_reconnects_and_finishes() {
    let (dir, mut srv) = resume_scene(4);
    let d = dir.path();
    let addr = srv.addr.clone();
    let dst: PathBuf = d.join("srv/dst");
    let partials = d.join("srv");
    let mut child = spawn_sync(
        d,
        &["sync", "src", &srv.url("dst"), "--psk-file", "psk", "--limit-rate", "12MiB", "--json"],
    );
    wait_for_partial(&partials, SIZE as u64 / 2, &mut child, partial_bytes);
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    let durable = partial_bytes(&partials);
    let _srv = Server::start(d, "srv", &addr, &["--checkpoint-every", "1MiB"]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("reconnecting"), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["reconnects"].as_u64().unwrap() >= 1);
    assert!(durable >= SIZE as u64 / 3, "durable {durable}");
    assert_eq!(std::fs::read(dst.join("data.bin")).unwrap(), std::fs::read(d.join("src/data.bin")).unwrap());
    assert!(!partials.join(".keepsync-partial").exists());
}

#[test]
fn kill_9_of_the_server_mid_split_pull_reconnects_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("srv/tree")).unwrap();
    std::fs::write(d.join("srv/tree/data.bin"), noise(SIZE, 6)).unwrap();
    std::fs::write(d.join("srv/tree/note.txt"), b"beside the big one").unwrap();
    let throttled = ["--checkpoint-every", "1MiB", "--limit-rate", "12MiB"];
    let mut srv = Server::start(d, "srv", "127.0.0.1:0", &throttled);
    let addr = srv.addr.clone();
    let back = d.join("back");
    let pull = ["sync", &srv.url("tree"), "back", "--psk-file", "psk", "--connections", "3"];
    let mut child = spawn_sync(d, &[&pull[..], &["--part-size", "4MiB", "--json"]].concat());
    wait_for_partial(&back, SIZE as u64 / 2, &mut child, allocated_partial_bytes);
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    // The new server knows nothing of the session: it walks again, and every part resumes
    // from the client's checkpoints.
    let _srv = Server::start(d, "srv", &addr, &[]);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(summary["reconnects"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["files_resumed"].as_u64().unwrap() >= 1, "{summary}");
    assert!(summary["bytes_sent"].as_u64().unwrap() < 2 * SIZE as u64, "{summary}");
    assert_eq!(
        std::fs::read(back.join("data.bin")).unwrap(),
        std::fs::read(d.join("srv/tree/data.bin")).unwrap()
    );
    assert_eq!(std::fs::read(back.join("note.txt")).unwrap(), b"beside the big one");
    assert!(!back.join(".keepsync-partial").exists());
}

/// A TCP proxy on loopback that delays every byte by `one_way` in each direction (this
/// kernel has no netem); returns its address.
fn delay_proxy(to: String, one_way: Duration) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let pipe = move |mut from: TcpStream, mut into: TcpStream| {
        let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while let Ok(n @ 1..) = from.read(&mut buf) {
                if tx.send((Instant::now() + one_way, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for (due, bytes) in rx {
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
                if into.write_all(&bytes).is_err() {
                    break;
                }
            }
            let _ = into.shutdown(std::net::Shutdown::Write);
        });
    };
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let server = TcpStream::connect(&to).unwrap();
            pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
            pipe(server, client);
        }
    });
    addr
}

#[test]
fn a_sender_widens_its_window_on_a_long_link() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    for i in 0..900 {
        let sub = d.join(format!("src/d{}", i % 9));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}")), mixed(200 + i * 3, i as u64)).unwrap();
    }
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let far = delay_proxy(srv.addr.clone(), Duration::from_millis(10));
    let url = format!("ks://{far}/far");
    let run = ks(d, &["sync", "src", &url, "--psk-file", "psk", "--connections", "1", "--json"]);
    run.ok();
    assert_eq!(json_u64(&run, "files_transferred"), 900);
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/far")));
    let rtt = run.json()["rtt_ms"].as_f64().expect("a push measures the round trip");
    assert!(rtt >= 20.0, "two 10 ms delays: {rtt} ms");
    // 900 files behind a 20 ms round trip: the window grew past the initial 128.
    assert!(json_u64(&run, "files_in_flight") > 128, "{}", String::from_utf8_lossy(&run.stdout));
    // A loopback address this far away is a tunnel's end, not this host: `auto` compresses.
    assert_eq!(run.json()["codecs"][0], "zstd-1", "{}", String::from_utf8_lossy(&run.stdout));
}

// ---- the faults of issue 14: each of these placed a wrong file, wrote outside the root, or
// lost work, before the one-engine rewrite -------------------------------------------------

/// Pure noise of `len` bytes from `seed`, as a file in `dir`.
fn write_noise(path: &Path, len: usize, seed: u64) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, noise(len, seed)).unwrap();
}

#[test]
fn a_hostile_client_cannot_place_a_file_through_a_directory_it_turned_into_a_symlink() {
    let dir = setup();
    let d = dir.path();
    let psk = keepsync::keys::read_key_file(&d.join("psk")).unwrap();
    std::fs::create_dir_all(d.join("outside")).unwrap();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let outside = d.join("outside").display().to_string();
    for replace in [false, true] {
        let tree = if replace { "r" } else { "n" };
        let (mut raw, answer) = Raw::try_open_with(&srv.addr, &psk, tree, Direction::Push, replace);
        assert!(matches!(answer, Some(Message::Opened { .. })));
        let mut id = 0;
        let offer = |raw: &mut Raw, meta: FileMeta<'_>| {
            raw.ep.offer(0, &meta).unwrap();
            raw.flush();
            raw.event()
        };
        if replace {
            // d is a real directory first, which --delete may replace.
            let dir = FileMeta { kind: Kind::Dir, ..file(90, "d", 0) };
            assert_eq!(offer(&mut raw, dir), Some((90, Some(Status::Ok), None)));
        }
        // Announce d/x, then turn d into a symlink out of the root, then send x.
        let (got, _, have) = offer(&mut raw, file(id, "d/x", 5)).unwrap();
        assert_eq!(got, id);
        assert!(matches!(have, Some(Have::Need { .. })));
        id += 1;
        let link = FileMeta { kind: Kind::Symlink, target: &outside, ..file(id, "d", 0) };
        assert_eq!(offer(&mut raw, link), Some((id, Some(Status::Ok), None)));
        raw.ep.send_data(0, 0, 0, 0, 5, b"hello").unwrap();
        raw.ep.end_file(0, 0, *blake3::hash(b"hello").as_bytes()).unwrap();
        raw.flush();
        assert_eq!(raw.event(), Some((0, Some(Status::Rejected), None)), "replace {replace}");
        assert_eq!(std::fs::read_dir(d.join("outside")).unwrap().count(), 0, "x landed outside the root");
        assert!(std::fs::symlink_metadata(d.join("srv").join(tree).join("d")).unwrap().is_symlink());
    }
}

/// Waits until `done` holds of what the server wrote, while `child` still runs.
fn wait_until(child: &mut Child, what: &str, done: impl Fn() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(child.try_wait().unwrap().is_none(), "the sync ended before {what}");
        assert!(start.elapsed() < Duration::from_secs(60), "no progress towards {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn an_interrupted_split_transfer_then_a_smaller_version_places_exactly_that_version() {
    let (dir, srv) = resume_scene(21);
    let d = dir.path();
    let url = srv.url("dst");
    let split = ["--psk-file", "psk", "--connections", "4", "--part-size", "4MiB"];
    // A push of 24 MiB over four connections, killed halfway.
    let mut child = spawn_sync(d, &[&["sync", "src", &url, "--limit-rate", "12MiB"][..], &split].concat());
    wait_for_partial(&d.join("srv"), SIZE as u64 / 2, &mut child, allocated_partial_bytes);
    child.kill().unwrap();
    child.wait().unwrap();
    // The source is now a 6 MiB file of other bytes: exactly it lands, no stale tail.
    write_noise(&d.join("src/data.bin"), 6 << 20, 22);
    ks(d, &[&["sync", "src", &url][..], &split].concat()).ok();
    assert_eq!(std::fs::read(d.join("srv/dst/data.bin")).unwrap(), noise(6 << 20, 22));

    // The same for a pull, killed halfway, then the server's file replaced by a smaller one.
    write_noise(&d.join("srv/tree/data.bin"), SIZE, 23);
    let pull =
        ["sync", &srv.url("tree"), "back", "--psk-file", "psk", "--connections", "4", "--part-size", "4MiB"];
    let mut child = spawn_sync(d, &[&pull[..], &["--limit-rate", "12MiB"]].concat());
    wait_for_partial(&d.join("back"), SIZE as u64 / 2, &mut child, allocated_partial_bytes);
    child.kill().unwrap();
    child.wait().unwrap();
    write_noise(&d.join("srv/tree/data.bin"), 5 << 20, 24);
    ks(d, &pull).ok();
    assert_eq!(std::fs::read(d.join("back/data.bin")).unwrap(), noise(5 << 20, 24));
}

#[test]
fn two_pushes_of_different_versions_at_once_place_one_of_them_whole() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    // The same path and size, other bytes: only a whole version may land, never a mix.
    write_noise(&d.join("a/data.bin"), SIZE, 31);
    write_noise(&d.join("b/data.bin"), SIZE, 32);
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let url = srv.url("dst");
    // Throttled senders (24 MiB take at least 1.5 s each), so the two overlap.
    let args = |src: &str| {
        let v: Vec<String> = [
            "sync",
            src,
            &url,
            "--psk-file",
            "psk",
            "--connections",
            "3",
            "--part-size",
            "4MiB",
            "--limit-rate",
            "16MiB",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v
    };
    let spawn = |src: &str| {
        let a = args(src);
        spawn_sync(d, &a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let placed = std::fs::read(d.join("srv/dst/data.bin")).unwrap();
    assert!(placed == noise(SIZE, 31) || placed == noise(SIZE, 32), "a mix of both versions was placed");
    for out in [&a, &b] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        match out.status.code() {
            Some(0) => {}
            Some(23) => {
                assert!(stderr.contains("another writer") || stderr.contains("another sync"), "{stderr}")
            }
            other => panic!("exit {other:?}: {stderr}"),
        }
    }
    // Whatever lost left nothing behind.
    srv.log_with("done", 2);
    assert!(!d.join("srv/.keepsync-partial").exists() || partial_bytes(&d.join("srv")) == 0);
}

#[test]
fn two_identical_pushes_at_once_then_a_smaller_version_lands_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    write_noise(&d.join("src/data.bin"), SIZE, 41);
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let url = srv.url("dst");
    let push = ["sync", "src", &url, "--psk-file", "psk", "--connections", "3", "--part-size", "4MiB"];
    // Throttled senders, so the two overlap.
    let throttled = [&push[..], &["--limit-rate", "24MiB"]].concat();
    let (a, b) = (spawn_sync(d, &throttled), spawn_sync(d, &throttled));
    for out in [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()] {
        // The second may find the first writing the same file and say so; nothing else.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(0) | Some(23)), "{stderr}");
    }
    write_noise(&d.join("src/data.bin"), 10 << 20, 42);
    ks(d, &push).ok();
    assert_eq!(std::fs::read(d.join("srv/dst/data.bin")).unwrap(), noise(10 << 20, 42));
    assert!(!d.join("srv/.keepsync-partial").exists(), "a clean run leaves no partial");
}

#[test]
fn a_server_crash_loses_at_most_the_batch_in_progress() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    // Fewer files than a sender keeps in flight: before, nothing was placed until all ended.
    for i in 0..100 {
        write_noise(&d.join(format!("src/f{i:03}")), 200 << 10, 100 + i);
    }
    let mut srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let addr = srv.addr.clone();
    let url = srv.url("dst");
    let placed = || std::fs::read_dir(d.join("srv/dst")).map_or(0, |rd| rd.filter_map(|e| e.ok()).count());
    // The sender is throttled: 20 MB take at least 5 s, and placed files show up as it goes.
    let push = ["sync", "src", &url, "--psk-file", "psk", "--connections", "1", "--limit-rate", "4MiB"];
    let mut child = spawn_sync(d, &push);
    wait_until(&mut child, "files were placed", || placed() >= 20);
    srv.child.kill().unwrap();
    srv.child.wait().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let kept = placed();
    assert!(kept >= 20);
    for i in 0..kept as u64 {
        let name = format!("f{i:03}");
        if let Ok(bytes) = std::fs::read(d.join("srv/dst").join(&name)) {
            assert_eq!(bytes, noise(200 << 10, 100 + i), "{name} placed wrong");
        }
    }
    // The next push sends only what was not placed.
    let _srv = Server::start(d, "srv", &addr, &[]);
    let run = ks(d, &["sync", "src", &url, "--psk-file", "psk", "--json"]);
    run.ok();
    assert!(json_u64(&run, "files_skipped") >= kept as u64, "{}", String::from_utf8_lossy(&run.stdout));
    assert_eq!(snapshot(&d.join("src")), snapshot(&d.join("srv/dst")));
}

#[test]
fn a_url_without_a_tree_is_refused_and_the_whole_root_must_be_named() {
    let dir = setup();
    let d = dir.path();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    std::fs::create_dir_all(d.join("srv/other-client")).unwrap();
    std::fs::write(d.join("srv/other-client/precious"), b"theirs").unwrap();
    for url in [format!("ks://{}", srv.addr), format!("ks://{}/", srv.addr)] {
        let run = ks(d, &["sync", "src", &url, "--psk-file", "psk", "--delete", "--dry-run", "--json"]);
        assert_eq!(run.code, 2, "{url}: {}", run.stderr);
        assert!(run.stderr.contains("names no tree") && run.stderr.contains("/."), "{}", run.stderr);
        let error = run.json();
        assert_eq!(error["exit_code"], 2, "{error}");
        assert!(error.get("planned").is_none(), "nothing listed for deletion: {error}");
    }
    // Named explicitly, the root is what the user asked for.
    let run = ks(d, &["sync", "src", &srv.url("."), "--psk-file", "psk", "--delete", "--dry-run", "--json"]);
    run.ok();
    let planned = run.json()["planned"].to_string();
    assert!(planned.contains("other-client"), "{planned}");
    assert!(d.join("srv/other-client/precious").exists(), "a dry run changes nothing");
}

#[test]
fn a_client_that_announces_files_and_never_sends_them_leaves_no_partial() {
    let dir = setup();
    let d = dir.path();
    let psk = keepsync::keys::read_key_file(&d.join("psk")).unwrap();
    let srv = Server::start(d, "srv", "127.0.0.1:0", &[]);
    let mut raw = Raw::open(&srv.addr, &psk, "t");
    for id in 0..30u32 {
        let name = format!("f{id}");
        raw.ep.offer(0, &file(id, &name, 1000)).unwrap();
        raw.flush();
        let (_, _, have) = raw.event().unwrap();
        assert!(matches!(have, Some(Have::Need { .. })));
    }
    drop(raw);
    srv.log_with("keep talking to", 1);
    let left = std::fs::read_dir(d.join("srv/.keepsync-partial")).map_or(0, |rd| rd.count());
    assert_eq!(left, 0, "partials of files that never sent a byte");
}

#[test]
fn a_full_disk_at_the_receiver_is_named_once_and_the_sender_stops_sending() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    ks(d, &["keygen", "-o", "psk"]).ok();
    std::fs::create_dir_all(d.join("srv")).unwrap();
    for i in 0..48 {
        write_noise(&d.join(format!("src/f{i:02}")), 3 << 20, 200 + i);
    }
    // The server's root is a 6 MiB filesystem of its own: a tmpfs in a mount namespace of the
    // server's (`unshare` gives an unprivileged user one).
    let script = format!(
        "mount -t tmpfs -o size=6m tmpfs srv && exec {} serve --root srv --listen 127.0.0.1:0 --psk-file psk",
        env!("CARGO_BIN_EXE_keepsync")
    );
    let mut cmd = Command::new("unshare");
    cmd.env("KEEPSYNC_CONFIG", "");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c", &script]);
    let srv = Server::spawn(d, cmd);
    // One connection: what its buffers and sockets hold when the first failure comes back
    // still goes (up to about 20 MB on loopback), the rest must not.
    let run = ks(d, &["sync", "src", &srv.url("t"), "--psk-file", "psk", "--connections", "1", "--json"]);
    assert_eq!(run.code, 23, "{}", run.stderr);
    assert!(run.stderr.contains("disk (or quota) is full"), "{}", run.stderr);
    let lines = run.stderr.lines().filter(|l| l.contains("warning")).count();
    assert!(
        lines <= 12,
        "one line per file that was in flight and a summary, not one per file:\n{}",
        run.stderr
    );
    assert!(run.stderr.contains("more entries: the receiver's disk"), "{}", run.stderr);
    // It stopped: far less than the 144 MiB crossed the link.
    let sent = json_u64(&run, "bytes_sent");
    assert!(sent < 64 << 20, "sent {sent} bytes into a full disk:\n{}", run.stderr);
}
