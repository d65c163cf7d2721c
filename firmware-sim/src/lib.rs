//! # keepsync-firmware-sim
//!
//! KeepSync's core on a simulated device, tested on the host: a NOR flash twin with power
//! cuts ([`flash::MemFlash`]), the partition plan of `memory-x/` (APP, CHECKPOINT, DATA), a
//! seeded lossy link ([`link`]), and the device's roles:
//!
//! 1. [`device`]: packs a sensor log into a container in DATA, checkpoints into CHECKPOINT,
//!    and resumes after any power cut without losing, duplicating or re-encrypting
//!    differently anything already written.
//! 2. [`uplink`]: sends the finished containers to a host over the sync protocol, reconnecting
//!    (fresh random) and resuming at the host's durable prefix when the link breaks.
//! 3. [`downlink`]: receives a file from the host into a partition, power-cut safe, marked
//!    valid only after its whole-file BLAKE3 is verified from flash.
//!
//! The device logic uses only `keepsync-core` and fixed-size buffers: no allocator, no `std`
//! ([`net::Transport`] is what a board provides for sync). The tests in `tests/` cut power at
//! every flash operation of a scenario in turn, and run sync over clean and faulty links.
#![no_std]
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod device;
pub mod downlink;
pub mod flash;
pub mod link;
pub mod net;
mod slots;
pub mod uplink;
