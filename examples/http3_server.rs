//! An axum router served over HTTP/3 on a published datagram tunnel: the
//! engine's UDP address carries QUIC to the app, which runs the quinn
//! endpoint and the h3 server (`rstream::http3::serve`) in-process.
//!
//! ```text
//! cargo run --features http3 --example http3_server                  # serve, check itself, exit
//! cargo run --features http3 --example http3_server -- --self-test   # the same, for CI
//! cargo run --features http3 --example http3_server -- --serve       # keep serving until Ctrl-C
//! ```
//!
//! The certificate is a throwaway self-signed one for `localhost` (rcgen);
//! the self-test's h3 client (h3 + h3-quinn + quinn) trusts exactly it.
//! See docs/HTTP3.md.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, Sse};
use axum::routing::{get, post};
use axum::Router;
use bytes::{Buf, Bytes};
use futures_util::stream::{self, Stream};
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // The engine configured by the environment, or a local one in-process.
    let (client, _local_engine) = match Client::from_env() {
        Err(e) if e.code() == code::ENGINE_REQUIRED => {
            let engine = LocalEngine::builder().start().await?;
            let tls = TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?;
            let client = Client::builder()
                .engine(engine.engine_address())
                .tls(tls)
                .build()?;
            (client, Some(engine))
        }
        configured => (configured?, None),
    };
    let control = client.connect().await?;

    // The app's own certificate: QUIC's TLS ends in this process.
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let cert = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;

    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().publish())
        .await?;
    let address = tunnel.forwarding_address();
    println!("HTTP/3 on the published datagram tunnel: {address}");
    let app = Router::new()
        .route("/", get(|| async { "hello over HTTP/3\n" }))
        .route("/echo", post(|body: Bytes| async move { body }))
        .route("/events", get(events));
    let server = tokio::spawn(rstream::http3::serve(tunnel, tls, app));

    let target: SocketAddr = address.trim_end_matches(" (udp)").parse()?;
    if std::env::args().any(|a| a == "--serve") {
        println!(
            "serving; try: curl --http3-only -k https://localhost:{}/ ; press Ctrl-C to stop",
            target.port()
        );
        tokio::signal::ctrl_c().await?;
    } else {
        tokio::time::timeout(Duration::from_secs(30), self_test(target, cert)).await??;
    }
    server.abort();
    control.close().await?;
    println!("ok");
    Ok(())
}

/// Three server-sent events, one every 100 ms: each reaches the client
/// as it is produced (the response is streamed, not buffered).
async fn events() -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let ticks = stream::unfold(1, |n| async move {
        if n > 3 {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        Some((Ok(Event::default().data(format!("tick {n}"))), n + 1))
    });
    Sse::new(ticks)
}

/// An h3 client at the published UDP address: GET /, POST /echo, and the
/// event stream.
async fn self_test(target: SocketAddr, cert: CertificateDer<'static>) -> Result<(), BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let endpoint = quinn::Endpoint::client((Ipv4Addr::LOCALHOST, 0).into())?;
    let conn = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            target,
            "localhost",
        )?
        .await?;
    let (mut driver, mut send) = h3::client::new(h3_quinn::Connection::new(conn.clone())).await?;
    let driver = tokio::spawn(async move {
        let _ = driver.wait_idle().await;
    });

    for (method, path, body) in [
        (http::Method::GET, "/", ""),
        (http::Method::POST, "/echo", "echo over HTTP/3"),
        (http::Method::GET, "/events", ""),
    ] {
        let request = http::Request::builder()
            .method(method.clone())
            .uri(format!("https://localhost{path}"))
            .body(())?;
        let mut stream = send.send_request(request).await?;
        if !body.is_empty() {
            stream.send_data(Bytes::from(body)).await?;
        }
        stream.finish().await?;
        let response = stream.recv_response().await?;
        println!(
            "{method} {path} -> {} ({:?})",
            response.status(),
            response.version()
        );
        check(response.status() == http::StatusCode::OK, "status 200")?;
        let mut received = Vec::new();
        while let Some(mut chunk) = stream.recv_data().await? {
            let bytes = chunk.copy_to_bytes(chunk.remaining());
            if path == "/events" {
                println!(
                    "  event chunk: {:?}",
                    String::from_utf8_lossy(&bytes).trim()
                );
            }
            received.extend_from_slice(&bytes);
        }
        let text = String::from_utf8_lossy(&received);
        match path {
            "/" => check(text == "hello over HTTP/3\n", "GET /")?,
            "/echo" => check(text == body, "POST /echo")?,
            _ => check(
                (1..=3).all(|n| text.contains(&format!("data: tick {n}"))),
                "three events",
            )?,
        }
    }
    conn.close(0x100u32.into(), b"done");
    driver.abort();
    endpoint.wait_idle().await;
    Ok(())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("self-test failed: {what}").into())
    }
}
