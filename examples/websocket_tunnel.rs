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

    let uri: http::Uri = url.parse()?;
    let host = uri.host().ok_or("no host")?.to_owned();
    let tcp =
        tokio::net::TcpStream::connect((host.as_str(), uri.port_u16().unwrap_or(443))).await?;
    let tls = tokio_rustls::TlsConnector::from(setup.tls.client_config(&[b"http/1.1"])?)
        .connect(rustls::pki_types::ServerName::try_from(host)?, tcp)
        .await?;
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
