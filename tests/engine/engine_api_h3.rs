//! The Engine API over HTTP/3 (feature `http3`): this crate's API client in
//! `quic` / `auto` transport mode against the local engine's UDP port
//! (ALPN `h3`), and the auto fallback to h2/http1.1 over TCP.
#![cfg(feature = "http3")]

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rstream::api::{ApiError, EventType, ListTunnelsParams, Watch, WatchParams};
use rstream::engine::LocalEngine;
use rstream::{Client, ErrorKind, Transport, TunnelOptions};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use crate::support::{self, within};

const TOKEN: &str = "h3-token";

async fn engine() -> LocalEngine {
    support::init_tracing();
    LocalEngine::builder()
        .token(TOKEN)
        .start()
        .await
        .expect("engine")
}

fn client(engine: &LocalEngine, transport: Transport, token: &str) -> Client {
    support::options(engine)
        .token(token)
        .transport(transport)
        .build()
        .expect("client")
}

async fn next(watch: &mut Watch) -> rstream::api::Event {
    within("next watch event", watch.next())
        .await
        .expect("watch ended")
        .expect("watch event")
}

/// `Transport::Quic`: the list and the SSE watch go over HTTP/3 (the
/// engine counts the requests it served over h3); `Transport::Tls` never
/// uses it.
#[tokio::test]
async fn list_and_sse_watch_over_h3() {
    let engine = engine().await;
    let c = client(&engine, Transport::Quic, TOKEN);
    let control = within("connect", c.connect()).await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::new().name("over-h3"))
        .await
        .unwrap();
    let api = c.api();

    let before = engine.api_http3_requests();
    let page = within("list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    assert!(
        page.iter().any(|t| t.id == tunnel.id()),
        "the tunnel is listed: {page:?}"
    );
    assert_eq!(
        engine.api_http3_requests(),
        before + 1,
        "the list went over h3"
    );

    let mut watch = api.watch(WatchParams::new());
    let initial = next(&mut watch).await;
    assert_eq!(initial.event_type, EventType::StateInitial);
    assert_eq!(initial.initial().unwrap().tunnels.len(), 1);
    assert_eq!(
        engine.api_http3_requests(),
        before + 2,
        "the watch went over h3"
    );
    // Events stream on the open HTTP/3 response.
    let second = control
        .create_tunnel(TunnelOptions::new().name("watched"))
        .await
        .unwrap();
    let e = next(&mut watch).await;
    assert_eq!(e.event_type, EventType::TunnelCreated);
    assert_eq!(e.tunnel().unwrap().id, second.id());
    drop(watch);

    // TLS transport: h2/http1.1 over TCP only.
    let tls = client(&engine, Transport::Tls, TOKEN).api();
    let counted = engine.api_http3_requests();
    let page = within("list over TLS", tls.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    assert_eq!(page.len(), 2);
    assert_eq!(engine.api_http3_requests(), counted, "TLS mode used h3");
}

/// A wrong token is refused over HTTP/3 with the same error as over TLS.
#[tokio::test]
async fn wrong_token_is_the_same_error_over_h3() {
    let engine = engine().await;
    let mut errors = Vec::new();
    for transport in [Transport::Quic, Transport::Tls] {
        let api = client(&engine, transport, "wrong").api();
        let e = within("list", api.list_tunnels(ListTunnelsParams::new()))
            .await
            .unwrap_err();
        let status = ApiError::from_error(&e).map(|a| a.status().as_u16());
        errors.push((e.kind(), e.code().to_owned(), status));
        let e = within("watch", api.watch(WatchParams::new()).next())
            .await
            .expect("one error")
            .unwrap_err();
        errors.push((e.kind(), e.code().to_owned(), None));
    }
    assert!(engine.api_http3_requests() >= 2, "the QUIC client used h3");
    assert_eq!(errors[0..2], errors[2..4], "h3 vs TLS");
    assert_eq!(
        errors[0],
        (
            ErrorKind::Auth,
            "ERR_RSTREAM_ENGINE_API_FORBIDDEN".to_owned(),
            Some(403)
        )
    );
    assert_eq!(errors[1].1, "ERR_RSTREAM_ENGINE_API_FORBIDDEN");
}

