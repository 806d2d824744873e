//! Opening TLS connections to the engine.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::{server_name, Endpoint, HttpProxy, ProxiedStream, ReadBuffered};
use crate::error::{code, Error, ErrorKind, Result};

/// A TLS connection to the engine (over TCP, or a proxy's tunnel, with
/// adaptive read batching, see [`ReadBuffered`]).
pub type EngineStream = tokio_rustls::client::TlsStream<ReadBuffered<ProxiedStream>>;

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
        self.connect_to(endpoint.host(), endpoint.port(), sni).await
    }

    /// [`connect`](Self::connect) to any `host` (IPv6 literals included:
    /// webhook receivers and control-plane URLs may use them).
    pub(crate) async fn connect_to(
        &self,
        host: &str,
        port: u16,
        sni: &str,
    ) -> Result<EngineStream> {
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
fn display(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
