//! [`HttpsConnector`]: the crate's one HTTP-over-TLS client connector.
//!
//! Every HTTP client the crate runs — the Engine API client (and its
//! WebSocket watches), the control-plane client (managed resolution) and
//! the local engine's webhook delivery — opens its connections here, over
//! the same [`TlsDialer`]: one place for the proxy (HTTP CONNECT, HTTPS or SOCKS5), the
//! connect timeout and the TLS settings ([`TlsOptions`](super::TlsOptions):
//! extra CAs, the loudly named insecure flag, the client identity). The
//! ALPN protocol the server picked is reported to hyper-util through
//! [`Connected::negotiated_h2`], so a pooled client speaks h2 exactly when
//! the server agreed to.
//!
//! Plain `http://` is refused unless the caller allows it: the
//! control-plane client allows it for loopback hosts only (a local control
//! plane or a test), so a token never crosses a network in clear text; the
//! local engine's webhooks allow it for any host, as they always have.
//! Redirects are never followed (hyper-util's legacy client does not), and
//! each caller bounds its own response bodies.

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{HttpProxy, ProxiedStream, TlsDialer, TlsEngineStream};
use crate::error::{code, Error, Result};

/// The `User-Agent` of every request this SDK makes over this stack
/// (Engine API, control plane).
pub(crate) const USER_AGENT: &str = concat!("rstream-rust-runtime/", env!("CARGO_PKG_VERSION"));

/// Whether an [`HttpsConnector`] opens `http://` (clear-text) connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PlainHttp {
    /// `https://` only (the Engine API).
    Refused,
    /// `http://` to `localhost` and loopback addresses only (the control plane).
    Loopback,
    /// `http://` to any host (the local engine's webhook receivers).
    #[cfg_attr(not(feature = "local-engine"), allow(dead_code))]
    Allowed,
}

/// A `tower::Service<Uri>` for `hyper_util::client::legacy::Client`: TCP
/// (through the proxy unless `NO_PROXY` bypasses the host), then TLS with
/// one shared `rustls::ClientConfig` (so sessions resume), all under the
/// connect timeout.
///
/// The TLS server name is the URI's host, unless a
/// [`server_name`](Self::server_name) was registered for its authority
/// (the engine's server-name override).
#[derive(Clone)]
pub(crate) struct HttpsConnector {
    dialer: TlsDialer,
    plain: PlainHttp,
    /// `(authority, TLS server name)` overrides, `authority` as `host:port`.
    names: Arc<Mutex<Vec<(String, String)>>>,
}

impl std::fmt::Debug for HttpsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsConnector")
            .field("dialer", &self.dialer)
            .field("plain", &self.plain)
            .finish_non_exhaustive()
    }
}

impl HttpsConnector {
    /// A connector over `tls` (whose ALPN list is what is offered);
    /// `connect_timeout` bounds TCP connect, proxy handshake and TLS
    /// handshake together. `https://` only, no proxy.
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Self {
        HttpsConnector {
            dialer: TlsDialer::new(tls, connect_timeout),
            plain: PlainHttp::Refused,
            names: Arc::default(),
        }
    }

    /// Sends connections through this proxy (HTTP CONNECT, HTTPS or SOCKS5) (if any).
    pub(crate) fn proxy(mut self, proxy: Option<HttpProxy>) -> Self {
        self.dialer = self.dialer.with_proxy(proxy);
        self
    }

    /// Which `http://` URIs are served (default: none).
    pub(crate) fn plain_http(mut self, plain: PlainHttp) -> Self {
        self.plain = plain;
        self
    }

    /// Presents `sni` as the TLS server name for `authority` (`host:port`).
    pub(crate) fn server_name(&self, authority: &str, sni: &str) {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        if !names.iter().any(|(a, s)| a == authority && s == sni) {
            names.retain(|(a, _)| a != authority);
            names.push((authority.to_owned(), sni.to_owned()));
        }
    }

    /// The server name registered for `authority`, if any.
    pub(crate) fn server_name_for(&self, authority: &str) -> Option<String> {
        let names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names
            .iter()
            .find(|(a, _)| a == authority)
            .map(|(_, sni)| sni.clone())
    }

