//! Resource counters for one run: wall time, CPU time, peak memory and I/O, for work done in
//! this process (keepsync through its library) or in a child process (a peer tool).
//!
//! Everything comes from Linux's `/proc`, because the crate forbids `unsafe` and so cannot
//! call `getrusage`: CPU times from `/proc/self/stat` (clock ticks of 1/100 s, the fixed
//! `USER_HZ` of Linux's user-space ABI: 10 ms resolution), I/O from `/proc/self/io` (a reaped
//! child's counts are added to its parent's, so the delta covers peers too), and peak RSS from
//! `VmHWM`, which `/proc/self/clear_refs` resets before each in-process run. A child's peak
//! RSS is sampled every millisecond while it runs (its memory is gone once it exits), so a
//! peak shorter than that can be missed. On other systems the counters are absent, not zero.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Linux's user-space clock tick rate (`sysconf(_SC_CLK_TCK)`), fixed by its ABI.
const TICKS_PER_SECOND: f64 = 100.0;

/// What one run cost.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Measured {
    /// Wall-clock seconds.
    pub wall_s: f64,
    /// User CPU seconds, all threads (10 ms resolution).
    pub user_s: Option<f64>,
    /// System CPU seconds, all threads (10 ms resolution).
    pub sys_s: Option<f64>,
    /// Peak resident set size in bytes.
    pub peak_rss_bytes: Option<u64>,
    /// I/O counters over the run.
    pub io: Option<Io>,
}

/// `/proc/PID/io` counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Io {
    /// Bytes passed to read-like system calls (`rchar`), page cache hits included.
    pub read_bytes: u64,
    /// Bytes passed to write-like system calls (`wchar`).
    pub written_bytes: u64,
    /// Bytes fetched from storage (`read_bytes`): 0 when everything came from the page cache.
    pub disk_read_bytes: u64,
    /// Bytes sent towards storage (`write_bytes`), counted when pages are dirtied.
    pub disk_written_bytes: u64,
}

impl Io {
    fn delta(after: Io, before: Io) -> Io {
        Io {
            read_bytes: after.read_bytes.saturating_sub(before.read_bytes),
            written_bytes: after.written_bytes.saturating_sub(before.written_bytes),
            disk_read_bytes: after.disk_read_bytes.saturating_sub(before.disk_read_bytes),
            disk_written_bytes: after.disk_written_bytes.saturating_sub(before.disk_written_bytes),
        }
    }
}

fn parse_io(text: &str) -> Option<Io> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse().ok())
    };
    Some(Io {
        read_bytes: field("rchar")?,
        written_bytes: field("wchar")?,
        disk_read_bytes: field("read_bytes")?,
        disk_written_bytes: field("write_bytes")?,
    })
}

fn proc_io() -> Option<Io> {
    parse_io(&std::fs::read_to_string("/proc/self/io").ok()?)
}

/// CPU ticks of this process: (user, system, waited-for children's user, children's system).
fn parse_stat(text: &str) -> Option<[u64; 4]> {
    // The command name (field 2) may contain spaces and parentheses: count from the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14..=17 of proc(5) (utime stime cutime cstime) are 11..=14 after the name.
    let tick = |i: usize| fields.get(i)?.parse::<u64>().ok();
    Some([tick(11)?, tick(12)?, tick(13)?, tick(14)?])
}

fn proc_stat() -> Option<[u64; 4]> {
    parse_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

fn vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    Some(line.split_whitespace().nth(1)?.parse::<u64>().ok()? * 1024)
}

fn ticks_to_s(after: u64, before: u64) -> f64 {
    after.saturating_sub(before) as f64 / TICKS_PER_SECOND
}

/// Runs `f` in this process and measures it. Peak RSS is reset first, so it is this run's
/// peak (on kernels without `clear_refs` it would be the process's lifetime peak, so it is
/// left out).
pub fn in_process<T>(f: impl FnOnce() -> Result<T>) -> Result<(T, Measured)> {
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let (stat0, io0) = (proc_stat(), proc_io());
    let started = Instant::now();
    let value = f()?;
    let wall_s = started.elapsed().as_secs_f64();
    let (stat1, io1) = (proc_stat(), proc_io());
    let cpu = stat0.zip(stat1);
    Ok((
        value,
        Measured {
            wall_s,
            user_s: cpu.map(|(a, b)| ticks_to_s(b[0], a[0])),
            sys_s: cpu.map(|(a, b)| ticks_to_s(b[1], a[1])),
            peak_rss_bytes: if reset { crate::pipeline::peak_rss_bytes() } else { None },
            io: io0.zip(io1).map(|(a, b)| Io::delta(b, a)),
        },
    ))
}

