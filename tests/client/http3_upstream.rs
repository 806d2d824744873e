//! Published tunnels with an HTTP/3 upstream (feature `http3`): the app
//! serves an axum `Router` with `rstream::http3::serve` on a datagram
//! tunnel created with `TunnelOptions::http().http_version(H3)`; real
//! HTTPS clients (hyper, HTTP/1.1 and h2, trusting the engine's CA) reach
//! it at the engine's published `https://` address, and the engine
//! forwards each request over HTTP/3 through the tunnel. Real h3 clients
//! (quinn + h3) reach it too, at the same port on UDP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::http3::TunnelUdpSocket;
use rstream::{HttpVersion, Transport, TunnelOptions};
use tokio::sync::Semaphore;

use crate::support::h3::H3Client;
use crate::support::pki::Ca;
use crate::support::{authority, client_on, tls_connect, within};

/// The HTTP/3 tests' router (`/hello`, `/echo`, `/stream` gated by
/// `gate`, `/trailers`), plus `/authority`: the `:authority` the app saw,
/// and `/own-alt-svc`, which sets its own `alt-svc`.
fn app(gate: Arc<Semaphore>) -> Router {
    crate::http3::app(gate)
        .route(
            "/authority",
            get(|uri: http::Uri| async move {
                uri.authority().map(|a| a.to_string()).unwrap_or_default()
            }),
        )
        .route(
            "/own-alt-svc",
            get(|| async { ([("alt-svc", "clear")], "mine") }),
        )
}

/// The UDP address of the HTTP/3 downstream: the published address's
/// port, on UDP.
fn h3_address(url: &str) -> std::net::SocketAddr {
    authority(url)
        .parse()
        .unwrap_or_else(|e| panic!("{url:?}: {e}"))
}

/// A downstream HTTPS connection, HTTP/1.1 or h2.
enum Downstream {
    H1(hyper::client::conn::http1::SendRequest<Full<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Full<Bytes>>),
}

impl Downstream {
    async fn connect(url: &str, ca: &str, h2: bool) -> Downstream {
        let alpn: &[u8] = if h2 { b"h2" } else { b"http/1.1" };
        let tls = tls_connect(url, ca, &[alpn]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
        let io = TokioIo::new(tls);
        if h2 {
            let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
                .await
                .expect("h2 handshake");
            tokio::spawn(conn);
            Downstream::H2(send)
        } else {
            let (send, conn) = hyper::client::conn::http1::handshake(io)
                .await
                .expect("http1 handshake");
            tokio::spawn(conn);
            Downstream::H1(send)
        }
    }

    async fn send(
        &mut self,
        url: &str,
        req: http::request::Builder,
        body: Bytes,
    ) -> Response<Incoming> {
        let authority = authority(url);
        let path = req.uri_ref().map(|u| u.to_string()).unwrap_or_default();
        let response = match self {
            Downstream::H1(send) => {
                let req = req
                    .header("host", &authority)
                    .body(Full::new(body))
                    .unwrap();
                within("h1 request", send.send_request(req)).await
            }
            Downstream::H2(send) => {
                let req = req
                    .uri(format!("https://{authority}{path}"))
                    .body(Full::new(body))
                    .unwrap();
                within("h2 request", send.send_request(req)).await
            }
        };
        response.expect("response")
    }

    /// One request, its body read whole.
    async fn fetch(
        &mut self,
        url: &str,
        method: Method,
        path: &str,
        body: &[u8],
    ) -> (StatusCode, Vec<u8>) {
        let req = Request::builder().method(method).uri(path);
        let rsp = self.send(url, req, Bytes::copy_from_slice(body)).await;
        let status = rsp.status();
        let body = within("body", rsp.into_body().collect())
            .await
            .expect("body");
        (status, body.to_bytes().to_vec())
    }
}

/// GET, POST echo (1 MiB), a 404 from the app, a streamed response seen
/// chunk by chunk, and the `:authority` the app saw.
async fn exercise(down: &mut Downstream, url: &str, gate: &Semaphore, what: &str) {
    let (status, body) = down.fetch(url, Method::GET, "/hello", b"").await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"hello over h3"[..]),
        "{what}"
    );

    let big: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    let (status, body) = down.fetch(url, Method::POST, "/echo", &big).await;
    assert_eq!(status, StatusCode::OK, "{what}");
    assert!(
        body == big,
        "{what}: echoed body differs ({} bytes)",
        body.len()
    );

    let (status, _) = down.fetch(url, Method::GET, "/nope", b"").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{what}");

    let (status, body) = down.fetch(url, Method::GET, "/authority", b"").await;
    assert_eq!(status, StatusCode::OK, "{what}");
    assert_eq!(String::from_utf8_lossy(&body), authority(url), "{what}");

    let req = Request::builder().method(Method::GET).uri("/stream");
    let rsp = down.send(url, req, Bytes::new()).await;
    assert_eq!(rsp.status(), StatusCode::OK, "{what}");
    let mut body = rsp.into_body();
    let first = within("first chunk before the gate opens", body.frame())
        .await
        .expect("a first frame")
        .expect("frame")
        .into_data()
        .expect("data");
    assert_eq!(&first[..], b"first\n", "{what}");
    gate.add_permits(1);
    let rest = within("rest", body.collect())
        .await
        .expect("rest")
        .to_bytes();
    assert_eq!(&rest[..], b"second\n", "{what}");
}

