//! Datagram echo rate and loss through the local engine (docs/DATAGRAMS.md).
//!
//! ```text
//! cargo bench --bench datagram_echo
//! ```
//!
//! One process holds the engine, the tunnel owner and the client, so the
//! figures are for one machine's two cores shared by all three. Published:
//! a real UDP client, a window of datagrams in flight, against a
//! `DatagramSocket` echo (UDP ⇄ engine ⇄ framed ⇄ SDK). Private:
//! `dial_datagram` pipelined against a channel echo (framed ⇄ engine
//! splice ⇄ framed). These run on the TLS transport (plane B).
//!
//! With `--features quic` the same published run follows with the owner
//! on the QUIC transport (UDP ⇄ engine ⇄ QUIC DATAGRAM ⇄ SDK, plane A), and
//! a private dial with both ends on QUIC (DATAGRAM ⇄ engine ⇄ DATAGRAM),
//! windowed like the published runs since plane A is unreliable:
//!
//! ```text
//! cargo bench --features quic --bench datagram_echo
//! ```

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rstream::engine::LocalEngine;
use rstream::{Client, DatagramTunnel, TlsOptions, Transport, TunnelOptions};
use tokio::net::UdpSocket;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Bounds every wait, so a lost datagram on the reliable path fails the
/// run instead of hanging it.
const LIMIT: Duration = Duration::from_secs(20);

