//! [`Sender`] and [`Receiver`]: the file-transfer rules on top of a [`Connection`].
//!
//! Per file, on one connection:
//!
//! ```text
//! sender                                     receiver
//! File(meta) ──────────────────────────────►  (decides)
//!            ◄── Done(status)                  dirs, symlinks, refused paths, assemblies
//!            ◄── Have(Skip)                    unchanged: nothing more
//!            ◄── Have(Need{resume_from, block_log2, blocks}), Hashes × k
//! Data(offset ≥ resume_from, increasing) ×n ─►
//!            ◄── Done(failure)                 (maybe, early: stop sending the data)
//! End(BLAKE3 of the whole file) ────────────►  verifies, makes durable, renames
//!            ◄── Done(status)                  (unless it came early)
//!
//! A large file may come as several entries, each a `Part` of it, maybe on several
//! connections: the same exchange within the part's range; then an `Assemble` entry, answered
//! with `Done` alone.
//! Finished (no more files) ─────────────────►
//! ```
//!
//! Both sides keep a fixed table of `N` slots (a const parameter, [`MAX_FILES_IN_FLIGHT`] by
//! default: what every endpoint accepts; a host uses more and says so in `Open`/`Opened`, see
//! [`Sender::limit_in_flight`]) and check every message
//! against it: a peer that sends data for a file not in flight, data out of order or past the
//! announced size, too many hashes, or a second file with an id in use is a protocol
//! violation and ends the connection. The caller's own calls are checked the same way and
//! refused with [`SendError::Usage`].

use core::ops::{Deref, DerefMut};

use super::message::{Bytes, CloseCode, FileMeta, Have, Layout, Message, Status};
use super::{Connection, Millis, ProtoError, SendError};
use crate::budget::{
    MAX_BLOCK_LOG2, MAX_FILES_IN_FLIGHT, MAX_PATH_LEN, MIN_BLOCK_LOG2, frame_body_for_block,
};
use crate::crypto::CryptoProvider;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Offered,
    Hashing,
    Streaming,
    Ended,
    /// A failure `Done` crossed before the `End`: data still in flight is dropped, and the
    /// `End` closes the entry without another `Done`.
    Aborted,
}

#[derive(Debug, Clone, Copy)]
struct Slot {
    id: u32,
    state: State,
    /// End of the entry's range: the file's size, or its part's end.
    end: u64,
    /// The next byte expected: from the offer, the range's start; from `Have`, its resume
    /// offset; then past each block.
    next: u64,
    block_log2: u8,
    hashes_next: u32,
    hashes_total: u32,
    /// An [`Layout::Assemble`](super::message::Layout::Assemble) entry: answered with `Done`
    /// alone.
    assemble: bool,
}

const FREE: Slot = Slot {
    id: 0,
    state: State::Free,
    end: 0,
    next: 0,
    block_log2: 0,
    hashes_next: 0,
    hashes_total: 0,
    assemble: false,
};

/// What a message did to its file's slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Pass it on to the caller.
    Deliver,
    /// The entry was aborted: the message is dropped.
    Drop,
}

