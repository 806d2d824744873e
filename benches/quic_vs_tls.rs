//! Private dials over the two transports, side by side in one run
//! (docs/QUIC.md): dial latency (dial + one 32-byte round trip, zero-RTT
//! off) and the echo throughput of one dial, owner and dialer both on TLS,
//! then both on QUIC, through one local engine over loopback.
//!
//! ```text
//! cargo bench --features quic --bench quic_vs_tls
//! ```

use rstream::engine::LocalEngine;
use rstream::{Client, TlsOptions, Transport, Tunnel, TunnelOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Echoes every stream of `tunnel`.
fn echo(mut tunnel: Tunnel) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(mut stream) = tunnel.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown().await;
            });
        }
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let engine = LocalEngine::builder().start().await?;
    let tls = TlsOptions::new().add_ca_pem(engine.ca_pem().as_bytes())?;
    for transport in [Transport::Tls, Transport::Quic] {
        let client = Client::builder()
            .engine(engine.engine_address())
            .tls(tls.clone())
            .transport(transport)
            .build()?;
        let control = client.connect().await?;
        let name = format!("measure-{transport}");
        let _echo = echo(
            control
                .create_tunnel(TunnelOptions::new().name(&name))
                .await?,
        );
        // Latency: dial (waiting for StreamRsp) + one 32-byte round trip.
        let dials = 200;
        let started = std::time::Instant::now();
        for _ in 0..dials {
            let mut stream = client
                .dial_with(&name, rstream::DialOptions::new().zero_rtt(false))
                .await?;
            stream.write_all(&[7u8; 32]).await?;
            let mut buf = [0u8; 32];
            stream.read_exact(&mut buf).await?;
        }
        let per_dial = started.elapsed() / dials;
        // Throughput: 256 MiB through one dial, echoed back.
        let total: usize = 256 * 1024 * 1024;
        let stream = client.dial(&name).await?;
        let (mut rd, mut wr) = tokio::io::split(stream);
        let started = std::time::Instant::now();
        let writer = tokio::spawn(async move {
            let chunk = vec![1u8; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                wr.write_all(&chunk).await?;
                sent += chunk.len();
            }
            wr.shutdown().await
        });
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0;
        loop {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        writer.await??;
        let secs = started.elapsed().as_secs_f64();
        if got != total {
            return Err(format!("echoed {got} of {total} bytes").into());
        }
        println!(
            "{transport}: dial + 32 B round trip {per_dial:?} (mean of {dials}); \
             echo of 256 MiB {:.0} MiB/s each way",
            256.0 / secs
        );
        let _ = control.close().await;
    }
    Ok(())
}