    /// Opens a connection for `uri` (its scheme, host and port).
    pub(crate) async fn connect(&self, uri: &Uri) -> Result<HttpsStream> {
        let host = uri
            .host()
            .map(|h| h.trim_matches(['[', ']']))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| Error::config(code::INVALID_CONFIG, "URL without a host"))?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") if self.allows_plain(host) => false,
            Some("http") => {
                return Err(Error::config(
                    code::INVALID_CONFIG,
                    "clear-text http:// is not allowed here (use https://)",
                ))
            }
            _ => {
                return Err(Error::config(
                    code::INVALID_CONFIG,
                    "URL scheme must be https:// or http://",
                ))
            }
        };
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if !https {
            let tcp = self.dialer.connect_plain(host, port).await?;
            return Ok(HttpsStream::Plain(tcp));
        }
        let sni = self
            .server_name_for(&authority(host, port))
            .unwrap_or_else(|| host.to_owned());
        let tls = self.dialer.connect_to(host, port, &sni).await?;
        Ok(HttpsStream::Tls(Box::new(tls)))
    }

    fn allows_plain(&self, host: &str) -> bool {
        match self.plain {
            PlainHttp::Refused => false,
            PlainHttp::Loopback => is_loopback(host),
            PlainHttp::Allowed => true,
        }
    }
}

/// `host:port` as [`HttpsConnector::server_name`] keys it (no brackets).
pub(crate) fn authority(host: &str, port: u16) -> String {
    format!("{}:{port}", host.trim_matches(['[', ']']))
}

/// `localhost` or a loopback IP literal (brackets allowed).
pub(crate) fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl tower_service::Service<Uri> for HttpsConnector {
    type Response = TokioIo<HttpsStream>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect(&uri).await.map(TokioIo::new) })
    }
}

/// A connection opened by [`HttpsConnector`]: clear TCP or TLS.
pub(crate) enum HttpsStream {
    /// `http://` (only where the connector allows it).
    Plain(ProxiedStream),
    /// `https://`.
    Tls(Box<TlsEngineStream>),
}

impl HttpsStream {
    /// Whether the server agreed to `h2` through ALPN.
    pub(crate) fn is_h2(&self) -> bool {
        match self {
            HttpsStream::Plain(_) => false,
            HttpsStream::Tls(s) => s.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

impl Connection for HttpsStream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.is_h2() {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl AsyncRead for HttpsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            HttpsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            HttpsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            HttpsStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            HttpsStream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            HttpsStream::Plain(s) => s.is_write_vectored(),
            HttpsStream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            HttpsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            HttpsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            HttpsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The connector's own [`Error`] behind a hyper-util client error (TLS,
/// timeout, proxy… are the useful part), or `None` when the failure came
/// after the connection was made.
pub(crate) fn connect_error(e: &hyper_util::client::legacy::Error) -> Option<Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(inner) = s.downcast_ref::<Error>() {
            return Some(inner.clone());
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn connector(plain: PlainHttp) -> HttpsConnector {
        let tls = crate::transport::TlsOptions::new()
            .client_config(&[b"http/1.1"])
            .unwrap();
        HttpsConnector::new(tls, Duration::from_secs(1)).plain_http(plain)
    }

    #[test]
    fn loopback_hosts() {
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("LOCALHOST"));
        assert!(!is_loopback("example.test") && !is_loopback("10.0.0.1"));
        assert_eq!(authority("[::1]", 8080), "::1:8080");
    }

    #[tokio::test]
    async fn clear_text_only_where_allowed() {
        let refused = |c: HttpsConnector, url: &'static str| async move {
            let err = c.connect(&url.parse().unwrap()).await.err().unwrap();
            assert_eq!(err.code(), code::INVALID_CONFIG, "{url}: {err}");
        };
        refused(connector(PlainHttp::Refused), "http://127.0.0.1:1/").await;
        refused(connector(PlainHttp::Loopback), "http://example.test:1/").await;
        refused(connector(PlainHttp::Allowed), "ftp://127.0.0.1:1/").await;
        // Allowed: the attempt gets as far as the (refused) TCP connect.
        let err = connector(PlainHttp::Loopback)
            .connect(&"http://127.0.0.1:1/".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert_ne!(err.code(), code::INVALID_CONFIG, "{err}");
    }

    #[test]
    fn server_name_overrides() {
        let c = connector(PlainHttp::Refused);
        assert_eq!(c.server_name_for("a:1"), None);
        c.server_name("a:1", "engine.test");
        c.server_name("a:1", "other.test");
        assert_eq!(c.server_name_for("a:1").as_deref(), Some("other.test"));
    }
}
