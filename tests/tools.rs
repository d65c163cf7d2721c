//! The everyday tools through the real binary: shell completions, man pages, `verify`, and
//! `keygen --force` / `keygen -o -`.

mod support;

use std::path::Path;

use support::*;

const CS: usize = 4096;
const DATA_LEN: usize = 3 * CS + 100;

fn text(run: &Run) -> String {
    String::from_utf8(run.stdout.clone()).expect("stdout is UTF-8")
}

/// A directory with a key and `good.ks`: DATA_LEN bytes of mixed data in 4 KiB chunks, and
/// the byte ranges of its 4 chunk records.
fn packed() -> (tempfile::TempDir, Vec<u8>, Vec<std::ops::Range<usize>>) {
    let dir = dir_with_key();
    let d = dir.path();
    std::fs::write(d.join("in"), mixed(DATA_LEN, 9)).unwrap();
    ks(d, &["pack", "in", "-o", "good.ks", "-k", "key", "--chunk-size", "4KiB"]).ok();
    std::fs::remove_file(d.join("in")).unwrap();
    let container = std::fs::read(d.join("good.ks")).unwrap();
    let chunks = record_ranges(&container);
    assert_eq!(chunks.len(), 4);
    (dir, container, chunks)
}

/// Runs `verify ARGS` in `d` and checks that it changed nothing there: no file created, even
/// for a moment, written, renamed or removed. inotify queues each change as it happens, so it
/// sees what a listing taken afterwards would miss (a partial file made and removed again).
fn verify(d: &Path, args: &[&str]) -> Run {
    use rustix::fs::inotify::{self, CreateFlags, WatchFlags};
    let watch = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC).unwrap();
    let changes = WatchFlags::CREATE
        | WatchFlags::MODIFY
        | WatchFlags::ATTRIB
        | WatchFlags::MOVE
        | WatchFlags::DELETE
        | WatchFlags::CLOSE_WRITE;
    inotify::add_watch(&watch, d, changes).unwrap();
    let r = ks(d, &[&["verify"][..], args].concat());
    let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
    let mut events = inotify::Reader::new(&watch, &mut buf);
    let mut seen = Vec::new();
    loop {
        match events.next() {
            Ok(e) => seen.push(format!("{:?} {:?}", e.events(), e.file_name())),
            Err(rustix::io::Errno::AGAIN) => break,
            Err(e) => panic!("reading inotify events: {e}"),
        }
    }
    assert!(seen.is_empty(), "verify {args:?} changed its directory: {seen:?}");
    r
}

#[test]
fn verify_says_ok_on_a_good_container_and_writes_nothing() {
    let (dir, container, _) = packed();
    let d = dir.path();
    let ok = format!("good.ks: OK ({DATA_LEN} bytes, 4 chunks)\n");
    let r = verify(d, &["good.ks", "-k", "key"]);
    assert_eq!(text(r.ok()), ok);
    for threads in ["1", "3"] {
        assert_eq!(text(verify(d, &["good.ks", "-k", "key", "-j", threads]).ok()), ok);
    }
    let piped = keepsync(d, &["verify", "-", "-k", "key"], Some(&container), &[]);
    assert_eq!(text(piped.ok()), format!("standard input: OK ({DATA_LEN} bytes, 4 chunks)\n"));
    assert!(text(verify(d, &["good.ks", "-k", "key", "-q"]).ok()).is_empty());
    std::fs::write(d.join("one"), b"1").unwrap();
    ks(d, &["pack", "one", "-k", "key"]).ok();
    assert_eq!(text(verify(d, &["one.ks", "-k", "key"]).ok()), "one.ks: OK (1 byte, 1 chunk)\n");
    // A name cannot print a line of its own.
    std::fs::write(d.join("two\nlines.ks"), &container).unwrap();
    let r = verify(d, &["two\nlines.ks", "-k", "key"]);
    assert_eq!(text(r.ok()), format!("two\\x0alines.ks: OK ({DATA_LEN} bytes, 4 chunks)\n"));
}

