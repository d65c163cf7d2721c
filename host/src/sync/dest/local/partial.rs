//! A file (or part) written into its partial, and what it becomes once it verified.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use keepsync_core::Checkpoint;
use rustix::fs::{AtFlags, Mode, OFlags};

use super::super::super::tree::{Stat, set_meta};
use super::super::{Ended, Fault, PartialFile, VerifiedFile, hash_range, range_digest, range_hasher};
use super::store::{Claim, Store, binding, write_record};

/// The durable bytes from `start` on (of the file, or a part) that the checkpoint `name`
/// claims and the digest it recorded of them, when it names this very version and range and
/// the partial file is long enough. The bytes themselves are checked apart ([`PrefixCheck`]).
pub(super) fn claimed_prefix(
    dir: &OwnedFd,
    data: &File,
    name: &str,
    binding: &[u8; 32],
    start: u64,
) -> Option<(u64, [u8; 32])> {
    let ckpt = read_checkpoint(dir, name)?;
    let long_enough = data.metadata().ok()?.len() >= start + ckpt.plain_offset;
    (&ckpt.header_mac == binding && long_enough && ckpt.plain_offset > 0)
        .then_some((ckpt.plain_offset, ckpt.source_hash))
}

pub(super) fn read_checkpoint(dir: &OwnedFd, name: &str) -> Option<Checkpoint> {
    let fd =
        rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())
            .ok()?;
    let mut bytes = [0u8; Checkpoint::MAX_ENCODED_LEN];
    let n = rustix::io::read(&fd, &mut bytes).ok()?;
    Checkpoint::decode(&bytes[..n]).ok()
}

/// Re-hashing a resumed partial's durable prefix: on a thread beside the transfer, or done in
/// line.
pub(super) enum PrefixCheck {
    Running(std::thread::JoinHandle<Option<blake3::Hasher>>),
    Settled(Option<Box<blake3::Hasher>>),
}

impl PrefixCheck {
    pub(super) fn start(
        file: File,
        start: u64,
        len: u64,
        expect: [u8; 32],
        part: bool,
        inline: bool,
    ) -> Self {
        let check = move || {
            let mut hasher = range_hasher(start, part);
            hash_range(&mut hasher, &file, (start, start + len), &mut vec![0u8; 1 << 20]).ok()?;
            (range_digest(&hasher, part) == expect).then_some(hasher)
        };
        if inline { Self::Settled(check().map(Box::new)) } else { Self::Running(std::thread::spawn(check)) }
    }

    fn is_settled(&self) -> bool {
        match self {
            Self::Running(h) => h.is_finished(),
            Self::Settled(_) => true,
        }
    }

    fn join(self) -> Option<blake3::Hasher> {
        match self {
            Self::Running(h) => h.join().ok().flatten(),
            Self::Settled(h) => h.map(|h| *h),
        }
    }
}

/// A file (or part) being written into its partial file.
pub struct Partial {
    pub(super) rel: String,
    pub(super) full: String,
    pub(super) vid: String,
    pub(super) size: u64,
    pub(super) start: u64,
    pub(super) end: u64,
    pub(super) part: bool,
    pub(super) mode: u32,
    pub(super) mtime: (i64, u32),
    pub(super) data: Arc<File>,
    pub(super) ckpt_name: String,
    /// The checkpoint's binding, once one is written.
    pub(super) range_binding: Option<[u8; 32]>,
    /// A checkpoint of this range may exist (an earlier try's, or this one's).
    pub(super) ckpt_may_exist: bool,
    /// Where the next byte goes.
    pub(super) written: u64,
    /// Where this try started (after the durable prefix).
    pub(super) resume: u64,
    /// The BLAKE3 of `start..hashed` (network transfers only).
    pub(super) hasher: Option<blake3::Hasher>,
    pub(super) hashed: u64,
    /// The durable prefix being re-hashed; data written meanwhile is hashed once it settles.
    pub(super) prefix: Option<PrefixCheck>,
    /// The durable prefix did not match its checkpoint: the file cannot verify.
    pub(super) prefix_bad: bool,
    pub(super) old: Option<File>,
    pub(super) since_ckpt: u64,
    pub(super) expect: Option<Stat>,
    pub(super) resumed: bool,
    pub(super) checkpoint_every: u64,
    pub(super) store: Arc<Store>,
    /// Held until the entry is done (a whole file's, until it is placed).
    pub(super) claim: Option<Claim>,
}

