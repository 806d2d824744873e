//! [`ServerTls`]: one connection accepted on the engine port — a TLS
//! connection over TCP, or (feature `quic`) one bidirectional stream of a
//! QUIC connection on the same port over UDP. Both carry the same frames
//! and hold their place in the engine port's admission until dropped.

use rustls::pki_types::CertificateDer;
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

crate::transport::tls_or_quic_io!(ServerTls);
