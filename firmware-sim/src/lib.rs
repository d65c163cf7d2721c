//! # keepsync-firmware-sim
//!
//! KeepSync's core on a simulated device, tested on the host: a NOR flash twin with power
//! cuts ([`flash::MemFlash`]), the partition plan of `memory-x/` (APP, CHECKPOINT, DATA), and
//! device logic ([`device`]) that packs a sensor log into a container in DATA, checkpoints
//! into CHECKPOINT, and resumes after any power cut without losing, duplicating or
//! re-encrypting differently anything already written.
//!
//! The device logic uses only `keepsync-core` and fixed-size buffers: no allocator, no `std`.
//! The tests in `tests/` cut power at every flash operation of a scenario in turn.
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
