//! `upstream_tls` on published `http` tunnels: the engine terminates the
//! downstream TLS with its own certificate, then speaks TLS again, as a
//! client, to the application through the tunnel stream. The upstream ALPN
//! mirrors the downstream one: `h2` when the downstream client negotiated
//! `h2` and the tunnel says `http_version = "h2"`, else `http/1.1`, so the
//! bytes spliced between the two sessions are one protocol.
//!
//! The application's certificate is not verified: the tunnel stream
//! already reaches the authenticated owner of the tunnel, and applications
//! commonly present self-signed certificates. The handshake still checks
//! the certificate's signatures (the key is the certificate's), so the
//! session is encrypted end to end with that key.

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;

use crate::transport::{provider, NoVerification};

/// How long the engine waits for the application's TLS handshake.
const UPSTREAM_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS client offering `alpn` that accepts the application's
/// certificate unverified (see the module docs); shared with the HTTP/3
/// upstream ([`super::h3_upstream`]).
pub(crate) fn unverified_client(alpn: &[u8]) -> Result<Arc<ClientConfig>, String> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(Arc::new(config))
}

/// The name presented to the application (SNI): the tunnel name when it
/// is a DNS name, else `localhost`.
pub(crate) fn server_name(tunnel_name: Option<&str>) -> ServerName<'static> {
    tunnel_name
        .and_then(|n| ServerName::try_from(n.to_owned()).ok())
        .filter(|n| matches!(n, ServerName::DnsName(_)))
        // "localhost" is a valid DNS name: this cannot fail.
        .unwrap_or_else(|| ServerName::DnsName("localhost".try_into().expect("a DNS name")))
}

/// How a published `http` endpoint reaches an `upstream_tls` application.
#[derive(Clone)]
pub(crate) struct UpstreamTls {
    /// Offers `http/1.1`.
    h1: Arc<ClientConfig>,
    /// Offers `h2`, when the application speaks it.
    h2: Option<Arc<ClientConfig>>,
    /// SNI: the tunnel name when it is a DNS name, else `localhost`.
    server_name: ServerName<'static>,
}

impl UpstreamTls {
    /// A TLS client naming the tunnel, offering `h2` too when `h2`.
    pub(crate) fn new(h2: bool, tunnel_name: Option<&str>) -> Result<Self, String> {
        Ok(UpstreamTls {
            h1: unverified_client(b"http/1.1")?,
            h2: h2.then(|| unverified_client(b"h2")).transpose()?,
            server_name: server_name(tunnel_name),
        })
    }

    /// TLS over the tunnel stream, bounded in time, offering what the
    /// downstream client negotiated (`downstream_alpn`).
    pub(crate) async fn connect<IO>(
        &self,
        io: IO,
        downstream_alpn: Option<&[u8]>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<IO>>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let config = match (&self.h2, downstream_alpn) {
            (Some(h2), Some(b"h2")) => h2,
            _ => &self.h1,
        };
        let connect =
            tokio_rustls::TlsConnector::from(config.clone()).connect(self.server_name.clone(), io);
        tokio::time::timeout(UPSTREAM_HANDSHAKE_TIMEOUT, connect)
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "upstream TLS handshake timed out",
                )
            })?
    }
}
