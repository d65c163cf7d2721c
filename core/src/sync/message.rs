//! The messages carried in sealed frames, encoded with postcard.
//!
//! Strings and byte runs borrow from the receive buffer (postcard decodes `&str` and `&[u8]`
//! without copying), so a decoded message costs no RAM beyond the frame it came in.

use serde::{Deserialize, Serialize};

/// Bytes encoded as one length-prefixed run (postcard `bytes`), borrowed when decoded.
#[derive(Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Bytes<'a>(#[serde(borrow)] pub &'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl core::fmt::Debug for Bytes<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Bytes({} bytes)", self.0.len())
    }
}

/// Which way files move on a connection, as the client asks in [`Message::Open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Direction {
    /// The client sends files into the server's tree.
    Push,
    /// The server sends files from its tree to the client.
    Pull,
}

/// What kind of entry a [`FileMeta`] describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Kind {
    /// A regular file: data follows unless the receiver has it.
    File,
    /// A directory.
    Dir,
    /// A symbolic link, recreated as a link (never followed).
    Symlink,
}

/// A byte range of a large file, sent as an entry of its own so that the parts of one file
/// can cross several connections at once.
///
/// `offset` is a multiple of the largest block (1 MiB, [`MAX_BLOCK_LOG2`]) and so is the end,
/// unless it is the end of the file: every block size a receiver may pick tiles a part.
/// The receiver places the file once every part of it matched its own BLAKE3.
///
/// [`MAX_BLOCK_LOG2`]: crate::budget::MAX_BLOCK_LOG2
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Part {
    /// First byte of the part in the file.
    pub offset: u64,
    /// Bytes in the part (more than zero).
    pub len: u64,
}

impl Part {
    /// The part's end offset, when the part is well formed for a file of `size` bytes.
    pub fn checked_end(&self, size: u64) -> Option<u64> {
        let align = 1u64 << crate::budget::MAX_BLOCK_LOG2;
        let end = self.offset.checked_add(self.len)?;
        let aligned = self.offset.is_multiple_of(align) && (end == size || end.is_multiple_of(align));
        (self.len > 0 && end <= size && aligned).then_some(end)
    }
}

/// One entry a sender offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMeta<'a> {
    /// The sender's name for this entry on this connection.
    pub id: u32,
    /// Path relative to the synced root, `/`-separated; the receiver confines it.
    pub path: &'a str,
    /// What the entry is.
    pub kind: Kind,
    /// Bytes (regular files).
    pub size: u64,
    /// Modification time, seconds since the Unix epoch.
    pub mtime: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
    /// Link target (symlinks), as stored; empty otherwise.
    pub target: &'a str,
    /// BLAKE3 of the content, sent with `--checksum` so the receiver can compare contents.
    pub hash: Option<[u8; 32]>,
    /// Regular files: only this range of the file comes in this entry (its `Have` resumes
    /// within it, its data stays inside it, its `End` hashes just it); `None`: all of it.
    pub part: Option<Part>,
}

impl FileMeta<'_> {
    /// The byte range this entry carries (`offset..end`), when its `part` is well formed.
    pub fn range(&self) -> Option<(u64, u64)> {
        match self.part {
            None => Some((0, self.size)),
            Some(p) if self.kind == Kind::File => p.checked_end(self.size).map(|end| (p.offset, end)),
            Some(_) => None,
        }
    }
}

/// The receiver's answer to a [`FileMeta`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Have {
    /// The receiver already has this content: send nothing.
    Skip,
    /// Send the file from `resume_from` on, only blocks whose hash differs from the `blocks`
    /// hashes that follow in [`Message::Hashes`].
    Need {
        /// Bytes of the new content already durable at the receiver (a multiple of the block).
        resume_from: u64,
        /// Block size, `log2`.
        block_log2: u8,
        /// Hashes of the receiver's old copy that follow (block 0 first).
        blocks: u32,
    },
}

