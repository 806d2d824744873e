//! Publish an axum router through an rstream tunnel, then call it over HTTPS.
//!
//! ```text
//! cargo run --example quickstart
//! ```
//!
//! Starts a local engine in-process (or uses `RSTREAM_ENGINE`,
//! `RSTREAM_AUTHENTICATION_TOKEN` and `RSTREAM_CA_FILE` when set), publishes
//! the router with `axum::serve(tunnel, router)` — no loopback socket —
//! prints the forwarding address, makes one real HTTPS request to it and
//! prints the answer. Pass `--serve` to keep serving until Ctrl-C.

mod support;

use axum::routing::get;
use axum::Router;
use rstream::TunnelOptions;

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let setup = support::setup().await?;

    let control = setup.client.connect().await?;
    let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding address: {url}");
    println!("try: {}", setup.curl(&url));

    let app = Router::new().route(
        "/",
        get(|| async { "Hello from axum, through an rstream tunnel!\n" }),
    );
    let closed = tunnel.closed();
    let server = tokio::spawn(async move {
        axum::serve(tunnel, app)
            .with_graceful_shutdown(async move {
                let _ = closed.await;
            })
            .await
    });

    let (status, body) = support::https_get(&setup.tls, &url).await?;
    println!("GET {url} -> {status}: {}", body.trim_end());

    if std::env::args().any(|a| a == "--serve") {
        println!("serving; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    server.await??;
    Ok(())
}