impl Partial {
    /// The path under the subtree.
    pub fn rel(&self) -> &str {
        &self.rel
    }

    /// Where the sender should start: after the durable prefix an earlier try left.
    pub fn resume_from(&self) -> u64 {
        self.resume
    }

    /// The durable prefix of an earlier try was found (and is being checked).
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// The range this entry carries.
    pub fn range(&self) -> (u64, u64) {
        (self.start, self.end)
    }

    /// The old copy a delta is made against, if there is one.
    pub fn old_copy(&mut self) -> Option<&mut File> {
        self.old.as_mut()
    }

    /// Bytes written so far by this try.
    pub fn written_now(&self) -> u64 {
        self.written - self.resume
    }

    /// Brings the hash up to `written`: once the durable prefix is settled (waiting for it only
    /// with `wait`), the bytes written meanwhile are read back and hashed. `false` while the
    /// prefix is not settled, or when it did not verify.
    fn catch_up(&mut self, wait: bool, buf: &mut Vec<u8>) -> Result<bool, Fault> {
        if let Some(check) = self.prefix.take_if(|c| wait || c.is_settled()) {
            match check.join() {
                Some(h) => self.hasher = Some(h),
                None => self.prefix_bad = true,
            }
        }
        if self.prefix.is_some() || self.prefix_bad {
            return Ok(false);
        }
        if let Some(hasher) = &mut self.hasher
            && self.hashed < self.written
        {
            buf.resize(1 << 20, 0);
            hash_range(hasher, &self.data, (self.hashed, self.written), buf)
                .map_err(|e| Fault::io(format!("{}: cannot read back the partial file", self.rel), &e))?;
            self.hashed = self.written;
        }
        Ok(true)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), Fault> {
        self.data
            .write_all_at(bytes, self.written)
            .map_err(|e| Fault::io(format!("{}: cannot write", self.rel), &e))?;
        if self.prefix.is_none()
            && self.hashed == self.written
            && let Some(h) = &mut self.hasher
        {
            h.update(bytes);
            self.hashed += bytes.len() as u64;
        }
        self.written += bytes.len() as u64;
        self.since_ckpt += bytes.len() as u64;
        Ok(())
    }

    /// Copies the old copy's bytes up to `until` (blocks the sender found unchanged).
    fn fill_from_old(&mut self, until: u64, buf: &mut Vec<u8>) -> Result<(), Fault> {
        if self.written >= until {
            return Ok(());
        }
        if self.old.is_none() {
            // The sender skipped blocks there is no old copy of, or stopped before the end (its
            // file vanished or changed while it read it).
            return Err(Fault::Mismatch(format!("{}: data is missing; it will be sent again", self.rel)));
        }
        buf.resize(1 << 20, 0);
        while self.written < until {
            let n = ((until - self.written) as usize).min(buf.len());
            let old = self.old.as_ref().expect("checked above");
            old.read_exact_at(&mut buf[..n], self.written).map_err(|_| {
                Fault::Mismatch(format!("{}: the old copy changed during the sync", self.rel))
            })?;
            let chunk = std::mem::take(buf);
            let wrote = self.write(&chunk[..n]);
            *buf = chunk;
            wrote?;
        }
        Ok(())
    }

