//! `GET /api/sse` and `GET /api/websocket`: `state.initial` (the filtered
//! snapshot, taken atomically with the subscription) and then every
//! matching delta, in order, from the engine's event bus.
//!
//! Each watch has its own bounded queue on the bus. A watch that falls a
//! whole queue behind is cut off: SSE gets a final `: rstream: …` comment
//! and an aborted body, WebSocket a close frame `1013` with the reason.
//! SSE sends a `: keepalive` comment every 15 s.

use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{header, StatusCode};
use tokio::time::{Instant, MissedTickBehavior};

use super::inventory::{client_object, clients, tunnel_object, tunnels};
use super::{Authorized, Engine, Params};
use crate::api::models::rfc3339;
use crate::api::{Event, EventObject, EventType, InitialState, Status, WatchParams};
use crate::engine::events::{EngineEvent, Sequenced, WatchEnd, Watcher, WATCH_QUEUE};

/// SSE keepalive comment period.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// A WebSocket frame that cannot be written within this ends the watch.
const WS_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message accepted from a WebSocket watcher (it sends none).
const WS_MAX_INCOMING: usize = 64 * 1024;

/// A watch: the initial event, then filtered deltas.
struct Feed {
    watcher: Watcher,
    params: WatchParams,
    initial: Option<Event>,
}

impl Feed {
    fn start(inner: &Engine, params: WatchParams) -> Feed {
        let (watcher, all_clients, all_tunnels) = inner.state().watch(WATCH_QUEUE);
        let snapshot = InitialState::new(
            Some(rfc3339(SystemTime::now())),
            clients(all_clients)
                .into_iter()
                .filter(|c| params.matches_client(c))
                .collect(),
            tunnels(all_tunnels)
                .into_iter()
                .filter(|t| params.matches_tunnel(t))
                .collect(),
        );
        let mut initial = Event::new(EventType::StateInitial, EventObject::Initial(snapshot));
        initial.id = Some(watcher.snapshot_id.clone());
        initial.created_at = Some(rfc3339(SystemTime::now()));
        Feed {
            watcher,
            params,
            initial: Some(initial),
        }
    }

    /// The next event for this watch. Cancel safe.
    async fn next(&mut self) -> Result<Event, WatchEnd> {
        if let Some(e) = self.initial.take() {
            return Ok(e);
        }
        loop {
            let item = self.watcher.recv().await?;
            if let Some(e) = self.convert(&item) {
                return Ok(e);
            }
        }
    }

    /// The API event for a bus event, if the filters match. Deleted
    /// objects are matched on their last live state (`online`) and sent
    /// `offline`, so a watch filtered on `status: online` sees deletions.
    fn convert(&self, item: &Sequenced) -> Option<Event> {
        let (event_type, object) = match &*item.event {
            EngineEvent::ClientCreated { client } => {
                let c = client_object(client, Status::Online);
                if !self.params.matches_client(&c) {
                    return None;
                }
                (EventType::ClientCreated, EventObject::Client(Box::new(c)))
            }
            EngineEvent::ClientDeleted { client, .. } => {
                let mut c = client_object(client, Status::Online);
                if !self.params.matches_client(&c) {
                    return None;
                }
                c.status = Status::Offline;
                (EventType::ClientDeleted, EventObject::Client(Box::new(c)))
            }
            EngineEvent::TunnelCreated { tunnel } => {
                let t = tunnel_object(tunnel, Status::Online);
                if !self.params.matches_tunnel(&t) {
                    return None;
                }
                (EventType::TunnelCreated, EventObject::Tunnel(Box::new(t)))
            }
            EngineEvent::TunnelDeleted { tunnel, .. } => {
                let mut t = tunnel_object(tunnel, Status::Online);
                if !self.params.matches_tunnel(&t) {
                    return None;
                }
                t.status = Status::Offline;
                (EventType::TunnelDeleted, EventObject::Tunnel(Box::new(t)))
            }
        };
        let mut event = Event::new(event_type, object);
        event.id = Some(item.id.to_string());
        event.created_at = Some(rfc3339(item.event.at()));
        Some(event)
    }
}

fn reason(end: WatchEnd) -> String {
    match end {
        WatchEnd::Lagged { capacity } => format!(
            "watch closed: this subscriber fell more than {capacity} events behind; reconnect for a fresh state.initial"
        ),
        WatchEnd::Closed => "watch closed: the engine is stopping".to_owned(),
    }
}

fn json(event: &Event) -> String {
    // Plain structs with string keys always serialise.
    serde_json::to_string(event).unwrap_or_default()
}

struct SseState {
    feed: Feed,
    keepalive: tokio::time::Interval,
    done: bool,
}

/// `GET /api/sse`.
pub(super) async fn sse(
    _: Authorized,
    State(inner): State<Engine>,
    Params(params): Params<WatchParams>,
) -> Response {
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = SseState {
        feed: Feed::start(&inner, params),
        keepalive,
        done: false,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        tokio::select! {
            next = s.feed.next() => match next {
                Ok(event) => {
                    let frame = Bytes::from(format!("data: {}\n\n", json(&event)));
                    Some((Ok::<_, std::io::Error>(frame), s))
                }
                Err(end) => {
                    let reason = reason(end);
                    tracing::debug!(%reason, "SSE watch ended");
                    // The reason as a comment, then the end of the body
                    // (an aborted body could lose the comment in hyper's
                    // write buffer).
                    let frame = Bytes::from(format!(": rstream: {reason}\n\n"));
                    s.done = true;
                    Some((Ok(frame), s))
                }
            },
            _ = s.keepalive.tick() => Some((Ok(Bytes::from_static(b": keepalive\n\n")), s)),
        }
    });
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

/// `GET /api/websocket`.
pub(super) async fn websocket(
    _: Authorized,
    State(inner): State<Engine>,
    Params(params): Params<WatchParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let feed = Feed::start(&inner, params);
    upgrade
        .max_message_size(WS_MAX_INCOMING)
        .on_upgrade(move |socket| ws_session(socket, feed))
}

async fn ws_session(mut socket: WebSocket, mut feed: Feed) {
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                // Pings are answered by the WebSocket layer; data is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            next = feed.next() => match next {
                Ok(event) => {
                    let text = Message::text(json(&event));
                    match tokio::time::timeout(WS_WRITE_TIMEOUT, socket.send(text)).await {
                        Ok(Ok(())) => {}
                        _ => return,
                    }
                }
                Err(end) => {
                    let code = match end {
                        WatchEnd::Lagged { .. } => 1013,
                        WatchEnd::Closed => 1001,
                    };
                    let mut text = reason(end);
                    // A close reason must fit in 123 bytes.
                    while text.len() > 120 {
                        text.pop();
                    }
                    tracing::debug!(reason = %text, "WebSocket watch ended");
                    let close = Message::Close(Some(CloseFrame { code, reason: text.into() }));
                    let _ = tokio::time::timeout(Duration::from_secs(5), socket.send(close)).await;
                    return;
                }
            }
        }
    }
}
