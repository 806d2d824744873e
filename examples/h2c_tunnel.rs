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
use rstream::{HttpVersion, TunnelOptions};

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let setup = support::setup().await?;
    let control = setup.client.connect().await?;
    let tunnel = control
        .create_tunnel(TunnelOptions::http().http_version(HttpVersion::H2c))
        .await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding address: {url}");
    println!("try: {} --http2", setup.curl(&url));

    let app = Router::new().route(
        "/",
        get(|req: http::Request<axum::body::Body>| async move { format!("{:?}\n", req.version()) }),
    );
    tokio::spawn(async move { axum::serve(tunnel, app).await });

    // An HTTP/2 client: TLS with ALPN h2 to the published address.
    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or("no host")?.to_owned();
    let tcp =
        tokio::net::TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(443))).await?;
    let config = setup.tls.client_config(&[b"h2"])?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(rustls::pki_types::ServerName::try_from(host)?, tcp)
        .await?;
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
