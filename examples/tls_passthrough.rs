//! TLS passthrough: a `tls` tunnel whose TLS the app terminates itself, with
//! its own certificate, in-process (`rstream::http::TlsListener`). The engine
//! only splices bytes; clients verify the app's certificate, and ALPN picks
//! HTTP/2 or HTTP/1.1 per connection.
//!
//! ```text
//! cargo run --example tls_passthrough               # serve until ctrl-c
//! cargo run --example tls_passthrough -- --self-test  # check itself, exit 0
//! ```
//!
//! With `RSTREAM_ENGINE` (and a token…) in the environment it uses that
//! engine; otherwise it starts a local one in-process.

use std::error::Error;
use std::future::IntoFuture;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::engine::LocalEngine;
use rstream::http::TlsListener;
use rstream::{Client, TlsOptions, TunnelAddr, TunnelOptions};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;

type BoxError = Box<dyn Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // rustls chooses the process-wide crypto provider by itself only when
    // one provider is compiled in; with both `ring` and `aws-lc-rs` in the
    // build (e.g. `--all-features`), name one. Ignored if already set.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let self_test = std::env::args().any(|a| a == "--self-test");

    // The engine from the environment, or a local one started here.
    let mut _local = None;
    let client = if std::env::var("RSTREAM_ENGINE").is_ok_and(|v| !v.trim().is_empty()) {
        Client::from_env()?
    } else {
        let engine = LocalEngine::builder().start().await?;
        let tls = TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?;
        let client = Client::builder()
            .engine(engine.engine_address())
            .tls(tls)
            .build()?;
        _local = Some(engine);
        client
    };

    let control = client.connect().await?;
    let tunnel = control.create_tunnel(TunnelOptions::tls()).await?;
    let properties = tunnel.properties();
    let host = properties.hostname.clone().ok_or("no hostname")?;
    let port = properties
        .port
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(443);
    println!("forwarding address: {}", tunnel.forwarding_address());

    // The app's own certificate for the tunnel's hostname: self-signed here;
    // bring yours (e.g. `CertificateDer::pem_file_iter`) in production.
    let cert = rcgen::generate_simple_self_signed(vec![host.clone()])?;
    let cert_der = cert.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

    let app = Router::new().route(
        "/",
        get(
            |ConnectInfo(from): ConnectInfo<TunnelAddr>, version: http::Version| async move {
                format!("hello over {version:?} from {from}\n")
            },
        ),
    );
    let listener = TlsListener::new(tunnel, config);
    let closed = listener.tunnel().closed();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let signal = async move {
        tokio::select! {
            _ = stopped => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = closed => {}
        }
    };
    let server = tokio::spawn(
        rstream::http::serve(listener, app)
            .with_graceful_shutdown(signal)
            .into_future(),
    );

    if self_test {
        for alpn in [&b"h2"[..], b"http/1.1"] {
            let body = get_root(&host, port, &cert_der, alpn).await?;
            print!("{body}");
            let want = if alpn == b"h2" {
                "HTTP/2.0"
            } else {
                "HTTP/1.1"
            };
            if !body.starts_with(&format!("hello over {want}")) {
                return Err(format!("self-test: unexpected answer {body:?}").into());
            }
        }
        println!("self-test passed");
    } else {
        println!("try: curl --cacert <the app's certificate> https://{host}:{port}/");
        println!("ctrl-c to stop");
    }
    let _ = stop.send(());
    server.await??;
    control.close().await?;
    Ok(())
}

/// `GET /` over TLS that trusts only the app's certificate (not the
/// engine's), negotiating `alpn`.
async fn get_root(
    host: &str,
    port: u16,
    cert: &CertificateDer<'static>,
    alpn: &[u8],
) -> Result<String, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())?;
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect((host, port)).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(host.to_owned())?, tcp)
        .await?;
    let io = TokioIo::new(tls);
    let request = http::Request::get(format!("https://{host}:{port}/"))
        .header(http::header::HOST, format!("{host}:{port}"))
        .body(Empty::<Bytes>::new())?;
    let response = if alpn == b"h2" {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        // h2 carries the authority in the URI, not in a Host header.
        let (mut parts, body) = request.into_parts();
        parts.headers.remove(http::header::HOST);
        send.send_request(http::Request::from_parts(parts, body))
            .await?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(conn);
        let (mut parts, body) = request.into_parts();
        parts.uri = "/".parse()?;
        send.send_request(http::Request::from_parts(parts, body))
            .await?
    };
    let body = response.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
