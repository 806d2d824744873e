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
    let tls = support::tls_connect(&setup.tls, &url, &[b"h2"]).await?;
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