/// Where a child's standard streams go.
#[derive(Debug, Clone, Copy)]
pub struct Redirect<'a> {
    /// File to read standard input from.
    pub stdin: Option<&'a Path>,
    /// File to write standard output to (created or truncated).
    pub stdout: Option<&'a Path>,
}

/// Runs `program args` to completion and measures it. A non-zero exit is an error naming the
/// command, so a broken peer is reported rather than timed.
pub fn child(program: &str, args: &[std::ffi::OsString], redirect: Redirect<'_>) -> Result<Measured> {
    let mut cmd = Command::new(program);
    cmd.args(args).stderr(Stdio::null());
    let open = |path: &Path| std::fs::File::open(path).map_err(|e| Error::io("open", path, e));
    cmd.stdin(match redirect.stdin {
        Some(p) => Stdio::from(open(p)?),
        None => Stdio::null(),
    });
    cmd.stdout(match redirect.stdout {
        Some(p) => Stdio::from(std::fs::File::create(p).map_err(|e| Error::io("create", p, e))?),
        None => Stdio::null(),
    });
    let (stat0, io0) = (proc_stat(), proc_io());
    let started = Instant::now();
    let mut process = cmd.spawn().map_err(|e| Error::io("run", program, e))?;
    let status_path = format!("/proc/{}/status", process.id());
    let (peak, done) = (AtomicU64::new(0), AtomicBool::new(false));
    let status = std::thread::scope(|scope| {
        scope.spawn(|| {
            while !done.load(Ordering::Relaxed) {
                if let Some(hwm) = std::fs::read_to_string(&status_path).ok().as_deref().and_then(vm_hwm) {
                    peak.fetch_max(hwm, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        let status = process.wait();
        done.store(true, Ordering::Relaxed);
        status
    });
    let wall_s = started.elapsed().as_secs_f64();
    let status = status.map_err(|e| Error::io("wait for", program, e))?;
    if !status.success() {
        let line = std::iter::once(program.to_string())
            .chain(args.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(Error::Peer { command: line, status: status.to_string() });
    }
    let (stat1, io1) = (proc_stat(), proc_io());
    let cpu = stat0.zip(stat1);
    let peak = peak.load(Ordering::Relaxed);
    Ok(Measured {
        wall_s,
        user_s: cpu.map(|(a, b)| ticks_to_s(b[2], a[2])),
        sys_s: cpu.map(|(a, b)| ticks_to_s(b[3], a[3])),
        peak_rss_bytes: (peak > 0).then_some(peak),
        io: io0.zip(io1).map(|(a, b)| Io::delta(b, a)),
    })
}

/// Whether `program` is an executable file on `PATH` (looked up without running it).
pub fn installed(program: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path).any(|dir| {
            std::fs::metadata(dir.join(program))
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        let stat = "1234 (my (odd) name) S 1 2 3 4 5 6 7 8 9 10 250 30 7 2 20 0 1";
        assert_eq!(parse_stat(stat), Some([250, 30, 7, 2]));
        assert_eq!(parse_stat("garbage"), None);
        let io = "rchar: 10\nwchar: 20\nsyscr: 1\nsyscw: 2\nread_bytes: 4096\nwrite_bytes: 8192\n";
        let io = parse_io(io).unwrap();
        assert_eq!(
            (io.read_bytes, io.written_bytes, io.disk_read_bytes, io.disk_written_bytes),
            (10, 20, 4096, 8192)
        );
        assert_eq!(vm_hwm("Name: x\nVmHWM:\t  2048 kB\n"), Some(2 << 20));
    }

    #[test]
    fn in_process_runs_count_what_they_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![1u8; 100_000]).unwrap();
        let (n, m) = in_process(|| Ok(std::fs::read(&path).unwrap().len())).unwrap();
        assert_eq!(n, 100_000);
        assert!(m.wall_s > 0.0);
        if cfg!(target_os = "linux") {
            assert!(m.io.unwrap().read_bytes >= 100_000, "{m:?}");
            assert!(m.user_s.is_some());
        }
    }

    #[test]
    fn a_failing_child_is_an_error_that_names_it() {
        if !installed("false") {
            return;
        }
        let e = child("false", &[], Redirect { stdin: None, stdout: None }).unwrap_err();
        assert!(e.to_string().contains("`false` failed"), "{e}");
        assert!(child("true", &[], Redirect { stdin: None, stdout: None }).unwrap().wall_s > 0.0);
        assert!(!installed("keepsync-no-such-program"));
    }
}
