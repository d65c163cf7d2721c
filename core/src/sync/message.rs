//! The messages carried in sealed frames, encoded with postcard.
//!
//! Strings and byte runs borrow from the receive buffer (postcard decodes `&str` and `&[u8]`
//! without copying), so a decoded message costs no RAM beyond the frame it came in.

use serde::{Deserialize, Serialize};

use super::filter::FilterRules;

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

/// How much of a regular file one entry carries.
///
/// A large file may cross several connections at once as `Part`s: the file cut into parts of
/// `2^log2` bytes (the last may be shorter), each an entry of its own. Each part is one
/// subtree of the file's BLAKE3 tree (a power of two of 1 KiB chunks, aligned to its size),
/// so its `End` carries that subtree's chaining value, and the receiver can combine the
/// chaining values of the parts it verified into the hash of the whole file. A final
/// `Assemble` entry, sent once every part is done, carries that whole-file hash in
/// [`FileMeta::hash`]: the receiver places the file only if its parts combine to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Layout {
    /// The whole file comes in this entry (every kind of entry but a split file's).
    Whole,
    /// Part `index` of a file cut into parts of `2^log2` bytes.
    Part {
        /// Part size, `log2`: [`MIN_PART_LOG2`]..=[`MAX_PART_LOG2`], and the file is larger.
        log2: u8,
        /// Which part: its bytes start at `index << log2`.
        index: u32,
    },
    /// Place the file assembled from its parts of `2^log2` bytes (no data follows; the
    /// receiver answers `Done`).
    Assemble {
        /// Part size of the parts, `log2`.
        log2: u8,
    },
}

/// Smallest part: 1 MiB, the largest block, so every block size a receiver may pick tiles a
/// part.
pub const MIN_PART_LOG2: u8 = crate::budget::MAX_BLOCK_LOG2;

/// Largest part: 1 TiB.
pub const MAX_PART_LOG2: u8 = 40;

impl Layout {
    /// The byte range of part `index` of `2^log2`-byte parts of a `size`-byte file, when the
    /// file is larger than one part, the part size is allowed and the part lies in the file.
    pub fn part_range(size: u64, log2: u8, index: u32) -> Option<(u64, u64)> {
        if !(MIN_PART_LOG2..=MAX_PART_LOG2).contains(&log2) || size <= 1 << log2 {
            return None;
        }
        let offset = u64::from(index).checked_mul(1 << log2)?;
        (offset < size).then(|| (offset, size.min(offset + (1 << log2))))
    }

    /// How many parts of `2^log2` bytes a `size`-byte file has.
    pub fn parts(size: u64, log2: u8) -> u64 {
        size.div_ceil(1 << log2.min(63))
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
    /// BLAKE3 of the whole content: sent with `--checksum` so the receiver can compare
    /// contents, and always with [`Layout::Assemble`].
    pub hash: Option<[u8; 32]>,
    /// The sender's identity of this version of the content (regular files): it changes
    /// whenever the file is written. The receiver keys what it keeps of an unfinished file
    /// (its partial file and checkpoints) by path, size, mtime and this, so two versions never
    /// share one; all zero when the sender has none to give.
    pub version: [u8; 16],
    /// Regular files: all of the file, one part of it, or the assembly of its parts.
    pub layout: Layout,
}

impl FileMeta<'_> {
    /// The byte range this entry carries (`offset..end`), when its layout is well formed: the
    /// whole file, a part's range, or nothing (`size..size`) for an assembly, which must carry
    /// the whole file's hash.
    pub fn range(&self) -> Option<(u64, u64)> {
        match self.layout {
            Layout::Whole => Some((0, self.size)),
            _ if self.kind != Kind::File => None,
            Layout::Part { log2, index } => Layout::part_range(self.size, log2, index),
            Layout::Assemble { log2 } => (Layout::part_range(self.size, log2, 1).is_some()
                && self.hash.is_some())
            .then_some((self.size, self.size)),
        }
    }

    /// A part of a split file.
    pub fn is_part(&self) -> bool {
        matches!(self.layout, Layout::Part { .. })
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
///
/// Any status but `Ok` may also come early, while the file's data is still streaming (after
/// its `Have` and every announced hash): the receiver cannot use the rest. The sender then
/// stops sending the file's data and sends its `End`, which closes the entry on both sides
/// without another `Done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Status {
    /// Written, verified (whole-file BLAKE3), durable and in place (a part: verified and
    /// durable, waiting for its assembly).
    Ok,
    /// Refused: the path is not allowed (outside the root, through a symlink, not UTF-8).
    Rejected,
    /// Writing failed at the receiver for another reason than those below.
    Failed,
    /// The assembled file's BLAKE3 did not match: the sender should send it again whole.
    HashMismatch,
    /// The receiver's filesystem (or the user's quota there) is full.
    NoSpace,
    /// The receiver's filesystem is read-only.
    ReadOnly,
    /// The receiver may not write there (permissions).
    Denied,
    /// Another writer is writing this very file at the receiver now: try again later.
    Busy,
    /// Another writer placed a different version of the file meanwhile; this one was not
    /// placed over it.
    Superseded,
}

impl Status {
    /// The receiver cannot write anything more into the tree (a full or read-only
    /// filesystem): a sender stops offering files.
    pub fn stops_the_tree(self) -> bool {
        matches!(self, Self::NoSpace | Self::ReadOnly)
    }
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
        /// `--delete`: after `Finished`, the receiver removes what the sender did not list
        /// (only a connection that lists the whole tree asks for it).
        delete: bool,
        /// `--delete` too: an entry of another kind in the way of one the sender offers (a
        /// file where a directory comes) is removed first, on every connection of the run.
        replace: bool,
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
        /// this size (a power of two, see [`Layout::Part`]), which the session's connections
        /// share. 0: whole.
        part_size: u64,
        /// `--delete-excluded`: with `delete`, the receiver also removes the entries that
        /// `filters` (or its `.keepsyncignore` files) exclude, which it otherwise keeps.
        delete_excluded: bool,
        /// `--include` / `--exclude` rules, in order: the sender lists only the entries they
        /// let through, and the receiver's `--delete` keeps what they exclude (see
        /// [`FilterRules`]). Empty: no rules.
        #[serde(borrow)]
        filters: FilterRules<'a>,
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
        /// BLAKE3 of the whole new content; of a [`Layout::Part`], the chaining value of its
        /// subtree of the file's BLAKE3 tree.
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
