//! `forward_async_write!`: the `AsyncWrite` methods of a wrapper that only
//! passes writes through to one of its fields.
//!
//! Several of our I/O wrappers change how reads happen (batching, metadata,
//! connection accounting) and none changes writes; this keeps the five
//! forwarding methods, `poll_write_vectored` included (TLS writes whole
//! records with it), written once.

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
