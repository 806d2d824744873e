//! `tunnel.forward_to(addr)`: publish a service that already listens on TCP.
//!
//! ```text
//! cargo run --example forward_local_port                 # demo service on a free port
//! cargo run --example forward_local_port -- 127.0.0.1:8000 --serve
//! ```

mod support;

use axum::routing::get;
use axum::Router;
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};

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
    let control = client.connect().await?;
    let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding {url} -> {target}");
    let cacert = local_engine
        .as_ref()
        .map(|e| format!("--cacert {} ", e.ca_file().display()));
    println!("try: curl {}{url}", cacert.unwrap_or_default());
    let relay = tokio::spawn(tunnel.forward_to(target));

    let (status, body) = support::https_get(client.options().tls(), &url).await?;
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
