//! The engine port: accept, TLS, then split by ALPN — `rstrm/1` (or no
//! ALPN, older clients) is the tunnel protocol, whose first frame decides
//! the connection's kind; `h2` / `http/1.1` is the Engine HTTP API. Every
//! connection goes through the same [admission](super::admission): it is
//! closed unless it proves something within the admission deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::admission::{Admission, Admitted};
use super::streams::ServerTls;
use super::{api, control, streams, Inner};
use crate::proto::{message::Payload, read_frame};
use crate::transport::ReadBuffered;

/// Bound on the TLS handshake of an incoming connection (within the
/// admission deadline, which bounds handshake, first frame and
/// authentication together).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on the first frame of a tunnel-protocol connection (within the
/// admission deadline too).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on accepted sockets: the first probe after 60 s idle …
const KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// … then one every 10 s …
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// … and the connection is dropped after 6 unanswered probes: a peer
/// gone without a FIN or RST (power loss, NAT drop) is found within
/// 60 s + 6 × 10 s = 2 min, even on a connection that negotiated no
/// heartbeats.
const KEEPALIVE_RETRIES: u32 = 6;

/// Turns on TCP keepalive on an accepted socket ([`KEEPALIVE_IDLE`],
/// [`KEEPALIVE_INTERVAL`], [`KEEPALIVE_RETRIES`]; the interval and probe
/// count where the platform lets us set them).
pub(crate) fn set_keepalive(tcp: &TcpStream) -> std::io::Result<()> {
    let keepalive = socket2::TcpKeepalive::new().with_time(KEEPALIVE_IDLE);
    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "macos",
        target_os = "ios",
        target_os = "freebsd",
        target_os = "netbsd",
        target_os = "windows",
    ))]
    let keepalive = keepalive
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES);
    socket2::SockRef::from(tcp).set_tcp_keepalive(&keepalive)
}

/// Accepts connections until aborted. Each one enters the engine port's
/// admission as unauthenticated (evicting the oldest unauthenticated one
/// when `max_unauthenticated_connections` are waiting already).
pub(crate) async fn run(inner: Arc<Inner>, listener: TcpListener) {
    let acceptor = TlsAcceptor::from(inner.tls.engine.clone());
    loop {
        match listener.accept().await {
            Ok((tcp, peer)) => {
                let admission = inner.admissions.enter(peer);
                let _ = tcp.set_nodelay(true);
                if let Err(e) = set_keepalive(&tcp) {
                    tracing::debug!(%peer, error = %e, "TCP keepalive not set");
                }
                let tcp = Admitted::new(tcp, admission.clone());
                let task = connection(inner.clone(), acceptor.clone(), tcp, peer, admission);
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

/// Serves one connection, closed at once if it is evicted or its admission
/// deadline passes before it proved something.
async fn connection(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: Admitted<TcpStream>,
    peer: SocketAddr,
    admission: Admission,
) {
    tokio::select! {
        why = admission.lost() => {
            tracing::debug!(%peer, reason = why.as_str(), "unauthenticated connection closed");
        }
        () = serve(inner, acceptor, tcp, peer, admission.clone()) => {}
    }
}

async fn serve(
    inner: Arc<Inner>,
    acceptor: TlsAcceptor,
    tcp: Admitted<TcpStream>,
    peer: SocketAddr,
    admission: Admission,
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
    let tls = ServerTls::Tls(tls);
    match alpn.as_deref() {
        None => tunnel_protocol(inner, tls, peer, admission).await,
        Some(p) if p == crate::proto::ALPN => tunnel_protocol(inner, tls, peer, admission).await,
        Some(b"h2" | b"http/1.1") => api::serve(inner, tls, peer, admission).await,
        Some(other) => {
            tracing::debug!(%peer, alpn = ?String::from_utf8_lossy(other), "unexpected ALPN");
        }
    }
}

/// Serves one tunnel-protocol connection that already holds its admission
/// (a QUIC stream), closed at once if it is evicted or its admission
/// deadline passes before it proved something.
#[cfg(feature = "quic")]
pub(crate) async fn admitted_tunnel_connection(
    inner: Arc<Inner>,
    io: ServerTls,
    peer: SocketAddr,
    admission: Admission,
) {
    tokio::select! {
        why = admission.lost() => {
            tracing::debug!(%peer, reason = why.as_str(), "unauthenticated QUIC stream closed");
        }
        () = tunnel_protocol(inner, io, peer, admission.clone()) => {}
    }
}

/// The first frame decides: control channel, private dial, or proxy
/// connection.
async fn tunnel_protocol(
    inner: Arc<Inner>,
    mut tls: ServerTls,
    peer: SocketAddr,
    admission: Admission,
) {
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
        Some(Payload::OpenControlChannelReq(req)) => {
            control::serve(inner, tls, peer, req, admission).await;
        }
        Some(Payload::StreamReq(req)) => {
            streams::serve_dial(&inner, tls, peer, req, &admission).await;
        }
        Some(Payload::ProxyReq(req)) => streams::serve_proxy(&inner, tls, req, &admission).await,
        other => {
            let name = other.as_ref().map_or("empty", Payload::name);
            tracing::debug!(%peer, frame = name, "unexpected first frame");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keepalive_is_set_on_accepted_sockets() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (tcp, _) = accepted.unwrap();
        set_keepalive(&tcp).unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        #[cfg(target_os = "linux")]
        {
            assert_eq!(sock.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
            assert_eq!(sock.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
            assert_eq!(sock.tcp_keepalive_retries().unwrap(), KEEPALIVE_RETRIES);
        }
    }
}