#[test]
fn verify_rejects_a_flipped_byte_a_truncation_and_the_wrong_key_with_exit_65() {
    let (dir, container, chunks) = packed();
    let d = dir.path();
    let mut flipped = container.clone();
    flipped[chunks[1].start + 40] ^= 0x01;
    std::fs::write(d.join("flipped.ks"), flipped).unwrap();
    std::fs::write(d.join("truncated.ks"), &container[..chunks[3].start + 20]).unwrap();
    ks(d, &["keygen", "-o", "other.key"]).ok();
    for (args, needle) in [
        (["flipped.ks", "-k", "key"], "chunk 1 failed authentication"),
        (["truncated.ks", "-k", "key"], "truncated"),
        (["good.ks", "-k", "other.key"], "wrong key or passphrase"),
    ] {
        for threads in ["1", "4"] {
            let r = verify(d, &[&args[..], &["-j", threads]].concat());
            assert_eq!(r.code, 65, "{args:?}: {}", r.stderr);
            assert!(r.stderr.contains(needle) && r.stderr.contains("hint:"), "{args:?}: {}", r.stderr);
            assert!(r.stdout.is_empty(), "{args:?}: {}", text(&r));
        }
    }
    let r = keepsync(d, &["verify", "good.ks", "--passphrase-env", "PW"], None, &[("PW", "x")]);
    assert_eq!(r.code, 65, "{}", r.stderr);
    assert!(r.stderr.contains("needs a key file"), "{}", r.stderr);
}

#[test]
fn verify_checks_every_file_and_damage_outranks_a_missing_one() {
    let (dir, container, chunks) = packed();
    let d = dir.path();
    let mut flipped = container.clone();
    flipped[chunks[2].end - 1] ^= 0x80;
    std::fs::write(d.join("flipped.ks"), flipped).unwrap();
    std::fs::copy(d.join("good.ks"), d.join("copy.ks")).unwrap();

    let r = verify(d, &["good.ks", "missing.ks", "flipped.ks", "copy.ks", "-k", "key"]);
    assert_eq!(r.code, 65, "{}", r.stderr);
    assert_eq!(
        text(&r),
        format!("good.ks: OK ({DATA_LEN} bytes, 4 chunks)\ncopy.ks: OK ({DATA_LEN} bytes, 4 chunks)\n")
    );
    for needle in [
        "cannot open missing.ks",
        "flipped.ks: chunk 2 failed authentication",
        "2 of 4 containers did not verify",
    ] {
        assert!(r.stderr.contains(needle), "no `{needle}` in:\n{}", r.stderr);
    }
    let r = verify(d, &["good.ks", "missing.ks", "-k", "key"]);
    assert_eq!(r.code, 66, "{}", r.stderr);
    assert_eq!(verify(d, &["missing.ks", "-k", "key"]).code, 66);
    assert_eq!(verify(d, &["good.ks", "-k", "nokey"]).code, 66);

    let r = verify(d, &["good.ks", "flipped.ks", "missing.ks", "-k", "key", "--json"]);
    assert_eq!(r.code, 65, "{}", r.stderr);
    let results = r.json();
    let results = results.as_array().expect("a JSON array");
    let got: Vec<(&str, bool, u64)> = results
        .iter()
        .map(|v| (v["input"].as_str().unwrap(), v["ok"].as_bool().unwrap(), v["exit_code"].as_u64().unwrap()))
        .collect();
    assert_eq!(got, [("good.ks", true, 0), ("flipped.ks", false, 65), ("missing.ks", false, 66)]);
    assert_eq!(results[0]["bytes"], DATA_LEN);
    assert_eq!(results[0]["chunks"], 4);
    assert_eq!(results[0]["container_bytes"], container.len());
    assert!(results[1]["error"].as_str().unwrap().contains("chunk 2 failed authentication"));
    assert!(results[1]["bytes"].is_null());
    // One failing container: still one JSON document on stdout.
    let r = verify(d, &["flipped.ks", "-k", "key", "--json"]);
    assert_eq!(r.code, 65, "{}", r.stderr);
    assert_eq!(r.json()[0]["exit_code"], 65);
}

