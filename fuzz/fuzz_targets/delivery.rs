//! Fuzzes the delivery parser and the signature check with arbitrary bodies and headers.
#![no_main]

use hookrace::accesslink::{payload, signature};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first 64 bytes (when present) play the signature header, the rest the body.
    let (header, body) = data.split_at(data.len().min(64));
    let header = std::str::from_utf8(header).ok();
    let _ = signature::verify("abe1f3ae-fd33-11e8-8eb2-f2801f1b9fd1", body, header);
    if let Ok(payload::Parsed::Delivery(d)) = payload::parse(body) {
        // Whatever parses has an identity that round-trips through the store key.
        let key = d.entity().key();
        assert!(key.starts_with(&d.event));
        assert!(!d.entity().entity_id.contains('/'));
    }
});