impl Slot {
    /// The slot of a file just offered, once its layout checked out.
    fn offered(meta: &FileMeta<'_>) -> Result<Self, &'static str> {
        let (start, end) = meta.range().ok_or(LAYOUT_RULE)?;
        let assemble = matches!(meta.layout, Layout::Assemble { .. });
        Ok(Slot { id: meta.id, state: State::Offered, end, next: start, assemble, ..FREE })
    }

    /// Accepts a `Have` for this file (`Skip` ends it); `max_body` is the receiver's frame
    /// limit.
    fn have(&mut self, have: Have, max_body: usize) -> Result<(), &'static str> {
        if self.assemble {
            return Err("Have for an Assemble entry (it is answered with Done)");
        }
        if self.state != State::Offered {
            return Err("Have for a file that is not waiting for one");
        }
        let Have::Need { resume_from, block_log2, blocks } = have else { return self.done(Status::Ok) };
        if !(MIN_BLOCK_LOG2..=MAX_BLOCK_LOG2).contains(&block_log2)
            || frame_body_for_block(block_log2) > max_body
        {
            return Err("block size outside 1 KiB..1 MiB or larger than the receiver's frames");
        }
        if resume_from > self.end
            || resume_from < self.next
            || (!resume_from.is_multiple_of(1 << block_log2) && resume_from != self.end)
        {
            return Err("resume offset outside the file (or part) or not on a block boundary");
        }
        self.block_log2 = block_log2;
        self.next = resume_from;
        self.hashes_next = 0;
        self.hashes_total = blocks;
        self.state = if blocks == 0 { State::Streaming } else { State::Hashing };
        Ok(())
    }

    fn hashes(&mut self, first: u32, bytes: usize) -> Result<(), &'static str> {
        let count = bytes / 32;
        if self.state != State::Hashing
            || first != self.hashes_next
            || !bytes.is_multiple_of(32)
            || count == 0
        {
            return Err("block hashes out of order, empty, or for a file not expecting them");
        }
        if count as u64 > u64::from(self.hashes_total - self.hashes_next) {
            return Err("more block hashes than announced");
        }
        self.hashes_next += count as u32;
        if self.hashes_next == self.hashes_total {
            self.state = State::Streaming;
        }
        Ok(())
    }

    fn data(&mut self, offset: u64, raw_len: u32, body_len: usize) -> Result<Step, &'static str> {
        if self.state == State::Aborted {
            // Data sent before the sender heard of the early `Done`.
            return Ok(Step::Drop);
        }
        let block = 1u64 << self.block_log2;
        let end = offset.checked_add(u64::from(raw_len));
        let in_order = self.state == State::Streaming && offset >= self.next && offset.is_multiple_of(block);
        if !in_order || raw_len == 0 || u64::from(raw_len) > block || end.is_none_or(|e| e > self.end) {
            return Err("data out of order, not block-aligned, or past the announced size (or part)");
        }
        if body_len > raw_len as usize {
            return Err("a data body larger than the block it encodes");
        }
        self.next = offset + u64::from(raw_len);
        Ok(Step::Deliver)
    }

    fn end(&mut self) -> Result<Step, &'static str> {
        match self.state {
            State::Streaming => {
                self.state = State::Ended;
                Ok(Step::Deliver)
            }
            State::Aborted => {
                *self = FREE;
                Ok(Step::Drop)
            }
            _ => Err("End for a file that is not streaming"),
        }
    }

    /// `Done(status)`: right after the offer, after the `End`, or (a failure only) early,
    /// while the data streams.
    fn done(&mut self, status: Status) -> Result<(), &'static str> {
        match self.state {
            State::Offered | State::Ended => *self = FREE,
            State::Streaming if status != Status::Ok => self.state = State::Aborted,
            _ => return Err("Done for a file before its End (early, only a failure after every hash)"),
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Table<const N: usize>([Slot; N]);

impl<const N: usize> Table<N> {
    fn find(&mut self, id: u32) -> Result<&mut Slot, &'static str> {
        self.0
            .iter_mut()
            .find(|s| s.state != State::Free && s.id == id)
            .ok_or("message for a file not in flight")
    }

    /// Takes a slot for `meta`, checking its part.
    fn insert(&mut self, meta: &FileMeta<'_>) -> Result<(), &'static str> {
        let at = self.free_slot_for(meta.id)?;
        self.0[at] = Slot::offered(meta)?;
        Ok(())
    }

    /// The slot a new file `id` would take (nothing changes yet).
    fn free_slot_for(&self, id: u32) -> Result<usize, &'static str> {
        if self.0.iter().any(|s| s.state != State::Free && s.id == id) {
            return Err("a file id already in flight");
        }
        self.0.iter().position(|s| s.state == State::Free).ok_or("more files in flight than allowed")
    }

    /// Moves file `id`'s slot with `step`, but only once `send` has queued the message that
    /// announces the move: a refused or blocked send leaves the slot as it was, so the caller
    /// can simply call again.
    fn transition<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>>(
        &mut self,
        conn: &mut Connection<P, B>,
        id: u32,
        step: impl FnOnce(&mut Slot) -> Result<(), &'static str>,
        send: impl FnOnce(&mut Connection<P, B>) -> Result<(), SendError>,
    ) -> Result<(), SendError> {
        let slot = self.find(id).map_err(SendError::Usage)?;
        let mut next = *slot;
        step(&mut next).map_err(SendError::Usage)?;
        send(conn)?;
        *slot = next;
        Ok(())
    }

    fn in_flight(&self) -> usize {
        self.0.iter().filter(|s| s.state != State::Free).count()
    }
}

