//! Every size limit of the core, as named constants.
//!
//! Nothing in `keepsync-core` sizes a buffer from input: parsers compare a length field against
//! one of these limits *before* they read or buffer the bytes it announces. The RAM each state
//! object needs follows from these numbers; the table in the crate docs and in `docs/FORMAT.md`
//! lists it and a test keeps the table honest.

/// Length of the fixed container header, in bytes (see `docs/FORMAT.md`).
pub const HEADER_LEN: usize = 112;

/// Length of the clear-text header in front of each sealed chunk.
pub const RECORD_HEADER_LEN: usize = 12;

/// Length of an AES-256-GCM authentication tag.
pub const TAG_LEN: usize = 16;

/// Length of an AES-256-GCM nonce.
pub const NONCE_LEN: usize = 12;

/// Length of a master key, a per-file key and a PSK.
pub const KEY_LEN: usize = 32;

/// Length of the per-file random salt stored in the header.
pub const FILE_SALT_LEN: usize = 32;

/// Length of the passphrase KDF (Argon2id) salt stored in the header.
pub const KDF_SALT_LEN: usize = 16;

/// Smallest chunk: 4 KiB (2^12). Small devices use this one.
pub const MIN_CHUNK_LOG2: u8 = 12;

/// Largest chunk: 4 MiB (2^22). Bounds every buffer a reader must lend.
pub const MAX_CHUNK_LOG2: u8 = 22;

/// Default chunk: 64 KiB (2^16), a good trade between seek granularity and per-chunk overhead.
pub const DEFAULT_CHUNK_LOG2: u8 = 16;

/// Smallest chunk size in bytes.
pub const MIN_CHUNK_SIZE: usize = 1 << MIN_CHUNK_LOG2;

/// Largest chunk size in bytes.
pub const MAX_CHUNK_SIZE: usize = 1 << MAX_CHUNK_LOG2;

/// Default chunk size in bytes.
pub const DEFAULT_CHUNK_SIZE: usize = 1 << DEFAULT_CHUNK_LOG2;

/// Largest Argon2id memory cost a reader accepts from a header, in KiB (1 GiB).
///
/// The header is read before it is authenticated, so its KDF parameters are attacker-chosen:
/// this bound keeps a hostile file from making the reader allocate without limit.
pub const MAX_KDF_MEMORY_KIB: u32 = 1 << 20;

/// Largest Argon2id pass count a reader accepts from a header.
pub const MAX_KDF_PASSES: u32 = 64;

/// Largest Argon2id cost (memory in KiB times passes) a reader runs for a header: 64 MiB x 64
/// passes, the most any KeepSync writer records. Each bound above alone would still let a
/// hostile header ask for 1 GiB x 64 passes (minutes of work) before its MAC can be checked.
pub const MAX_KDF_COST: u64 = 64 * 1024 * 64;

/// Largest Argon2id lane count a reader accepts from a header.
pub const MAX_KDF_LANES: u32 = 16;

/// Largest encoded checkpoint record, CRC included (postcard `MaxSize` + 4).
pub const CHECKPOINT_MAX_LEN: usize = crate::checkpoint::Checkpoint::MAX_ENCODED_LEN;

/// Largest record (header, body, tag) a chunk of `chunk_size` bytes can produce.
///
/// Bodies are never larger than their plaintext: a chunk that does not compress is stored.
pub const fn max_record_len(chunk_size: usize) -> usize {
    RECORD_HEADER_LEN + chunk_size + TAG_LEN
}

/// Room a codec may need to compress `chunk_size` bytes (lz4's worst case: +10% + 20 bytes).
///
/// Only the packer needs it: a result that is not smaller than its input is thrown away and
/// the chunk is stored, so nothing this large ever reaches the wire.
pub const fn compress_bound(chunk_size: usize) -> usize {
    chunk_size + chunk_size / 10 + 20
}

/// Bytes of workspace a [`Packer`](crate::stream::Packer) needs for `chunk_size`: one
/// plaintext chunk and one record with room for the codec's worst case.
pub const fn packer_workspace_len(chunk_size: usize) -> usize {
    chunk_size + RECORD_HEADER_LEN + compress_bound(chunk_size) + TAG_LEN
}

/// Bytes of workspace an [`Unpacker`](crate::stream::Unpacker) needs for `chunk_size`: one
/// plaintext chunk and one record.
pub const fn unpacker_workspace_len(chunk_size: usize) -> usize {
    chunk_size + max_record_len(chunk_size)
}

