//! The command line as a user meets it: round trips, pipes, passphrases, JSON, exit codes and
//! error messages that say what to do.

mod support;

use std::io::Write;
use std::path::Path;

use support::*;

#[test]
fn round_trips_every_codec_and_edge_size() {
    let dir = dir_with_key();
    let d = dir.path();
    for codec in ["auto", "none", "lz4", "deflate", "zstd"] {
        for (chunk, len) in
            [("4KiB", 0), ("4KiB", 1), ("4KiB", 4095), ("4KiB", 4096), ("4KiB", 4097), ("64KiB", 300_000)]
        {
            let data = mixed(len, len as u64);
            std::fs::write(d.join("in"), &data).unwrap();
            ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--codec", codec, "--chunk-size", chunk, "-f"])
                .ok();
            ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key", "-f"]).ok();
            assert_eq!(std::fs::read(d.join("out")).unwrap(), data, "codec {codec} chunk {chunk} len {len}");
        }
    }
}

#[test]
fn thread_count_does_not_change_the_result() {
    let dir = dir_with_key();
    let d = dir.path();
    let data = mixed(700_000, 5);
    std::fs::write(d.join("in"), &data).unwrap();
    for (p, u) in [("1", "8"), ("8", "1"), ("3", "2")] {
        ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--chunk-size", "4KiB", "-f", "-j", p]).ok();
        ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key", "-f", "--threads", u]).ok();
        assert_eq!(std::fs::read(d.join("out")).unwrap(), data, "pack -j{p}, unpack -j{u}");
    }
    // Either AES-GCM backend opens the other's containers.
    for (p, u) in [("hw", "soft"), ("soft", "hw"), ("auto", "hw")] {
        let s = ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "-f", "--crypto", p, "--json"]).ok().json();
        assert_eq!(s["crypto"], if p == "hw" { "ring" } else { "rustcrypto" });
        ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key", "-f", "--crypto", u]).ok();
        assert!(std::fs::read(d.join("out")).unwrap() == data, "pack --crypto {p}, unpack --crypto {u}");
    }
    let zero = ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "-f", "-j", "0"]);
    assert_eq!(zero.code, 2, "{}", zero.stderr);
}

#[test]
fn pipes_work_both_ways() {
    let dir = dir_with_key();
    let d = dir.path();
    let data = mixed(200_000, 7);
    let packed = keepsync(d, &["pack", "-", "-o", "-", "-k", "key"], Some(&data), &[]);
    packed.ok();
    assert_eq!(&packed.stdout[..8], b"\x89KSYNC\r\n");
    let unpacked = keepsync(d, &["unpack", "-", "-o", "-", "-k", "key"], Some(&packed.stdout), &[]);
    unpacked.ok();
    assert_eq!(unpacked.stdout, data);
}

/// Runs `keepsync ARGS` on a pseudo-terminal made by util-linux `script`, with `typed` as
/// what is typed on it; returns the exit code and what the terminal showed.
fn on_a_terminal(dir: &Path, args: &str, typed: &str) -> (i32, String) {
    let command = format!("{} {args}", env!("CARGO_BIN_EXE_keepsync"));
    let mut child = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .current_dir(dir)
        .env("KEEPSYNC_CONFIG", "")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("util-linux `script` runs the command on a pseudo-terminal: install util-linux (bsdutils)");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(typed.as_bytes()).unwrap();
    // Keeping stdin open until the run ends: an early end of input would hang up the terminal.
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into())
}

