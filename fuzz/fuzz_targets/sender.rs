//! The sending side of a transfer, fed by a hostile receiver: after a valid handshake a
//! `Sender` offers a few files, and the fuzzer's bytes, read as postcard messages, go to it
//! through a real (sealed) server connection, so arbitrary `Have`/`Hashes`/`Done`/`Deleted`/
//! `Close` sequences reach the transfer rules behind the MAC. Whenever the rules let it, the
//! sender answers as a host does (data for what is needed, `End`, `Finished`). It must never
//! panic, and never accept a message the rules forbid (checked by the core's own errors).
#![no_main]

use keepsync_core::crypto::RustCrypto;
use keepsync_core::sync::{FileMeta, Have, Kind, Layout, Message, Sender, SenderEvent};
use libfuzzer_sys::fuzz_target;

#[path = "pair.rs"]
mod pair;
use pair::{BUF, Conn};

fn open_pair() -> (Sender<RustCrypto, Vec<u8>>, Conn) {
    let (c, s) = pair::open();
    (Sender::new(c), s)
}

fn meta(id: u32, size: u64) -> FileMeta<'static> {
    FileMeta {
        id,
        path: "f",
        kind: Kind::File,
        size,
        mtime: 0,
        mtime_nsec: 0,
        mode: 0o644,
        target: "",
        hash: None,
        version: [0; 16],
        layout: Layout::Whole,
    }
}

/// What the sender does after an event: data for a need, `End` after the last block.
enum Next {
    Nothing,
    Send { id: u32, from: u64, block: u64 },
    End(u32),
}

fuzz_target!(|data: &[u8]| {
    let Some((&sizes, rest)) = data.split_first() else { return };
    let (mut sender, mut server) = open_pair();
    // Up to four files of 0..=48 KiB, so ranges, blocks and ends all happen.
    let files: Vec<u64> = (0..4).map(|i| u64::from((sizes >> (2 * i)) & 3) * 16 << 10).collect();
    for (i, size) in files.iter().enumerate() {
        if sender.offer(0, &meta(i as u32 + 1, *size)).is_err() {
            return;
        }
    }
    let _ = sender.finish(0);
    let mut out = vec![0u8; BUF];
    let mut wire = vec![0u8; BUF];
    let mut rest = rest;
    while let Ok((msg, tail)) = postcard::take_from_bytes::<Message<'_>>(rest) {
        rest = tail;
        // Drain what the sender queued (the receiver reads it and drops it).
        while sender.poll_transmit(&mut wire) > 0 {}
        if server.send(0, &msg).is_err() {
            return;
        }
        let n = server.poll_transmit(&mut out);
        let mut at = 0;
        while at < n {
            match sender.handle_input(0, &out[at..n]) {
                Ok(used) => at += used,
                Err(_) => return,
            }
            loop {
                let next = match sender.poll_event(0) {
                    None => break,
                    Some(Err(_)) => return,
                    Some(Ok(SenderEvent::Have { id, have: Have::Need { resume_from, block_log2, .. } })) => {
                        Next::Send { id, from: resume_from, block: 1u64 << block_log2.min(16) }
                    }
                    Some(Ok(SenderEvent::Done { id, .. })) => Next::End(id),
                    Some(Ok(_)) => Next::Nothing,
                };
                match next {
                    Next::Nothing => {}
                    Next::End(id) => {
                        let _ = sender.end_file(0, id, [0; 32]);
                    }
                    Next::Send { id, from, block } => {
                        let size = files.get(id.wrapping_sub(1) as usize).copied().unwrap_or(0);
                        let mut offset = from;
                        let body = vec![0x5a; block as usize];
                        while offset < size {
                            let len = block.min(size - offset);
                            while sender.poll_transmit(&mut wire) > 0 {}
                            if sender.send_data(0, id, offset, 0, len as u32, &body[..len as usize]).is_err() {
                                break;
                            }
                            offset += len;
                        }
                        while sender.poll_transmit(&mut wire) > 0 {}
                        let _ = sender.end_file(0, id, [0; 32]);
                    }
                }
            }
        }
    }
});
