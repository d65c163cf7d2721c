//! The sync protocol's input path on arbitrary bytes: must never panic.
//!
//! 1. Raw bytes into a server in its handshake (hello parsing, frame length bounds).
//! 2. Raw bytes into an open receiver (sealed-frame lengths and authentication).
//! 3. The bytes as postcard messages: each one that decodes is sent through a real client
//!    connection into a receiver, so arbitrary message sequences reach the transfer rules
//!    behind the MAC, which random bytes alone never pass.
#![no_main]

use keepsync_core::crypto::{RustCrypto, SecretKey};
use keepsync_core::sync::{Connection, Message, Receiver};
use libfuzzer_sys::fuzz_target;

const BUF: usize = 4 + 4096;

fn conns() -> (Connection<RustCrypto, Vec<u8>>, Connection<RustCrypto, Vec<u8>>) {
    let psk = || SecretKey::from_bytes([7; 32]);
    let c = Connection::client(RustCrypto, psk(), [1; 32], 0, vec![0; BUF], vec![0; BUF]).unwrap();
    let s = Connection::server(RustCrypto, psk(), [2; 32], 0, vec![0; BUF], vec![0; BUF]).unwrap();
    (c, s)
}

fn feed(receiver: &mut Receiver<RustCrypto, Vec<u8>>, bytes: &[u8]) -> bool {
    let mut at = 0;
    while at < bytes.len() {
        match receiver.handle_input(0, &bytes[at..]) {
            Ok(n) => at += n,
            Err(_) => return false,
        }
        while let Some(ev) = receiver.poll_event(0) {
            if ev.is_err() {
                return false;
            }
        }
    }
    true
}

fn open_pair() -> (Connection<RustCrypto, Vec<u8>>, Receiver<RustCrypto, Vec<u8>>) {
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
    (c, Receiver::new(s))
}

fuzz_target!(|data: &[u8]| {
    // 1.
    let (_, mut s) = conns();
    let mut at = 0;
    while at < data.len() {
        match s.handle_input(0, &data[at..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => at += n,
        }
    }

    // 2.
    let (_, mut receiver) = open_pair();
    feed(&mut receiver, data);

    // 3.
    let (mut client, mut receiver) = open_pair();
    let mut rest = data;
    let mut out = vec![0u8; BUF];
    while let Ok((msg, tail)) = postcard::take_from_bytes::<Message<'_>>(rest) {
        rest = tail;
        if client.send(0, &msg).is_err() {
            break;
        }
        let n = client.poll_transmit(&mut out);
        if !feed(&mut receiver, &out[..n]) {
            break;
        }
    }
});
