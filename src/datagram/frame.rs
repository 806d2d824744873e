//! Plane B framing (DATAGRAM_QUIC.md §2 B): each datagram is a 4-byte
//! big-endian length and the payload, at most [`MAX_DATAGRAM_SIZE`] bytes.
//! Shared by the SDK's channels and the local engine's UDP endpoints.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::MAX_DATAGRAM_SIZE;
use crate::error::{code, Error, ErrorKind, Result};

/// Bytes read from the stream at a time (at least).
const READ_CHUNK: usize = 16 * 1024;

/// The error for a datagram over [`MAX_DATAGRAM_SIZE`]: sending one, or a
/// peer's frame header announcing one.
pub(crate) fn too_large(len: usize, what: &str) -> Error {
    Error::new(
        ErrorKind::Protocol,
        code::DATAGRAM_TOO_LARGE,
        format!("{what} of {len} bytes exceeds the {MAX_DATAGRAM_SIZE}-byte datagram limit"),
    )
}

/// Checks a datagram to send.
pub(crate) fn check_len(len: usize) -> Result<()> {
    if len > MAX_DATAGRAM_SIZE {
        return Err(too_large(len, "a datagram"));
    }
    Ok(())
}

/// Appends one frame (header and payload) to `out`. The caller checked the
/// length with [`check_len`].
pub(crate) fn encode(payload: &[u8], out: &mut BytesMut) {
    out.reserve(4 + payload.len());
    // At most MAX_DATAGRAM_SIZE (checked by the caller): fits in u32.
    out.put_u32(u32::try_from(payload.len()).unwrap_or(u32::MAX));
    out.put_slice(payload);
}

/// Reads frames from a byte stream. Its buffer never holds more than one
/// frame plus one read chunk: a header announcing more than
/// [`MAX_DATAGRAM_SIZE`] is an error before anything is allocated for it.
pub(crate) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub(crate) fn new(io: R) -> Self {
        FrameReader {
            io,
            buf: BytesMut::new(),
        }
    }

    /// The next datagram; `None` at a clean end of stream (between frames).
    ///
    /// Cancel safe: partial frames stay buffered for the next call.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                let len = usize::try_from(len).unwrap_or(usize::MAX);
                if len > MAX_DATAGRAM_SIZE {
                    return Err(too_large(len, "a peer's frame"));
                }
                if self.buf.len() >= 4 + len {
                    self.buf.advance(4);
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
                self.buf.reserve((4 + len - self.buf.len()).max(READ_CHUNK));
            } else {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self
                .io
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| Error::io("reading a datagram", e))?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(Error::protocol(
                    "the datagram stream ended in the middle of a frame",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversize_is_refused_on_the_header() {
        let mut out = BytesMut::new();
        encode(b"hello", &mut out);
        encode(b"", &mut out);
        encode(&[7u8; MAX_DATAGRAM_SIZE], &mut out);
        let mut r = FrameReader::new(&out[..]);
        assert_eq!(r.next().await.unwrap().unwrap(), &b"hello"[..]);
        assert_eq!(r.next().await.unwrap().unwrap(), &b""[..]);
        assert_eq!(r.next().await.unwrap().unwrap().len(), MAX_DATAGRAM_SIZE);
        assert!(r.next().await.unwrap().is_none());

        let hostile = [0xffu8, 0xff, 0xff, 0xff];
        let err = FrameReader::new(&hostile[..]).next().await.unwrap_err();
        assert_eq!(err.code(), code::DATAGRAM_TOO_LARGE);
        let just_over = 65_536u32.to_be_bytes();
        let mut r = FrameReader::new(&just_over[..]);
        assert!(r.next().await.is_err());
        assert!(r.buf.capacity() < 2 * READ_CHUNK, "no allocation for it");

        let truncated = [0u8, 0, 0, 5, b'a'];
        let err = FrameReader::new(&truncated[..]).next().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol);
        assert!(check_len(MAX_DATAGRAM_SIZE).is_ok());
        assert_eq!(
            check_len(MAX_DATAGRAM_SIZE + 1).unwrap_err().code(),
            code::DATAGRAM_TOO_LARGE
        );
    }
}
