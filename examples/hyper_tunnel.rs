//! A plain hyper/tower service on a tunnel with `rstream::http::serve`
//! (HTTP/1.1 and h2c auto-detected, upgrades enabled), stopped gracefully
//! on ctrl-c or when the tunnel closes.
//!
//! ```text
//! cargo run --example hyper_tunnel [-- --serve]
//! ```

mod support;

use std::convert::Infallible;
use std::future::IntoFuture;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
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

    let service = tower::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
        let text = format!(
            "{} {} over {:?}\n",
            req.method(),
            req.uri().path(),
            req.version()
        );
        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
    });
    // One shutdown signal: our own stop, ctrl-c, or the tunnel closing.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let closed = tunnel.closed();
    let signal = async move {
        tokio::select! {
            _ = stopped => {}
            _ = tokio::signal::ctrl_c() => {}
            _ = closed => {}
        }
    };
    let server = tokio::spawn(
        rstream::http::serve(tunnel, service)
            .drain_timeout(Duration::from_secs(10))
            .with_graceful_shutdown(signal)
            .into_future(),
    );

    let (status, body) = support::https_get(client.options().tls(), &url).await?;
    println!("GET {url} -> {status}: {}", body.trim_end());
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}
