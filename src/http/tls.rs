//! [`TlsListener`]: TLS terminated in-process on a tunnel's connections
//! (`tls` passthrough tunnels, and `http` tunnels with `upstream_tls`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::error::Result;
use crate::stream::RstreamStream;
use crate::tunnel::Tunnel;

/// Default [`TlsListener::handshake_timeout`]: 10 s to complete a TLS
/// handshake.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`TlsListener::max_handshakes`]: 64 handshakes in progress at
/// once.
pub const DEFAULT_MAX_HANDSHAKES: usize = 64;

/// A [`Tunnel`] whose connections are TLS, terminated here with your own
/// certificate: a `tls` (passthrough) tunnel, or an `http` tunnel with
/// `upstream_tls`. It yields `TlsStream<RstreamStream>`s, like
/// [tls-listener](https://docs.rs/tls-listener)'s `TlsListener` over a
/// TCP listener.
///
/// Serve it like a tunnel: [`http::serve(tls_listener, svc)`](super::serve)
/// or, with the `axum` feature, `axum::serve(tls_listener, router)`. ALPN
/// chooses the protocol: put `h2` and `http/1.1` in the `ServerConfig`'s
/// `alpn_protocols` and each connection speaks what its client negotiated.
///
/// ```no_run
/// # async fn run(client: rstream::Client, config: rustls::ServerConfig, app: axum::Router) -> rstream::Result<()> {
/// use rstream::http::TlsListener;
/// use rstream::TunnelOptions;
///
/// let mut config = config; // your certificate and key
/// config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
/// let control = client.connect().await?;
/// let tunnel = control.create_tunnel(TunnelOptions::tls()).await?;
/// rstream::http::serve(TlsListener::new(tunnel, config), app).await
/// # }
/// ```
///
/// # Handshakes
///
/// Handshakes run concurrently, each in its own task, so a slow or silent
/// client never holds up the others. They are bounded: at most
/// [`max_handshakes`](Self::max_handshakes) at once (beyond that, new
/// connections wait in the tunnel's accept backlog) and each within
/// [`handshake_timeout`](Self::handshake_timeout). A handshake that fails
/// or times out is logged at `debug` (inside the stream's span) and its
/// connection closed; [`accept`](Self::accept) goes on with the next one.
pub struct TlsListener {
    tunnel: Tunnel,
    acceptor: TlsAcceptor,
    handshakes: JoinSet<Option<TlsStream<RstreamStream>>>,
    max_handshakes: usize,
    handshake_timeout: Duration,
}

impl fmt::Debug for TlsListener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsListener")
            .field("tunnel", &self.tunnel)
            .field("handshakes", &self.handshakes.len())
            .field("max_handshakes", &self.max_handshakes)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl TlsListener {
    /// Terminates TLS on `tunnel`'s connections with `config` (an
    /// `Arc<ServerConfig>` or a `ServerConfig`).
    pub fn new(tunnel: Tunnel, config: impl Into<Arc<ServerConfig>>) -> Self {
        TlsListener {
            tunnel,
            acceptor: TlsAcceptor::from(config.into()),
            handshakes: JoinSet::new(),
            max_handshakes: DEFAULT_MAX_HANDSHAKES,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// At most `max` handshakes in progress at once (at least 1). Default
    /// [`DEFAULT_MAX_HANDSHAKES`] (64).
    pub fn max_handshakes(mut self, max: usize) -> Self {
        self.max_handshakes = max.max(1);
        self
    }

    /// Time a client has to complete its TLS handshake. Default
    /// [`DEFAULT_HANDSHAKE_TIMEOUT`] (10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout.min(super::conn::MAX_BOUND);
        self
    }

    /// The tunnel (its id, address, counters, [`closed`](Tunnel::closed)…).
    pub fn tunnel(&self) -> &Tunnel {
        &self.tunnel
    }

    /// The next connection whose TLS handshake succeeded. Its
    /// [`StreamInfo`](crate::StreamInfo) is `tls.get_ref().0.info()`; the
    /// negotiated ALPN protocol `tls.get_ref().1.alpn_protocol()`.
    ///
    /// # Errors
    ///
    /// Only when the tunnel is closed for good (the reason); failed
    /// handshakes are skipped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: connections and handshakes in progress are kept for the
    /// next call.
    pub async fn accept(&mut self) -> Result<TlsStream<RstreamStream>> {
        loop {
            tokio::select! {
                // Finished handshakes first: they are connections a client
                // is waiting on.
                biased;
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    match done {
                        Ok(Some(tls)) => return Ok(tls),
                        // Logged by the handshake task.
                        Ok(None) => {}
                        Err(e) => tracing::debug!(error = %e, "TLS handshake task failed"),
                    }
                }
                accepted = self.tunnel.accept(), if self.handshakes.len() < self.max_handshakes => {
                    let stream = accepted?;
                    let acceptor = self.acceptor.clone();
                    let timeout = self.handshake_timeout;
                    let in_spans = stream.in_spans();
                    self.handshakes.spawn(in_spans(handshake(acceptor, stream, timeout)));
                }
            }
        }
    }

    /// Closes the tunnel (see [`Tunnel::close`]).
    pub async fn close(&self) -> Result<()> {
        self.tunnel.close().await
    }
}

/// One server handshake, bounded in time; `None` (logged) when it fails.
async fn handshake(
    acceptor: TlsAcceptor,
    stream: RstreamStream,
    timeout: Duration,
) -> Option<TlsStream<RstreamStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed; connection closed");
            None
        }
        Err(_) => {
            tracing::debug!(?timeout, "TLS handshake timed out; connection closed");
            None
        }
    }
}

/// `axum::serve(tls_listener, router)`: HTTPS on the tunnel's connections,
/// HTTP/1.1 or h2 as ALPN chose.
///
/// As for [`Tunnel`], `Listener::accept` cannot fail: once the tunnel is
/// closed for good this logs the reason and waits forever; pass
/// `tls_listener.tunnel().closed()` to `with_graceful_shutdown` to return
/// instead. `ConnectInfo<TunnelAddr>` works the same.
#[cfg(feature = "axum")]
impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<RstreamStream>;
    type Addr = crate::tunnel::TunnelAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match TlsListener::accept(self).await {
            Ok(tls) => {
                let addr = crate::tunnel::TunnelAddr::of(tls.get_ref().0);
                (tls, addr)
            }
            Err(e) => {
                tracing::error!(
                    tunnel = %self.tunnel.id(),
                    code = e.code(),
                    error = %e,
                    "tunnel closed; accepting nothing more (use Tunnel::closed() for graceful shutdown)"
                );
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        axum::serve::Listener::local_addr(&self.tunnel)
    }
}

#[cfg(feature = "axum")]
impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for crate::tunnel::TunnelAddr
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        stream.remote_addr().clone()
    }
}
