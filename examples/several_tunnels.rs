//! Several tunnels in one process, on one control channel: a public HTTP
//! app, a public TCP service and a private HTTP API, each served by its own
//! task; a client then reaches each one the way its users would.
//!
//! ```text
//! cargo run --example several_tunnels                 # serve, check itself, exit
//! cargo run --example several_tunnels -- --self-test  # the same, for CI
//! cargo run --example several_tunnels -- --serve      # keep serving until Ctrl-C
//! ```

mod support;

use std::future::IntoFuture;

use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, Tunnel, TunnelOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

    // One control channel carries all three tunnels.
    let control = client.connect().await?;
    let web = control.create_tunnel(TunnelOptions::http()).await?;
    let tcp = control.create_tunnel(TunnelOptions::tcp()).await?;
    let private_name = format!("several-tunnels-api-{}", std::process::id());
    let api = control
        .create_tunnel(TunnelOptions::new().name(private_name.as_str()))
        .await?;
    let web_url = web.forwarding_address();
    let tcp_addr = tcp.forwarding_address();
    println!("http:    {web_url}");
    println!("tcp:     {tcp_addr}");
    println!("private: {}", api.forwarding_address());

    // Each tunnel is served by its own task; each ends when its tunnel
    // closes (here: when the control channel is closed below).
    let mut servers = JoinSet::new();
    let web_app = Router::new().route("/", get(|| async { "public web app\n" }));
    servers.spawn(rstream::http::serve(web, web_app).into_future());
    servers.spawn(serve_upper_case(tcp));
    let api_app = Router::new().route("/status", get(|| async { "private API: ok\n" }));
    servers.spawn(rstream::http::serve(api, api_app).into_future());

    // Their users: a browser for the web app…
    let (status, body) = support::https_get(client.options().tls(), &format!("{web_url}/")).await?;
    println!("GET {web_url}/ -> {status}: {}", body.trim_end());
    check(status == 200 && body == "public web app\n", "http tunnel")?;

    // …a TCP client for the TCP service (published as `host:port (tcp)`)…
    let host_port = tcp_addr.trim_end_matches(" (tcp)");
    let mut conn = tokio::net::TcpStream::connect(host_port).await?;
    conn.write_all(b"raw bytes").await?;
    conn.shutdown().await?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await?;
    println!("tcp {host_port}: sent \"raw bytes\", got {answer:?}");
    check(answer == "RAW BYTES", "tcp tunnel")?;

    // …and, for the private API, any client of the same engine, dialing it
    // by name (here hyper-util's pooled client over `client.connector()`).
    let http =
        HttpClient::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(client.connector());
    let response = http
        .get(format!("http://{private_name}/status").parse()?)
        .await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    println!(
        "GET http://{private_name}/status -> {status}: {}",
        String::from_utf8_lossy(&body).trim_end()
    );
    check(
        status == 200 && &body[..] == b"private API: ok\n",
        "private tunnel",
    )?;

    if std::env::args().any(|a| a == "--serve") {
        println!("serving; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    // Closing the control channel closes its tunnels: every server returns.
    control.close().await?;
    while let Some(served) = servers.join_next().await {
        // `http::serve` returns the reason its tunnel closed.
        if let Err(reason) = served? {
            println!("a server stopped: {reason}");
        }
    }
    println!("ok");
    Ok(())
}

/// A raw TCP service: answers each connection with its bytes upper-cased.
async fn serve_upper_case(mut tunnel: Tunnel) -> rstream::Result<()> {
    loop {
        let mut stream = tunnel.accept().await?;
        tokio::spawn(async move {
            let mut data = Vec::new();
            if stream.read_to_end(&mut data).await.is_ok() {
                let _ = stream.write_all(&data.to_ascii_uppercase()).await;
                let _ = stream.shutdown().await;
            }
        });
    }
}

fn check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("self-test failed: {what}").into())
    }
}
