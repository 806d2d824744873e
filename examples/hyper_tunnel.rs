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
use rstream::TunnelOptions;

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let setup = support::setup().await?;
    let control = setup.client.connect().await?;
    let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
    let url = tunnel.forwarding_address().to_owned();
    println!("forwarding address: {url}");
    println!("try: {}", setup.curl(&url));

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

    let (status, body) = support::https_get(&setup.tls, &url).await?;
    println!("GET {url} -> {status}: {}", body.trim_end());
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}
