//! The engine port over UDP (feature `quic`): a QUIC server on the same port
//! as the TLS listener, with the same certificate and client-certificate
//! verification, ALPN `rstrm/1` (and `h3` with feature `http3`: the Engine
//! API, [`api::http3`](super::api::http3)); any other fails the handshake. Each
//! client-opened bidirectional stream is handled exactly like an accepted
//! TLS connection: it enters the engine port's admission and its first frame
//! decides its kind (control channel, dial, proxy connection).
//!
//! Bounds: at most `max_connections` QUIC connections at once (more are
//! refused), each handshake within [`HANDSHAKE_TIMEOUT`], at most
//! [`MAX_STREAMS_PER_CONNECTION`] concurrent streams per connection (QUIC
//! flow control: a client cannot open more), each stream under the
//! admission's deadline and caps, and a connection with no open stream for
//! the admission timeout is closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use super::admission::Admitted;
use super::conn::ServerTls;
use super::{listener, Inner};
use crate::error::{Error, Result};
use crate::transport::quic::{transport_config, ConnInfo, QuicStream};

/// Concurrent client-opened bidirectional streams per QUIC connection. A
/// client's dials and the proxy connections its tunnels answer share one
/// connection, and a dial waits for its owner's proxy stream: the cap must
/// be well above a burst of dials to one's own tunnel (300 in the tests),
/// or they would wait on each other until the connect timeout. Each stream
/// is under the engine port's admission and caps besides.
pub(crate) const MAX_STREAMS_PER_CONNECTION: u32 = 1024;
/// Bytes a client may send ahead on one stream before the engine reads them.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// … and on all the streams of a connection together: what one connection
/// can make the engine buffer.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;
/// Bound on a QUIC handshake (as on the TLS listener).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// QUIC handshakes in progress at once (quinn's `max_incoming`).
const MAX_INCOMING: usize = 1024;
/// How often a connection checks whether it has had no stream for too long.
const IDLE_CHECK: Duration = Duration::from_millis(500);

/// The UDP endpoint on `addr`, serving `tls` (the engine port's TLS
/// configuration) with ALPN `rstrm/1` (and `h3`).
pub(crate) fn endpoint(tls: &rustls::ServerConfig, addr: SocketAddr) -> Result<quinn::Endpoint> {
    let alpn = vec![
        crate::proto::ALPN.to_vec(),
        #[cfg(feature = "http3")]
        super::api::http3::ALPN.to_vec(),
    ];
    let server = server_config(tls, alpn, MAX_STREAMS_PER_CONNECTION)?;
    quinn::Endpoint::server(server, addr)
        .map_err(|e| Error::io(format!("local engine: binding UDP {addr}"), e))
}

/// A QUIC server configuration from `tls` (the certificate and client
/// verification of a TLS listener) offering `alpn` only, with the
/// engine's transport parameters and at most `peer_streams` concurrent
/// bidirectional streams per connection: the engine port's, and that of
/// the HTTP/3 downstream of published HTTP/3-upstream tunnels.
pub(crate) fn server_config(
    tls: &rustls::ServerConfig,
    alpn: Vec<Vec<u8>>,
    peer_streams: u32,
) -> Result<quinn::ServerConfig> {
    let mut config = tls.clone();
    config.alpn_protocols = alpn;
    // QUIC takes 0 or u32::MAX here; no 0-RTT (as the Go SDK).
    config.max_early_data_size = 0;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(Arc::new(config))
        .map_err(|e| Error::tls("local engine QUIC configuration", e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(transport_config(
        peer_streams,
        STREAM_WINDOW,
        CONNECTION_WINDOW,
    ));
    server.max_incoming(MAX_INCOMING);
    Ok(server)
}

/// Frees the UDP port of a closed `endpoint` whose connections may not
/// all have drained: quinn keeps the socket until the last one is gone,
/// and a connection a client abandoned mid-handshake (the auto transport's
/// race does) drains for 3 backed-off PTOs, up to the idle timeout (30 s):
/// an engine restarted on the same port could not bind it. The endpoint
/// moves to a throwaway loopback socket, twice: quinn keeps the socket it
/// left as a fallback (until a packet arrives on the new one), the second
/// move drops it. The connections still draining follow the move. Best
/// effort: on an error the socket stays until they have drained.
pub(crate) fn release_port(endpoint: &quinn::Endpoint) {
    let loopback: std::net::IpAddr = match endpoint.local_addr() {
        Ok(addr) if addr.is_ipv6() => std::net::Ipv6Addr::LOCALHOST.into(),
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    };
    for _ in 0..2 {
        let moved = std::net::UdpSocket::bind((loopback, 0)).and_then(|s| endpoint.rebind(s));
        if moved.is_err() {
            return;
        }
    }
}

/// Accepts QUIC connections until the endpoint closes, at most
/// `max_connections` at once.
pub(crate) async fn run(inner: Arc<Inner>, endpoint: quinn::Endpoint, max_connections: usize) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    while let Some(incoming) = endpoint.accept().await {
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(peer = %incoming.remote_address(), "QUIC connection refused: max_connections");
            incoming.refuse();
            continue;
        };
        let task = {
            let inner = inner.clone();
            async move {
                connection(inner, incoming).await;
                drop(slot);
            }
        };
        inner.tasks.spawn(task);
    }
}

/// One QUIC connection: handshake, then each stream it opens.
async fn connection(inner: Arc<Inner>, incoming: quinn::Incoming) {
    let peer = incoming.remote_address();
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "QUIC handshake timed out");
            return;
        }
    };
    let info = ConnInfo::of(&conn, inner.plane_a_drops.clone());
    #[cfg(feature = "http3")]
    if info.alpn() == Some(super::api::http3::ALPN) {
        return super::api::http3::serve(inner, conn, peer).await;
    }
    // One clone per live stream task: the count says whether any is open.
    let live = Arc::new(());
    let idle_limit = inner.admissions.timeout();
    let mut idle_since = Some(Instant::now());
    let mut check = tokio::time::interval(IDLE_CHECK);
    loop {
        tokio::select! {
            accepted = conn.accept_bi() => match accepted {
                Ok(pair) => {
                    idle_since = None;
                    inner.quic_streams.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let admission = inner.admissions.enter(peer);
                    let stream = QuicStream::new(conn.clone(), info.clone(), pair);
                    let io = ServerTls::Quic(Admitted::new(stream, admission.clone()));
                    let guard = live.clone();
                    let task = listener::admitted_tunnel_connection(inner.clone(), io, peer, admission);
                    inner.tasks.spawn(async move {
                        task.await;
                        drop(guard);
                    });
                }
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "QUIC connection closed");
                    return;
                }
            },
            _ = check.tick() => {
                if Arc::strong_count(&live) > 1 {
                    idle_since = None;
                } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= idle_limit {
                    tracing::debug!(%peer, "QUIC connection without streams closed");
                    conn.close(0u32.into(), b"no stream");
                    return;
                }
            }
        }
    }
}