    /// Writes `bytes` at `offset` (at or after where the last write ended; the gap is filled
    /// from the old copy), checkpointing every `checkpoint_every` bytes.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8], buf: &mut Vec<u8>) -> Result<(), Fault> {
        self.catch_up(false, buf)?;
        self.fill_from_old(offset, buf)?;
        self.write(bytes)?;
        if self.since_ckpt >= self.checkpoint_every {
            self.checkpoint(false, buf)?;
        }
        Ok(())
    }

    /// Makes the file durable up to `written` and records that in its checkpoint (put off,
    /// unless `wait`, while its durable prefix is still being re-hashed).
    fn checkpoint(&mut self, wait: bool, buf: &mut Vec<u8>) -> Result<(), Fault> {
        if self.hasher.is_none() || !self.catch_up(wait, buf)? || self.written == self.start {
            return Ok(());
        }
        self.data.sync_data().map_err(|e| Fault::io(format!("{}: cannot flush", self.rel), &e))?;
        let bound = match self.range_binding {
            Some(b) => b,
            None => binding(&self.vid, self.start, self.end, &self.data)
                .map_err(|e| Fault::io(format!("{}: cannot read the partial file", self.rel), &e))?,
        };
        self.range_binding = Some(bound);
        let hasher = self.hasher.as_ref().expect("checked above");
        let ckpt = Checkpoint {
            header_mac: bound,
            chunks_done: 0,
            plain_offset: self.written - self.start,
            sealed_offset: self.written - self.start,
            source_hash: range_digest(hasher, self.part),
        };
        let mut bytes = [0u8; Checkpoint::MAX_ENCODED_LEN];
        let bytes = ckpt.encode(&mut bytes).map_err(|e| Fault::Mismatch(e.to_string()))?;
        self.store.keep(&self.vid);
        self.ckpt_may_exist = true;
        let mut written = Err(io::Error::from(io::ErrorKind::NotFound));
        for _ in 0..2 {
            let dir = self.store.partial_dir(true).ok().flatten();
            let dir = dir.ok_or_else(|| Fault::Refused("the partial directory vanished".into()))?;
            written = write_record(&dir, &self.ckpt_name, bytes);
            match &written {
                // The (empty) partial directory was removed and made anew meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound => self.store.forget_partial_dir(),
                _ => break,
            }
        }
        written.map_err(|e| Fault::io(format!("{}: cannot write its checkpoint", self.rel), &e))?;
        self.since_ckpt = 0;
        Ok(())
    }

    /// The connection broke: keeps what arrived (durable, with its checkpoint) so the next try
    /// resumes there. Every byte written came in order from an authenticated frame.
    pub fn save(&mut self, buf: &mut Vec<u8>) {
        if self.since_ckpt > 0 {
            let _ = self.checkpoint(true, buf);
        }
    }

    /// All data is in: fills the rest from the old copy and checks the bytes against `want`
    /// (the sender's BLAKE3; `None` when the caller vouches for them). A whole file is ready to
    /// place; a part is made durable with a checkpoint that records it whole.
    pub fn end(mut self, want: Option<[u8; 32]>, buf: &mut Vec<u8>) -> Result<Ended<Verified>, Fault> {
        let end = self.end;
        let checked = self.catch_up(true, buf).and_then(|_| self.fill_from_old(end, buf));
        if let Err(f) = checked {
            self.drop_partial();
            return Err(f);
        }
        let good = match (&self.hasher, want) {
            (Some(h), Some(want)) => !self.prefix_bad && range_digest(h, self.part) == want,
            (None, None) => true,
            _ => false,
        };
        if !good || self.written != end {
            self.drop_partial();
            return Err(Fault::Mismatch(format!(
                "{}: the received bytes did not verify; it will be sent again",
                self.rel
            )));
        }
        let io = |rel: &str, what: &str, e: io::Error| Fault::io(format!("{rel}: {what}"), &e);
        if self.part {
            self.since_ckpt = self.since_ckpt.max(1);
            self.checkpoint(true, buf)?;
            return Ok(Ended::Part { resumed: self.resumed });
        }
        set_meta(self.data.as_fd(), self.mode, self.mtime)
            .map_err(|e| io(&self.rel, "cannot set its mode and mtime", e))?;
        let ckpts = if self.ckpt_may_exist { vec![self.ckpt_name.clone()] } else { Vec::new() };
        let written = self.written - self.resume;
        Ok(Ended::Whole(Box::new(Verified {
            rel: self.rel.clone(),
            full: self.full.clone(),
            vid: self.vid.clone(),
            data: Arc::clone(&self.data),
            size: self.size,
            mtime: self.mtime,
            expect: self.expect,
            ckpts,
            written,
            resumed: self.resumed,
            claim: self.claim.take(),
        })))
    }

    /// A failed or wrong try: a whole file's partial and checkpoint go (the next try starts
    /// clean); a part's checkpoint only (its partial holds the other parts).
    fn drop_partial(&mut self) {
        if let Ok(Some(dir)) = self.store.partial_dir(false) {
            let _ = rustix::fs::unlinkat(&dir, self.ckpt_name.as_str(), AtFlags::empty());
            if !self.part {
                let _ = rustix::fs::unlinkat(&dir, format!("{}.data", self.vid), AtFlags::empty());
                // The name is gone: the claim must not remove a new partial of that name.
                self.store.keep(&self.vid);
            }
        }
    }
}

