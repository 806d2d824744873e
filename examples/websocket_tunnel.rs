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
use rstream::TunnelOptions;
use tokio_tungstenite::tungstenite;

#[tokio::main]
async fn main() -> Result<(), support::BoxError> {
    let setup = support::setup().await?;
    let control = setup.client.connect().await?;
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

    let tls = support::tls_connect(&setup.tls, &url, &[b"http/1.1"]).await?;
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