/// How a receiver finished with a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status {
    /// Written, verified (whole-file BLAKE3), durable and in place.
    Ok,
    /// Refused: the path is not allowed (outside the root, through a symlink, not UTF-8).
    Rejected,
    /// Writing failed at the receiver (disk full, permissions).
    Failed,
    /// The assembled file's BLAKE3 did not match: the sender should send it again whole.
    HashMismatch,
}

/// Why a connection was closed, as carried by [`Message::Close`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum CloseCode {
    /// The work is done.
    Done,
    /// The peer broke the protocol.
    ProtocolViolation,
    /// The request was refused (path outside the served root, not a directory, ...).
    Refused,
    /// The closing side failed on its own.
    Internal,
}

/// A message in a sealed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message<'a> {
    /// Client → server, first message: the tree and the direction.
    Open {
        /// Path of the tree under the served root.
        path: &'a str,
        /// Which way files move.
        direction: Direction,
        /// `--delete`: the receiver removes what the sender did not list.
        delete: bool,
        /// `--checksum`: compare content hashes instead of size and mtime.
        checksum: bool,
        /// `--dry-run`: the receiver changes nothing; it answers `Done(Ok)` right after `File`
        /// for each entry it would write, and `Have(Skip)` for files it has.
        dry_run: bool,
        /// Files the client accepts in flight when it receives (its table size, at least
        /// [`MAX_FILES_IN_FLIGHT`](crate::budget::MAX_FILES_IN_FLIGHT)); the server, if it sends,
        /// offers no more at once.
        max_files: u16,
        /// A pull over several connections: the client's random id for its run, the same on
        /// each. A server shares one listing among the connections of a session, so every
        /// entry goes over exactly one of them. All zero: this connection is on its own.
        session: [u8; 16],
        /// A pull in a session: the server sends each file larger than this as parts of
        /// about this size (see [`Part`]), which the session's connections share. 0: whole.
        part_size: u64,
    },
    /// Server → client: the tree is open.
    Opened {
        /// Files the server accepts in flight when it receives; the client, if it sends,
        /// offers no more at once.
        max_files: u16,
    },
    /// Sender → receiver: an entry.
    #[serde(borrow)]
    File(FileMeta<'a>),
    /// Receiver → sender: what is needed of file `id`.
    Have {
        /// The file.
        id: u32,
        /// What to send.
        have: Have,
    },
    /// Receiver → sender: hashes of blocks `first..` of the receiver's old copy.
    Hashes {
        /// The file.
        id: u32,
        /// Index of the first block these hashes cover.
        first: u32,
        /// 32-byte BLAKE3 hashes, back to back.
        hashes: Bytes<'a>,
    },
    /// Sender → receiver: one block of file `id`, maybe compressed.
    Data {
        /// The file.
        id: u32,
        /// Byte offset of the block in the file.
        offset: u64,
        /// Codec of `body` (the container's codec ids: 0 store, 1 lz4, 2 deflate, 3 zstd).
        codec: u8,
        /// Bytes the body decodes to.
        raw_len: u32,
        /// The encoded block.
        body: Bytes<'a>,
    },
    /// Sender → receiver: file `id` is complete; its whole-content BLAKE3.
    End {
        /// The file.
        id: u32,
        /// BLAKE3 of the whole new content (of a [`Part`]: of the part's bytes).
        hash: [u8; 32],
    },
    /// Receiver → sender: file `id` is finished.
    Done {
        /// The file.
        id: u32,
        /// How it went.
        status: Status,
    },
    /// Sender → receiver: no more entries on this connection.
    Finished,
    /// Keep-alive; answered with `Pong`.
    Ping,
    /// Answer to `Ping`.
    Pong,
    /// Closing, and why.
    Close(CloseCode),
    /// Receiver → sender, after `Finished`: with `delete`, this entry was removed (or, in a
    /// dry run, would be) because the sender did not list it.
    Deleted {
        /// Path of the entry under the tree.
        path: &'a str,
    },
}

/// Largest hash count one [`Message::Hashes`] carries in a frame body of `max_body` bytes.
pub const fn hashes_per_frame(max_body: usize) -> usize {
    (max_body - crate::budget::TAG_LEN - crate::budget::DATA_OVERHEAD) / 32
}
