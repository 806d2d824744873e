//! The rstream runtime protocol: wire schema and frame codec.
//!
//! Most users never touch this module; it is public so that tools (and the
//! local engine) can speak the protocol directly.

mod answer;
mod codec;
mod messages;

pub(crate) use answer::{read_answer, read_answer_within};
pub use codec::{check_len, decode_body, encode_frame, read_frame, write_frame, MAX_FRAME_LEN};
pub use messages::*;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "1.4.5";

/// The only ALPN protocol of the tunnel protocol.
pub const ALPN: &[u8] = b"rstrm/1";
