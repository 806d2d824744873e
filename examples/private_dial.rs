//! A private tunnel (no public address) and a client dialing it by name.
//!
//! ```text
//! cargo run --example private_dial
//! ```

use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

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
    let control = client.connect().await?;
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
    let mut stream = client.dial("private-echo").await?;
    stream.write_all(b"hello private tunnel").await?;
    stream.shutdown().await?; // half-close: the owner sees EOF, we can still read
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    println!("dialed private-echo, got: {answer}");
    control.close().await?;
    Ok(())
}
