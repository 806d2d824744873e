//! WebSocket upgrades through a published tunnel, with axum's
//! `WebSocketUpgrade` on the server and tokio-tungstenite as the client.
//!
//! ```text
//! cargo run --example websocket_tunnel [-- --serve]
//! ```

mod support;

use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::routing::get;
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};
use tokio_tungstenite::tungstenite;

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
    let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
    let url = tunnel.forwarding_address().to_owned();
    let ws_url = format!("{}/ws", url.replacen("https://", "wss://", 1));
    println!("forwarding address: {url}");
    println!("WebSocket endpoint: {ws_url}");

    let app = Router::new().route(
        "/ws",
        get(|ws: WebSocketUpgrade| async move {
            ws.on_upgrade(|mut socket| async move {
                while let Some(Ok(Message::Text(text))) = socket.recv().await {
                    if socket
                        .send(Message::Text(format!("echo: {text}").into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            })
        }),
    );
    tokio::spawn(async move { axum::serve(tunnel, app).await });

    let tls = support::tls_connect(client.options().tls(), &url, &[b"http/1.1"]).await?;
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url.as_str(), tls).await?;
    ws.send(tungstenite::Message::Text("hello".into())).await?;
    if let Some(reply) = ws.next().await {
        println!("server said: {}", reply?.to_text()?);
    }
    ws.close(None).await?;
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    Ok(())
}
