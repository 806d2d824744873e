//! WebSocket over HTTP/2 (RFC 8441 extended CONNECT) end to end: a real h2
//! client (hyper, `:protocol = websocket`) reaches the local engine's
//! published address of an h2c tunnel, and the WebSocket lands in an axum
//! handler served by `rstream::http::serve` or by `axum::serve`.

use crate::support;

use std::future::IntoFuture;

use axum::extract::ws::{Message as WsMessage, WebSocketUpgrade};
use axum::routing::{any, get};
use axum::Router;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rstream::{HttpVersion, TunnelOptions};
use support::{authority, client, engine, tls_connect, within};
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// `/ws` echoes text frames, prefixed with the HTTP version the upgrade
/// request arrived with. Registered with `any`: over h2 the upgrade is a
/// CONNECT, not a GET.
fn app() -> Router {
    Router::new().route("/", get(|| async { "root" })).route(
        "/ws",
        any(|ws: WebSocketUpgrade, version: http::Version| async move {
            ws.on_upgrade(move |mut socket| async move {
                while let Some(Ok(msg)) = socket.recv().await {
                    if let WsMessage::Text(text) = msg {
                        let echo = format!("{version:?} {}", text.as_str());
                        if socket.send(WsMessage::Text(echo.into())).await.is_err() {
                            break;
                        }
                    }
                }
            })
        }),
    )
}

/// Opens an h2 connection to the published `url`, sends an extended
/// CONNECT for `/ws` and echoes a few messages over the WebSocket.
async fn websocket_over_h2(url: &str, ca_pem: &str) {
    let tls = tls_connect(url, ca_pem, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);

    // One plain request first: once it is answered, the server's SETTINGS
    // (with ENABLE_CONNECT_PROTOCOL) have arrived, which an extended
    // CONNECT needs.
    let base = format!("https://{}", authority(url));
    let req = http::Request::get(format!("{base}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(rsp.version(), http::Version::HTTP_2);
    assert_eq!(
        &rsp.into_body().collect().await.unwrap().to_bytes()[..],
        b"root"
    );

    let mut req = http::Request::builder()
        .method(http::Method::CONNECT)
        .uri(format!("{base}/ws"))
        .header("sec-websocket-version", "13")
        .body(Empty::<Bytes>::new())
        .unwrap();
    req.extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let rsp = send.send_request(req).await.unwrap();
    assert_eq!(
        rsp.status(),
        http::StatusCode::OK,
        "extended CONNECT accepted"
    );
    let upgraded = hyper::upgrade::on(rsp).await.unwrap();
    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;

    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        let echo = ws.next().await.expect("an echo").unwrap();
        assert_eq!(
            echo.into_text().unwrap().as_str(),
            format!("HTTP/2.0 hello {i}")
        );
    }
    ws.close(None).await.unwrap();

    // The h2 connection still serves other streams beside the WebSocket.
    let req = http::Request::get(format!("{base}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(send.send_request(req).await.unwrap().status(), 200);
}

async fn h2c_tunnel(
    engine: &rstream::engine::LocalEngine,
) -> (rstream::ControlChannel, rstream::Tunnel) {
    let control = client(engine).connect().await.unwrap();
    let tunnel = control
        .create_tunnel(TunnelOptions::http().http_version(HttpVersion::H2c))
        .await
        .unwrap();
    (control, tunnel)
}

#[tokio::test]
async fn http_serve_accepts_websocket_over_h2_through_an_h2c_tunnel() {
    let engine = engine().await;
    let (_control, tunnel) = h2c_tunnel(&engine).await;
    let url = tunnel.forwarding_address();
    let server = tokio::spawn(rstream::http::serve(tunnel, app()).into_future());
    within(
        "WebSocket over h2 (http::serve)",
        websocket_over_h2(&url, engine.ca_pem()),
    )
    .await;
    assert!(!server.is_finished());
    server.abort();
}

#[tokio::test]
async fn axum_serve_accepts_websocket_over_h2_through_an_h2c_tunnel() {
    let engine = engine().await;
    let (_control, tunnel) = h2c_tunnel(&engine).await;
    let url = tunnel.forwarding_address();
    // axum::serve enables extended CONNECT in its own hyper builder.
    let server = support::serve_axum(tunnel, app());
    within(
        "WebSocket over h2 (axum::serve)",
        websocket_over_h2(&url, engine.ca_pem()),
    )
    .await;
    assert!(!server.is_finished());
    server.abort();
}
