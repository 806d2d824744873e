//! tower-http middleware on a tunnel: `TraceLayer` (request spans and
//! logs, under a `tracing` subscriber), `CompressionLayer` (gzip) and
//! `ServeDir` (static files), served with `rstream::http::serve`.
//!
//! ```text
//! cargo run --example tower_http                  # serve, check itself, exit
//! cargo run --example tower_http -- --self-test   # the same, for CI
//! cargo run --example tower_http -- --serve       # keep serving until Ctrl-C
//! RUST_LOG=debug cargo run --example tower_http   # more logs, rstream's too
//! ```
//!
//! Each request is logged by `TraceLayer` inside the connection's
//! `rstream.stream{stream_id, source_ip}` span, which `http::serve` enters
//! for every connection (see docs/OBSERVABILITY.md).

mod support;

use std::future::IntoFuture;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};
use tower_http::compression::CompressionLayer;
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // Logs: RUST_LOG when set, else tower-http's request logs and rstream's
    // info. TraceLayer logs at DEBUG.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,tower_http=debug".into()),
        )
        .init();

    // The engine configured by the environment (RSTREAM_ENGINE,
    // RSTREAM_AUTHENTICATION_TOKEN, RSTREAM_CA_FILE, ~/.rstream/config.yaml),
    // or, when none is, a local engine in this process.
    let (client, _local_engine) = match Client::from_env() {
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
    let url = tunnel.forwarding_address();
    println!("forwarding address: {url}");

    let app = Router::new()
        .route("/", get(|| async { "hello from tower-http\n" }))
        .route("/big", get(|| async { "compress me! ".repeat(1000) }))
        .nest_service(
            "/static",
            ServeDir::new(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/static")),
        )
        .layer(CompressionLayer::new())
        .layer(TraceLayer::new_for_http());

    // Runs until the tunnel closes for good, then returns the reason.
    let server = tokio::spawn(
        rstream::http::serve(tunnel, app)
            .drain_timeout(Duration::from_secs(5))
            .into_future(),
    );

    // Self-check: the three services answer through the tunnel.
    let tls = client.options().tls();
    let (status, body) = support::https_get(tls, &format!("{url}/")).await?;
    println!("GET / -> {status}: {}", body.trim_end());
    check(status == 200 && body.contains("tower-http"), "GET /")?;

    let (status, body) = support::https_get(tls, &format!("{url}/static/index.html")).await?;
    println!("GET /static/index.html -> {status}, {} bytes", body.len());
    check(status == 200 && body.contains("ServeDir"), "ServeDir")?;

    let big =
        support::https_get_with(tls, &format!("{url}/big"), &[("accept-encoding", "gzip")]).await?;
    let encoding = big.headers().get("content-encoding").cloned();
    println!(
        "GET /big (accept-encoding: gzip) -> {}, content-encoding {encoding:?}, {} bytes on the wire for 13000",
        big.status(),
        big.body().len()
    );
    check(
        encoding.is_some_and(|e| e == "gzip") && big.body().len() < 13_000,
        "CompressionLayer gzips",
    )?;

    if std::env::args().any(|a| a == "--serve") {
        println!("serving; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    let reason = server.await?.err();
    println!("server stopped: {reason:?}");
    println!("ok");
    Ok(())
}

fn check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("self-test failed: {what}").into())
    }
}
