//! [`ServerTls`]: one connection accepted on the engine port — a TLS
//! connection over TCP, or (feature `quic`) one bidirectional stream of a
//! QUIC connection on the same port over UDP. Both carry the same frames
//! and hold their place in the engine port's admission until dropped.

use std::pin::Pin;
use std::task::{Context, Poll};

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::admission::Admitted;
use crate::transport::ReadBuffered;

/// A TLS connection accepted on the engine port (reads batched while data
/// streams in, see [`ReadBuffered`]).
pub(crate) type TlsConn = tokio_rustls::server::TlsStream<ReadBuffered<Admitted<TcpStream>>>;

/// A connection accepted on the engine port (see the module docs).
#[derive(Debug)]
// TLS is the common variant (the only one without `quic`): boxing it would
// cost an allocation per connection.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ServerTls {
    /// TLS over TCP.
    Tls(TlsConn),
    /// A client-opened bidirectional QUIC stream.
    #[cfg(feature = "quic")]
    Quic(Admitted<crate::transport::quic::QuicStream>),
}

impl ServerTls {
    /// The client's verified certificate chain, if it presented one.
    pub(crate) fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match self {
            ServerTls::Tls(t) => t.get_ref().1.peer_certificates(),
            #[cfg(feature = "quic")]
            ServerTls::Quic(q) => q.get_ref().peer_certificates(),
        }
    }
}

impl AsyncRead for ServerTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerTls::Tls(t) => Pin::new(t).poll_read(cx, buf),
            #[cfg(feature = "quic")]
            ServerTls::Quic(q) => Pin::new(q).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerTls {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerTls::Tls(t) => Pin::new(t).poll_write(cx, buf),
            #[cfg(feature = "quic")]
            ServerTls::Quic(q) => Pin::new(q).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            ServerTls::Tls(t) => Pin::new(t).poll_write_vectored(cx, bufs),
            #[cfg(feature = "quic")]
            ServerTls::Quic(q) => Pin::new(q).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            ServerTls::Tls(t) => t.is_write_vectored(),
            #[cfg(feature = "quic")]
            ServerTls::Quic(q) => q.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerTls::Tls(t) => Pin::new(t).poll_flush(cx),
            #[cfg(feature = "quic")]
            ServerTls::Quic(q) => Pin::new(q).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            ServerTls::Tls(t) => Pin::new(t).poll_shutdown(cx),
            #[cfg(feature = "quic")]
            ServerTls::Quic(q) => Pin::new(q).poll_shutdown(cx),
        }
    }
}
