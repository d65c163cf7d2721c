//! Container header parsing and opening on arbitrary bytes: must never panic.
#![no_main]

use keepsync_core::FormatError;
use keepsync_core::crypto::{SecretKey, open_header};
use keepsync_core::wire::Header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = Header::new_checked(data) {
        let _ = header.parse();
        let _ = (header.magic(), header.version(), header.mac_input(), header.mac());
    }
    let _ = open_header::<FormatError>(data, |_| Ok(SecretKey::from_bytes([0x42; 32])));
});
