//! `axum::serve(tunnel, router)`: [`Tunnel`] as an `axum::serve::Listener`.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;

use super::Tunnel;
use crate::stream::RstreamStream;

/// The "remote address" of a tunnel connection, as `axum::serve` sees it:
/// the downstream client's IP (when the engine sent it), the tunnel id and
/// the stream id.
///
/// Use it with `Router::into_make_service_with_connect_info::<TunnelAddr>()`
/// and the `ConnectInfo<TunnelAddr>` extractor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelAddr {
    tunnel_id: Arc<str>,
    stream_id: Option<Arc<str>>,
    source_ip: Option<IpAddr>,
}

impl TunnelAddr {
    /// The downstream client's IP address, when known.
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.source_ip
    }

    /// The tunnel id.
    pub fn tunnel_id(&self) -> &str {
        &self.tunnel_id
    }

    /// The engine's stream id, when known.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    pub(crate) fn of(stream: &RstreamStream) -> Self {
        Self::from_info(stream.info())
    }

    pub(crate) fn from_info(info: &crate::StreamInfo) -> Self {
        TunnelAddr {
            tunnel_id: Arc::from(info.tunnel()),
            stream_id: info.stream_id().map(Arc::from),
            source_ip: info.source_ip(),
        }
    }
}

impl std::fmt::Display for TunnelAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.source_ip {
            Some(ip) => write!(f, "{ip} via tunnel {}", self.tunnel_id),
            None => write!(f, "tunnel {}", self.tunnel_id),
        }
    }
}

/// `axum::serve(tunnel, router)` serves every downstream connection of the
/// tunnel in-process, with no loopback socket.
///
/// While the control channel reconnects, `accept` simply waits: `serve`
/// keeps running and picks up connections again once the tunnel is
/// re-created (see [`Tunnel`]'s docs on reconnects).
///
/// `Listener::accept` cannot fail, so when the tunnel closes for good this
/// logs the reason once at `error` level and then waits forever without
/// spinning. Pass [`Tunnel::closed`] to `with_graceful_shutdown` to make
/// `axum::serve` return instead:
///
/// ```no_run
/// # async fn run(tunnel: rstream::Tunnel, app: axum::Router) -> std::io::Result<()> {
/// let closed = tunnel.closed();
/// axum::serve(tunnel, app)
///     .with_graceful_shutdown(async move { let _ = closed.await; })
///     .await
/// # }
/// ```
impl axum::serve::Listener for Tunnel {
    type Io = RstreamStream;
    type Addr = TunnelAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match Tunnel::accept(self).await {
            Ok(stream) => {
                let addr = TunnelAddr::of(&stream);
                (stream, addr)
            }
            Err(e) => {
                tracing::error!(
                    tunnel = %self.shared.current().id,
                    code = e.code(),
                    error = %e,
                    "tunnel closed; accepting nothing more (use Tunnel::closed() for graceful shutdown)"
                );
                std::future::pending().await
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(TunnelAddr {
            tunnel_id: self.shared.current().id.clone(),
            stream_id: None,
            source_ip: None,
        })
    }
}

impl Connected<IncomingStream<'_, Tunnel>> for TunnelAddr {
    fn connect_info(stream: IncomingStream<'_, Tunnel>) -> Self {
        stream.remote_addr().clone()
    }
}
