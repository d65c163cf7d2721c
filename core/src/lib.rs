//! # keepsync-core
//!
//! The embeddable heart of KeepSync: streaming compression, AES-256-GCM STREAM encryption, the
//! container format and checkpoints, as sans-IO state machines with fixed memory budgets.
//!
//! - `#![no_std]`, and **no allocator** in the default build: every buffer is lent by the
//!   caller or is a `const`-sized field. Features: `alloc` (deflate compression), `std`,
//!   `defmt` (formatting for device logs).
//! - [`budget`] names every limit; the table below says what each state object costs.
//! - [`wire`] is the byte layout (`docs/FORMAT.md` is the specification), [`compress`] the
//!   codecs, [`crypto`] the key schedule and AEAD provider, [`stream`] the [`Packer`] and
//!   [`Unpacker`], [`checkpoint`] the resumable state.
//!
//! ## RAM budget
//!
//! Sizes of the state objects themselves (`core::mem::size_of`), plus the workspace the caller
//! lends. A test checks this table against the code on every run; a `const` assertion checks
//! the 32-bit column when building for a 32-bit target such as `thumbv7em-none-eabihf`.
//!
#![doc = include_str!("../RAM.md")]
//!
//! ## Example
//!
//! ```
//! use keepsync_core::budget::{packer_workspace_len, unpacker_workspace_len};
//! use keepsync_core::compress::{Codec, CoreDecoder, Lz4Encoder};
//! use keepsync_core::crypto::{FileKeys, RustCrypto, SecretKey, open_header};
//! use keepsync_core::stream::{Packer, Unpacker};
//! use keepsync_core::wire::{HeaderRepr, KeySource};
//! use keepsync_core::FormatError;
//!
//! let master = SecretKey::from_bytes([42; 32]);
//! let salt = [3; 32]; // use fresh random bytes for every file
//! let repr = HeaderRepr { key_source: KeySource::RawKey, chunk_log2: 12, codec_hint: Codec::Lz4, file_salt: salt };
//! let keys = FileKeys::derive(&master, &salt);
//!
//! let mut ws = [0u8; packer_workspace_len(4096)];
//! let mut packer = Packer::new(&RustCrypto, &keys, &repr, Lz4Encoder::new(), &mut ws).unwrap();
//! let message = b"sensor 1: 20.5C; sensor 1: 20.5C; sensor 1: 20.6C";
//! assert_eq!(packer.write(message), Ok(message.len()));
//! packer.finish();
//! let mut container = [0u8; 256];
//! let mut len = 0;
//! while !packer.is_done() { len += packer.read(&mut container[len..]); }
//!
//! let (repr, keys) = open_header::<FormatError>(&container[..len], |_| Ok(master.clone())).unwrap();
//! let mut ws = [0u8; unpacker_workspace_len(4096)];
//! let mut unpacker = Unpacker::new(&RustCrypto, &keys, &repr, CoreDecoder::new(), &mut ws).unwrap();
//! let body = &container[112..len];
//! assert_eq!(unpacker.write(body), Ok(body.len()));
//! unpacker.finish().unwrap();
//! let mut out = [0u8; 64];
//! let n = unpacker.read(&mut out);
//! assert_eq!(&out[..n], message);
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(clippy::std_instead_of_core, clippy::alloc_instead_of_core)]

#[cfg(feature = "std")]
extern crate std;

pub mod budget;
pub mod checkpoint;
pub mod compress;
pub mod crypto;
mod error;
pub mod ram;
pub mod stream;
pub mod sync;
pub mod wire;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use error::{FormatError, UsageError};
pub use stream::{Packer, Unpacker};