/// The case: an axum Router behind an HTTP/3 upstream, reached
/// over HTTP/1.1 and h2, the owner on TLS (plane B: framed channel) and
/// on QUIC (plane A: DATAGRAM frames).
#[tokio::test]
async fn axum_router_behind_an_http3_upstream_over_h1_and_h2() {
    let engine = crate::support::engine().await;
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    for (i, transport) in [Transport::Tls, Transport::Quic].into_iter().enumerate() {
        let owner = client_on(&engine, transport);
        let control = within("connect", owner.connect()).await.unwrap();
        let tunnel = control
            .create_datagram_tunnel(
                TunnelOptions::http()
                    .name(format!("h3-upstream-{i}"))
                    .http_version(HttpVersion::H3),
            )
            .await
            .unwrap();
        let url = tunnel.forwarding_address();
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        assert_eq!(tunnel.properties().http_version.as_deref(), Some("h3"));
        let gate = Arc::new(Semaphore::new(0));
        let server = tokio::spawn(rstream::http3::serve(
            tunnel,
            leaf.server_config(&[b"h3"]),
            app(gate.clone()),
        ));
        for h2 in [false, true] {
            let what = format!("{transport:?} h2={h2}");
            let mut down = Downstream::connect(&url, engine.ca_pem(), h2).await;
            exercise(&mut down, &url, &gate, &what).await;
        }
        server.abort();
        control.close().await.unwrap();
    }
}

/// The app goes away (its HTTP/3 server stops, closing its connections,
/// then its control channel closes, taking the tunnel): a request on a
/// downstream connection that reached it gets a prompt 502 (not a wait
/// for QUIC's idle timeout); an app that does not speak
/// HTTP/3 (its QUIC server offers another ALPN) is a 502 too; an upgrade
/// is refused with 501 before anything reaches the app.
#[tokio::test]
async fn http3_upstream_failures_are_502_and_upgrades_501() {
    let engine = crate::support::engine().await;
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    for transport in [Transport::Tls, Transport::Quic] {
        let owner = client_on(&engine, transport);
        let control = within("connect", owner.connect()).await.unwrap();
        let tunnel = control
            .create_datagram_tunnel(TunnelOptions::http().http_version(HttpVersion::H3))
            .await
            .unwrap();
        let url = tunnel.forwarding_address();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(rstream::http3::serve_with(
            tunnel,
            leaf.server_config(&[b"h3"]),
            app(Arc::new(Semaphore::new(0))),
            rstream::http3::ServeOptions::default(),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut down = Downstream::connect(&url, engine.ca_pem(), false).await;
        let (status, _) = down.fetch(&url, Method::GET, "/hello", b"").await;
        assert_eq!(status, StatusCode::OK, "{transport:?}");

        let upgrade = Request::get("/ws")
            .header("connection", "upgrade")
            .header("upgrade", "websocket");
        let rsp = down.send(&url, upgrade, Bytes::new()).await;
        assert_eq!(rsp.status(), StatusCode::NOT_IMPLEMENTED, "{transport:?}");

        // The app is gone, with its tunnel.
        stop.send(()).unwrap();
        within("server stops", server).await.unwrap().unwrap();
        control.close().await.unwrap();
        let started = Instant::now();
        let (status, body) = down.fetch(&url, Method::GET, "/hello", b"").await;
        assert_eq!(
            status,
            StatusCode::BAD_GATEWAY,
            "{transport:?}: {}",
            String::from_utf8_lossy(&body)
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{transport:?}: 502 after {:?}",
            started.elapsed()
        );

        // A QUIC server that does not offer h3: the handshake fails.
        let control = within("connect", owner.connect()).await.unwrap();
        let tunnel = control
            .create_datagram_tunnel(TunnelOptions::http().http_version(HttpVersion::H3))
            .await
            .unwrap();
        let url = tunnel.forwarding_address();
        let socket = TunnelUdpSocket::from_tunnel(tunnel);
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(leaf.server_config(&[b"not-h3"]))
                .unwrap();
        let endpoint = socket
            .endpoint(Some(quinn::ServerConfig::with_crypto(Arc::new(crypto))))
            .unwrap();
        let accepting = tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let _ = incoming.await;
            }
        });
        let mut down = Downstream::connect(&url, engine.ca_pem(), true).await;
        let (status, body) = down.fetch(&url, Method::GET, "/hello", b"").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{transport:?}");
        assert!(!body.is_empty(), "a short plain-text reason");
        accepting.abort();
        control.close().await.unwrap();
    }
}

