//! Length-prefixed framing: a 4-byte big-endian length, then a protobuf
//! `Message` of at most [`MAX_FRAME_LEN`] bytes.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::Message;
use crate::error::{Error, Result};

/// The largest frame body either side may send or accept (65,535 itself is allowed).
pub const MAX_FRAME_LEN: usize = 65_535;

/// Encodes `msg` as one frame (length prefix + body). Fails, without
/// producing anything, when the body would exceed [`MAX_FRAME_LEN`].
pub fn encode_frame(msg: &Message) -> Result<Bytes> {
    let len = msg.encoded_len();
    if len > MAX_FRAME_LEN {
        return Err(Error::frame_too_large(len));
    }
    let mut buf = BytesMut::with_capacity(4 + len);
    // `len <= 65_535`, so the cast cannot truncate.
    buf.put_u32(len as u32);
    msg.encode(&mut buf)
        .map_err(|e| Error::protocol(format!("cannot encode frame: {e}")))?;
    Ok(buf.freeze())
}

/// Decodes a frame body (without its length prefix).
pub fn decode_body(body: &[u8]) -> Result<Message> {
    if body.len() > MAX_FRAME_LEN {
        return Err(Error::frame_too_large(body.len()));
    }
    Message::decode(body).map_err(|e| Error::protocol(format!("malformed frame: {e}")))
}

/// Checks a length prefix before anything is allocated for the body.
pub fn check_len(prefix: [u8; 4]) -> Result<usize> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(Error::frame_too_large(len));
    }
    Ok(len)
}

/// Reads one frame. `Ok(None)` on a clean EOF before the first byte of a
/// frame; a frame truncated mid-way is a protocol error.
///
/// Reads exactly the frame's bytes and nothing past it, so application
/// bytes that follow a handshake frame stay in the stream.
///
/// # Cancel safety
///
/// Not cancel safe: a cancelled read may leave a partial frame consumed.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Message>> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r
            .read(&mut prefix[got..])
            .await
            .map_err(|e| Error::io("reading frame", e))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(Error::protocol("connection closed inside a frame length"));
        }
        got += n;
    }
    let len = check_len(prefix)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::protocol(format!("connection closed inside a {len}-byte frame"))
        } else {
            Error::io("reading frame", e)
        }
    })?;
    decode_body(&body).map(Some)
}

/// Encodes and writes one frame, then flushes.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, msg: &Message) -> Result<()> {
    let frame = encode_frame(msg)?;
    w.write_all(&frame)
        .await
        .map_err(|e| Error::io("writing frame", e))?;
    w.flush().await.map_err(|e| Error::io("writing frame", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use crate::proto::{message::Payload, Heartbeat, ServerMessage, TunnelProperties};

    fn heartbeat(seq: u64) -> Message {
        Message::new(Payload::Heartbeat(Heartbeat {
            sequence: seq,
            acknowledgement: 0,
        }))
    }

    #[tokio::test]
    async fn round_trip() {
        let frame = encode_frame(&heartbeat(7)).unwrap();
        let mut r = &frame[..];
        assert_eq!(read_frame(&mut r).await.unwrap(), Some(heartbeat(7)));
        assert_eq!(read_frame(&mut r).await.unwrap(), None);
    }

    #[tokio::test]
    async fn empty_body_is_an_empty_message() {
        let mut r: &[u8] = &[0, 0, 0, 0];
        let msg = read_frame(&mut r).await.unwrap().unwrap();
        assert!(msg.payload.is_none());
    }

    #[tokio::test]
    async fn oversized_length_rejected_before_allocation() {
        // 4 GiB - 1: must fail on the prefix alone (no body follows).
        let mut r: &[u8] = &[0xff, 0xff, 0xff, 0xff];
        let err = read_frame(&mut r).await.unwrap_err();
        assert_eq!(err.code(), code::FRAME_TOO_LARGE);
        let mut r: &[u8] = &[0, 1, 0, 0];
        assert_eq!(
            read_frame(&mut r).await.unwrap_err().code(),
            code::FRAME_TOO_LARGE
        );
    }

    #[test]
    fn max_len_boundary_on_write() {
        let body = |n: usize| {
            Message::new(Payload::ServerMessage(ServerMessage {
                message: "x".repeat(n),
            }))
        };
        // Payload overhead: 1 (tag 16 -> 2 bytes) ... find the exact fit.
        let overhead = body(0).encoded_len();
        let mut n = MAX_FRAME_LEN - overhead;
        while body(n).encoded_len() > MAX_FRAME_LEN {
            n -= 1;
        }
        assert_eq!(body(n).encoded_len(), MAX_FRAME_LEN);
        assert!(encode_frame(&body(n)).is_ok());
        let err = encode_frame(&body(n + 1)).unwrap_err();
        assert_eq!(err.code(), code::FRAME_TOO_LARGE);
    }

    #[tokio::test]
    async fn truncated_body_is_protocol_error() {
        let frame = encode_frame(&heartbeat(1)).unwrap();
        let mut r = &frame[..frame.len() - 1];
        assert_eq!(read_frame(&mut r).await.unwrap_err().code(), code::PROTOCOL);
        let mut r: &[u8] = &[0, 0];
        assert_eq!(read_frame(&mut r).await.unwrap_err().code(), code::PROTOCOL);
    }

    #[tokio::test]
    async fn garbage_body_is_protocol_error() {
        let mut r: &[u8] = &[0, 0, 0, 3, 0xff, 0xff, 0xff];
        assert_eq!(read_frame(&mut r).await.unwrap_err().code(), code::PROTOCOL);
    }

    #[test]
    fn wrappers_keep_presence() {
        let present = TunnelProperties {
            publish: Some(false),
            name: Some(String::new()),
            ..Default::default()
        };
        let bytes = present.encode_to_vec();
        // field 3 (name) and 5 (publish) each present as an empty sub-message.
        assert_eq!(bytes, vec![0x1a, 0x00, 0x2a, 0x00]);
        let back = TunnelProperties::decode(&bytes[..]).unwrap();
        assert_eq!(back.publish, Some(false));
        assert_eq!(back.name.as_deref(), Some(""));
        assert!(TunnelProperties::default().encode_to_vec().is_empty());
    }

    #[test]
    fn unknown_member_is_skipped() {
        // field 99, varint 1: an unknown payload member decodes as an empty message.
        let msg = decode_body(&[0x98, 0x06, 0x01]).unwrap();
        assert!(msg.payload.is_none());
    }
}