/// `Transport::Auto` against a port whose UDP side is silent (no HTTP/3):
/// the first call falls back to TCP within the 300 ms dial bound, and
/// later calls go straight to TCP.
#[tokio::test]
async fn auto_falls_back_to_tcp_when_udp_is_silent() {
    let engine = engine().await;
    // A TCP forwarder to the engine on a port whose UDP twin is bound and
    // never answers.
    let (listener, _silent) = tcp_and_silent_udp().await;
    let port = listener.local_addr().unwrap().port();
    forward(listener, engine.local_addr());
    let api = Client::builder()
        .engine(format!("127.0.0.1:{port}"))
        .tls(
            rstream::TlsOptions::new()
                .add_ca_pem(engine.ca_pem().as_bytes())
                .unwrap()
                .server_name("localhost"),
        )
        .token(TOKEN)
        .transport(Transport::Auto)
        .build()
        .unwrap()
        .api();

    let started = Instant::now();
    within("first list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(300) && first < Duration::from_millis(1500),
        "the first call waited for the 300 ms HTTP/3 bound, then used TCP: {first:?}"
    );
    let started = Instant::now();
    within("second list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    let second = started.elapsed();
    assert!(
        second < Duration::from_millis(300),
        "the fallback is pinned: {second:?}"
    );
    let mut watch = api.watch(WatchParams::new());
    assert_eq!(next(&mut watch).await.event_type, EventType::StateInitial);
    assert_eq!(engine.api_http3_requests(), 0, "nothing reached h3");
}

/// `Transport::Auto` against a port whose UDP side is a QUIC server
/// without `h3` (ALPN `rstrm/1` only, a certificate the client trusts):
/// the handshake fails at once and the client falls back to TCP well
/// within the bound.
#[tokio::test]
async fn auto_falls_back_to_tcp_when_udp_has_no_h3_alpn() {
    let engine = engine().await;
    let (listener, udp) = tcp_and_silent_udp().await;
    let port = listener.local_addr().unwrap().port();
    forward(listener, engine.local_addr());
    let ca = support::pki::Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    let tls = leaf.server_config(&[b"rstrm/1"]);
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(std::sync::Arc::new(tls)).unwrap();
    let server = quinn::ServerConfig::with_crypto(std::sync::Arc::new(crypto));
    let endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server),
        udp.into_std().unwrap(),
        std::sync::Arc::new(quinn::TokioRuntime),
    )
    .unwrap();
    let accepting = endpoint.clone();
    tokio::spawn(async move {
        while let Some(incoming) = accepting.accept().await {
            // Fails: no ALPN in common.
            tokio::spawn(async move {
                let _ = incoming.await;
            });
        }
    });
    let api = Client::builder()
        .engine(format!("127.0.0.1:{port}"))
        .tls(
            rstream::TlsOptions::new()
                .add_ca_pem(engine.ca_pem().as_bytes())
                .unwrap()
                .add_ca_pem(ca.pem().as_bytes())
                .unwrap()
                .server_name("localhost"),
        )
        .token(TOKEN)
        .transport(Transport::Auto)
        .build()
        .unwrap()
        .api();
    let started = Instant::now();
    within("list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    let first = started.elapsed();
    assert!(
        first < Duration::from_millis(300),
        "a refused ALPN is a handshake failure, no need to wait: {first:?}"
    );
    within("list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    assert_eq!(engine.api_http3_requests(), 0);
}

/// An HTTP/3 connection that sends no authorized request is closed at the
/// engine port's admission deadline, as a TLS connection is.
#[tokio::test]
async fn an_idle_unauthenticated_h3_connection_meets_the_admission_deadline() {
    support::init_tracing();
    let deadline = Duration::from_millis(600);
    let engine = LocalEngine::builder()
        .token(TOKEN)
        .admission_timeout(deadline)
        .start()
        .await
        .unwrap();
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let tls = support::tls_config(engine.ca_pem(), &[b"h3"]);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(std::sync::Arc::new(crypto));
    let started = Instant::now();
    let conn = within(
        "h3 handshake",
        endpoint
            .connect_with(config, engine.local_addr(), "localhost")
            .unwrap(),
    )
    .await
    .expect("the engine accepts ALPN h3");
    let reason = within("closed by the engine", conn.closed()).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(reason, quinn::ConnectionError::ApplicationClosed(_)),
        "{reason:?}"
    );
    assert!(
        elapsed >= deadline - Duration::from_millis(50) && elapsed < deadline * 5,
        "closed at the admission deadline: {elapsed:?}"
    );
}

/// `Transport::Auto` against the local engine (which serves `h3`): HTTP/3.
#[tokio::test]
async fn auto_uses_h3_when_the_engine_serves_it() {
    let engine = engine().await;
    let api = client(&engine, Transport::Auto, TOKEN).api();
    within("list", api.list_tunnels(ListTunnelsParams::new()))
        .await
        .unwrap();
    assert_eq!(engine.api_http3_requests(), 1);
}

/// A TCP listener on loopback and a UDP socket bound to the same port.
async fn tcp_and_silent_udp() -> (TcpListener, UdpSocket) {
    for _ in 0..100 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        if let Ok(udp) = UdpSocket::bind(("127.0.0.1", port)).await {
            return (listener, udp);
        }
    }
    panic!("no loopback port free on both TCP and UDP");
}

/// Relays every TCP connection `listener` accepts to `target`.
fn forward(listener: TcpListener, target: std::net::SocketAddr) {
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Ok(mut outbound) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
}