/// What a [`Sender`] learned from the receiver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SenderEvent<'a> {
    /// What the receiver needs of file `id`.
    Have {
        /// The file.
        id: u32,
        /// Skip, or which range and which old hashes follow.
        have: Have,
    },
    /// Hashes of the receiver's old blocks `first..` of file `id` (32 bytes each).
    Hashes {
        /// The file.
        id: u32,
        /// First block index.
        first: u32,
        /// The hashes, back to back.
        hashes: &'a [u8],
        /// All announced hashes have arrived: data may be sent now.
        complete: bool,
    },
    /// The receiver finished file `id`: its slot is free again, unless the `Done` came early
    /// (a failure while the data streams), when the file's `End` must still be sent (any hash)
    /// and no more of its data.
    Done {
        /// The file.
        id: u32,
        /// How it went.
        status: Status,
    },
    /// The receiver closed the connection.
    Closed(CloseCode),
    /// After `Finished`: the receiver removed (in a dry run: would remove) this entry, which
    /// the sender did not list.
    Deleted(&'a str),
}

/// What a [`Receiver`] got from the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiverEvent<'a> {
    /// A new entry: answer with [`Receiver::have`] (regular files) or [`Receiver::done`].
    File(FileMeta<'a>),
    /// A block of file `id`.
    Data {
        /// The file.
        id: u32,
        /// Offset of the block.
        offset: u64,
        /// Codec id of `body`.
        codec: u8,
        /// Bytes `body` decodes to.
        raw_len: u32,
        /// The encoded block.
        body: &'a [u8],
    },
    /// File `id` is complete; verify against `hash`, then answer with [`Receiver::done`].
    End {
        /// The file.
        id: u32,
        /// BLAKE3 of the whole content.
        hash: [u8; 32],
    },
    /// The sender has no more entries.
    Finished,
    /// The sender closed the connection.
    Closed(CloseCode),
}

const LAYOUT_RULE: &str = "a part or assembly that is not of a regular file larger than one part, a part \
     size outside 1 MiB..1 TiB, a part past the file, or an assembly without the file's hash";

fn violation(rule: &'static str) -> ProtoError {
    ProtoError::Unexpected(rule)
}

/// The sending end of a file transfer. Derefs to its [`Connection`] for the transport calls
/// (`handle_input`, `poll_transmit`, timers).
///
/// `N` is the size of its table of files in flight; it offers at most `N` files at once, and
/// at most [`MAX_FILES_IN_FLIGHT`] unless the receiver announced more ([`Self::limit_in_flight`]).
#[derive(Debug)]
pub struct Sender<P: CryptoProvider, B, const N: usize = MAX_FILES_IN_FLIGHT> {
    conn: Connection<P, B>,
    files: Table<N>,
    /// Files that may be in flight at once: `N`, capped by what the receiver accepts.
    window: usize,
    /// `Finished` was sent: no more offers; `Deleted` may arrive.
    finished: bool,
    failed: Option<ProtoError>,
}

