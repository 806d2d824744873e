//! `forward_async_write!` and `forward_async_read!`: the `AsyncWrite` /
//! `AsyncRead` methods of a wrapper that only passes that direction through
//! to one of its fields.
//!
//! Several of our I/O wrappers change how one direction happens (batching,
//! write deadlines, metadata, connection accounting) and leave the other
//! alone; this keeps the forwarding methods, `poll_write_vectored` included
//! (TLS writes whole records with it), written once.

/// Expands, inside `impl AsyncRead for Wrapper`, to `poll_read` forwarded
/// to `self.$field` (which must be `AsyncRead + Unpin`, and the wrapper
/// `Unpin`).
macro_rules! forward_async_read {
    ($field:ident) => {
        fn poll_read(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            buf: &mut ::tokio::io::ReadBuf<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.$field).poll_read(cx, buf)
        }
    };
}

/// Expands, inside `impl AsyncWrite for Wrapper`, to the `AsyncWrite`
/// methods forwarded to `self.$field` (which must be `AsyncWrite + Unpin`,
/// and the wrapper `Unpin`).
macro_rules! forward_async_write {
    ($field:ident) => {
        fn poll_write(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            buf: &[u8],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.$field).poll_write(cx, buf)
        }

        fn poll_write_vectored(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
            bufs: &[::std::io::IoSlice<'_>],
        ) -> ::std::task::Poll<::std::io::Result<usize>> {
            ::std::pin::Pin::new(&mut self.$field).poll_write_vectored(cx, bufs)
        }

        fn is_write_vectored(&self) -> bool {
            self.$field.is_write_vectored()
        }

        fn poll_flush(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.$field).poll_flush(cx)
        }

        fn poll_shutdown(
            mut self: ::std::pin::Pin<&mut Self>,
            cx: &mut ::std::task::Context<'_>,
        ) -> ::std::task::Poll<::std::io::Result<()>> {
            ::std::pin::Pin::new(&mut self.$field).poll_shutdown(cx)
        }
    };
}