/// Chunk size in bytes for a `log2` value, or `None` when outside
/// [`MIN_CHUNK_LOG2`]..=[`MAX_CHUNK_LOG2`].
pub const fn chunk_size_from_log2(log2: u8) -> Option<usize> {
    if log2 < MIN_CHUNK_LOG2 || log2 > MAX_CHUNK_LOG2 { None } else { Some(1usize << log2) }
}

/// `log2` of a chunk size, or `None` when it is not a power of two within the allowed range.
pub const fn chunk_log2_from_size(size: usize) -> Option<u8> {
    if !size.is_power_of_two() {
        return None;
    }
    let log2 = size.trailing_zeros();
    if log2 < MIN_CHUNK_LOG2 as u32 || log2 > MAX_CHUNK_LOG2 as u32 { None } else { Some(log2 as u8) }
}

/// Length of the frame header of the sync protocol (a little-endian body length).
pub const FRAME_HEADER_LEN: usize = 4;

/// Smallest frame body a peer may announce as its limit: room for a 1 KiB block and its
/// message fields. Hellos announcing less are refused.
pub const MIN_FRAME_BODY: usize = (1 << MIN_BLOCK_LOG2) + DATA_OVERHEAD + TAG_LEN;

/// Largest frame body anyone accepts (a 1 MiB block and its message fields). A receiver's own
/// limit is the length of the buffer it lends, at most this.
pub const MAX_FRAME_BODY: usize = (1 << MAX_BLOCK_LOG2) + DATA_OVERHEAD + TAG_LEN;

/// Bytes a `Data` message adds around its block (enum tag, varints for id, offset, lengths,
/// codec) with room to spare; the sync encoder checks it never exceeds this.
pub const DATA_OVERHEAD: usize = 64;

/// Smallest delta block: 1 KiB.
pub const MIN_BLOCK_LOG2: u8 = 10;

/// Largest delta block: 1 MiB.
pub const MAX_BLOCK_LOG2: u8 = 20;

/// Frame body that carries a block of `2^block_log2` bytes: receive buffers of this many
/// bytes (plus [`FRAME_HEADER_LEN`]) let a peer use that block size.
pub const fn frame_body_for_block(block_log2: u8) -> usize {
    (1 << block_log2) + DATA_OVERHEAD + TAG_LEN
}

/// Files a sync sender may have offered and not yet seen finished, per connection. Both state
/// machines keep one fixed slot per file (32 bytes each). 32 keeps a link busy
/// through a batch of small files whose commit (one flush for all) is pending.
pub const MAX_FILES_IN_FLIGHT: usize = 32;

/// Longest relative path (bytes of UTF-8) a sync message may carry.
pub const MAX_PATH_LEN: usize = 4096;

/// Most filter rules (`--include` / `--exclude`) one `Open` carries.
pub const MAX_FILTER_RULES: usize = 256;

/// Longest filter rule list one `Open` carries, encoded: each rule is a kind byte, its
/// pattern's varint length and the pattern's UTF-8 (see `sync::filter`).
pub const MAX_FILTER_LEN: usize = 8192;

/// Longest encoded `Open`: its index, the longest path (with a 2-byte varint length), the
/// direction, five flags, `max_files` (3), `session` (16), `part_size` (10) and the longest
/// filter rule list (with a 2-byte varint length). A server that reads `Open` into a small
/// buffer before the client proved its key sizes it with this.
pub const MAX_OPEN_LEN: usize = 1 + (2 + MAX_PATH_LEN) + 1 + 5 + 3 + 16 + 10 + (2 + MAX_FILTER_LEN);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_round_trip_and_reject_outsiders() {
        for log2 in MIN_CHUNK_LOG2..=MAX_CHUNK_LOG2 {
            let size = chunk_size_from_log2(log2).unwrap();
            assert_eq!(chunk_log2_from_size(size), Some(log2));
        }
        assert_eq!(chunk_size_from_log2(MIN_CHUNK_LOG2 - 1), None);
        assert_eq!(chunk_size_from_log2(MAX_CHUNK_LOG2 + 1), None);
        assert_eq!(chunk_log2_from_size(3 * 4096), None);
        assert_eq!(chunk_log2_from_size(2048), None);
        assert_eq!(chunk_log2_from_size(8 << 20), None);
    }
}