/// Echoes every datagram of every channel of `tunnel`.
fn echo(mut tunnel: DatagramTunnel) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(channel) = tunnel.accept().await {
            tokio::spawn(async move {
                while let Ok(datagram) = channel.recv().await {
                    if channel.send_bytes(datagram).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

const N: usize = 20_000;
const SIZE: usize = 64;
const WINDOW: usize = 32;

/// A client of `engine` on `transport`.
fn client(engine: &LocalEngine, transport: Transport) -> Result<Client, BoxError> {
    Ok(Client::builder()
        .engine(engine.engine_address())
        .tls(TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?)
        .transport(transport)
        .build()?)
}

/// Sends `N` numbered datagrams through `send`, `window` at a time, reading
/// answers through `recv` until a window came back or none came for 50 ms;
/// returns (sent, received, elapsed).
async fn windowed<S, R>(window: usize, mut send: S, mut recv: R) -> (usize, usize, Duration)
where
    S: AsyncFnMut(Vec<u8>),
    R: AsyncFnMut() -> Option<Vec<u8>>,
{
    let mut seen = vec![false; N];
    let start = Instant::now();
    let mut seq = 0usize;
    while seq + window <= N {
        for s in seq..seq + window {
            let mut payload = vec![0x5au8; SIZE];
            payload[..4].copy_from_slice(&(s as u32).to_be_bytes());
            send(payload).await;
        }
        seq += window;
        let mut got = 0;
        while got < window {
            match tokio::time::timeout(Duration::from_millis(50), recv()).await {
                Ok(Some(d)) if d.len() >= 4 => {
                    let s = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
                    if let Some(slot) = seen.get_mut(s) {
                        *slot = true;
                    }
                    got += 1;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    let received = seen.iter().filter(|s| **s).count();
    (seq, received, start.elapsed())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let engine = LocalEngine::builder().start().await?;
    let client = client(&engine, Transport::Tls)?;
    published(&engine, &client, "framed (owner on TLS)").await?;
    private_framed(&client).await?;
    #[cfg(feature = "quic")]
    {
        let quic = self::client(&engine, Transport::Quic)?;
        published(&engine, &quic, "QUIC DATAGRAM (owner on QUIC)").await?;
        // The dialer on a QUIC connection of its own: a dial over the
        // owner's connection would give both ends one channel id, and the
        // engine answers that with a framed dial.
        private_quic(&quic, &self::client(&engine, Transport::Quic)?).await?;
    }
    Ok(())
}

/// Published: UDP ⇄ engine ⇄ the owner's plane ⇄ DatagramSocket.
async fn published(engine: &LocalEngine, client: &Client, plane: &str) -> Result<(), BoxError> {
    let control = client.connect().await?;
    let socket = Arc::new(
        control
            .create_datagram_tunnel(TunnelOptions::datagram().publish())
            .await?
            .into_socket(),
    );
    let target: SocketAddr = socket
        .forwarding_address()
        .trim_end_matches(" (udp)")
        .parse()?;
    {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
                let _ = socket.send_to(&buf[..n], &peer).await;
            }
        });
    }
    for window in [WINDOW, 16 * WINDOW] {
        // A fresh source per round: its own channel.
        let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        udp.connect(target).await?;
        let dropped_before = (engine.datagram_counters().1, socket.dropped());
        let mut buf = vec![0u8; 65_536];
        let (sent, received, elapsed) = windowed(
            window,
            async |d: Vec<u8>| {
                let _ = udp.send(&d).await;
            },
            async || {
                let n = udp.recv(&mut buf).await.ok()?;
                Some(buf[..n].to_vec())
            },
        )
        .await;
        let lost = sent - received;
        println!(
            "published UDP echo, {plane}: {sent} x {SIZE} B, window {window}: {received} back, {lost} lost ({:.2} %), {:.0} datagrams/s round trip, engine dropped {}, socket dropped {}",
            lost as f64 * 100.0 / sent as f64,
            received as f64 / elapsed.as_secs_f64(),
            engine.datagram_counters().1 - dropped_before.0,
            socket.dropped() - dropped_before.1
        );
    }
    control.close().await?;
    Ok(())
}

/// Private, plane B: dial_datagram ⇄ engine splice ⇄ channel echo, pipelined.
async fn private_framed(client: &Client) -> Result<(), BoxError> {
    let control = client.connect().await?;
    let _echo = echo(
        control
            .create_datagram_tunnel(TunnelOptions::datagram().name("measure"))
            .await?,
    );
    for size in [64usize, 1400, 16 * 1024] {
        let channel = Arc::new(client.dial_datagram("measure").await?);
        let sender = {
            let channel = channel.clone();
            tokio::spawn(async move {
                let d = bytes::Bytes::from(vec![1u8; size]);
                for _ in 0..N {
                    if channel.send_bytes(d.clone()).await.is_err() {
                        break;
                    }
                }
            })
        };
        let start = Instant::now();
        for _ in 0..N {
            tokio::time::timeout(LIMIT, channel.recv()).await??;
        }
        let elapsed = start.elapsed();
        sender.await?;
        println!(
            "private framed echo: {N} x {size} B pipelined: {:.0} datagrams/s round trip, {:.1} MB/s each way, 0 lost (reliable)",
            N as f64 / elapsed.as_secs_f64(),
            (N * size) as f64 / elapsed.as_secs_f64() / 1e6
        );
    }
    control.close().await?;
    Ok(())
}

/// Private, plane A: owner and dialer on QUIC, DATAGRAM ⇄ engine ⇄
/// DATAGRAM, windowed (unreliable: a lost datagram is counted, not waited
/// for).
#[cfg(feature = "quic")]
async fn private_quic(owner: &Client, dialer: &Client) -> Result<(), BoxError> {
    let control = owner.connect().await?;
    let _echo = echo(
        control
            .create_datagram_tunnel(TunnelOptions::datagram().name("measure-quic"))
            .await?,
    );
    for window in [WINDOW, 16 * WINDOW] {
        let channel = dialer.dial_datagram("measure-quic").await?;
        assert!(channel.is_quic_datagram(), "plane A expected");
        let (sent, received, elapsed) = windowed(
            window,
            async |d: Vec<u8>| {
                let _ = channel.send(&d).await;
            },
            async || channel.recv().await.ok().map(|b| b.to_vec()),
        )
        .await;
        let lost = sent - received;
        println!(
            "private QUIC DATAGRAM echo: {sent} x {SIZE} B, window {window}: {received} back, {lost} lost ({:.2} %), {:.0} datagrams/s round trip, channel dropped {}",
            lost as f64 * 100.0 / sent as f64,
            received as f64 / elapsed.as_secs_f64(),
            channel.dropped()
        );
    }
    control.close().await?;
    Ok(())
}
