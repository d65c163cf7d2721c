//! An open client/server pair with fixed keys and randoms, for the targets that need messages
//! behind the MAC. Included with `#[path]` by each such target.

use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::Connection;

pub const BUF: usize = 4 + 4096;

pub type Conn = Connection<RustCrypto, Vec<u8>>;

/// A client and a server in their handshake.
pub fn conns() -> (Conn, Conn) {
    let psk = || SecretKey::from_bytes([7; 32]);
    let c = Connection::client(RustCrypto, psk(), [1; 32], 0, vec![0; BUF], vec![0; BUF]).unwrap();
    let s = Connection::server(RustCrypto, psk(), [2; 32], 0, vec![0; BUF], vec![0; BUF]).unwrap();
    (c, s)
}

/// A client and a server with the handshake done.
pub fn open() -> (Conn, Conn) {
    let (mut c, mut s) = conns();
    let mut out = vec![0u8; BUF];
    for _ in 0..2 {
        let n = c.poll_transmit(&mut out);
        assert_eq!(s.handle_input(0, &out[..n]), Ok(n));
        let n = s.poll_transmit(&mut out);
        if n > 0 {
            assert_eq!(c.handle_input(0, &out[..n]), Ok(n));
        }
    }
    assert!(c.is_open() && s.is_open());
    (c, s)
}
