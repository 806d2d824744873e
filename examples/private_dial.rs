//! A private tunnel (no public address) and a client dialing it by name.
//!
//! ```text
//! cargo run --example private_dial
//! ```

mod support;

use rstream::TunnelOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let setup = support::setup().await?;
    let control = setup.client.connect().await?;
    let mut tunnel = control
        .create_tunnel(TunnelOptions::new().name("private-echo"))
        .await?;
    println!("tunnel: {}", tunnel.forwarding_address());

    // The owner side: upper-case whatever arrives.
    tokio::spawn(async move {
        while let Ok(mut stream) = tunnel.accept().await {
            tokio::spawn(async move {
                let mut data = Vec::new();
                if stream.read_to_end(&mut data).await.is_ok() {
                    let _ = stream.write_all(&data.to_ascii_uppercase()).await;
                    let _ = stream.shutdown().await;
                }
            });
        }
    });

    // The dialing side (any client of the same engine, any process).
    let mut stream = setup.client.dial("private-echo").await?;
    stream.write_all(b"hello private tunnel").await?;
    stream.shutdown().await?; // half-close: the owner sees EOF, we can still read
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    println!("dialed private-echo, got: {answer}");
    control.close().await?;
    Ok(())
}