/// `token_auth` on an HTTP/3 upstream: no token is a 401 from the engine;
/// an engine token reaches the app, which never sees it; over HTTP/1.1
/// and over the h3 downstream.
#[tokio::test]
async fn token_auth_guards_an_http3_upstream() {
    crate::support::init_tracing();
    let engine = rstream::engine::LocalEngine::builder()
        .token("h3-token")
        .start()
        .await
        .unwrap();
    let owner = crate::support::options(&engine)
        .token("h3-token")
        .build()
        .unwrap();
    let control = within("connect", owner.connect()).await.unwrap();
    let tunnel = control
        .create_datagram_tunnel(
            TunnelOptions::http()
                .http_version(HttpVersion::H3)
                .token_auth(true),
        )
        .await
        .unwrap();
    let url = tunnel.forwarding_address();
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    let app = Router::new().route(
        "/who",
        get(|headers: http::HeaderMap| async move {
            format!("auth={}", headers.contains_key("authorization"))
        }),
    );
    let server = tokio::spawn(rstream::http3::serve(
        tunnel,
        leaf.server_config(&[b"h3"]),
        app,
    ));
    let mut down = Downstream::connect(&url, engine.ca_pem(), false).await;
    let (status, _) = down.fetch(&url, Method::GET, "/who", b"").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let req = Request::get("/who").header("authorization", "Bearer h3-token");
    let rsp = down.send(&url, req, Bytes::new()).await;
    assert_eq!(rsp.status(), StatusCode::OK);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"auth=false");

    // The same check on the h3 downstream.
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let addr = h3_address(&url);
    let mut client = H3Client::connect(&endpoint, addr, "127.0.0.1", engine.ca_pem()).await;
    let refused = client.request(Method::GET, "/who", b"").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    let admitted = client
        .request(Method::GET, "/who?rstream.token=h3-token", b"")
        .await;
    assert_eq!(admitted.status, StatusCode::OK);
    assert_eq!(admitted.body, b"auth=false");
    client.close();
    server.abort();
    control.close().await.unwrap();
}

/// `create_tunnel` with h3 names `create_datagram_tunnel`; h3 with
/// `upstream_tls` is refused, naming it.
#[tokio::test]
async fn http3_upstream_refusals_are_explicit() {
    let engine = crate::support::engine().await;
    let control = within("connect", crate::support::client(&engine).connect())
        .await
        .unwrap();
    let err = control
        .create_tunnel(TunnelOptions::http().http_version(HttpVersion::H3))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("create_datagram_tunnel"), "{err}");
    let err = control
        .create_datagram_tunnel(
            TunnelOptions::http()
                .http_version(HttpVersion::H3)
                .upstream_tls(true),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("upstream_tls"), "{err}");
    control.close().await.unwrap();
}

