//! The WebSocket transport of a [`Watch`](super::Watch): `GET
//! /api/websocket`, client-driven ping/pong.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use super::{closed, deliver, silent, End, PING_EVERY};
use crate::api::filters::{self, WatchParams};
use crate::api::http::{headers, ApiError};
use crate::api::models::Event;
use crate::api::{EngineApi, ErrorKind};
use crate::config::Secret;
use crate::error::{code, Error, Result};
use crate::transport::https::HttpsConnector;

pub(super) async fn websocket(
    api: &EngineApi,
    params: &WatchParams,
    read_deadline: Duration,
    tx: &mpsc::Sender<Result<Event>>,
) -> End {
    let mut synced = false;
    let fail = |error: Error, synced: bool| End::Failed { error, synced };
    let max = api.options().max_body;
    let opened = async {
        let target = api.target().await?;
        let tls = api.ws_tls()?;
        let connector = HttpsConnector::new(tls, api.client_handle().options().connect_timeout)
            .proxy(api.client_handle().options().proxy.clone());
        if let Some(sni) = api.http()?.connector.server_name_for(&target.authority) {
            connector.server_name(&target.authority, &sni);
        }
        let budget = api.options().timeout;
        let handshake = async {
            let uri: http::Uri = format!("https://{}/", target.authority)
                .parse()
                .map_err(|_| Error::config(code::INVALID_ENGINE, "invalid engine API host"))?;
            let stream = connector.connect(&uri).await?;
            let url = format!(
                "wss://{}/api/websocket{}",
                target.authority,
                filters::query(params)
            );
            let mut request = url
                .into_client_request()
                .map_err(|e| Error::config(code::INVALID_ENGINE, format!("WebSocket URL: {e}")))?;
            let extra = headers(
                "application/json",
                target.token.as_ref().map(Secret::expose),
            )?;
            for (name, value) in &extra {
                if name != header::ACCEPT {
                    request.headers_mut().insert(name.clone(), value.clone());
                }
            }
            request
                .headers_mut()
                .insert(header::ACCEPT, HeaderValue::from_static("*/*"));
            let config = WebSocketConfig::default()
                .max_message_size(Some(max))
                .max_frame_size(Some(max));
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => {
                        let status = response.status();
                        let body = response.body().as_deref().unwrap_or_default().to_vec();
                        ApiError::new(Method::GET, "/api/websocket", status, &body).into_error()
                    }
                    other => Error::new(
                        ErrorKind::Io,
                        code::ENGINE_API_TRANSPORT,
                        format!("engine API GET /api/websocket: handshake failed: {other}"),
                    ),
                })
        };
        tokio::time::timeout(budget, handshake).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                code::ENGINE_API_TIMEOUT,
                format!("engine API GET /api/websocket: no upgrade within {budget:?}"),
            )
        })?
    };
    let (mut ws, _) = tokio::select! {
        r = opened => match r {
            Ok(ws) => ws,
            Err(e) => return fail(e, false),
        },
        () = tx.closed() => return End::Consumer,
    };
    // Pings often enough that a live engine's pongs beat the deadline.
    let ping_every = PING_EVERY.min(read_deadline / 3);
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut deadline = Instant::now() + read_deadline;
    loop {
        tokio::select! {
            message = ws.next() => {
                deadline = Instant::now() + read_deadline;
                let text = match message {
                    Some(Ok(Message::Text(t))) => t.as_str().to_owned(),
                    Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
                    Some(Ok(Message::Close(frame))) => {
                        let why = frame
                            .map(|f| format!(" (code {}: {})", u16::from(f.code), f.reason))
                            .unwrap_or_default();
                        return fail(closed(format!("the engine closed the WebSocket watch{why}")), synced);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        let error = Error::new(
                            ErrorKind::Io,
                            code::WATCH_CLOSED,
                            format!("the WebSocket watch broke: {e}"),
                        );
                        return fail(error, synced);
                    }
                    None => return fail(closed("the engine ended the WebSocket watch".into()), synced),
                };
                if text.trim().is_empty() {
                    continue;
                }
                let event = match Event::from_json(&text) {
                    Ok(e) => e,
                    Err(e) => return fail(e, synced),
                };
                if !deliver(tx, event, &mut synced).await {
                    let _ = ws.close(None).await;
                    return End::Consumer;
                }
            }
            _ = ping.tick() => {
                let sent = tokio::time::timeout(ping_every, ws.send(Message::Ping(Bytes::new()))).await;
                if !matches!(sent, Ok(Ok(()))) {
                    return fail(closed("the WebSocket watch could not send a ping".into()), synced);
                }
            }
            () = tokio::time::sleep_until(deadline) => {
                return fail(silent("WebSocket", read_deadline), synced);
            }
            () = tx.closed() => {
                let _ = ws.close(None).await;
                return End::Consumer;
            }
        }
    }
}
