//! Graceful shutdown: stop on Ctrl-C *or* when the tunnel closes, whichever
//! comes first, and let in-flight requests finish (bounded by the drain
//! timeout).
//!
//! ```text
//! cargo run --example shutdown                 # serve until Ctrl-C (or the tunnel closes)
//! cargo run --example shutdown -- --self-test  # both signals, checked, then exit
//! ```
//!
//! `--self-test` (Unix) starts a slow request, sends itself SIGINT and checks that the request still
//! completes and the server returns; then serves a second tunnel and closes
//! it, and checks that the server returns on that signal too.

mod support;

use std::future::{Future, IntoFuture};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, ErrorKind, TlsOptions, Tunnel, TunnelOptions};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Resolves on Ctrl-C or when `tunnel` closes for good, whichever comes
/// first. Take it before the tunnel moves into the server.
fn shutdown_signal(tunnel: &Tunnel) -> impl Future<Output = ()> + Send + 'static {
    let closed = tunnel.closed();
    async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => println!("Ctrl-C: draining in-flight requests"),
            reason = closed => println!("tunnel closed ({reason}): draining in-flight requests"),
        }
    }
}

fn app() -> Router {
    Router::new().route("/", get(|| async { "hello\n" })).route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            "slow request done\n"
        }),
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
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

    let signal = shutdown_signal(&tunnel);
    let server = rstream::http::serve(tunnel, app())
        .drain_timeout(Duration::from_secs(10))
        .with_graceful_shutdown(signal);

    if !std::env::args().any(|a| a == "--self-test") {
        println!("serving; press Ctrl-C to stop");
        // `Ok` after the signal; when the tunnel closes, the server may see
        // that first and return the reason instead.
        match server.await {
            Ok(()) => println!("stopped"),
            Err(reason) => println!("stopped: the tunnel closed ({reason})"),
        }
        return Ok(());
    }

    if cfg!(not(unix)) {
        return Err("--self-test sends itself SIGINT: Unix only".into());
    }
    // Self-test, 1: a slow request is in flight when Ctrl-C arrives.
    let server = tokio::spawn(server.into_future());
    let tls = client.options().tls().clone();
    let slow_url = format!("{url}/slow");
    let slow = tokio::spawn(async move { support::https_get(&tls, &slow_url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    interrupt_self().await?;
    server.await??; // Ok(()): it stopped on the signal, after draining
    let (status, body) = slow.await??;
    println!(
        "the in-flight request finished: {status} {}",
        body.trim_end()
    );
    check(status == 200 && body == "slow request done\n", "drained")?;

    // Self-test, 2: the tunnel closes (its engine or control channel going
    // away looks the same).
    let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
    let url = tunnel.forwarding_address();
    let signal = shutdown_signal(&tunnel);
    let server = tokio::spawn(
        rstream::http::serve(tunnel, app())
            .with_graceful_shutdown(signal)
            .into_future(),
    );
    let (status, _) = support::https_get(client.options().tls(), &format!("{url}/")).await?;
    check(status == 200, "second tunnel serves")?;
    control.close().await?;
    let stopped = tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .map_err(|_| "the server did not stop when its tunnel closed")??;
    if let Err(reason) = stopped {
        // The server saw the tunnel close before the signal did.
        check(reason.kind() == ErrorKind::Closed, "stopped by the close")?;
    }
    println!("ok");
    Ok(())
}

/// Sends this process SIGINT, as Ctrl-C in a terminal would (Unix only).
async fn interrupt_self() -> Result<(), BoxError> {
    let status = tokio::process::Command::new("kill")
        .args(["-INT", &std::process::id().to_string()])
        .status()
        .await?;
    check(status.success(), "kill -INT")
}

fn check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("self-test failed: {what}").into())
    }
}
