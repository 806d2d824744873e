//! Shared test helpers: the local engine, clients trusting it, a real
//! HTTPS client, a scripted engine for protocol-violation tests, a raw
//! engine-side client, a throwaway PKI, DTLS clients, the Python SDK as a
//! peer, and the configuration case table.
#![allow(dead_code, unreachable_pub)]

pub mod config_cases;
pub mod connect_proxy;
#[cfg(feature = "dtls")]
pub mod dtls;
#[allow(dead_code)]
pub mod flood;
#[cfg(feature = "http3")]
pub mod h3;
pub mod pki;
pub mod python;
pub mod raw;
#[allow(dead_code)]
pub mod scripted;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use rstream::engine::LocalEngine;
use rstream::transport::TlsOptions;
use rstream::{Client, ClientOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds every await in tests so a bug fails instead of hanging CI.
pub const LIMIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub async fn engine() -> LocalEngine {
    init_tracing();
    LocalEngine::builder().start().await.expect("engine starts")
}

/// Options for a client of `engine` (trusting its CA).
pub fn options(engine: &LocalEngine) -> ClientOptions {
    Client::builder().engine(engine.engine_address()).tls(
        TlsOptions::new()
            .add_ca_pem(engine.ca_pem().as_bytes())
            .expect("CA"),
    )
}

pub fn client(engine: &LocalEngine) -> Client {
    options(engine).build().expect("client")
}

/// A client of `engine` on the given transport, for tests about one
/// transport or one datagram plane (the default, `auto`, races QUIC
/// against TLS when feature `quic` is on).
pub fn client_on(engine: &LocalEngine, transport: rstream::Transport) -> Client {
    options(engine)
        .transport(transport)
        .build()
        .expect("client")
}

pub async fn within<T>(what: &str, fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// `host:port` from `https://host:port`.
pub fn authority(url: &str) -> String {
    url.trim_start_matches("https://").to_owned()
}

/// A rustls client config trusting `ca_pem`, offering `alpn`.
pub fn tls_config(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    TlsOptions::new()
        .add_ca_pem(ca_pem.as_bytes())
        .expect("CA")
        .client_config(alpn)
        .expect("client config")
}

/// Opens a TLS connection to a published `https://` address.
pub async fn tls_connect(
    url: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let authority = authority(url);
    let host = authority
        .rsplit_once(':')
        .map_or(authority.as_str(), |(h, _)| h)
        .to_owned();
    let tcp = TcpStream::connect(&authority).await.expect("tcp connect");
    tcp.set_nodelay(true).ok();
    let name = rustls::pki_types::ServerName::try_from(host).expect("server name");
    tokio_rustls::TlsConnector::from(tls_config(ca_pem, alpn))
        .connect(name, tcp)
        .await
        .expect("tls handshake")
}

/// One real HTTPS request with hyper's HTTP/1.1 client.
pub async fn https_get(url: &str, ca_pem: &str, path: &str) -> (http::StatusCode, String) {
    let tls = tls_connect(url, ca_pem, &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header("host", authority(url))
        .body(Full::new(Bytes::new()))
        .expect("request");
    let rsp = send.send_request(req).await.expect("response");
    let status = rsp.status();
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Accepts every stream of `tunnel` and echoes its bytes back.
pub fn spawn_echo(tunnel: rstream::Tunnel) -> tokio::task::JoinHandle<()> {
    spawn_echo_with(tunnel, String::new(), Arc::new(AtomicUsize::new(0)))
}

/// [`spawn_echo`], writing `banner` first on every stream and counting the
/// accepted streams in `accepted`.
pub fn spawn_echo_with(
    mut tunnel: rstream::Tunnel,
    banner: String,
    accepted: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(mut stream) = tunnel.accept().await {
            accepted.fetch_add(1, Ordering::SeqCst);
            let banner = banner.clone();
            tokio::spawn(async move {
                if stream.write_all(banner.as_bytes()).await.is_err() {
                    return;
                }
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    })
}

/// Serves `app` on `tunnel` with axum (connect info: [`rstream::TunnelAddr`])
/// until the tunnel closes.
#[cfg(feature = "axum")]
pub fn serve_axum(
    tunnel: rstream::Tunnel,
    app: axum::Router,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let closed = tunnel.closed();
    tokio::spawn(async move {
        axum::serve(
            tunnel,
            app.into_make_service_with_connect_info::<rstream::TunnelAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = closed.await;
        })
        .await
    })
}

/// Writes `msg` on a dialed stream, half-closes, and reads everything back.
pub async fn echo_round_trip(mut stream: rstream::RstreamStream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).await.expect("write");
    stream.shutdown().await.expect("shutdown");
    let mut back = Vec::new();
    stream.read_to_end(&mut back).await.expect("read");
    back
}

/// A raw GET over HTTP/1.1 to the engine's API, with an optional bearer
/// token: for what the typed client never sends (query tokens, odd paths).
/// An SSE answer's body is not read (it never ends).
pub async fn raw_get(engine: &LocalEngine, path: &str, token: Option<&str>) -> (u16, String) {
    let url = format!("https://{}", engine.engine_address());
    let tls = tls_connect(&url, engine.ca_pem(), &[b"http/1.1"]).await;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let mut req = http::Request::get(path).header("host", engine.engine_address());
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let rsp = within(
        "raw GET",
        send.send_request(req.body(http_body_util::Empty::<Bytes>::new()).unwrap()),
    )
    .await
    .expect("response");
    let status = rsp.status().as_u16();
    if path.starts_with("/api/sse") && status == 200 {
        return (status, String::new());
    }
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Accepts every channel of a datagram tunnel and echoes each datagram
/// back to its sender.
pub fn datagram_echo(mut tunnel: rstream::DatagramTunnel) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(channel) = tunnel.accept().await {
            tokio::spawn(async move {
                while let Ok(datagram) = channel.recv().await {
                    if channel.send_bytes(datagram).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}