#[test]
fn keygen_refuses_an_existing_file_without_force_and_replaces_it_with_force() {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_with_key();
    let d = dir.path();
    let old = std::fs::read(d.join("key")).unwrap();
    let r = ks(d, &["keygen", "-o", "key"]);
    assert_eq!(r.code, 73, "{}", r.stderr);
    assert!(r.stderr.contains("key already exists") && r.stderr.contains("pass --force"), "{}", r.stderr);
    assert_eq!(std::fs::read(d.join("key")).unwrap(), old);

    std::fs::write(d.join("in"), b"packed with the old key").unwrap();
    ks(d, &["pack", "in", "-o", "old.ks", "-k", "key"]).ok();
    std::fs::set_permissions(d.join("key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    ks(d, &["keygen", "-o", "key", "--force"]).ok();
    let new = std::fs::read(d.join("key")).unwrap();
    assert_ne!(new, old);
    assert_eq!(std::fs::metadata(d.join("key")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(listing(d), ["in", "key", "old.ks"], "no temporary file is left");
    // The new key is a working key, and not the old one.
    ks(d, &["pack", "in", "-o", "new.ks", "-k", "key"]).ok();
    assert_eq!(verify(d, &["new.ks", "-k", "key"]).code, 0);
    assert_eq!(verify(d, &["old.ks", "-k", "key"]).code, 65);
}

#[test]
fn keygen_o_dash_prints_a_key_file_that_pack_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = ks(d, &["keygen", "-o", "-"]);
    let key = text(a.ok());
    assert!(key.starts_with("# KeepSync key file."), "{key}");
    let key_lines: Vec<&str> = key.lines().filter(|l| l.starts_with("KEEPSYNC-KEY-1 ")).collect();
    assert_eq!(key_lines.len(), 1, "{key}");
    assert_eq!(key_lines[0].len(), "KEEPSYNC-KEY-1 ".len() + 64);
    assert_eq!(listing(d), Vec::<String>::new(), "nothing written, no file named -");
    assert_ne!(text(ks(d, &["keygen", "-o", "-"]).ok()), key, "every run makes a new key");

    std::fs::write(d.join("printed.key"), &key).unwrap();
    std::fs::write(d.join("in"), mixed(50_000, 3)).unwrap();
    ks(d, &["pack", "in", "-o", "c.ks", "-k", "printed.key"]).ok();
    ks(d, &["unpack", "c.ks", "-o", "out", "-k", "printed.key"]).ok();
    assert!(std::fs::read(d.join("out")).unwrap() == mixed(50_000, 3));
}

#[test]
fn keygen_o_dash_refuses_to_print_a_key_on_a_terminal() {
    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    let dir = tempfile::tempdir().unwrap();
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let terminal = std::fs::OpenOptions::new().write(true).open(name.to_str().unwrap()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keepsync"))
        .args(["keygen", "-o", "-"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(terminal)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("refusing to write a secret key to the terminal"), "{stderr}");
    assert!(stderr.contains("redirect stdout"), "{stderr}");
    assert_eq!(listing(dir.path()), Vec::<String>::new());
}

/// The subcommands `keepsync --help` lists (without `help`).
fn subcommands(d: &Path) -> Vec<String> {
    let help = text(ks(d, &["--help"]).ok());
    let list = &help[help.find("Commands:\n").expect("--help lists commands") + "Commands:\n".len()..];
    list.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .filter(|name| name != "help")
        .collect()
}

#[test]
fn completions_for_every_shell_know_the_subcommands_and_their_options() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let subs = subcommands(d);
    assert!(subs.len() >= 10 && subs.iter().any(|s| s == "verify"), "{subs:?}");
    for (shell, psk_file) in [
        ("bash", "--psk-file"),
        ("zsh", "--psk-file"),
        ("fish", "-l psk-file"),
        ("elvish", "--psk-file"),
        ("powershell", "--psk-file"),
    ] {
        let script = text(ks(d, &["completions", shell]).ok());
        assert!(script.len() > 1000, "{shell}: {} bytes", script.len());
        assert!(script.contains(psk_file), "{shell} completion lacks {psk_file}");
        for sub in &subs {
            assert!(script.contains(sub.as_str()), "{shell} completion lacks `{sub}`");
        }
    }
    let r = ks(d, &["completions", "tcsh"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("bash") && r.stderr.contains("powershell"), "{}", r.stderr);
}

/// What bash's completion offers for `words` (the last one being completed), with the script
/// `keepsync completions bash` printed loaded as bash-completion would load it.
fn bash_completes(d: &Path, words: &[&str]) -> Vec<String> {
    let script = ks(d, &["completions", "bash"]).ok().stdout.clone();
    std::fs::write(d.join("keepsync.bash"), script).unwrap();
    let line = words.join(" ");
    let program = format!(
        "source ./keepsync.bash || exit 9\n\
         COMP_WORDS=({line}); COMP_CWORD={}; COMP_LINE='{line}'; COMP_POINT={}\n\
         _keepsync keepsync '{}' '{}' || exit 8\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        words.len() - 1,
        line.len(),
        words[words.len() - 1],
        words[words.len() - 2],
    );
    let out = std::process::Command::new("bash").arg("-c").arg(program).current_dir(d).output().unwrap();
    assert!(out.status.success(), "bash: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_options_with_the_generated_script() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert_eq!(bash_completes(d, &["keepsync", "ver"]), ["verify"]);
    assert_eq!(bash_completes(d, &["keepsync", "sync", "--psk"]), ["--psk-file"]);
    let keygen = bash_completes(d, &["keepsync", "keygen", "--"]);
    assert!(keygen.iter().any(|o| o == "--force") && keygen.iter().any(|o| o == "--output"), "{keygen:?}");
}

/// The lines of a roff page after the string definitions that precede `.TH`.
fn roff_lines(page: &str) -> Vec<&str> {
    page.lines().skip_while(|l| l.starts_with(".ie ") || l.starts_with(".el ")).collect()
}

/// The `.TH` line of page `title`: title, section, date (none), source, manual, each in its
/// place.
fn title_line(title: &str) -> String {
    format!(".TH {title} 1 \"\" \"keepsync {}\" \"KeepSync Manual\"", env!("CARGO_PKG_VERSION"))
}

/// The text of section `title` (`.SH title` up to the next `.SH`).
fn section<'a>(page: &'a str, title: &str) -> &'a str {
    let start =
        page.find(&format!(".SH {title}\n")).unwrap_or_else(|| panic!("no section {title} in:\n{page}"));
    let rest = &page[start + 4..];
    &rest[..rest.find("\n.SH ").map_or(rest.len(), |e| e + 1)]
}

#[test]
fn man_prints_keepsync_1_with_its_examples_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let page = text(ks(dir.path(), &["man"]).ok());
    let lines = roff_lines(&page);
    assert_eq!(lines[0], title_line("keepsync"));
    assert!(lines.iter().all(|l| !l.is_empty()), "a blank line in roff is a stray paragraph break");
    for title in ["NAME", "SYNOPSIS", "DESCRIPTION", "OPTIONS", "SUBCOMMANDS", "EXAMPLES"] {
        section(&page, title);
    }
    let exit = section(&page, "\"EXIT STATUS\"");
    // The table keeps its lines: one exit code a line, unfilled.
    assert!(exit.contains(".nf\n"), "{exit}");
    for row in ["  0   success", "  65  input rejected", "  66  an input or key file cannot be opened"] {
        assert!(exit.lines().any(|l| l.starts_with(row)), "no `{row}` in:\n{exit}");
    }
    let examples = section(&page, "EXAMPLES");
    assert!(examples.contains("keepsync verify /mnt/backup/*.ks \\-\\-key\\-file"), "{examples}");
    assert!(examples.contains("keepsync completions bash >"), "{examples}");
    assert!(!page.contains(".SH EXTRA"), "after-help is rendered as sections, not as EXTRA");
    for sub in subcommands(dir.path()) {
        assert!(
            page.contains(&format!("keepsync\\-{sub}(1)")),
            "keepsync(1) does not refer to keepsync-{sub}(1)"
        );
    }
}

#[test]
fn man_o_writes_one_page_per_subcommand_and_replaces_them_when_run_again() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut expected: Vec<String> = subcommands(d).iter().map(|s| format!("keepsync-{s}.1")).collect();
    expected.extend(["keepsync.1", "keepsync-bench-compare.1", "keepsync-bench-history.1"].map(String::from));
    for _ in 0..2 {
        let r = ks(d, &["man", "-o", "share/man1"]);
        r.ok();
        assert!(r.stderr.contains("pages into share/man1"), "{}", r.stderr);
        let written = listing(&d.join("share/man1"));
        assert!(written.iter().all(|n| n.starts_with("keepsync") && n.ends_with(".1")), "{written:?}");
        for name in &expected {
            assert!(written.contains(name), "{name} missing from {written:?}");
        }
    }
    for (file, title) in
        [("keepsync-verify.1", "keepsync-verify"), ("keepsync-bench-compare.1", "keepsync-bench-compare")]
    {
        let page = std::fs::read_to_string(d.join("share/man1").join(file)).unwrap();
        assert_eq!(roff_lines(&page)[0], title_line(title), "{file}");
    }
    let verify = std::fs::read_to_string(d.join("share/man1/keepsync-verify.1")).unwrap();
    assert!(section(&verify, "\"EXIT STATUS\"").contains("  65  one was rejected"), "{verify}");
    assert!(section(&verify, "EXAMPLES").contains("keepsync verify photos.tar.ks"), "{verify}");
    // A directory that cannot be made is an output that cannot be created.
    std::fs::write(d.join("file"), b"").unwrap();
    let r = ks(d, &["man", "-o", "file/man1"]);
    assert_eq!(r.code, 73, "{}", r.stderr);
}
