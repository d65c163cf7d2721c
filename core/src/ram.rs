//! The RAM table: what each state object of the core costs, as checked numbers.
//!
//! Each row carries the size measured on the current target (`core::mem::size_of`, evaluated
//! at compile time) and the documented sizes for x86_64 and for 32-bit Cortex-M
//! (`thumbv7em-none-eabihf`). A unit test compares the x86_64 column (and `RAM.md`, which the
//! crate docs and `docs/FORMAT.md` show) with the measurement; on a 32-bit target a `const`
//! assertion fails the *build* if the 32-bit column drifts.

use core::mem::size_of;

use crate::budget::{self, packer_workspace_len, unpacker_workspace_len};
use crate::checkpoint::{Checkpoint, SourceHasher};
use crate::compress::{CoreDecoder, Lz4Encoder};
use crate::crypto::{FileKeys, RustCrypto, RustCryptoAesGcm};
use crate::stream::{Packer, Unpacker};
use crate::sync::{Receiver, Sender};

/// One row of the RAM table.
#[derive(Debug, Clone, Copy)]
pub struct Row {
    /// What the row measures.
    pub item: &'static str,
    /// Bytes on the target this crate was compiled for.
    pub measured: usize,
    /// Documented bytes on x86_64.
    pub x86_64: usize,
    /// Documented bytes on 32-bit ARM (thumbv7em).
    pub thumbv7em: usize,
}

macro_rules! table {
    ($($item:literal => $size:expr, $x86:literal, $arm:literal;)*) => {
        /// The RAM table, in the order `RAM.md` lists it.
        pub const TABLE: &[Row] = &[$(Row { item: $item, measured: $size, x86_64: $x86, thumbv7em: $arm }),*];

        // On 32-bit targets a drifted row is a compile error that prints both numbers.
        #[cfg(target_pointer_width = "32")]
        const _: () = { $( let _: [(); $arm] = [(); $size]; )* };
    };
}

table! {
    "Packer<RustCryptoAesGcm, Lz4Encoder>" => size_of::<Packer<'static, RustCryptoAesGcm, Lz4Encoder>>(), 19328, 18944;
    "Unpacker<RustCryptoAesGcm, CoreDecoder>" => size_of::<Unpacker<'static, RustCryptoAesGcm, CoreDecoder>>(), 11264, 10864;
    "Lz4Encoder (inside Packer)" => size_of::<Lz4Encoder>(), 16448, 16448;
    "CoreDecoder (inside Unpacker)" => size_of::<CoreDecoder>(), 10504, 10500;
    "RustCryptoAesGcm (keyed cipher)" => size_of::<RustCryptoAesGcm>(), 624, 272;
    "SourceHasher (checkpoint tracking)" => size_of::<SourceHasher>(), 1920, 1920;
    "FileKeys" => size_of::<FileKeys>(), 64, 64;
    "Sender<RustCrypto, &mut [u8]> (sync, buffers lent)" => size_of::<Sender<RustCrypto, &'static mut [u8]>>(), 2768, 1984;
    "Receiver<RustCrypto, &mut [u8]> (sync, buffers lent)" => size_of::<Receiver<RustCrypto, &'static mut [u8]>>(), 2752, 1968;
    "Sync buffers (rx + tx) for 4 KiB blocks" => 2 * (budget::FRAME_HEADER_LEN + budget::frame_body_for_block(12)), 8360, 8360;
    "Checkpoint (decoded)" => size_of::<Checkpoint>(), 88, 88;
    "Checkpoint record, encoded max" => budget::CHECKPOINT_MAX_LEN, 103, 103;
    "Packer workspace, 4 KiB chunks" => packer_workspace_len(4 << 10), 8649, 8649;
    "Unpacker workspace, 4 KiB chunks" => unpacker_workspace_len(4 << 10), 8220, 8220;
    "Packer workspace, 64 KiB chunks" => packer_workspace_len(64 << 10), 137673, 137673;
    "Unpacker workspace, 64 KiB chunks" => unpacker_workspace_len(64 << 10), 131100, 131100;
}

#[cfg(test)]
mod tests {
    use super::TABLE;

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x86_64_column_matches_the_code() {
        for row in TABLE {
            assert_eq!(
                row.measured, row.x86_64,
                "RAM table row `{}` drifted: update ram.rs and RAM.md",
                row.item
            );
        }
    }

    /// `RAM.md` (shown in the crate docs and in docs/FORMAT.md) lists exactly `TABLE`.
    #[test]
    fn markdown_table_matches_the_code() {
        let md = include_str!("../RAM.md");
        let rows: heapless_rows::Rows = md
            .lines()
            .filter(|l| l.starts_with("| `") || l.starts_with("| "))
            .filter(|l| !l.starts_with("| item") && !l.starts_with("|--") && !l.starts_with("| ---"))
            .collect();
        assert_eq!(rows.len(), TABLE.len(), "RAM.md has a different number of rows than ram::TABLE");
        for (line, row) in rows.iter().zip(TABLE) {
            let cells: [&str; 3] = heapless_rows::cells(line);
            assert_eq!(cells[0].trim_matches('`'), row.item);
            assert_eq!(cells[1].parse::<usize>().unwrap(), row.x86_64, "x86_64 bytes of `{}`", row.item);
            assert_eq!(
                cells[2].parse::<usize>().unwrap(),
                row.thumbv7em,
                "thumbv7em bytes of `{}`",
                row.item
            );
        }
    }

    /// Tiny fixed-capacity helpers: the core's tests run without an allocator too.
    mod heapless_rows {
        pub struct Rows<'a>([&'a str; 32], usize);
        impl<'a> FromIterator<&'a str> for Rows<'a> {
            fn from_iter<I: IntoIterator<Item = &'a str>>(it: I) -> Self {
                let mut r = Rows([""; 32], 0);
                for l in it {
                    r.0[r.1] = l;
                    r.1 += 1;
                }
                r
            }
        }
        impl<'a> Rows<'a> {
            pub fn len(&self) -> usize {
                self.1
            }
            pub fn iter(&self) -> impl Iterator<Item = &&'a str> {
                self.0[..self.1].iter()
            }
        }
        pub fn cells(line: &str) -> [&str; 3] {
            let mut out = [""; 3];
            for (i, c) in line.trim().trim_matches('|').split('|').map(str::trim).take(3).enumerate() {
                out[i] = c;
            }
            out
        }
    }
}
