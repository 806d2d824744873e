//! An `h2c` tunnel: the engine speaks HTTP/2 to the app, and clients reach
//! the published address with HTTP/2 (ALPN h2).
//!
//! ```text
//! cargo run --example h2c_tunnel [-- --serve]
//! ```

mod support;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, HttpVersion, TlsOptions, TunnelOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // The engine configured by the environment (RSTREAM_ENGINE,
    // RSTREAM_AUTHENTICATION_TOKEN, RSTREAM_CA_FILE, ~/.rstream/config.yaml),
    // or, when none is, a local engine in this process.
    let (client, local_engine) = match Client::from_env() {
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
    let tunnel = control
        .create_tunnel(TunnelOptions::http().http_version(HttpVersion::H2c))
        .await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding address: {url}");
    let cacert = local_engine
        .as_ref()
        .map(|e| format!("--cacert {} ", e.ca_file().display()));
    println!("try: curl --http2 {}{url}", cacert.unwrap_or_default());

    let app = Router::new().route(
        "/",
        get(|req: http::Request<axum::body::Body>| async move { format!("{:?}\n", req.version()) }),
    );
    tokio::spawn(async move { axum::serve(tunnel, app).await });

    // An HTTP/2 client: TLS with ALPN h2 to the published address.
    let tls = support::tls_connect(client.options().tls(), &url, &[b"h2"]).await?;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let rsp = send
        .send_request(http::Request::get(url.as_str()).body(Empty::<Bytes>::new())?)
        .await?;
    let version = rsp.version();
    let body = rsp.into_body().collect().await?.to_bytes();
    println!(
        "client saw {version:?}; the app saw {}",
        String::from_utf8_lossy(&body).trim_end()
    );
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    Ok(())
}
