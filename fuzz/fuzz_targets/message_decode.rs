//! Message decoding: any frame body decodes cleanly or fails cleanly, and
//! what decodes re-encodes to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rstream::proto::{decode_body, encode_frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_body(data) {
        let _ = msg.name();
        let frame = encode_frame(&msg).expect("a decoded body fits a frame");
        let again = decode_body(&frame[4..]).expect("re-encoded message decodes");
        assert_eq!(again, msg);
    }
});