#[test]
fn with_no_key_option_the_passphrase_is_asked_on_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in"), mixed(20_000, 4)).unwrap();
    // Without a terminal: refused, naming the options that need none; nothing written.
    let r = ks(d, &["pack", "in", "-o", "c.ks"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("no terminal to ask for a passphrase"), "{}", r.stderr);
    assert!(r.stderr.contains("--key-file") && r.stderr.contains("--passphrase-env"), "{}", r.stderr);
    // Packing asks twice; two different answers write nothing.
    let (code, screen) = on_a_terminal(d, "pack in -o c.ks", "one\ntwo\n");
    assert_eq!(code, 2, "{screen}");
    assert!(screen.contains("the two passphrases differ"), "{screen}");
    assert_eq!(listing(d), ["in"]);
    let (code, screen) = on_a_terminal(d, "pack in -o c.ks", "typed words\ntyped words\n");
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("passphrase:") && screen.contains("the same passphrase again:"), "{screen}");
    // It is the passphrase typed: the variable holding it opens the container.
    keepsync(d, &["unpack", "c.ks", "-o", "out", "--passphrase-env", "PW"], None, &[("PW", "typed words")])
        .ok();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), mixed(20_000, 4));
    // Unpacking asks once; a wrong answer is the wrong key.
    let (code, screen) = on_a_terminal(d, "unpack c.ks -o out2", "typed words\n");
    assert_eq!(code, 0, "{screen}");
    assert!(!screen.contains("again"), "{screen}");
    assert_eq!(std::fs::read(d.join("out2")).unwrap(), mixed(20_000, 4));
    let (code, screen) = on_a_terminal(d, "unpack c.ks -o out3", "typed word\n");
    assert_eq!(code, 65, "{screen}");
    assert!(!d.join("out3").exists());
}

#[test]
fn the_config_file_supplies_the_key_file_and_options_win_over_it() {
    let dir = dir_with_key();
    let d = dir.path();
    std::fs::write(d.join("in"), mixed(5_000, 6)).unwrap();
    std::fs::create_dir(d.join("conf")).unwrap();
    // A relative key_file is taken from the config file's directory.
    std::fs::write(d.join("conf/config.toml"), "key_file = \"../key\"\n").unwrap();
    let conf = d.join("conf/config.toml");
    let env = [("KEEPSYNC_CONFIG", conf.to_str().unwrap())];
    keepsync(d, &["pack", "in", "-o", "c.ks"], None, &env).ok();
    ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key"]).ok();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), mixed(5_000, 6));
    // An option wins over the file.
    let r = keepsync(
        d,
        &["unpack", "c.ks", "-o", "out2", "--passphrase-env", "PW"],
        None,
        &[env[0], ("PW", "x")],
    );
    assert_eq!(r.code, 65, "a key-file container asked for with a passphrase: {}", r.stderr);
    // A mistake in the file names the file, the line and the key.
    std::fs::write(&conf, "key_file = \"../key\"\nkeyfile = \"x\"\n").unwrap();
    let r = keepsync(d, &["pack", "in", "-o", "c2.ks"], None, &env);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("config.toml (line 2)") && r.stderr.contains("keyfile"), "{}", r.stderr);
    assert!(!d.join("c2.ks").exists());
}

#[test]
fn passphrase_round_trip_and_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in"), mixed(10_000, 3)).unwrap();
    let env = [("PW", "correct horse battery staple")];
    keepsync(d, &["pack", "in", "-o", "c.ks", "--passphrase-env", "PW"], None, &env).ok();
    let report = ks(d, &["inspect", "c.ks", "--json"]).ok().json();
    assert_eq!(report["key"]["kind"], "passphrase");
    assert_eq!(report["key"]["argon2id_memory_kib"], 65536);
    // Passes are calibrated to the machine: at least RFC 9106's 3, at most 16.
    let passes = report["key"]["argon2id_passes"].as_u64().unwrap();
    assert!((3..=16).contains(&passes), "{passes} passes");
    keepsync(d, &["unpack", "c.ks", "-o", "out", "--passphrase-env", "PW"], None, &env).ok();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), mixed(10_000, 3));
    let wrong = keepsync(
        d,
        &["unpack", "c.ks", "-o", "out2", "--passphrase-env", "PW"],
        None,
        &[("PW", "Correct horse")],
    );
    assert_eq!(wrong.code, 65);
    assert!(wrong.stderr.contains("wrong key or passphrase"), "{}", wrong.stderr);
    let unset = ks(d, &["unpack", "c.ks", "-o", "out3", "--passphrase-env", "KEEPSYNC_TEST_UNSET_VAR"]);
    assert_eq!(unset.code, 2);
    assert!(unset.stderr.contains("KEEPSYNC_TEST_UNSET_VAR is not set"), "{}", unset.stderr);
    assert!(!d.join("out2").exists() && !d.join("out3").exists());
    // A header that asks for 1 GiB x 64 passes (each within its own bound) is refused before
    // any Argon2id work, as hostile.
    let mut hostile = std::fs::read(d.join("c.ks")).unwrap();
    hostile[64..68].copy_from_slice(&(1u32 << 20).to_le_bytes());
    hostile[68..72].copy_from_slice(&64u32.to_le_bytes());
    std::fs::write(d.join("hostile.ks"), hostile).unwrap();
    let r = keepsync(d, &["unpack", "hostile.ks", "-o", "out4", "--passphrase-env", "PW"], None, &env);
    assert_eq!(r.code, 65, "{}", r.stderr);
    assert!(r.stderr.contains("1024 MiB x 64 passes") && r.stderr.contains("never writes"), "{}", r.stderr);
    assert!(!d.join("out4").exists());
}