impl<P: CryptoProvider, B, const N: usize> Deref for Sender<P, B, N> {
    type Target = Connection<P, B>;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<P: CryptoProvider, B, const N: usize> DerefMut for Sender<P, B, N> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>> Sender<P, B> {
    /// Sends files over `conn` (open, or still in its handshake), at most
    /// [`MAX_FILES_IN_FLIGHT`] at once. A larger table: [`Self::with_table`].
    pub fn new(conn: Connection<P, B>) -> Self {
        Self::with_table(conn)
    }
}

impl<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>, const N: usize> Sender<P, B, N> {
    /// Sends files over `conn` with a table of `N` files in flight (the type says `N`), at most
    /// [`MAX_FILES_IN_FLIGHT`] at once until [`Self::limit_in_flight`] says the receiver takes
    /// more.
    pub fn with_table(conn: Connection<P, B>) -> Self {
        const { assert!(N > 0, "a sender needs at least one slot") };
        Self {
            conn,
            files: Table([FREE; N]),
            window: N.min(MAX_FILES_IN_FLIGHT),
            finished: false,
            failed: None,
        }
    }

    /// The receiver announced (`max_files` of its `Open` or `Opened`) that it accepts
    /// `receiver_max` files in flight: offer up to that many, as far as this table holds. A
    /// value below [`MAX_FILES_IN_FLIGHT`], which every receiver accepts, reads as that.
    pub fn limit_in_flight(&mut self, receiver_max: u16) {
        self.window = N.min(usize::from(receiver_max).max(MAX_FILES_IN_FLIGHT));
    }

    /// Files that may be in flight at once on this connection.
    pub fn window(&self) -> usize {
        self.window
    }

    /// Files offered and not yet done.
    pub fn in_flight(&self) -> usize {
        self.files.in_flight()
    }

    /// Another file may be offered now.
    pub fn can_offer(&self) -> bool {
        self.in_flight() < self.window
    }

    /// Offers an entry. Its `id` must not be in flight.
    pub fn offer(&mut self, now: Millis, meta: &FileMeta<'_>) -> Result<(), SendError> {
        if meta.path.len() > MAX_PATH_LEN || meta.target.len() > MAX_PATH_LEN {
            return Err(SendError::Usage("path longer than MAX_PATH_LEN"));
        }
        if !self.can_offer() {
            return Err(SendError::Usage("more files in flight than the receiver accepts"));
        }
        let slot = Slot::offered(meta).map_err(SendError::Usage)?;
        let at = self.files.free_slot_for(meta.id).map_err(SendError::Usage)?;
        self.conn.send(now, &Message::File(*meta))?;
        self.files.0[at] = slot;
        Ok(())
    }

    /// Sends one block of file `id`: `offset` block-aligned, after the previous one, within
    /// the file; `body` encodes `raw_len` bytes with `codec`.
    pub fn send_data(
        &mut self,
        now: Millis,
        id: u32,
        offset: u64,
        codec: u8,
        raw_len: u32,
        body: &[u8],
    ) -> Result<(), SendError> {
        self.files.transition(
            &mut self.conn,
            id,
            |slot| match slot.data(offset, raw_len, body.len())? {
                Step::Deliver => Ok(()),
                Step::Drop => Err("data for a file the receiver ended early (send its End)"),
            },
            |conn| conn.send(now, &Message::Data { id, offset, codec, raw_len, body: Bytes(body) }),
        )
    }

    /// Ends file `id` with the BLAKE3 of its whole content (of a part: its subtree's chaining
    /// value). After an early `Done`, this closes the entry (any hash will do).
    pub fn end_file(&mut self, now: Millis, id: u32, hash: [u8; 32]) -> Result<(), SendError> {
        self.files.transition(
            &mut self.conn,
            id,
            |slot| slot.end().map(|_| ()),
            |conn| conn.send(now, &Message::End { id, hash }),
        )
    }

