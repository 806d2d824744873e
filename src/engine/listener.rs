//! The engine port: accept, TLS, then split by ALPN — `rstrm/1` (or no
//! ALPN, older clients) is the tunnel protocol, whose first frame decides
//! the connection's kind; `h2` / `http/1.1` is the Engine HTTP API.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::limits::Admitted;
use super::streams::ServerTls;
use super::{api, control, streams, Inner};
use crate::proto::{message::Payload, read_frame};
use crate::transport::ReadBuffered;

/// Bound on the TLS handshake of an incoming connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the first frame of a tunnel-protocol connection.
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until aborted. Beyond `max_connections` held at
/// once, a new connection is closed at once (dropped before its TLS
/// handshake).
pub(crate) async fn run(inner: Arc<Inner>, listener: TcpListener) {
    let acceptor = TlsAcceptor::from(inner.tls.engine.clone());
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let Some(permit) = inner.connections.admit(peer) else {
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                let tcp = Admitted::new(tcp, permit);
                let task = connection(inner.clone(), acceptor.clone(), tcp, peer);
                inner.tasks.spawn(task);
            }
            Err(e) => {
                // Per-connection failures are harmless; anything else
                // (EMFILE…) must not turn into a hot loop.
                tracing::debug!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: Admitted<TcpStream>,
    peer: SocketAddr,
) {
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(ReadBuffered::new(tcp)))
        .await
    {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
    match alpn.as_deref() {
        None => tunnel_protocol(inner, tls, peer).await,
        Some(p) if p == crate::proto::ALPN => tunnel_protocol(inner, tls, peer).await,
        Some(b"h2" | b"http/1.1") => api::serve(inner, tls, peer).await,
        Some(other) => {
            tracing::debug!(%peer, alpn = ?String::from_utf8_lossy(other), "unexpected ALPN");
        }
    }
}

async fn tunnel_protocol(inner: Arc<Inner>, mut tls: ServerTls, peer: SocketAddr) {
    let first = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, read_frame(&mut tls)).await {
        Ok(Ok(Some(msg))) => msg,
        Ok(Ok(None)) => {
            tracing::debug!(%peer, "connection closed before its first frame");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "bad first frame");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "no first frame within 10 s");
            return;
        }
    };
    match first.payload {
        Some(Payload::OpenControlChannelReq(req)) => control::serve(inner, tls, peer, req).await,
        Some(Payload::StreamReq(req)) => streams::serve_dial(&inner, tls, peer, req).await,
        Some(Payload::ProxyReq(req)) => streams::serve_proxy(&inner, tls, req).await,
        other => {
            let name = other.as_ref().map_or("empty", Payload::name);
            tracing::debug!(%peer, frame = name, "unexpected first frame");
        }
    }
}