#[test]
fn json_summaries_and_inspect_agree_with_the_data() {
    let dir = dir_with_key();
    let d = dir.path();
    let data = mixed(150_000, 11);
    std::fs::write(d.join("in"), &data).unwrap();
    let pack =
        ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--chunk-size", "16KiB", "--json"]).ok().json();
    assert_eq!(pack["bytes_in"], 150_000);
    assert_eq!(pack["chunks"], 10);
    let container_len = std::fs::metadata(d.join("c.ks")).unwrap().len();
    assert_eq!(pack["bytes_out"], container_len);
    let report = ks(d, &["inspect", "c.ks", "--json"]).ok().json();
    assert_eq!(report["chunks"], 10);
    assert_eq!(report["plaintext_bytes"], 150_000);
    assert_eq!(report["container_bytes"], container_len);
    assert_eq!(report["chunk_size"], 16384);
    assert_eq!(report["authenticated"], false);
    let codec_chunks: u64 =
        report["codecs"].as_array().unwrap().iter().map(|c| c["chunks"].as_u64().unwrap()).sum();
    assert_eq!(codec_chunks, 10);
    let unpack = ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key", "--json"]).ok().json();
    assert_eq!(unpack["bytes_out"], 150_000);
    assert_eq!(unpack["chunks"], 10);
    let inspect = ks(d, &["inspect", "c.ks"]);
    let text = String::from_utf8_lossy(&inspect.ok().stdout);
    assert!(text.contains("chunks:        10"), "{text}");
}

#[test]
fn keygen_refuses_to_overwrite_and_writes_a_private_key() {
    let dir = dir_with_key();
    let d = dir.path();
    let before = std::fs::read(d.join("key")).unwrap();
    let again = ks(d, &["keygen", "-o", "key"]);
    assert_eq!(again.code, 73);
    assert!(again.stderr.contains("already exists") && again.stderr.contains("hint:"), "{}", again.stderr);
    assert_eq!(std::fs::read(d.join("key")).unwrap(), before);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(d.join("key")).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn usage_errors_say_what_to_do() {
    let dir = dir_with_key();
    let d = dir.path();
    std::fs::write(d.join("in"), b"data").unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["pack", "in", "-o", "c.ks", "-k", "key", "--chunk-size", "5000"], 2, "power of two"),
        (&["pack", "in", "-o", "c.ks", "-k", "key", "--chunk-size", "8MiB"], 2, "power of two"),
        (&["pack", "missing", "-o", "c.ks", "-k", "key"], 66, "cannot open missing"),
        (&["pack", "in", "-o", "c.ks", "-k", "nokey"], 66, "nokey"),
        (&["pack", "in", "-o", "c.ks", "-k", "in"], 66, "not a KeepSync key file"),
        (&["pack", "in", "-o", "-", "-k", "key", "--json"], 2, "--json prints on stdout"),
        (&["pack", "in", "-o", "c.ks"], 2, "no terminal to ask for a passphrase"),
        (&["unpack", "in", "-o", "out", "-k", "key"], 65, "not a KeepSync container"),
        (&["inspect", "in"], 65, "not a KeepSync container"),
        (&["pack", ".", "-o", "c.ks", "-k", "key"], 2, "is a directory"),
    ];
    for (args, code, needle) in cases {
        let r = ks(d, args);
        assert_eq!(r.code, *code, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
        // With --json, the same failure is a JSON object on stdout.
        let mut args = args.to_vec();
        if !args.contains(&"--json") {
            args.push("--json");
        }
        let r = ks(d, &args);
        assert_eq!(r.code, *code, "{args:?}: {}", r.stderr);
        let error = r.json();
        assert_eq!(error["ok"], false, "{args:?}: {error}");
        assert_eq!(error["exit_code"], *code, "{args:?}: {error}");
        assert!(error["error"].as_str().unwrap().contains(needle), "{args:?}: {error}");
    }
    assert_eq!(listing(d), ["in", "key"]);
}

