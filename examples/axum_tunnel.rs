//! `axum::serve(tunnel, router)`: the headline. Connect info included.
//!
//! ```text
//! cargo run --example axum_tunnel            # one self-check request, then exit
//! cargo run --example axum_tunnel -- --serve # keep serving until Ctrl-C
//! ```

mod support;

use axum::extract::ConnectInfo;
use axum::routing::get;
use axum::Router;
use rstream::{TunnelAddr, TunnelOptions};

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let setup = support::setup().await?;
    let control = setup.client.connect().await?;
    let tunnel = control
        .create_tunnel(TunnelOptions::http().name("axum-example"))
        .await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding address: {url}");
    println!("try: {}", setup.curl(&url));

    let app = Router::new().route(
        "/",
        get(|ConnectInfo(from): ConnectInfo<TunnelAddr>| async move {
            format!(
                "hello {}\n",
                from.source_ip()
                    .map_or("stranger".into(), |ip| ip.to_string())
            )
        }),
    );
    // Take the closed() future before serve consumes the tunnel: serve then
    // returns when the tunnel or its control channel ends.
    let closed = tunnel.closed();
    let server = tokio::spawn(async move {
        axum::serve(
            tunnel,
            app.into_make_service_with_connect_info::<TunnelAddr>(),
        )
        .with_graceful_shutdown(async move {
            let reason = closed.await;
            eprintln!("tunnel closed: {reason}");
        })
        .await
    });

    let (status, body) = support::https_get(&setup.tls, &url).await?;
    println!("GET {url} -> {status}: {}", body.trim_end());
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    server.await??;
    Ok(())
}
