//! `GET /api/sse` and `GET /api/websocket`: `state.initial` (the filtered
//! snapshot, taken atomically with the subscription) and then every
//! matching delta, in order, from the engine's event bus.
//!
//! Each watch has its own bounded queue on the bus. A watch that falls a
//! whole queue behind is cut off: SSE gets a final `: rstream: …` comment
//! and an aborted body, WebSocket a close frame `1013` with the reason.
//! SSE sends a `: keepalive` comment every 15 s.
//!
//! Bounds: at most 8 watches per connection and
//! `LocalEngineBuilder::max_watches` (256) per engine, one more is `429`
//! with the reason as text; a watch event that the connection does not
//! accept within the write timeout (30 s) ends the watch (SSE: the
//! connection's write bound closes it; WebSocket: the send times out);
//! WebSocket frames and messages from the watcher are capped at 64 KiB.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use bytes::Bytes;
use http::request::Parts;
use http::{header, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, MissedTickBehavior};

use super::inventory::{client_object, clients, tunnel_object, tunnels};
use super::{Authorized, Engine, Params, Rejection};
use crate::api::{Event, EventObject, EventType, InitialState, Status, WatchParams};
use crate::engine::dates::rfc3339;
use crate::engine::events::{EngineEvent, Sequenced, WatchEnd, Watcher, WATCH_QUEUE};
use crate::http::conn::ConnAbort;

/// SSE keepalive comment period.
const KEEPALIVE: Duration = Duration::from_secs(15);
/// Largest frame and message accepted from a WebSocket watcher (it sends
/// none): 64 KiB.
const WS_MAX_INCOMING: usize = 64 * 1024;
/// Time to send the close frame of a WebSocket watch that ends.
const WS_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A bounded number of watches (per engine, or per connection as a
/// request extension).
#[derive(Clone, Debug)]
pub(crate) struct WatchSlots {
    slots: Arc<Semaphore>,
    max: usize,
    /// "the engine", "this connection": for the refusal.
    scope: &'static str,
    /// Where the number is set, for the refusal.
    setting: &'static str,
}

impl WatchSlots {
    pub(crate) fn new(max: usize, scope: &'static str, setting: &'static str) -> Self {
        WatchSlots {
            slots: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            max,
            scope,
            setting,
        }
    }

    fn take(&self) -> Result<OwnedSemaphorePermit, Rejection> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            Rejection::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many watches on {}: at most {} at once ({}); close one or retry later",
                    self.scope, self.max, self.setting
                ),
            )
        })
    }
}

/// Extractor: a watch slot on the connection and on the engine, held for
/// the watch's lifetime. Put it after [`Authorized`], so that refused
/// requests never take one.
pub(super) struct WatchSlot {
    _connection: Option<OwnedSemaphorePermit>,
    _engine: OwnedSemaphorePermit,
}

impl FromRequestParts<Engine> for WatchSlot {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, inner: &Engine) -> Result<Self, Rejection> {
        let connection = match parts.extensions.get::<WatchSlots>() {
            Some(slots) => Some(slots.take()?),
            None => None,
        };
        let engine = inner.api.watches.take()?;
        Ok(WatchSlot {
            _connection: connection,
            _engine: engine,
        })
    }
}

/// A watch: the initial event, then filtered deltas.
struct Feed {
    watcher: Watcher,
    params: WatchParams,
    initial: Option<Event>,
    _slot: WatchSlot,
    /// The app token's list scope, when it filters or selects.
    scope: Option<super::scope::ListView>,
}

