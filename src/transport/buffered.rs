//! [`ReadBuffered`]: batches the small reads TLS makes on a socket.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Size of the read buffer while data streams in: four full TLS records.
const BULK_BUFFER: usize = 64 * 1024;

/// The transport under a TLS connection, with adaptive read batching.
///
/// rustls reads the socket at most 4 KiB at a time, so a bulk transfer
/// costs one `recv` system call per 4 KiB on each TLS endpoint. This
/// wrapper reads straight into the caller's buffer while traffic is
/// interactive, and switches to one 64 KiB read when a read filled the
/// caller's buffer (more data is waiting), serving the following small
/// reads from memory. The buffer is released as soon as the socket has
/// nothing more to read, so an idle connection costs nothing extra.
///
/// The buffer is filled without being zeroed first: a burst often ends
/// after a few reads, and zeroing 64 KiB on each new burst cost the
/// receiving end of a bulk transfer 5 % of its CPU (docs/BENCHMARKS.md).
///
/// Writes go straight through.
#[derive(Debug)]
pub struct ReadBuffered<T> {
    io: T,
    /// Bytes read and not yet handed out; unallocated unless data is
    /// streaming in.
    buf: BytesMut,
    /// The last direct read filled the caller's buffer.
    bulk: bool,
}

impl<T> ReadBuffered<T> {
    /// Wraps `io`; nothing is allocated until data streams in.
    pub fn new(io: T) -> Self {
        ReadBuffered {
            io,
            buf: BytesMut::new(),
            bulk: false,
        }
    }

    /// The wrapped transport.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// The wrapped transport, mutably (reading from it directly would skip
    /// buffered bytes).
    pub fn get_mut(&mut self) -> &mut T {
        &mut self.io
    }

    /// Bytes read from the socket and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    fn release(&mut self) {
        self.buf = BytesMut::new();
        self.bulk = false;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ReadBuffered<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.buf.is_empty() {
            let n = dst.remaining().min(this.buf.len());
            dst.put_slice(&this.buf[..n]);
            this.buf.advance(n);
            return Poll::Ready(Ok(()));
        }
        let want = dst.remaining();
        if !this.bulk || want >= BULK_BUFFER {
            let before = dst.filled().len();
            match Pin::new(&mut this.io).poll_read(cx, dst) {
                Poll::Ready(Ok(())) => {
                    this.bulk = want > 0 && dst.filled().len() - before == want;
                    Poll::Ready(Ok(()))
                }
                Poll::Pending => {
                    this.release();
                    Poll::Pending
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            }
        } else {
            // Empty here: reserving reuses the allocation of the last read
            // of this burst, or makes the first one.
            this.buf.reserve(BULK_BUFFER);
            let got = match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf)
            {
                Poll::Ready(Ok(got)) => got,
                Poll::Pending => {
                    // Drained: the burst is over, give the memory back.
                    this.release();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            };
            let n = want.min(got);
            dst.put_slice(&this.buf[..n]);
            this.buf.advance(n);
            if got < want {
                // Less than the caller asked for: no longer streaming.
                this.bulk = false;
            }
            Poll::Ready(Ok(()))
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ReadBuffered<T> {
    forward_async_write!(io);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn small_reads_are_direct_and_bulk_reads_are_batched() {
        let (client, server) = tokio::io::duplex(256 * 1024);
        let mut r = ReadBuffered::new(server);
        let mut w = client;
        // Interactive: a short message, read directly (no buffer).
        w.write_all(b"hello").await.unwrap();
        let mut small = [0u8; 4096];
        let n = r.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"hello");
        assert!(!r.bulk && r.buf.is_empty());
        // Bulk: 200 KiB of a pattern, read 4 KiB at a time, intact.
        let data: Vec<u8> = (0..200 * 1024).map(|i| (i % 251) as u8).collect();
        w.write_all(&data).await.unwrap();
        drop(w);
        let mut got = Vec::new();
        let mut saw_buffer = false;
        loop {
            let n = r.read(&mut small).await.unwrap();
            saw_buffer |= !r.buf.is_empty();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, data);
        assert!(saw_buffer, "bulk reads went through the buffer");
    }

    #[tokio::test]
    async fn buffer_released_when_idle() {
        let (mut w, server) = tokio::io::duplex(256 * 1024);
        let mut r = ReadBuffered::new(server);
        w.write_all(&vec![7u8; 100 * 1024]).await.unwrap();
        let mut small = [0u8; 4096];
        let mut total = 0;
        while total < 100 * 1024 {
            total += r.read(&mut small).await.unwrap();
        }
        // Nothing left: the next read is pending and frees the buffer.
        let pending =
            tokio::time::timeout(std::time::Duration::from_millis(20), r.read(&mut small)).await;
        assert!(pending.is_err());
        assert!(r.buf.is_empty() && r.buf.capacity() == 0);
        w.write_all(b"x").await.unwrap();
        assert_eq!(r.read(&mut small).await.unwrap(), 1);
    }
}
