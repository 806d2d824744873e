//! The frame decoder: any byte stream yields frames or a clean error —
//! never a panic, never an allocation beyond the 65,535-byte cap.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rstream::proto::{check_len, read_frame, MAX_FRAME_LEN};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.get(..4) {
        let prefix = [prefix[0], prefix[1], prefix[2], prefix[3]];
        let len = u32::from_be_bytes(prefix) as usize;
        assert_eq!(check_len(prefix).is_ok(), len <= MAX_FRAME_LEN);
    }
    let mut reader = data;
    runtime().block_on(async { while let Ok(Some(_msg)) = read_frame(&mut reader).await {} });
});