/// A file whose bytes verified, waiting to be placed ([`Dest::commit`]).
pub struct Verified {
    /// Path under the subtree.
    pub rel: String,
    pub(super) full: String,
    pub(super) vid: String,
    pub(super) data: Arc<File>,
    pub(super) size: u64,
    pub(super) mtime: (i64, u32),
    /// What stood at the destination when the writer began (placed only over that).
    pub(super) expect: Option<Stat>,
    pub(super) ckpts: Vec<String>,
    /// Bytes this try wrote.
    pub written: u64,
    /// It resumed what an earlier try left.
    pub resumed: bool,
    /// Held until the file is placed or dropped.
    #[allow(dead_code)] // held for its Drop
    pub(super) claim: Option<Claim>,
}

impl Verified {
    /// The file's size.
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl PartialFile for Partial {
    type Verified = Verified;

    fn rel(&self) -> &str {
        &self.rel
    }

    fn resume_from(&self) -> u64 {
        self.resume
    }

    fn resumed(&self) -> bool {
        self.resumed
    }

    fn has_old_copy(&self) -> bool {
        self.old.is_some()
    }

    fn old_block_hashes(&mut self, block_log2: u8, start: u64, end: u64) -> Option<io::Result<Vec<u8>>> {
        self.old.as_ref().map(|old| block_hashes(old, block_log2, start, end))
    }

    fn write_at(&mut self, offset: u64, bytes: &[u8], buf: &mut Vec<u8>) -> Result<(), Fault> {
        Partial::write_at(self, offset, bytes, buf)
    }

    fn save(&mut self, buf: &mut Vec<u8>) {
        Partial::save(self, buf)
    }

    fn end(self, want: Option<[u8; 32]>, buf: &mut Vec<u8>) -> Result<Ended<Verified>, Fault> {
        Partial::end(self, want, buf)
    }
}

impl VerifiedFile for Verified {
    fn rel(&self) -> &str {
        &self.rel
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn written(&self) -> u64 {
        self.written
    }
}

/// BLAKE3 of each `2^block_log2`-byte block of `file` from `start` (block-aligned) up to `end`
/// or the end of the file.
fn block_hashes(file: &File, block_log2: u8, start: u64, end: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut block = vec![0u8; 1 << block_log2];
    let mut at = start;
    while at < end {
        let want = ((end - at) as usize).min(block.len());
        let mut n = 0;
        while n < want {
            match file.read_at(&mut block[n..want], at + n as u64)? {
                0 => break,
                k => n += k,
            }
        }
        if n == 0 {
            break;
        }
        out.extend_from_slice(blake3::hash(&block[..n]).as_bytes());
        if n < want {
            break;
        }
        at += n as u64;
    }
    Ok(out)
}