    /// Tells the receiver no more entries follow.
    pub fn finish(&mut self, now: Millis) -> Result<(), SendError> {
        if self.finished || self.in_flight() > 0 {
            return Err(SendError::Usage("Finished once, after every offered entry is done"));
        }
        self.conn.send(now, &Message::Finished)?;
        self.finished = true;
        Ok(())
    }

    /// The next event from the receiver, checked against the transfer rules.
    #[must_use]
    pub fn poll_event(&mut self, now: Millis) -> Option<Result<SenderEvent<'_>, ProtoError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let max_body = self.conn.peer_max_body();
        let msg = match self.conn.poll_message(now)? {
            Ok(msg) => msg,
            Err(e) => return Some(Err(e)),
        };
        let checked = match msg {
            Message::Have { id, have } => self
                .files
                .find(id)
                .and_then(|slot| slot.have(have, max_body))
                .map(|()| SenderEvent::Have { id, have }),
            Message::Hashes { id, first, hashes } => self.files.find(id).and_then(|slot| {
                slot.hashes(first, hashes.0.len())?;
                Ok(SenderEvent::Hashes {
                    id,
                    first,
                    hashes: hashes.0,
                    complete: slot.state == State::Streaming,
                })
            }),
            Message::Done { id, status } => self
                .files
                .find(id)
                .and_then(|slot| slot.done(status))
                .map(|()| SenderEvent::Done { id, status }),
            Message::Close(code) => Ok(SenderEvent::Closed(code)),
            Message::Deleted { path } if self.finished && path.len() <= MAX_PATH_LEN => {
                Ok(SenderEvent::Deleted(path))
            }
            Message::Deleted { .. } => Err("Deleted before Finished, or a path longer than MAX_PATH_LEN"),
            _ => Err("a message only a receiver may get"),
        };
        Some(checked.map_err(|rule| *self.failed.insert(violation(rule))))
    }
}

/// The receiving end of a file transfer. Derefs to its [`Connection`].
#[derive(Debug)]
pub struct Receiver<P: CryptoProvider, B, const N: usize = MAX_FILES_IN_FLIGHT> {
    conn: Connection<P, B>,
    files: Table<N>,
    /// `Finished` arrived: `Deleted` may be sent.
    finished: bool,
    failed: Option<ProtoError>,
}

impl<P: CryptoProvider, B, const N: usize> Deref for Receiver<P, B, N> {
    type Target = Connection<P, B>;
    fn deref(&self) -> &Self::Target {
        &self.conn
    }
}

impl<P: CryptoProvider, B, const N: usize> DerefMut for Receiver<P, B, N> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.conn
    }
}

impl<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>> Receiver<P, B> {
    /// Receives files over `conn`, up to [`MAX_FILES_IN_FLIGHT`] in flight. A larger table:
    /// [`Self::with_table`].
    pub fn new(conn: Connection<P, B>) -> Self {
        Self::with_table(conn)
    }
}

impl<P: CryptoProvider, B: AsRef<[u8]> + AsMut<[u8]>, const N: usize> Receiver<P, B, N> {
    /// Receives files over `conn`, up to `N` in flight (the type says `N`): announce `N` in
    /// `Open`/`Opened`. `N` must be at least [`MAX_FILES_IN_FLIGHT`], which every sender may use.
    pub fn with_table(conn: Connection<P, B>) -> Self {
        const { assert!(N >= MAX_FILES_IN_FLIGHT, "every receiver accepts MAX_FILES_IN_FLIGHT files") };
        Self { conn, files: Table([FREE; N]), finished: false, failed: None }
    }

    /// Files announced and not yet done.
    pub fn in_flight(&self) -> usize {
        self.files.in_flight()
    }