/// The request body streams to the app too: the app answers with the
/// first chunk it reads while the downstream client (h2) has not finished
/// sending (nothing waits for the whole body).
#[tokio::test]
async fn request_bodies_stream_to_an_http3_upstream() {
    use futures_util::StreamExt;
    use http_body_util::combinators::BoxBody;
    use http_body_util::StreamBody;
    use hyper::body::Frame;

    let engine = crate::support::engine().await;
    let control = within("connect", crate::support::client(&engine).connect())
        .await
        .unwrap();
    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::http().http_version(HttpVersion::H3))
        .await
        .unwrap();
    let url = tunnel.forwarding_address();
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    let app = Router::new().route(
        "/first",
        axum::routing::post(|body: axum::body::Body| async move {
            let mut data = body.into_data_stream();
            match data.next().await {
                Some(Ok(first)) => first,
                _ => Bytes::from_static(b"no chunk"),
            }
        }),
    );
    let server = tokio::spawn(rstream::http3::serve(
        tunnel,
        leaf.server_config(&[b"h3"]),
        app,
    ));

    let tls = tls_connect(&url, engine.ca_pem(), &[b"h2"]).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let (chunks, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(chunk)), rx))
    });
    let body = BoxBody::new(StreamBody::new(frames));
    let req = Request::post(format!("https://{}/first", authority(&url)))
        .body(body)
        .unwrap();
    chunks.send(Bytes::from_static(b"part one")).await.unwrap();
    let rsp = within(
        "response before the request body ends",
        send.send_request(req),
    )
    .await
    .expect("response");
    assert_eq!(rsp.status(), StatusCode::OK);
    let got = within("response body", rsp.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(&got[..], b"part one");
    // The request body ends only here, when its sender is dropped: the
    // answer came while it was still open.
    drop(chunks);
    server.abort();
    control.close().await.unwrap();
}

/// The h3 downstream: a real h3 client (quinn + h3, trusting the engine's
/// CA) reaches the app at the published port on UDP, owner on TLS and on
/// QUIC: GET, POST echo (1 MiB), a 404 from the app, a streamed response
/// seen chunk by chunk, trailers; `CONNECT` is answered 501 by the
/// engine. The h1 and h2 responses advertise it
/// (`alt-svc`) unless the app set its own. Closing the tunnel frees the
/// UDP port at once, a downstream connection still open.
#[tokio::test]
async fn h3_clients_reach_an_http3_upstream_on_the_same_port() {
    let engine = crate::support::engine().await;
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    for (i, transport) in [Transport::Tls, Transport::Quic].into_iter().enumerate() {
        let owner = client_on(&engine, transport);
        let control = within("connect", owner.connect()).await.unwrap();
        let tunnel = control
            .create_datagram_tunnel(
                TunnelOptions::http()
                    .name(format!("h3-downstream-{i}"))
                    .http_version(HttpVersion::H3),
            )
            .await
            .unwrap();
        let url = tunnel.forwarding_address();
        let addr = h3_address(&url);
        let gate = Arc::new(Semaphore::new(0));
        let server = tokio::spawn(rstream::http3::serve(
            tunnel,
            leaf.server_config(&[b"h3"]),
            app(gate.clone()),
        ));

        let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
        let mut client = H3Client::connect(&endpoint, addr, "127.0.0.1", engine.ca_pem()).await;
        crate::http3::exercise(&mut client, &gate).await;
        // CONNECT is not relayed, as over HTTP/1.1 and h2.
        let mut connect = client.open(Method::CONNECT, "").await;
        within("finish", connect.finish()).await.unwrap();
        let rsp = within("CONNECT answer", connect.recv_response())
            .await
            .unwrap();
        assert_eq!(rsp.status(), StatusCode::NOT_IMPLEMENTED, "{transport:?}");

        for h2 in [false, true] {
            let mut down = Downstream::connect(&url, engine.ca_pem(), h2).await;
            let rsp = down.send(&url, Request::get("/hello"), Bytes::new()).await;
            assert_eq!(rsp.status(), StatusCode::OK);
            let alt_svc = rsp.headers().get("alt-svc").expect("alt-svc");
            assert_eq!(
                alt_svc.to_str().unwrap(),
                format!("h3=\":{}\"; ma=60", addr.port()),
                "{transport:?} h2={h2}"
            );
            let rsp = down
                .send(&url, Request::get("/own-alt-svc"), Bytes::new())
                .await;
            let values: Vec<_> = rsp.headers().get_all("alt-svc").iter().collect();
            assert_eq!(values, ["clear"], "{transport:?} h2={h2}");
        }

        server.abort();
        control.close().await.unwrap();
        // The engine's UDP socket is gone although `client` is still open.
        let rebound = std::net::UdpSocket::bind(addr);
        assert!(rebound.is_ok(), "{transport:?}: {rebound:?}");
        client.close();
    }
}

