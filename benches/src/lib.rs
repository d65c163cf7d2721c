//! Shared inputs for KeepSync's benchmarks.

pub use keepsync::sample::mixed;
