//! The HTTP/3 downstream of an HTTP/3-upstream tunnel (DATAGRAM_QUIC.md
//! §3: its clients may use HTTP/1.1, h2 or h3): a QUIC endpoint on UDP
//! `127.0.0.1:PORT`, the same port as the tunnel's HTTPS endpoint, with
//! the engine certificate (and the tunnel's client-certificate
//! verification, if any), ALPN `h3` only and TLS 1.3 (QUIC's). Each
//! request is forwarded by the same code as an HTTP/1.1 or h2 one
//! ([`Link::answer`]).
//!
//! Each QUIC connection: `trusted_ips` (others are refused before their
//! handshake), one `max_published_connections` permit for its lifetime,
//! its handshake within [`HANDSHAKE_TIMEOUT`], at most
//! [`MAX_REQUESTS_PER_CONNECTION`] requests at once, request heads of at
//! most [`MAX_HEAD`] bytes within [`HEAD_TIMEOUT`], and its own HTTP/3
//! connection to the application, as a TCP downstream has. The endpoint
//! closes with the tunnel, and its UDP port is free at once
//! ([`release_port`]).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::Request;

use super::{H3Upstream, Link};
use crate::engine::api::http3::{ALPN, MAX_REQUESTS_PER_CONNECTION, PEER_UNI_STREAMS};
use crate::engine::edge::{HEAD_TIMEOUT, MAX_HEAD};
use crate::engine::quic::{release_port, server_config};
use crate::engine::state::{allowed, TrustedIps};
use crate::engine::Inner;
use crate::http3::{RequestBody, ServeOptions};
use crate::transport::quic::ConnInfo;

/// Bound on a downstream QUIC handshake (as on the TCP endpoint's TLS).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// HTTP/3's `H3_NO_ERROR`: the endpoint's close code when the tunnel goes.
const H3_NO_ERROR: u32 = 0x100;

/// What every downstream connection of one tunnel's endpoint shares.
pub(crate) struct Downstream {
    pub(crate) inner: Arc<Inner>,
    pub(crate) tunnel_id: String,
    pub(crate) upstream: H3Upstream,
    pub(crate) token_auth: bool,
    pub(crate) trusted: TrustedIps,
}

/// The QUIC endpoint on `socket` (bound by the caller, which maps a port
/// in use to its answer), serving `tls` with ALPN `h3`.
pub(crate) fn endpoint(
    tls: &rustls::ServerConfig,
    socket: std::net::UdpSocket,
) -> crate::error::Result<quinn::Endpoint> {
    let server = server_config(tls, vec![ALPN.to_vec()], MAX_REQUESTS_PER_CONNECTION)?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(|e| crate::error::Error::io("published HTTP/3 endpoint", e))
}

/// Closes the endpoint and frees its port when the endpoint's task ends
/// (the tunnel closed: the task is aborted, which drops this).
struct Closing(quinn::Endpoint);

impl Drop for Closing {
    fn drop(&mut self) {
        self.0.close(H3_NO_ERROR.into(), b"tunnel closed");
        // Moving the socket registers a new one with tokio's reactor,
        // which needs a runtime: outside one (a runtime being torn down
        // without context), the port is freed when quinn's driver ends.
        if tokio::runtime::Handle::try_current().is_ok() {
            release_port(&self.0);
        }
    }
}

/// Accepts downstream QUIC connections until the endpoint closes.
pub(crate) async fn run(shared: Downstream, endpoint: quinn::Endpoint) {
    let shared = Arc::new(shared);
    let endpoint = Closing(endpoint);
    while let Some(incoming) = endpoint.0.accept().await {
        let peer = incoming.remote_address();
        let ip = peer.ip().to_canonical();
        if !allowed(&shared.trusted, ip) {
            tracing::debug!(tunnel_id = shared.tunnel_id, %peer, "HTTP/3 downstream refused by trusted_ips");
            incoming.refuse();
            continue;
        }
        // Beyond `max_published_connections` (all endpoints together):
        // refused, the owner never hears of it.
        let Some(permit) = shared.inner.published_connections.admit(peer) else {
            incoming.refuse();
            continue;
        };
        let task = connection(shared.clone(), incoming, peer, ip);
        shared.inner.tasks.spawn(async move {
            task.await;
            drop(permit);
        });
    }
}

/// One downstream QUIC connection: its handshake, then its requests.
async fn connection(
    shared: Arc<Downstream>,
    incoming: quinn::Incoming,
    peer: SocketAddr,
    ip: IpAddr,
) {
    let tunnel_id = &shared.tunnel_id;
    let conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, incoming).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(tunnel_id, %peer, error = %e, "HTTP/3 downstream handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(tunnel_id, %peer, "HTTP/3 downstream handshake timed out");
            return;
        }
    };
    // The server offers `h3` only; a client that offered no ALPN at all
    // may still have completed a handshake.
    if ConnInfo::alpn_of(&conn).as_deref() != Some(ALPN) {
        conn.close(H3_NO_ERROR.into(), b"ALPN h3 required");
        return;
    }
    // HTTP/3's control and QPACK streams (the transport parameters,
    // shared with the engine port, allow none).
    conn.set_max_concurrent_uni_streams(PEER_UNI_STREAMS.into());
    let link = Arc::new(Link::new(
        shared.inner.clone(),
        tunnel_id.clone(),
        ip,
        shared.upstream.clone(),
    ));
    let token_auth = shared.token_auth;
    let service = tower::service_fn(move |req: Request<RequestBody>| {
        let link = link.clone();
        async move { Ok::<_, Infallible>(link.answer(req, token_auth).await) }
    });
    let options = ServeOptions::new()
        .max_concurrent_requests(MAX_REQUESTS_PER_CONNECTION as usize)
        .max_header_size(MAX_HEAD as u64)
        .header_read_timeout(HEAD_TIMEOUT);
    if let Err(e) = crate::http3::serve_connection_with(conn, service, options).await {
        tracing::debug!(tunnel_id, %peer, error = %e, "HTTP/3 downstream connection ended");
    }
}
