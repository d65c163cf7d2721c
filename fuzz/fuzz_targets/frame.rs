//! The sync protocol's input path on arbitrary bytes: must never panic.
//!
//! 1. Raw bytes into a server in its handshake (hello parsing, frame length bounds).
//! 2. Raw bytes into an open receiver (sealed-frame lengths and authentication).
//! 3. The bytes as postcard messages: each one that decodes is sent through a real client
//!    connection into a receiver, so arbitrary message sequences reach the transfer rules
//!    behind the MAC, which random bytes alone never pass.
#![no_main]

use keepsync_core::crypto::RustCrypto;
use keepsync_core::sync::{Message, Receiver};
use libfuzzer_sys::fuzz_target;

#[path = "pair.rs"]
mod pair;
use pair::{BUF, Conn, conns};

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

fn open_pair() -> (Conn, Receiver<RustCrypto, Vec<u8>>) {
    let (c, s) = pair::open();
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
