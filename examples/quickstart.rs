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

    let control = client.connect().await?;
    let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding address: {url}");
    let cacert = local_engine
        .as_ref()
        .map(|e| format!("--cacert {} ", e.ca_file().display()));
    println!("try: curl {}{url}", cacert.unwrap_or_default());

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

    let (status, body) = support::https_get(client.options().tls(), &url).await?;
    println!("GET {url} -> {status}: {}", body.trim_end());

    if std::env::args().any(|a| a == "--serve") {
        println!("serving; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    server.await??;
    Ok(())
}
