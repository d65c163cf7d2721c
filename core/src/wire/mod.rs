//! Byte layouts of the container: parse and emit, no logic beyond validation.
//!
//! Each layout is a view over bytes (`Header<T>`, `Record<T>`) whose `new_checked` validates
//! lengths before any accessor runs, plus a parsed `Repr` that `parse` produces and `emit`
//! writes back. Field offsets live in one `field` module per layout. All integers are
//! little-endian except the nonce counter, which is big-endian as in age's STREAM.

pub mod frame;
pub mod header;
pub mod record;

pub use header::{Header, HeaderRepr, KeySource, MAGIC, VERSION};
pub use record::{Record, RecordRepr};