#[test]
fn existing_output_is_kept_without_force() {
    let dir = dir_with_key();
    let d = dir.path();
    std::fs::write(d.join("in"), b"new data").unwrap();
    std::fs::write(d.join("c.ks"), b"precious").unwrap();
    let r = ks(d, &["pack", "in", "-o", "c.ks", "-k", "key"]);
    assert_eq!(r.code, 73);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read(d.join("c.ks")).unwrap(), b"precious");
    ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--force"]).ok();
    ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key"]).ok();
    assert_eq!(std::fs::read(d.join("out")).unwrap(), b"new data");
}

#[test]
fn force_replaces_only_regular_files_and_devices_and_fifos_are_written_into() {
    use std::io::Read;
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let dir = dir_with_key();
    let d = dir.path();
    // Small enough for a pipe's buffer: the test reads only after keepsync ended.
    let data = mixed(20_000, 4);
    std::fs::write(d.join("in"), &data).unwrap();
    ks(d, &["pack", "in", "-o", "c.ks", "-k", "key"]).ok();
    // A FIFO (as /dev/null is a device): written into as a stream, with or without --force,
    // never replaced by a regular file.
    let fifo = d.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let drain = |run: &dyn Fn()| -> Vec<u8> {
        // Open for reading first (never blocks with O_NONBLOCK), so keepsync's open for
        // writing finds a reader; what it wrote waits in the pipe.
        let mut end =
            std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
        run();
        let mut got = Vec::new();
        let _ = end.read_to_end(&mut got);
        assert!(std::fs::symlink_metadata(&fifo).unwrap().file_type().is_fifo(), "the FIFO was replaced");
        got
    };
    for force in [&[][..], &["--force"][..]] {
        let got = drain(&|| {
            ks(d, &[&["unpack", "c.ks", "-o", "fifo", "-k", "key"][..], force].concat()).ok();
        });
        assert_eq!(got, data);
        let packed = drain(&|| {
            ks(d, &[&["pack", "in", "-o", "fifo", "-k", "key"][..], force].concat()).ok();
        });
        std::fs::write(d.join("via-fifo.ks"), &packed).unwrap();
        ks(d, &["unpack", "via-fifo.ks", "-o", "back", "-k", "key", "--force"]).ok();
        assert_eq!(std::fs::read(d.join("back")).unwrap(), data);
    }
    assert!(!listing(d).iter().any(|n| n.contains("fifo.") && n != "via-fifo.ks"), "{:?}", listing(d));
    // A symlink is not replaced, even with --force (a directory is where outputs go).
    std::os::unix::fs::symlink("in", d.join("link")).unwrap();
    let r = ks(d, &["unpack", "c.ks", "-o", "link", "-k", "key", "--force"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("a symbolic link") && r.stderr.contains("only regular files"), "{}", r.stderr);
    assert!(std::fs::symlink_metadata(d.join("link")).unwrap().file_type().is_symlink());
    assert_eq!(std::fs::read(d.join("in")).unwrap(), data);
}

#[test]
fn a_key_file_others_can_read_is_warned_about_and_a_server_refuses_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_with_key();
    let d = dir.path();
    std::fs::write(d.join("in"), b"data").unwrap();
    let quiet = ks(d, &["pack", "in", "-o", "a.ks", "-k", "key"]).ok().stderr.clone();
    assert!(!quiet.contains("chmod"), "{quiet}");
    std::fs::set_permissions(d.join("key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = ks(d, &["pack", "in", "-o", "b.ks", "-k", "key"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("warning: key is open to group or others (mode 0644)"), "{}", r.stderr);
    assert!(r.stderr.contains("chmod 600 key"), "{}", r.stderr);
    std::fs::create_dir(d.join("root")).unwrap();
    let r = ks(d, &["serve", "--root", "root", "--psk-file", "key", "--listen", "127.0.0.1:0"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("refusing to serve") && r.stderr.contains("chmod 600 key"), "{}", r.stderr);
}

#[test]
fn help_teaches_and_version_prints() {
    let dir = tempfile::tempdir().unwrap();
    let help = ks(dir.path(), &["--help"]);
    help.ok();
    let text = String::from_utf8(help.stdout).unwrap();
    for needle in ["keygen", "pack", "unpack", "inspect", "Exit codes", "Examples"] {
        assert!(text.contains(needle), "--help lacks {needle}");
    }
    let v = ks(dir.path(), &["--version"]);
    assert!(String::from_utf8(v.stdout).unwrap().starts_with("keepsync "));
}

#[test]
fn incompressible_data_is_not_expanded_beyond_framing() {
    let dir = dir_with_key();
    let d = dir.path();
    let mut x = 1u64;
    let random: Vec<u8> = (0..262_144)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect();
    std::fs::write(d.join("in"), &random).unwrap();
    let s = ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--json"]).ok().json();
    // 112-byte header + 4 chunks x (12-byte record header + 16-byte tag).
    assert_eq!(s["bytes_out"], 262_144 + 112 + 4 * 28);
    assert_eq!(s["codec_chunks"]["store"], 4);
}

/// Chunks per codec name, from `inspect --json`.
fn codec_chunks(d: &std::path::Path, file: &str) -> std::collections::BTreeMap<String, u64> {
    let report = ks(d, &["inspect", file, "--json"]).ok().json();
    report["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["codec"].as_str().unwrap().to_string(), c["chunks"].as_u64().unwrap()))
        .collect()
}

#[test]
fn auto_picks_per_chunk_and_device_output_avoids_zstd() {
    let dir = dir_with_key();
    let d = dir.path();
    // Half text, half random: text chunks get zstd, random chunks are stored.
    let mut data = b"status=ok user=alice action=login latency=12ms\n".repeat(1400);
    data.truncate(64 * 1024);
    let mut x = 7u64;
    data.extend((0..64 * 1024).map(|_| {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        (x >> 56) as u8
    }));
    std::fs::write(d.join("in"), &data).unwrap();
    ks(d, &["pack", "in", "-o", "auto.ks", "-k", "key", "--chunk-size", "16KiB"]).ok();
    let used = codec_chunks(d, "auto.ks");
    assert_eq!(used.get("zstd"), Some(&4), "{used:?}");
    assert_eq!(used.get("store"), Some(&4), "{used:?}");
    ks(d, &["pack", "in", "-o", "dev.ks", "-k", "key", "--chunk-size", "16KiB", "--for-device"]).ok();
    let used = codec_chunks(d, "dev.ks");
    assert!(!used.contains_key("zstd") && used.get("lz4") == Some(&4), "{used:?}");
    for file in ["auto.ks", "dev.ks"] {
        ks(d, &["unpack", file, "-o", "out", "-k", "key", "-f"]).ok();
        assert!(std::fs::read(d.join("out")).unwrap() == data);
    }
    let r = ks(d, &["pack", "in", "-o", "x.ks", "-k", "key", "--codec", "zstd", "--for-device"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--for-device"), "{}", r.stderr);
    let r = ks(d, &["pack", "in", "-o", "x.ks", "-k", "key", "--codec", "zstd", "--level", "20"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("1..=19"), "{}", r.stderr);
}

#[test]
fn already_compressed_files_are_stored_whole() {
    let dir = dir_with_key();
    let d = dir.path();
    // A gzip magic in front of very compressible bytes: auto trusts the format and stores.
    let mut data = b"\x1f\x8b\x08\x00".to_vec();
    data.extend(std::iter::repeat_n(b'a', 100_000));
    std::fs::write(d.join("in"), &data).unwrap();
    let s = ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--json"]).ok().json();
    assert_eq!(s["stored_format"], "gzip");
    assert_eq!(codec_chunks(d, "c.ks").keys().collect::<Vec<_>>(), ["store"]);
    // An explicit codec overrides the detection.
    let s = ks(d, &["pack", "in", "-o", "z.ks", "-k", "key", "--codec", "zstd", "--json"]).ok().json();
    assert!(s["stored_format"].is_null());
    assert!(s["bytes_out"].as_u64().unwrap() < 1000);
}

#[test]
fn memory_budget_is_respected_or_refused_clearly() {
    let dir = dir_with_key();
    let d = dir.path();
    let data = mixed(3 << 20, 17);
    std::fs::write(d.join("in"), &data).unwrap();
    let s = ks(d, &["pack", "in", "-o", "c.ks", "-k", "key", "--max-memory", "16MiB", "-j", "8", "--json"])
        .ok()
        .json();
    let rss = s["peak_rss_bytes"].as_u64().expect("peak RSS is reported on Linux");
    assert!(rss < 16 << 20, "peak RSS {rss} over a 16 MiB budget");
    let u =
        ks(d, &["unpack", "c.ks", "-o", "out", "-k", "key", "--max-memory", "16MiB", "--json"]).ok().json();
    assert!(u["peak_rss_bytes"].as_u64().unwrap() < 16 << 20);
    assert!(std::fs::read(d.join("out")).unwrap() == data);
    let r = ks(d, &["pack", "in", "-o", "x.ks", "-k", "key", "--max-memory", "6MiB", "--chunk-size", "4MiB"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("too small") && r.stderr.contains("--chunk-size"), "{}", r.stderr);
    assert!(!d.join("x.ks").exists() && !d.join(".x.ks.keepsync-partial").exists());
    let v = ks(d, &["pack", "in", "-o", "v.ks", "-k", "key", "-v"]);
    v.ok();
    assert!(v.stderr.contains("packed 3.0 MiB into") && v.stderr.contains("peak memory"), "{}", v.stderr);
}

#[test]
fn caps_reports_the_machine_and_measures_codecs() {
    let dir = tempfile::tempdir().unwrap();
    let caps = ks(dir.path(), &["caps", "--json", "--measure-ms", "5"]).ok().json();
    assert!(caps["cores"].as_u64().unwrap() >= 1);
    assert_eq!(caps["default_crypto"], "rustcrypto");
    let names: Vec<&str> = caps["codecs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["codec"].as_str().unwrap_or_else(|| c["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names, ["store", "lz4", "zstd", "auto", "deflate"]);
    assert!(caps["codecs"].as_array().unwrap().iter().all(|c| c["seal_mb_per_s"].as_f64().unwrap() > 0.0));
}

/// The Argon2id salt recorded in a container's header (inspect shows it without the key).
fn argon2id_salt(d: &std::path::Path, file: &str) -> String {
    let report = ks(d, &["inspect", file, "--json"]).ok().json();
    report["key"]["argon2id_salt"].as_str().expect("a passphrase container").to_string()
}

#[test]
fn several_inputs_share_one_argon2id_run_but_keep_their_own_file_salts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let env = [("PW", "correct horse battery staple")];
    let names = ["a.log", "b.log", "c.log"];
    for (i, name) in names.iter().enumerate() {
        std::fs::write(d.join(name), mixed(20_000 + i * 7_000, i as u64)).unwrap();
    }
    let packed =
        keepsync(d, &["pack", "a.log", "b.log", "c.log", "--passphrase-env", "PW", "--json"], None, &env);
    let packed = packed.ok().json();
    assert_eq!(packed["argon2id_runs"], 1, "{packed}");
    assert_eq!(packed["files"].as_array().unwrap().len(), 3);
    assert_eq!(packed["failed"].as_array().unwrap().len(), 0);
    let containers = names.map(|n| format!("{n}.ks"));
    let salts = containers.clone().map(|c| argon2id_salt(d, &c));
    assert!(salts.iter().all(|s| *s == salts[0] && s.len() == 32), "{salts:?}");
    let file_salts: std::collections::BTreeSet<String> = containers
        .iter()
        .map(|c| ks(d, &["inspect", c, "--json"]).ok().json()["file_salt"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(file_salts.len(), 3, "every container has its own file salt");
    // A second run is a second session: a fresh Argon2id salt.
    keepsync(d, &["pack", "a.log", "-o", "again.ks", "--passphrase-env", "PW"], None, &env).ok();
    assert_ne!(argon2id_salt(d, "again.ks"), salts[0]);

    std::fs::create_dir(d.join("out")).unwrap();
    let args =
        ["unpack", "a.log.ks", "b.log.ks", "c.log.ks", "-o", "out", "--passphrase-env", "PW", "--json"];
    let unpacked = keepsync(d, &args, None, &env).ok().json();
    assert_eq!(unpacked["argon2id_runs"], 1, "{unpacked}");
    for (i, name) in names.iter().enumerate() {
        assert!(std::fs::read(d.join("out").join(name)).unwrap() == mixed(20_000 + i * 7_000, i as u64));
    }
    // Containers of two sessions: one run each.
    let args = ["unpack", "a.log.ks", "again.ks", "-o", "out", "-f", "--passphrase-env", "PW", "--json"];
    assert_eq!(keepsync(d, &args, None, &env).ok().json()["argon2id_runs"], 2);
}

#[test]
fn a_wrong_passphrase_on_several_inputs_names_each_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("a"), b"alpha").unwrap();
    std::fs::write(d.join("b"), b"beta").unwrap();
    keepsync(d, &["pack", "a", "b", "--passphrase-env", "PW"], None, &[("PW", "right")]).ok();
    std::fs::remove_file(d.join("a")).unwrap();
    std::fs::remove_file(d.join("b")).unwrap();
    let r = keepsync(d, &["unpack", "a.ks", "b.ks", "--passphrase-env", "PW"], None, &[("PW", "wrong")]);
    assert_eq!(r.code, 65, "{}", r.stderr);
    for name in ["a.ks: header authentication failed: wrong key or passphrase", "b.ks: header authentication"]
    {
        assert!(r.stderr.contains(name), "{}", r.stderr);
    }
    assert!(
        r.stderr.contains("2 of 2 inputs failed") && r.stderr.contains("nothing was written"),
        "{}",
        r.stderr
    );
    assert_eq!(listing(d), ["a.ks", "b.ks"], "no output and no partial file");
}

#[test]
fn one_failing_input_is_named_and_the_others_complete() {
    let dir = dir_with_key();
    let d = dir.path();
    std::fs::write(d.join("a"), b"alpha").unwrap();
    std::fs::write(d.join("c"), b"gamma").unwrap();
    let r = ks(d, &["pack", "a", "missing", "c", "-k", "key"]);
    assert_eq!(r.code, 66, "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot open missing") && r.stderr.contains("1 of 3 inputs failed"),
        "{}",
        r.stderr
    );
    assert_eq!(listing(d), ["a", "a.ks", "c", "c.ks", "key"]);
    // With --json, stdout is one JSON document naming the failure.
    let r = ks(d, &["pack", "a", "missing", "-k", "key", "--force", "--json"]);
    assert_eq!(r.code, 66, "{}", r.stderr);
    let summary = r.json();
    assert_eq!(summary["failed"][0]["input"], "missing", "{summary}");
    assert_eq!(summary["failed"][0]["exit_code"], 66, "{summary}");
    std::fs::create_dir(d.join("out")).unwrap();
    ks(d, &["unpack", "a.ks", "c.ks", "-o", "out", "-k", "key"]).ok();
    assert_eq!(std::fs::read(d.join("out/a")).unwrap(), b"alpha");
    assert_eq!(std::fs::read(d.join("out/c")).unwrap(), b"gamma");
}

#[test]
fn several_inputs_refuse_a_single_output() {
    let dir = dir_with_key();
    let d = dir.path();
    std::fs::write(d.join("a"), b"alpha").unwrap();
    std::fs::write(d.join("b"), b"beta").unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["pack", "a", "b", "-o", "c.ks", "-k", "key"],
            "-o c.ks names one output file, but 2 inputs were given: pass -o DIR",
        ),
        (&["pack", "a", "b", "-o", "-", "-k", "key"], "2 inputs cannot all go to standard output"),
        (&["pack", "a", "-", "-k", "key"], "- (standard input) can only be given alone"),
        (&["pack", "-", "-k", "key"], "pass -o FILE, or -o - for standard output"),
        (&["unpack", "a", "-k", "key"], "does not end in .ks; unpack it on its own with -o FILE"),
    ];
    for (args, needle) in cases {
        let r = ks(d, args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(needle), "{args:?}: {}", r.stderr);
    }
    assert_eq!(listing(d), ["a", "b", "key"]);
}
