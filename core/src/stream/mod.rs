//! Sans-IO packing and unpacking.
//!
//! [`Packer`] and [`Unpacker`] never do I/O: the caller pushes bytes in with `write`, pulls
//! bytes out with `output`/`consume` (or `read`), and decides where bytes come from and go to.
//! The same state machines drive a file on a workstation and a flash partition on a device.
//!
//! [`seal_chunk`] and [`open_chunk`] are the per-chunk primitives both are built on; a host can
//! call them from many threads at once because chunks are independent.

mod chunk;
mod packer;
mod unpacker;

pub use chunk::{OpenedChunk, open_chunk, seal_chunk};
pub use packer::{Packer, ResumePoint};
pub use unpacker::Unpacker;

/// Copies the first bytes of `ready` into `out`; returns how many. The `read` of both state
/// machines: copy, then `consume` that many.
fn copy_out(ready: &[u8], out: &mut [u8]) -> usize {
    let n = ready.len().min(out.len());
    out[..n].copy_from_slice(&ready[..n]);
    n
}
