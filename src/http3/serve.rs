//! [`serve`]: a tower service over HTTP/3 on a datagram tunnel (a quinn
//! endpoint on a [`TunnelUdpSocket`], each connection served by
//! [`serve_connection_with`]).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use tokio::task::JoinSet;
use tower_service::Service;

use super::server::{serve_connection_until, RequestBody, ServeOptions, H3_NO_ERROR};
use super::socket::TunnelUdpSocket;
use crate::datagram::DatagramTunnel;
use crate::error::{code, BoxError, Error, ErrorKind, Result};

/// QUIC connections one [`serve`] holds at once: 1024. More are refused
/// (quinn answers `CONNECTION_REFUSED`).
pub const MAX_CONNECTIONS: usize = 1024;
/// A QUIC handshake that takes longer is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Once the connections are closed (the tunnel closed, or the shutdown
/// signal's grace is over), they get this long to say goodbye before
/// `serve` returns.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves `service` (an axum `Router` unchanged) over HTTP/3 on a datagram
/// tunnel, with the default [`ServeOptions`], until the tunnel closes.
///
/// `tls` is the server's certificate: its ALPN list must offer `h3` (an
/// empty list becomes `h3`) and it must allow TLS 1.3 (QUIC's rule). Each
/// channel of the tunnel is a QUIC peer ([`TunnelUdpSocket`]): for a
/// published tunnel, each downstream UDP source of the engine's UDP
/// address; for a private one, each `dial_datagram`.
///
/// ```no_run
/// # async fn run(client: rstream::Client, tls: rustls::ServerConfig) -> rstream::Result<()> {
/// use rstream::TunnelOptions;
///
/// let control = client.connect().await?;
/// let tunnel = control
///     .create_datagram_tunnel(TunnelOptions::datagram().name("h3").publish())
///     .await?;
/// println!("HTTP/3 at {}", tunnel.forwarding_address());
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello over h3" }));
/// rstream::http3::serve(tunnel, tls, app).await
/// # }
/// ```
///
/// # Errors
///
/// `ERR_RSTREAM_INVALID_CONFIG` when `tls` offers ALPNs but not `h3`;
/// `ERR_RSTREAM_TLS` when quinn refuses `tls` (no TLS 1.3); the tunnel's
/// close reason when it ends with anything but a close (kind `Closed`).
pub async fn serve<S, B>(
    tunnel: DatagramTunnel,
    tls: rustls::ServerConfig,
    service: S,
) -> Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    serve_with(
        tunnel,
        tls,
        service,
        ServeOptions::default(),
        std::future::pending(),
    )
    .await
}

/// [`serve`] with options and a shutdown signal. When `shutdown`
/// resolves, the shutdown is graceful: new connections are refused,
/// each connection gets an HTTP/3 GOAWAY (requests already accepted are
/// served; later ones are refused with `H3_REQUEST_REJECTED`, which a
/// client may retry elsewhere) and is closed (`H3_NO_ERROR`) once its
/// requests in flight have ended. Connections still busy after
/// [`ServeOptions::shutdown_grace`] are closed, their requests dropped.
/// Then `serve_with` returns `Ok(())`, within the grace plus 4 s.
///
/// When the tunnel closes instead, nothing can reach the clients any
/// more: every connection is dropped at once.
pub async fn serve_with<S, B, F>(
    tunnel: DatagramTunnel,
    tls: rustls::ServerConfig,
    service: S,
    options: ServeOptions,
    shutdown: F,
) -> Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
    F: Future<Output = ()> + Send,
{
    let server = server_config(tls, &options)?;
    let socket = TunnelUdpSocket::from_tunnel(tunnel);
    let endpoint = socket.endpoint(Some(server))?;
    let mut closed = std::pin::pin!(socket.closed());
    let mut shutdown = std::pin::pin!(shutdown);
    // `true` once the shutdown signal came: each connection drains.
    let (stop, stopping) = tokio::sync::watch::channel(false);
    let mut connections = JoinSet::new();
    let reason = loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                // `None`: the endpoint was closed.
                let Some(incoming) = incoming else { break None };
                while connections.try_join_next().is_some() {}
                if connections.len() >= MAX_CONNECTIONS {
                    tracing::debug!("HTTP/3 server full: connection refused");
                    incoming.refuse();
                    continue;
                }
                let (service, options) = (service.clone(), options.clone());
                let mut stopping = stopping.clone();
                connections.spawn(async move {
                    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
                        Ok(Ok(conn)) => conn,
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "QUIC handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("QUIC handshake timed out");
                            return;
                        }
                    };
                    // The sender lives as long as `serve_with`: an error
                    // (it is gone) is a stop too.
                    let stop = async move {
                        let _ = stopping.wait_for(|stop| *stop).await;
                    };
                    if let Err(e) = serve_connection_until(conn, service, options, stop).await {
                        tracing::debug!(code = e.code(), error = %e, "HTTP/3 connection failed");
                    }
                });
            }
            reason = &mut closed => break Some(reason),
            () = &mut shutdown => {
                // Each connection sends GOAWAY and drains; new ones are
                // refused (quinn answers `CONNECTION_REFUSED`).
                let _ = stop.send(true);
                let grace = tokio::time::sleep(options.shutdown_grace);
                let mut grace = std::pin::pin!(grace);
                break loop {
                    tokio::select! {
                        incoming = endpoint.accept() => match incoming {
                            Some(incoming) => incoming.refuse(),
                            None => break None,
                        },
                        done = connections.join_next() => if done.is_none() {
                            break None;
                        },
                        () = &mut grace => {
                            tracing::debug!(
                                busy = connections.len(),
                                "HTTP/3 shutdown grace over: closing the connections still busy"
                            );
                            break None;
                        }
                        reason = &mut closed => break Some(reason),
                    }
                };
            }
        }
    };
    endpoint.close(H3_NO_ERROR.into(), b"");
    let drain = async { while connections.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    connections.abort_all();
    let _ = tokio::time::timeout(CLOSE_GRACE, endpoint.wait_idle()).await;
    match reason {
        Some(reason) if reason.kind() != ErrorKind::Closed => Err(reason),
        _ => Ok(()),
    }
}

/// quinn's server configuration from the app's TLS one: ALPN `h3`, and
/// QUIC streams enough for `options.max_concurrent_requests`.
fn server_config(
    mut tls: rustls::ServerConfig,
    options: &ServeOptions,
) -> Result<quinn::ServerConfig> {
    if tls.alpn_protocols.is_empty() {
        tls.alpn_protocols = vec![b"h3".to_vec()];
    } else if !tls.alpn_protocols.iter().any(|p| p == b"h3") {
        return Err(Error::config(
            code::INVALID_CONFIG,
            "an HTTP/3 server's TLS configuration must offer ALPN h3",
        ));
    }
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(tls))
        .map_err(|e| Error::tls("an HTTP/3 server's TLS configuration", e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    let streams = u32::try_from(options.max_concurrent_requests).unwrap_or(u32::MAX);
    transport.max_concurrent_bidi_streams(streams.into());
    server.transport_config(Arc::new(transport));
    Ok(server)
}