/// Hostile: a QUIC client offering another ALPN than `h3` fails the
/// handshake at the HTTP/3 downstream and holds nothing: no channel
/// reaches the owner, and an h3 client is served at once after it.
#[tokio::test]
async fn a_wrong_alpn_at_the_h3_downstream_reaches_nothing() {
    let engine = crate::support::engine().await;
    let control = within("connect", crate::support::client(&engine).connect())
        .await
        .unwrap();
    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::http().http_version(HttpVersion::H3))
        .await
        .unwrap();
    let addr = h3_address(&tunnel.forwarding_address());
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    let socket = TunnelUdpSocket::from_tunnel(tunnel);
    let crypto =
        quinn::crypto::rustls::QuicServerConfig::try_from(leaf.server_config(&[b"h3"])).unwrap();
    let app_endpoint = socket
        .endpoint(Some(quinn::ServerConfig::with_crypto(Arc::new(crypto))))
        .unwrap();
    let router = app(Arc::new(Semaphore::new(0)));
    let serving = tokio::spawn(async move {
        while let Some(incoming) = app_endpoint.accept().await {
            let router = router.clone();
            tokio::spawn(async move {
                if let Ok(conn) = incoming.await {
                    let _ = rstream::http3::serve_connection(conn, router).await;
                }
            });
        }
    });

    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let tls = crate::support::tls_config(engine.ca_pem(), &[b"not-h3"]);
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let config = quinn::ClientConfig::new(Arc::new(crypto));
    let connecting = endpoint.connect_with(config, addr, "127.0.0.1").unwrap();
    let refused = within("a refused handshake", connecting).await;
    assert!(refused.is_err(), "a handshake without h3 succeeded");
    assert_eq!(socket.peer_count(), 0, "a channel reached the owner");

    let mut client = H3Client::connect(&endpoint, addr, "127.0.0.1", engine.ca_pem()).await;
    let hello = client.request(Method::GET, "/hello", b"").await;
    assert_eq!(hello.body, b"hello over h3");
    assert_eq!(
        socket.peer_count(),
        1,
        "one downstream connection, one channel"
    );
    client.close();
    serving.abort();
    control.close().await.unwrap();
}

/// A QUIC handshake with the h3 downstream at `addr`: `Err` when refused.
async fn h3_handshake(
    endpoint: &quinn::Endpoint,
    addr: std::net::SocketAddr,
    ca: &str,
) -> Result<quinn::Connection, quinn::ConnectionError> {
    let config = crate::support::h3::h3_client_config(ca);
    let connecting = endpoint.connect_with(config, addr, "127.0.0.1").unwrap();
    within("QUIC handshake", connecting).await
}

/// The h3 downstream's admission: a source outside `trusted_ips` is
/// refused before its handshake; `max_published_connections` counts h3
/// connections (one held, the next refused, admitted again once the
/// first closes).
#[tokio::test]
async fn the_h3_downstream_honours_trusted_ips_and_the_connection_cap() {
    crate::support::init_tracing();
    let engine = rstream::engine::LocalEngine::builder()
        .max_published_connections(1)
        .start()
        .await
        .unwrap();
    let control = within("connect", crate::support::client(&engine).connect())
        .await
        .unwrap();
    let ca = Ca::new();
    let leaf = ca.leaf(&["localhost"], None);
    let endpoint = quinn::Endpoint::client((std::net::Ipv4Addr::LOCALHOST, 0).into()).unwrap();

    let untrusted = control
        .create_datagram_tunnel(
            TunnelOptions::http()
                .http_version(HttpVersion::H3)
                .trusted_ip("10.0.0.0/8"),
        )
        .await
        .unwrap();
    let addr = h3_address(&untrusted.forwarding_address());
    let refused = h3_handshake(&endpoint, addr, engine.ca_pem()).await;
    assert!(refused.is_err(), "an untrusted source got a connection");
    drop(untrusted);

    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::http().http_version(HttpVersion::H3))
        .await
        .unwrap();
    let addr = h3_address(&tunnel.forwarding_address());
    let server = tokio::spawn(rstream::http3::serve(
        tunnel,
        leaf.server_config(&[b"h3"]),
        app(Arc::new(Semaphore::new(0))),
    ));
    let mut first = H3Client::connect(&endpoint, addr, "127.0.0.1", engine.ca_pem()).await;
    let hello = first.request(Method::GET, "/hello", b"").await;
    assert_eq!(hello.status, StatusCode::OK);
    let refused = h3_handshake(&endpoint, addr, engine.ca_pem()).await;
    assert!(refused.is_err(), "a second connection beyond the cap of 1");
    first.close();
    // The engine sees the close and gives the permit back.
    let deadline = Instant::now() + Duration::from_secs(5);
    let again = loop {
        match h3_handshake(&endpoint, addr, engine.ca_pem()).await {
            Ok(conn) => break conn,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "not yet");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the permit never came back: {e}"),
        }
    };
    again.close(0u32.into(), b"done");
    server.abort();
    control.close().await.unwrap();
}
