//! TLS terminated in-process (`rstream::http::TlsListener`): `tls`
//! passthrough tunnels of the local engine reached by real TLS clients that
//! verify the app's own certificate (a CA of the test, not the engine's),
//! HTTP/1.1 and h2 chosen by ALPN, under `http::serve` and `axum::serve`;
//! handshakes that are slow, silent or garbage do not hold up the others.

use crate::support;

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::http::TlsListener;
use rstream::{TunnelAddr, TunnelOptions};
use support::pki::{Ca, Leaf};
use support::{client, engine, within};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// The name in the app's certificate (the engine's says 127.0.0.1).
const APP_NAME: &str = "app.rstream.test";

/// Answers with what the request saw: HTTP version, source IP from
/// `ConnectInfo<TunnelAddr>`, and whether `StreamInfo` is there.
fn app() -> Router {
    Router::new().route(
        "/who",
        get(
            |ConnectInfo(addr): ConnectInfo<TunnelAddr>, req: http::Request<axum::body::Body>| async move {
                let info = req.extensions().get::<rstream::StreamInfo>().cloned();
                format!(
                    "{:?} {:?} {}",
                    req.version(),
                    addr.source_ip(),
                    info.is_some_and(|i| i.tunnel() == addr.tunnel_id())
                )
            },
        ),
    )
}

/// The app's PKI: a CA of the test and a leaf for [`APP_NAME`].
fn app_pki() -> (Ca, Leaf) {
    let ca = Ca::new();
    let leaf = ca.leaf(&[APP_NAME], None);
    (ca, leaf)
}

/// A `tls` passthrough tunnel on `engine`: its control channel, the tunnel,
/// and its published `127.0.0.1:port`.
async fn tls_tunnel(
    engine: &rstream::engine::LocalEngine,
) -> (rstream::ControlChannel, rstream::Tunnel, String) {
    let control = client(engine).connect().await.unwrap();
    let tunnel = control.create_tunnel(TunnelOptions::tls()).await.unwrap();
    let port = tunnel.properties().port.expect("published port");
    (control, tunnel, format!("127.0.0.1:{port}"))
}

/// A TLS connection to `addr` that trusts only `ca_pem` and checks the
/// certificate names [`APP_NAME`].
async fn connect(
    addr: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from(APP_NAME).expect("name");
    tokio_rustls::TlsConnector::from(support::tls_config(ca_pem, alpn))
        .connect(name, tcp)
        .await
}

