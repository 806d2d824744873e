//! Opening connections to the engine: TLS over TCP ([`TlsDialer`]), or a
//! QUIC stream (feature `quic`), both seen as one [`EngineStream`].

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{server_name, Endpoint, HttpProxy, ProxiedStream, ReadBuffered};
use crate::error::{code, Error, ErrorKind, Result};

/// A TLS connection to the engine (over TCP, or a proxy's tunnel, with
/// adaptive read batching, see [`ReadBuffered`]).
pub type TlsEngineStream = tokio_rustls::client::TlsStream<ReadBuffered<ProxiedStream>>;

/// One rstream connection to the engine: a TLS connection, or (feature
/// `quic`) one bidirectional stream of the client's QUIC connection. Both
/// carry the same frames; `shutdown()` half-closes either (TLS
/// `close_notify` + TCP FIN, or the QUIC stream's FIN).
#[derive(Debug)]
// The TLS variant is the common one (and the only one without `quic`):
// boxing it would cost an allocation per connection.
#[allow(clippy::large_enum_variant)]
pub enum EngineStream {
    /// TLS over TCP (or a proxy's tunnel).
    Tls(TlsEngineStream),
    /// A QUIC stream.
    #[cfg(feature = "quic")]
    Quic(super::quic::QuicStream),
}

/// What the engine connection negotiated: the TLS session, or the QUIC
/// connection's. The second half of [`EngineStream::get_ref`].
#[derive(Clone, Copy, Debug)]
pub enum SessionInfo<'a> {
    /// A TLS connection's rustls session.
    Tls(&'a rustls::ClientConnection),
    /// A QUIC stream's connection.
    #[cfg(feature = "quic")]
    Quic(&'a super::quic::QuicStream),
}

impl<'a> SessionInfo<'a> {
    /// The negotiated ALPN protocol.
    pub fn alpn_protocol(&self) -> Option<&'a [u8]> {
        match self {
            SessionInfo::Tls(c) => c.alpn_protocol(),
            #[cfg(feature = "quic")]
            SessionInfo::Quic(q) => q.alpn_protocol(),
        }
    }

    /// Full or resumed handshake (TLS only: quinn does not say; `None`).
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        match self {
            SessionInfo::Tls(c) => c.handshake_kind(),
            #[cfg(feature = "quic")]
            SessionInfo::Quic(_) => None,
        }
    }

    /// The engine's certificate chain.
    pub fn peer_certificates(&self) -> Option<&'a [CertificateDer<'static>]> {
        match self {
            SessionInfo::Tls(c) => c.peer_certificates(),
            #[cfg(feature = "quic")]
            SessionInfo::Quic(q) => q.peer_certificates(),
        }
    }
}

impl EngineStream {
    /// The TCP leg (none for QUIC) and the negotiated session, shaped like
    /// `tokio_rustls`' `get_ref`.
    pub fn get_ref(&self) -> (Option<&ReadBuffered<ProxiedStream>>, SessionInfo<'_>) {
        match self {
            EngineStream::Tls(t) => {
                let (io, session) = t.get_ref();
                (Some(io), SessionInfo::Tls(session))
            }
            #[cfg(feature = "quic")]
            EngineStream::Quic(q) => (None, SessionInfo::Quic(q)),
        }
    }

    /// Whether this is a QUIC stream.
    pub fn is_quic(&self) -> bool {
        !matches!(self, EngineStream::Tls(_))
    }
}

crate::transport::tls_or_quic_io!(EngineStream);

/// The one dialer of a client: TLS, QUIC when the resolved transport is
/// `quic`, or the race of both for `auto` (feature `quic`). Every rstream
/// connection (control channel, dial, proxy connection) is opened here.
#[derive(Debug)]
pub(crate) struct EngineDialer {
    tls: TlsDialer,
    #[cfg(feature = "quic")]
    quic: Option<super::quic::QuicDialer>,
    /// Set in auto mode: QUIC raced against TLS until one wins.
    #[cfg(feature = "quic")]
    auto: Option<super::auto::AutoRace>,
}

impl EngineDialer {
    /// Connections over `tls` only.
    pub(crate) fn tls(tls: TlsDialer) -> Self {
        EngineDialer {
            tls,
            #[cfg(feature = "quic")]
            quic: None,
            #[cfg(feature = "quic")]
            auto: None,
        }
    }

    /// Connections as QUIC streams.
    #[cfg(feature = "quic")]
    pub(crate) fn quic(tls: TlsDialer, quic: super::quic::QuicDialer) -> Self {
        EngineDialer {
            tls,
            quic: Some(quic),
            auto: None,
        }
    }