    /// After [`ReceiverEvent::Finished`], with `delete`: reports an entry removed (or, in a
    /// dry run, one that would be) because the sender did not list it.
    pub fn deleted(&mut self, now: Millis, path: &str) -> Result<(), SendError> {
        if !self.finished {
            return Err(SendError::Usage("Deleted before the sender's Finished"));
        }
        if path.len() > MAX_PATH_LEN {
            return Err(SendError::Usage("path longer than MAX_PATH_LEN"));
        }
        self.conn.send(now, &Message::Deleted { path })
    }

    /// Answers a [`ReceiverEvent::File`] for a regular file. With `Need`, send the announced
    /// number of hashes with [`hashes`](Self::hashes) next.
    pub fn have(&mut self, now: Millis, id: u32, have: Have) -> Result<(), SendError> {
        let max_body = self.conn.local_max_body();
        self.files.transition(
            &mut self.conn,
            id,
            |slot| slot.have(have, max_body),
            |conn| conn.send(now, &Message::Have { id, have }),
        )
    }

    /// Sends hashes of the old copy's blocks `first..` (32 bytes each) of file `id`.
    pub fn hashes(&mut self, now: Millis, id: u32, first: u32, hashes: &[u8]) -> Result<(), SendError> {
        self.files.transition(
            &mut self.conn,
            id,
            |slot| slot.hashes(first, hashes.len()),
            |conn| conn.send(now, &Message::Hashes { id, first, hashes: Bytes(hashes) }),
        )
    }

    /// Finishes file `id`: right after its `File` (directories, symlinks, refusals,
    /// assemblies) or after its `End`; or early with a failure, once every announced hash is
    /// sent, when the rest of its data cannot be used (the data still arriving is then
    /// dropped here, and its `End` closes the entry without another `Done`).
    pub fn done(&mut self, now: Millis, id: u32, status: Status) -> Result<(), SendError> {
        self.files.transition(
            &mut self.conn,
            id,
            |slot| slot.done(status),
            |conn| conn.send(now, &Message::Done { id, status }),
        )
    }

    /// The next event from the sender, checked against the transfer rules.
    #[must_use]
    pub fn poll_event(&mut self, now: Millis) -> Option<Result<ReceiverEvent<'_>, ProtoError>> {
        if let Some(e) = self.failed {
            return Some(Err(e));
        }
        let msg = match self.conn.poll_message(now)? {
            Ok(msg) => msg,
            Err(e) => return Some(Err(e)),
        };
        let checked = match msg {
            Message::File(meta) if meta.path.len() > MAX_PATH_LEN || meta.target.len() > MAX_PATH_LEN => {
                Err("a path longer than MAX_PATH_LEN")
            }
            Message::File(_) if self.finished => Err("File after Finished"),
            Message::File(meta) => self.files.insert(&meta).map(|()| ReceiverEvent::File(meta)),
            Message::Data { id, offset, codec, raw_len, body } => {
                match self.files.find(id).and_then(|slot| slot.data(offset, raw_len, body.0.len())) {
                    Ok(Step::Deliver) => Ok(ReceiverEvent::Data { id, offset, codec, raw_len, body: body.0 }),
                    Ok(Step::Drop) => return None,
                    Err(rule) => Err(rule),
                }
            }
            Message::End { id, hash } => match self.files.find(id).and_then(Slot::end) {
                Ok(Step::Deliver) => Ok(ReceiverEvent::End { id, hash }),
                Ok(Step::Drop) => return None,
                Err(rule) => Err(rule),
            },
            Message::Finished if self.finished || self.files.in_flight() > 0 => {
                Err("Finished twice, or while entries are in flight")
            }
            Message::Finished => {
                self.finished = true;
                Ok(ReceiverEvent::Finished)
            }
            Message::Close(code) => Ok(ReceiverEvent::Closed(code)),
            _ => Err("a message only a sender may get"),
        };
        Some(checked.map_err(|rule| *self.failed.insert(violation(rule))))
    }
}
