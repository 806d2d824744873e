//! `tunnel.forward_to(addr)`: publish a service that already listens on TCP.
//!
//! ```text
//! cargo run --example forward_local_port                 # demo service on a free port
//! cargo run --example forward_local_port -- 127.0.0.1:8000 --serve
//! ```

mod support;

use axum::routing::get;
use axum::Router;
use rstream::TunnelOptions;

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let setup = support::setup().await?;
    let target = match std::env::args().nth(1).filter(|a| !a.starts_with("--")) {
        Some(addr) => addr,
        None => {
            // A demo service on loopback to forward to.
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?.to_string();
            let app = Router::new().route("/", get(|| async { "served by a local TCP service\n" }));
            tokio::spawn(async move { axum::serve(listener, app).await });
            addr
        }
    };
    let control = setup.client.connect().await?;
    let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding {url} -> {target}");
    println!("try: {}", setup.curl(&url));
    let relay = tokio::spawn(tunnel.forward_to(target));

    let (status, body) = support::https_get(&setup.tls, &url).await?;
    println!("GET {url} -> {status}: {}", body.trim_end());
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    let reason = relay.await?;
    println!(
        "relay stopped: {}",
        reason.err().map_or("ok".into(), |e| e.to_string())
    );
    Ok(())
}