    /// QUIC raced against TLS, the winner pinned (see [`super::auto`]).
    #[cfg(feature = "quic")]
    pub(crate) fn auto(tls: TlsDialer, quic: super::quic::QuicDialer) -> Self {
        EngineDialer {
            tls,
            quic: Some(quic),
            auto: Some(super::auto::AutoRace::new()),
        }
    }

    /// Whether connections may be QUIC streams (plane A datagrams apply).
    #[cfg(feature = "quic")]
    pub(crate) fn may_use_quic(&self) -> bool {
        self.quic.is_some()
    }

    /// A new rstream connection to `endpoint`, presenting `sni`.
    pub(crate) async fn connect(&self, endpoint: &Endpoint, sni: &str) -> Result<EngineStream> {
        #[cfg(feature = "quic")]
        if let Some(quic) = &self.quic {
            if let Some(auto) = &self.auto {
                return auto.connect(&self.tls, quic, endpoint, sni).await;
            }
            return quic
                .connect(endpoint.host(), endpoint.port(), sni)
                .await
                .map(EngineStream::Quic);
        }
        self.tls.connect(endpoint, sni).await
    }
}

/// Opens TLS connections with one shared `rustls::ClientConfig`, so TLS
/// sessions resume across the many short proxy and dial connections.
#[derive(Clone)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct TlsDialer {
    config: Arc<rustls::ClientConfig>,
    connect_timeout: Duration,
    proxy: Option<HttpProxy>,
}

impl std::fmt::Debug for TlsDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsDialer")
            .field("alpn", &self.config.alpn_protocols)
            .field("connect_timeout", &self.connect_timeout)
            .field("proxy", &self.proxy)
            .finish()
    }
}

impl TlsDialer {
    /// A dialer over `config`; `connect_timeout` bounds TCP connect + TLS handshake.
    pub fn new(config: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        TlsDialer {
            config,
            connect_timeout,
            proxy: None,
        }
    }

    /// Sends connections through a proxy (unless the proxy's
    /// `NO_PROXY` list bypasses the destination). The connect timeout then
    /// covers the proxy handshake too.
    pub fn with_proxy(mut self, proxy: Option<HttpProxy>) -> Self {
        self.proxy = proxy;
        self
    }

    /// Connects to `endpoint`, presenting `sni` as the server name.
    pub async fn connect(&self, endpoint: &Endpoint, sni: &str) -> Result<EngineStream> {
        self.connect_to(endpoint.host(), endpoint.port(), sni)
            .await
            .map(EngineStream::Tls)
    }

    /// [`connect`](Self::connect) to any `host` (IPv6 literals included:
    /// webhook receivers and control-plane URLs may use them).
    pub(crate) async fn connect_to(
        &self,
        host: &str,
        port: u16,
        sni: &str,
    ) -> Result<TlsEngineStream> {
        let name = server_name(sni)?;
        let connector = TlsConnector::from(self.config.clone());
        let fut = async {
            let tcp = self.tcp(host, port).await?;
            let shown = display(host, port);
            connector
                .connect(name, ReadBuffered::new(tcp))
                .await
                .map_err(|e| {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        Error::tls(format!("TLS handshake with {shown}"), e)
                    } else {
                        Error::io(format!("TLS handshake with {shown}"), e)
                    }
                })
        };
        self.bounded(host, port, fut).await
    }

    /// A plain TCP connection to `host:port` (through the proxy unless it
    /// bypasses the destination), under the connect timeout: the `http://`
    /// leg of [`HttpsConnector`](super::https::HttpsConnector).
    pub(crate) async fn connect_plain(&self, host: &str, port: u16) -> Result<ProxiedStream> {
        self.bounded(host, port, self.tcp(host, port)).await
    }

    /// The TCP leg, with no timeout of its own.
    async fn tcp(&self, host: &str, port: u16) -> Result<ProxiedStream> {
        match &self.proxy {
            // `connect` sets TCP_NODELAY on its connection to the proxy.
            Some(proxy) if proxy.applies_to(host, port) => proxy.connect(host, port).await,
            _ => {
                let tcp = TcpStream::connect((host, port))
                    .await
                    .map_err(|e| Error::io(format!("connecting to {}", display(host, port)), e))?;
                // Small frames and interactive traffic: never wait for Nagle.
                let _ = tcp.set_nodelay(true);
                Ok(ProxiedStream::direct(tcp))
            }
        }
    }

    async fn bounded<T>(
        &self,
        host: &str,
        port: u16,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                code::CONNECT_TIMEOUT,
                format!(
                    "connecting to {} took longer than {:?}",
                    display(host, port),
                    self.connect_timeout
                ),
            )),
        }
    }
}

/// `host:port`, with brackets around an IPv6 literal.
pub(crate) fn display(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