/// `GET /who` over a fresh connection negotiating `alpn` (`h2` or
/// `http/1.1`); the negotiated protocol and the body.
async fn who(addr: &str, ca_pem: &str, alpn: &'static [u8]) -> (Vec<u8>, String) {
    let tls = connect(addr, ca_pem, &[alpn])
        .await
        .expect("TLS handshake with the app");
    let negotiated = tls.get_ref().1.alpn_protocol().unwrap_or_default().to_vec();
    let io = TokioIo::new(tls);
    let uri = format!("https://{APP_NAME}/who");
    let rsp = if alpn == b"h2" {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
        send.send_request(req).await.unwrap()
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("/who")
            .header("host", APP_NAME)
            .body(Empty::<Bytes>::new())
            .unwrap();
        send.send_request(req).await.unwrap()
    };
    assert_eq!(rsp.status(), 200);
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (negotiated, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http_serve_on_a_tls_passthrough_tunnel_speaks_http1_and_h2_by_alpn() {
    let engine = engine().await;
    let (_control, tunnel, addr) = tls_tunnel(&engine).await;
    let (ca, leaf) = app_pki();
    let listener = TlsListener::new(tunnel, leaf.server_config(&[b"h2", b"http/1.1"]));
    let server = tokio::spawn(rstream::http::serve(listener, app()).into_future());

    within("h1 and h2 over the app's TLS", async {
        let (alpn, body) = who(&addr, &ca.pem(), b"http/1.1").await;
        assert_eq!(alpn, b"http/1.1");
        assert_eq!(body, "HTTP/1.1 Some(127.0.0.1) true");
        let (alpn, body) = who(&addr, &ca.pem(), b"h2").await;
        assert_eq!(alpn, b"h2");
        assert_eq!(body, "HTTP/2.0 Some(127.0.0.1) true");
    })
    .await;

    // A client trusting only the engine's CA refuses the app's certificate:
    // TLS really ends in the app, not in the engine.
    let refused = within("handshake trusting the engine", async {
        connect(&addr, engine.ca_pem(), &[b"h2"]).await
    })
    .await;
    assert!(refused.is_err(), "the engine's CA must not verify the app");
    // That failed handshake was skipped, not fatal: serving goes on.
    let (_, body) = within("after a failed handshake", who(&addr, &ca.pem(), b"h2")).await;
    assert_eq!(body, "HTTP/2.0 Some(127.0.0.1) true");
    assert!(!server.is_finished());
    server.abort();
}

#[tokio::test]
async fn axum_serve_on_a_tls_listener_speaks_http1_and_h2_with_connect_info() {
    let engine = engine().await;
    let (_control, tunnel, addr) = tls_tunnel(&engine).await;
    let (ca, leaf) = app_pki();
    let listener = TlsListener::new(tunnel, leaf.server_config(&[b"h2", b"http/1.1"]));
    let make = app().into_make_service_with_connect_info::<TunnelAddr>();
    let server = tokio::spawn(axum::serve(listener, make).into_future());

    within("axum::serve over TLS", async {
        let (alpn, body) = who(&addr, &ca.pem(), b"h2").await;
        assert_eq!(alpn, b"h2");
        // axum::serve does not insert StreamInfo; ConnectInfo carries the IP.
        assert_eq!(body, "HTTP/2.0 Some(127.0.0.1) false");
        let (alpn, body) = who(&addr, &ca.pem(), b"http/1.1").await;
        assert_eq!(alpn, b"http/1.1");
        assert_eq!(body, "HTTP/1.1 Some(127.0.0.1) false");
    })
    .await;
    server.abort();
}

/// Opens `n` TCP connections to `addr` that never send a byte, and waits
/// until the tunnel has accepted them all (their handshakes are pending).
async fn silent_clients(
    addr: &str,
    n: usize,
    counters: &rstream::TunnelCounters,
) -> Vec<TcpStream> {
    let before = counters.get().accepted;
    let mut silent = Vec::new();
    for _ in 0..n {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    within("silent connections reach the app", async {
        while counters.get().accepted < before + n as u64 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    silent
}

#[tokio::test]
async fn silent_tls_clients_do_not_hold_up_other_handshakes() {
    let engine = engine().await;
    let (_control, tunnel, addr) = tls_tunnel(&engine).await;
    let counters = tunnel.counters();
    let (ca, leaf) = app_pki();
    // Default bounds: 64 handshakes at once, 10 s each.
    let listener = TlsListener::new(tunnel, leaf.server_config(&[b"h2", b"http/1.1"]));
    let server = tokio::spawn(rstream::http::serve(listener, app()).into_future());

    let _silent = silent_clients(&addr, 20, &counters).await;
    // Handshakes one after the other would make this wait 20 × 10 s.
    let started = Instant::now();
    let (_, body) = within(
        "a real client among silent ones",
        who(&addr, &ca.pem(), b"h2"),
    )
    .await;
    assert_eq!(body, "HTTP/2.0 Some(127.0.0.1) true");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "served after {:?}",
        started.elapsed()
    );
    assert!(!server.is_finished());
    server.abort();
}

#[tokio::test]
async fn full_handshake_slots_free_up_at_the_timeout_and_garbage_is_skipped() {
    let engine = engine().await;
    let (_control, tunnel, addr) = tls_tunnel(&engine).await;
    let counters = tunnel.counters();
    let (ca, leaf) = app_pki();
    let timeout = Duration::from_millis(500);
    let listener = TlsListener::new(tunnel, Arc::new(leaf.server_config(&[b"http/1.1"])))
        .max_handshakes(2)
        .handshake_timeout(timeout);
    let server = tokio::spawn(rstream::http::serve(listener, app()).into_future());

    // Garbage instead of a ClientHello: a failed handshake, skipped.
    let mut garbage = TcpStream::connect(&addr).await.unwrap();
    garbage.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    // Both slots taken by clients that never speak.
    let _silent = silent_clients(&addr, 2, &counters).await;
    let started = Instant::now();
    let (_, body) = within("a client once the slots time out", async {
        who(&addr, &ca.pem(), b"http/1.1").await
    })
    .await;
    assert_eq!(body, "HTTP/1.1 Some(127.0.0.1) true");
    // It waited for a slot: the silent handshakes were cut at the timeout.
    assert!(started.elapsed() >= timeout / 2, "{:?}", started.elapsed());
    assert!(
        !server.is_finished(),
        "failed handshakes must not end serve"
    );
    server.abort();
}

/// `upstream_tls` + `http_version = h2` on a published `http` tunnel: the
/// engine terminates the downstream TLS (its own certificate), then speaks
/// TLS to the app through the tunnel, where `TlsListener` terminates it
/// with the app's certificate; the request reaches the app as HTTP/2 when
/// the downstream client negotiated h2, as HTTP/1.1 when it did not.
#[tokio::test]
async fn upstream_tls_h2_tunnel_is_served_by_a_tls_listener() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let tunnel = control
        .create_tunnel(
            TunnelOptions::http()
                .name("secure-app")
                .http_version(rstream::HttpVersion::H2)
                .upstream_tls(true),
        )
        .await
        .unwrap();
    let url = tunnel.forwarding_address();
    let (_ca, leaf) = app_pki();
    let listener = TlsListener::new(tunnel, leaf.server_config(&[b"h2", b"http/1.1"]));
    let server = tokio::spawn(rstream::http::serve(listener, app()).into_future());

    within("h2 then http/1.1 through upstream TLS", async {
        // Downstream: the engine's certificate.
        let tls = support::tls_connect(&url, engine.ca_pem(), &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                .await
                .unwrap();
        tokio::spawn(conn);
        for _ in 0..3 {
            let req = http::Request::get(format!("{url}/who"))
                .body(Empty::<Bytes>::new())
                .unwrap();
            let rsp = send.send_request(req).await.unwrap();
            assert_eq!(rsp.status(), 200);
            let body = rsp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"HTTP/2.0 Some(127.0.0.1) true");
        }
        let (status, body) = support::https_get(&url, engine.ca_pem(), "/who").await;
        assert_eq!(status, 200);
        assert_eq!(body, "HTTP/1.1 Some(127.0.0.1) true");
    })
    .await;
    assert!(!server.is_finished());
    server.abort();
}

/// Without `upstream_tls`, `http_version = h2` is still refused by the
/// local engine (h2 to the app means TLS to the app).
#[tokio::test]
async fn h2_without_upstream_tls_is_refused() {
    let engine = engine().await;
    let control = client(&engine).connect().await.unwrap();
    let e = control
        .create_tunnel(TunnelOptions::http().http_version(rstream::HttpVersion::H2))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("does not support upstream http_version = \"h2\""),
        "{e}"
    );
    let e = control
        .create_tunnel(TunnelOptions::http().private().upstream_tls(true))
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("upstream_tls = true outside published http"),
        "{e}"
    );
}
