//! `rstream-signature` header parsing: never panics; what parses has a
//! timestamp and at least one `v1` signature, and survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rstream::webhook::SignatureHeader;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(header) = SignatureHeader::parse(text) {
        assert!(!header.signatures().is_empty());
        let rebuilt = header.to_string();
        let again = SignatureHeader::parse(&rebuilt).expect("round trip");
        assert_eq!(again.timestamp(), header.timestamp());
        assert_eq!(again.signatures(), header.signatures());
    }
});
