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
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelAddr, TunnelOptions};

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
        .create_tunnel(TunnelOptions::http().name("axum-example"))
        .await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding address: {url}");
    let cacert = local_engine
        .as_ref()
        .map(|e| format!("--cacert {} ", e.ca_file().display()));
    println!("try: curl {}{url}", cacert.unwrap_or_default());

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

    let (status, body) = support::https_get(client.options().tls(), &url).await?;
    println!("GET {url} -> {status}: {}", body.trim_end());
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    server.await??;
    Ok(())
}
