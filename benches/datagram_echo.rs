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
//! splice ⇄ framed).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rstream::engine::LocalEngine;
use rstream::{Client, DatagramTunnel, TlsOptions, TunnelOptions};
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    const N: usize = 20_000;
    const SIZE: usize = 64;
    const WINDOW: usize = 32;
    let engine = LocalEngine::builder().start().await?;
    let client = Client::builder()
        .engine(engine.engine_address())
        .tls(TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?)
        .build()?;
    let control = client.connect().await?;

    // Published: UDP ⇄ engine ⇄ framed ⇄ DatagramSocket.
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
        // A fresh source per round: its own channel. Each datagram carries
        // its sequence number; a window is sent, then answers are read
        // until all came back or none came for 50 ms.
        let udp = UdpSocket::bind("127.0.0.1:0").await?;
        udp.connect(target).await?;
        let mut buf = vec![0u8; 65_536];
        let mut seen = vec![false; N];
        let dropped_before = (engine.datagram_counters().1, socket.dropped());
        let start = Instant::now();
        let mut seq = 0usize;
        while seq + window <= N {
            for s in seq..seq + window {
                let mut payload = vec![0x5au8; SIZE];
                payload[..4].copy_from_slice(&(s as u32).to_be_bytes());
                udp.send(&payload).await?;
            }
            seq += window;
            let mut got = 0;
            while got < window {
                match tokio::time::timeout(Duration::from_millis(50), udp.recv(&mut buf)).await {
                    Ok(Ok(n)) if n >= 4 => {
                        let s = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
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
        let elapsed = start.elapsed();
        let received = seen.iter().filter(|s| **s).count();
        let lost = seq - received;
        println!(
            "published UDP echo: {seq} x {SIZE} B, window {window}: {received} back, {lost} lost ({:.2} %), {:.0} datagrams/s round trip, engine dropped {}, socket dropped {}",
            lost as f64 * 100.0 / seq as f64,
            received as f64 / elapsed.as_secs_f64(),
            engine.datagram_counters().1 - dropped_before.0,
            socket.dropped() - dropped_before.1
        );
    }

    // Private: dial_datagram ⇄ engine splice ⇄ channel echo, pipelined.
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
    Ok(())
}
