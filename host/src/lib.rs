//! # keepsync
//!
//! The host side of KeepSync: the `keepsync` command line and the drivers that run
//! [`keepsync_core`]'s sans-IO state machines over files, pipes (and, later, sockets).
//!
//! - [`pack`] / [`unpack`] / [`inspect`]: the commands' work, usable as a library.
//! - [`keys`]: key files, passphrases, per-invocation key sessions; [`secret`]: locked key
//!   memory; [`output`]: crash-safe output files.
//! - [`crypto`]: AES-256-GCM backends (RustCrypto by default, ring on request).
//! - [`pipeline`]: the bounded, ordered parallel chunk pipeline.
//! - [`bench`]: `keepsync bench`, its corpora, metrics history and reports.
#![deny(missing_docs)]
// deny, not forbid: `secret` alone may lock key pages in RAM (mlock/madvise are foreign calls).
#![deny(unsafe_code)]

pub mod bench;
pub mod caps;
pub mod cli;
pub mod codec;
pub mod config;
pub mod crypto;
pub mod error;
pub mod index;
pub mod inspect;
pub mod io;
pub mod keys;
pub mod net;
pub mod output;
pub mod pack;
pub mod pipeline;
pub mod sample;
pub mod say;
#[allow(unsafe_code)]
pub mod secret;
pub mod sync;
pub mod units;
pub mod unpack;
