//! A WebSocket upgrade done by hand with plain hyper (no axum): the service
//! answers `101 Switching Protocols`, takes the connection with
//! `hyper::upgrade::on`, and runs tokio-tungstenite on the upgraded stream.
//! [`rstream::http::serve`] enables upgrades on every tunnel connection, so
//! this works through a published tunnel exactly as on a TCP listener.
//!
//! ```text
//! cargo run --example hyper_websocket [-- --serve]
//! ```
//!
//! The example checks itself: a tokio-tungstenite client connects to the
//! published `wss://` address, sends a message and expects it back.

mod support;

use std::convert::Infallible;
use std::future::IntoFuture;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rstream::engine::LocalEngine;
use rstream::error::code;
use rstream::{Client, TlsOptions, TunnelOptions};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The hyper service: `/ws` upgrades to a WebSocket echo, anything else is
/// a 404.
async fn handle(mut req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let is_upgrade = req
        .headers()
        .get(header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let key = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned();
    let (true, "/ws", Some(key)) = (is_upgrade, req.uri().path(), key) else {
        let mut rsp = Response::new(Full::from("not a WebSocket request\n"));
        *rsp.status_mut() = StatusCode::NOT_FOUND;
        return Ok(rsp);
    };
    // The upgraded stream exists once this 101 response has been written;
    // the task waits for it and then speaks WebSocket on the raw bytes.
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = match upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => return eprintln!("upgrade failed: {e}"),
        };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let rsp = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Full::default());
    // Every header above is a valid static or derived token.
    Ok(rsp.unwrap_or_default())
}

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
    tokio::spawn(rstream::http::serve(tunnel, tower::service_fn(handle)).into_future());

    // The check: a real WebSocket client through the published address.
    let tls = support::tls_connect(client.options().tls(), &url, &[b"http/1.1"]).await?;
    let (mut ws, rsp) = tokio_tungstenite::client_async(ws_url.as_str(), tls).await?;
    println!("handshake: {}", rsp.status());
    ws.send(Message::Text("hello over a raw hyper upgrade".into()))
        .await?;
    let reply = ws.next().await.ok_or("the server closed the WebSocket")??;
    println!("server said: {}", reply.to_text()?);
    if reply.to_text()? != "hello over a raw hyper upgrade" {
        return Err("unexpected echo".into());
    }
    ws.close(None).await?;
    if std::env::args().any(|a| a == "--serve") {
        tokio::signal::ctrl_c().await?;
    }
    control.close().await?;
    Ok(())
}
