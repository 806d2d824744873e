//! Datagram tunnels: a UDP-style echo server, reached two ways.
//!
//! 1. A private datagram tunnel, one [`DatagramChannel`] per peer, dialed
//!    with `client.dial_datagram(name)`.
//! 2. A published datagram tunnel merged into one `UdpSocket`-like
//!    [`DatagramSocket`], reached by a plain `tokio::net::UdpSocket` at its
//!    UDP address (`HOST:PORT (udp)`).
//!
//! ```text
//! cargo run --example datagram_echo                  # serve, check itself, exit
//! cargo run --example datagram_echo -- --self-test   # the same, for CI
//! cargo run --example datagram_echo -- --serve       # keep serving until Ctrl-C
//! ```
//!
//! See docs/DATAGRAMS.md.

use std::sync::Arc;
use std::time::Duration;

use rstream::datagram::MAX_DATAGRAM_SIZE;
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, DatagramSocket, DatagramTunnel, TlsOptions, TunnelOptions};
use tokio::net::UdpSocket;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    // The engine configured by the environment, or a local one in-process.
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

    // 1. Private: one channel per peer, each echoed by its own task.
    let name = format!("datagram-echo-{}", std::process::id());
    let tunnel = control
        .create_datagram_tunnel(TunnelOptions::datagram().name(&name))
        .await?;
    println!("private datagram tunnel: {}", tunnel.forwarding_address());
    tokio::spawn(echo_channels(tunnel));

    let channel = client.dial_datagram(&name).await?;
    println!("dialed, peer {}", channel.peer());
    for message in ["hello", "", "datagrams stay whole"] {
        channel.send(message.as_bytes()).await?;
        let back = tokio::time::timeout(Duration::from_secs(10), channel.recv()).await??;
        println!("sent {message:?}, got {:?}", String::from_utf8_lossy(&back));
        check(back == message.as_bytes(), "private echo")?;
    }
    let big = vec![7u8; MAX_DATAGRAM_SIZE + 1];
    let too_large = channel.send(&big).await.unwrap_err();
    println!("a {}-byte datagram: {}", big.len(), too_large.code());
    check(too_large.code() == code::DATAGRAM_TOO_LARGE, "size limit")?;
    channel.close().await;

    // 2. Published: every UDP source merged into one socket.
    let socket = Arc::new(
        control
            .create_datagram_tunnel(TunnelOptions::datagram().publish())
            .await?
            .into_socket(),
    );
    let address = socket.forwarding_address().to_owned();
    println!("published datagram tunnel: {address}");
    tokio::spawn(echo_socket(socket.clone()));

    let target = address.trim_end_matches(" (udp)").to_owned();
    let udp = UdpSocket::bind("0.0.0.0:0").await?;
    udp.connect(&target).await?;
    let mut buf = vec![0u8; 2048];
    for message in ["ping over UDP", "pong?"] {
        udp.send(message.as_bytes()).await?;
        let n = tokio::time::timeout(Duration::from_secs(10), udp.recv(&mut buf)).await??;
        println!(
            "UDP {message:?} -> {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        check(&buf[..n] == message.as_bytes(), "published UDP echo")?;
    }
    println!("dropped by the socket's queue: {}", socket.dropped());

    if std::env::args().any(|a| a == "--serve") {
        println!("serving; send UDP datagrams to {target}; press Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    socket.close().await?;
    control.close().await?;
    println!("ok");
    Ok(())
}

/// Echoes every peer of a datagram tunnel, each on its own task.
async fn echo_channels(mut tunnel: DatagramTunnel) {
    while let Ok(channel) = tunnel.accept().await {
        tokio::spawn(async move {
            while let Ok(datagram) = channel.recv().await {
                if channel.send_bytes(datagram).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Echoes datagrams the way a UDP server does, on one socket.
async fn echo_socket(socket: Arc<DatagramSocket>) {
    let mut buf = vec![0u8; MAX_DATAGRAM_SIZE];
    while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
        if let Err(e) = socket.send_to(&buf[..n], &peer).await {
            eprintln!("answer to {peer} failed: {e}");
        }
    }
}

fn check(ok: bool, what: &str) -> Result<(), BoxError> {
    if ok {
        Ok(())
    } else {
        Err(format!("self-test failed: {what}").into())
    }
}