impl Feed {
    fn start(
        inner: &Engine,
        params: WatchParams,
        slot: WatchSlot,
        scope: Option<super::scope::ListView>,
    ) -> Feed {
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
            _slot: slot,
            scope,
        }
    }

    /// The next event as JSON, after the token's list scope (objects it
    /// may not see are skipped, fields it did not select removed).
    async fn next_json(&mut self) -> Result<String, WatchEnd> {
        loop {
            let event = self.next().await?;
            match &self.scope {
                None => return Ok(json(&event)),
                Some(scope) => {
                    if let Some(text) = scope.event_json(&event) {
                        return Ok(text);
                    }
                }
            }
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
    unaccepted: Arc<Unaccepted>,
}

/// Since when the SSE body has been waiting for the connection to take its
/// last frame (hyper asks for the next frame once it has taken one).
struct Unaccepted {
    base: Instant,
    /// Milliseconds from `base` + 1; 0 while the connection is asking.
    since_ms: AtomicU64,
}

impl Unaccepted {
    fn new() -> Self {
        Unaccepted {
            base: Instant::now(),
            since_ms: AtomicU64::new(0),
        }
    }

    fn taken(&self) {
        self.since_ms.store(0, Ordering::Release);
    }

    fn yielded(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.since_ms.store(ms + 1, Ordering::Release);
    }

    /// How long the last frame has been waiting, if it is.
    fn waiting(&self) -> Option<Duration> {
        match self.since_ms.load(Ordering::Acquire) {
            0 => None,
            ms => Some(
                self.base
                    .elapsed()
                    .saturating_sub(Duration::from_millis(ms - 1)),
            ),
        }
    }
}

/// Closes the connection of an SSE watch whose frame the connection has
/// not taken within `bound` (a watcher that stopped reading, or an h2 peer
/// that withholds flow-control credit). The body is not polled while
/// stalled, so this runs beside it, until the body is dropped.
fn cut_off_when_stalled(unaccepted: Weak<Unaccepted>, bound: Duration, abort: ConnAbort) {
    let period = (bound / 4).max(Duration::from_millis(10));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(period).await;
            let Some(unaccepted) = unaccepted.upgrade() else {
                return;
            };
            if unaccepted.waiting().is_some_and(|waited| waited >= bound) {
                tracing::debug!(
                    ?bound,
                    "SSE watcher stopped reading; closing its connection"
                );
                abort.abort();
                return;
            }
        }
    });
}

/// `GET /api/sse`.
pub(super) async fn sse(
    _: Authorized,
    grant: Option<Extension<super::scope::GrantSlot>>,
    slot: WatchSlot,
    State(inner): State<Engine>,
    Params(params): Params<WatchParams>,
    abort: Option<Extension<ConnAbort>>,
) -> Response {
    let unaccepted = Arc::new(Unaccepted::new());
    if let Some(Extension(abort)) = abort {
        cut_off_when_stalled(Arc::downgrade(&unaccepted), inner.api.write_timeout, abort);
    }
    let mut keepalive = tokio::time::interval_at(Instant::now() + KEEPALIVE, KEEPALIVE);
    keepalive.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let state = SseState {
        feed: Feed::start(
            &inner,
            params,
            slot,
            super::scope::ListView::for_watch(&inner, grant),
        ),
        keepalive,
        done: false,
        unaccepted,
    };
    let stream = futures_util::stream::unfold(state, |mut s| async move {
        // Asked for a frame: the previous one was taken.
        s.unaccepted.taken();
        if s.done {
            return None;
        }
        let next = tokio::select! {
            next = s.feed.next_json() => match next {
                Ok(event) => {
                    let frame = Bytes::from(format!("data: {event}\n\n"));
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
        };
        if let Some((_, s)) = &next {
            s.unaccepted.yielded();
        }
        next
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
    grant: Option<Extension<super::scope::GrantSlot>>,
    slot: WatchSlot,
    State(inner): State<Engine>,
    Params(params): Params<WatchParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let scope = super::scope::ListView::for_watch(&inner, grant);
    let feed = Feed::start(&inner, params, slot, scope);
    let write_timeout = inner.api.write_timeout;
    upgrade
        .max_frame_size(WS_MAX_INCOMING)
        .max_message_size(WS_MAX_INCOMING)
        .on_upgrade(move |socket| ws_session(socket, feed, write_timeout))
}

async fn ws_session(mut socket: WebSocket, mut feed: Feed, write_timeout: Duration) {
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                // Pings are answered by the WebSocket layer; data is ignored.
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
            next = feed.next_json() => match next {
                Ok(event) => {
                    let text = Message::text(event);
                    match tokio::time::timeout(write_timeout, socket.send(text)).await {
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
                    let _ = tokio::time::timeout(WS_CLOSE_TIMEOUT, socket.send(close)).await;
                    return;
                }
            }
        }
    }
}
