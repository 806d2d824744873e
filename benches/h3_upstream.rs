//! A published HTTP/3-upstream tunnel (the engine forwarding HTTPS
//! requests over HTTP/3 to `rstream::http3::serve`) beside an ordinary
//! published `http` tunnel (`axum::serve(tunnel, router)`), side by side in
//! one run (docs/HTTP3.md): `GET /` over HTTP/1.1 keep-alive connections
//! to the published address, one connection, then eight at once. The
//! owner's transport is TLS, or QUIC with `OWNER=quic`; `N` requests per
//! leg (default 4,000).
//!
//! ```text
//! cargo bench --features http3 --bench h3_upstream
//! OWNER=quic cargo bench --features http3 --bench h3_upstream
//! ```

use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rstream::engine::LocalEngine;
use rstream::{Client, HttpVersion, TlsOptions, Transport, TunnelOptions};
use rustls::pki_types::{PrivateKeyDer, ServerName};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Requests per second, p50 and p99 of `n` requests spread over `conns`
/// keep-alive connections to `url` (`https://host:port`).
async fn run(
    url: &str,
    ca: &str,
    n: usize,
    conns: usize,
) -> Result<(f64, Duration, Duration), BoxError> {
    let authority = url.trim_start_matches("https://").to_owned();
    let tls = TlsOptions::new()
        .add_ca_pem(ca.as_bytes())?
        .client_config(&[b"http/1.1"])?;
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..conns {
        let (authority, tls) = (authority.clone(), tls.clone());
        tasks.spawn(async move {
            let tcp = tokio::net::TcpStream::connect(&authority).await?;
            tcp.set_nodelay(true)?;
            let name = ServerName::try_from("127.0.0.1")?;
            let tls = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::with_capacity(n / conns);
            for _ in 0..n / conns {
                let t = Instant::now();
                let req = http::Request::get("/")
                    .header("host", &authority)
                    .body(Empty::<Bytes>::new())?;
                let rsp = send.send_request(req).await?;
                if !rsp.status().is_success() {
                    return Err(format!("status {}", rsp.status()).into());
                }
                rsp.into_body().collect().await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, BoxError>(latencies)
        });
    }
    let mut all = Vec::with_capacity(n);
    while let Some(latencies) = tasks.join_next().await {
        all.extend(latencies??);
    }
    let elapsed = start.elapsed();
    all.sort();
    let p50 = all[all.len() / 2];
    let p99 = all[all.len() * 99 / 100];
    Ok((all.len() as f64 / elapsed.as_secs_f64(), p50, p99))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let engine = LocalEngine::builder().start().await?;
    let transport = match std::env::var("OWNER").as_deref() {
        Ok("quic") => Transport::Quic,
        _ => Transport::Tls,
    };
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let client = Client::builder()
        .engine(engine.engine_address())
        .tls(TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?)
        .transport(transport)
        .build()?;
    let control = client.connect().await?;
    let app = Router::new().route("/", get(|| async { "hello\n" }));

    let plain = control.create_tunnel(TunnelOptions::http()).await?;
    let plain_url = plain.forwarding_address();
    tokio::spawn(std::future::IntoFuture::into_future(axum::serve(
        plain,
        app.clone(),
    )));

    // The app's own certificate for its HTTP/3 server (the engine does not
    // verify it: docs/HTTP3.md).
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
    let key = PrivateKeyDer::Pkcs8(certified.signing_key.serialize_der().into());
    let tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])?
    .with_no_client_auth()
    .with_single_cert(vec![certified.cert.der().clone()], key)?;
    let h3 = control
        .create_datagram_tunnel(TunnelOptions::http().http_version(HttpVersion::H3))
        .await?;
    let h3_url = h3.forwarding_address();
    tokio::spawn(rstream::http3::serve(h3, tls, app));

    println!("owner on {transport:?}, {n} requests per leg");
    for conns in [1usize, 8] {
        for (what, url) in [("http (axum::serve)", &plain_url), ("h3 upstream", &h3_url)] {
            run(url, engine.ca_pem(), 100, conns).await?; // warm-up
            let (rps, p50, p99) = run(url, engine.ca_pem(), n, conns).await?;
            println!("{conns} conn  {what:20} {rps:8.0} req/s  p50 {p50:?}  p99 {p99:?}");
        }
    }
    Ok(())
}
