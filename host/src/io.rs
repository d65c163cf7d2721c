//! Where bytes come from and go to, as named on the command line (`-` is stdin/stdout).

use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// An input: a file or standard input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Standard input.
    Stdin,
    /// A file.
    File(PathBuf),
}

/// An output: a file (written atomically) or a stream (standard output, or an existing
/// device or FIFO such as `/dev/null`, written into as it is, as `zstd -o` does).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file, replaced only with `force`, and only if it is a regular file.
    File {
        /// The destination.
        path: PathBuf,
        /// Replace an existing file.
        force: bool,
    },
    /// An existing file that is not a regular file or directory (a character or block
    /// device, a FIFO): written into, never replaced.
    Stream(PathBuf),
    /// Nowhere: the bytes are dropped and nothing is created (`keepsync verify` runs the
    /// whole unpack, authentication included, into it).
    Discard,
}

impl Source {
    /// `-` is standard input, anything else a path.
    pub fn from_arg(arg: &Path) -> Self {
        if arg == Path::new("-") { Self::Stdin } else { Self::File(arg.to_path_buf()) }
    }

    /// How the source is named in messages.
    pub fn name(&self) -> String {
        match self {
            Self::Stdin => "standard input".into(),
            Self::File(p) => p.display().to_string(),
        }
    }

    /// Opens the source for reading, with its length when known. The reader is `Send` so a
    /// pipeline can read on its own thread.
    pub fn open(&self) -> Result<(Box<dyn Read + Send>, Option<u64>)> {
        match self {
            Self::Stdin => Ok((Box::new(io::stdin()), None)),
            Self::File(path) => {
                let file = open_file(path)?;
                let len = file.metadata().ok().filter(|m| m.is_file()).map(|m| m.len());
                Ok((Box::new(file), len))
            }
        }
    }
}

impl Sink {
    /// `-` is standard output; an existing device or FIFO (through symlinks) a stream;
    /// anything else a file path.
    pub fn from_arg(arg: &Path, force: bool) -> Self {
        if arg == Path::new("-") {
            return Self::Stdout;
        }
        match std::fs::metadata(arg) {
            Ok(m) if !m.is_file() && !m.is_dir() => Self::Stream(arg.to_path_buf()),
            _ => Self::File { path: arg.to_path_buf(), force },
        }
    }

    /// How the sink is named in messages.
    pub fn name(&self) -> String {
        match self {
            Self::Stdout => "standard output".into(),
            Self::File { path, .. } | Self::Stream(path) => path.display().to_string(),
            Self::Discard => "nowhere (discarded)".into(),
        }
    }

    /// Opens a stream sink (standard output, a device, a FIFO, or the discarding sink) for
    /// writing; `None` for a file (written through [`crate::output::AtomicFile`]).
    pub fn open_stream(&self) -> Result<Option<Box<dyn Write>>> {
        match self {
            Self::Stdout => Ok(Some(Box::new(io::stdout().lock()))),
            Self::Discard => Ok(Some(Box::new(io::sink()))),
            Self::Stream(path) => {
                // Never created, truncated or replaced: only written into.
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| Error::io("open for writing", path, e))?;
                Ok(Some(Box::new(file)))
            }
            Self::File { .. } => Ok(None),
        }
    }
}

/// Opens a regular file for reading, refusing directories with a clear message.
pub fn open_file(path: &Path) -> Result<File> {
    let file = File::open(path).map_err(|e| Error::io("open", path, e))?;
    if file.metadata().map(|m| m.is_dir()).unwrap_or(false) {
        return Err(Error::Usage(format!("{} is a directory; pass a file", path.display())));
    }
    Ok(file)
}

/// Refuses to write `what` (a binary container, a secret key) to standard output when it is
/// a terminal, as age does: it would garble the screen or stay in the scrollback.
pub fn refuse_terminal_stdout(what: &str) -> Result<()> {
    if io::stdout().is_terminal() {
        return Err(Error::Usage(format!(
            "refusing to write {what} to the terminal: use -o FILE or redirect stdout"
        )));
    }
    Ok(())
}

/// Writes `bytes` (a generated script or page, a key file) to standard output and flushes it.
pub fn write_stdout(bytes: &[u8]) -> Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(bytes).and_then(|()| out.flush()).map_err(|e| Error::io("write", "standard output", e))
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
pub fn read_full(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// `$VAR/keepsync/NAME`, else `$HOME/FALLBACK/keepsync/NAME` (the XDG base directory rule);
/// `flag` is the option that overrides it, named when neither variable is set.
pub fn xdg_path(var: &str, fallback: &str, name: &str, flag: &str) -> Result<PathBuf> {
    let set = |v: &str| std::env::var_os(v).filter(|v| !v.is_empty()).map(PathBuf::from);
    let base = set(var)
        .or_else(|| set("HOME").map(|h| h.join(fallback)))
        .ok_or_else(|| Error::Usage(format!("neither {var} nor HOME is set: pass {flag}")))?;
    Ok(base.join("keepsync").join(name))
}
