//! [`Watch`]: real-time events over SSE or WebSocket, optionally resilient.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_core::Stream;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tracing::Instrument;

use super::filters::{self, WatchParams};
use super::http::{headers, ApiError};
use super::models::Event;
use super::{EngineApi, ErrorKind};
use crate::backoff::{Backoff, Jitter};
use crate::config::Secret;
use crate::control::MAX_RECONNECT_DELAY;
use crate::error::{code, Error, Result};
use crate::transport::https::HttpsConnector;

/// WebSocket ping period (the client drives ping/pong), at most: with a
/// shorter [`Watch::read_deadline`] it is a third of the deadline.
const PING_EVERY: Duration = Duration::from_secs(20);
/// A watch connection that received nothing (no event, no SSE keep-alive
/// comment, no WebSocket frame or pong) for this long is dead, by default:
/// 90 s. The local engine sends an SSE `: keepalive` comment every 15 s and
/// the client pings WebSockets every 20 s, so a live connection never
/// stays silent this long; a half-open one (NAT drop, no RST) is given up
/// and, for a [resilient](Watch::resilient) watch, reconnected. See
/// [`Watch::read_deadline`].
pub const DEFAULT_READ_DEADLINE: Duration = Duration::from_secs(90);
/// The shortest [`Watch::read_deadline`] kept: 10 ms.
const MIN_READ_DEADLINE: Duration = Duration::from_millis(10);
/// Events buffered between the connection task and the consumer.
const CHANNEL: usize = 64;
/// A resilient watch's reconnect backoff by default: 250 ms doubling up
/// to 30 s, each delay with equal jitter (between half and all of it).
const DEFAULT_BACKOFF: Backoff =
    Backoff::new(Duration::from_millis(250), Duration::from_secs(30)).with_jitter(Jitter::Equal);

/// How a [`Watch`] reaches the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum WatchTransport {
    /// Server-Sent Events (`GET /api/sse`), over the pooled HTTP client;
    /// dead after the [read deadline](Watch::read_deadline) (90 s) without
    /// a byte (the engine sends a keep-alive comment every 15 s).
    #[default]
    Sse,
    /// WebSocket (`GET /api/websocket`, ALPN `http/1.1`), one connection
    /// per watch; pings every 20 s, dead after the
    /// [read deadline](Watch::read_deadline) (90 s) without a frame.
    WebSocket,
}

impl WatchTransport {
    /// `"sse"` or `"websocket"`: the `transport` field of the
    /// `rstream.watch` span.
    fn name(self) -> &'static str {
        match self {
            WatchTransport::Sse => "sse",
            WatchTransport::WebSocket => "websocket",
        }
    }
}

/// A stream of [`Event`]s from [`EngineApi::watch`].
///
/// The first event of every connection is `state.initial`, the snapshot of
/// what the filters match; deltas follow in order. The watch connects when
/// first polled (from a task of its own, so it must be polled inside a
/// tokio runtime) and closes when dropped.
///
/// Without [`resilient`](Watch::resilient), the stream yields one error and
/// ends when the connection fails or the engine ends it. With it, a dropped
/// connection is re-established with capped, jittered exponential backoff
/// and the stream goes on with a **fresh `state.initial`**: treat every
/// `state.initial` as "forget what you knew". Authentication, validation
/// (4xx) and decoding errors are never retried.
///
/// A connection that receives nothing for the
/// [read deadline](Watch::read_deadline) (default 90 s) counts as dead, so a
/// half-open connection (NAT drop, no RST) is noticed instead of leaving
/// the watch silently stale.
#[derive(Debug)]
#[must_use = "a Watch does nothing until it is polled as a Stream"]
pub struct Watch {
    api: EngineApi,
    params: WatchParams,
    transport: WatchTransport,
    resilient: bool,
    backoff: Backoff,
    read_deadline: Duration,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    events: mpsc::Receiver<Result<Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    pub(crate) fn new(api: EngineApi, params: WatchParams) -> Self {
        Watch {
            api,
            params,
            transport: WatchTransport::Sse,
            resilient: false,
            backoff: DEFAULT_BACKOFF,
            read_deadline: DEFAULT_READ_DEADLINE,
            running: None,
        }
    }

    /// Uses this transport (default SSE). Ignored once polled.
    pub fn transport(mut self, transport: WatchTransport) -> Self {
        self.transport = transport;
        self
    }

    /// Shorthand for `transport(WatchTransport::WebSocket)`.
    pub fn websocket(self) -> Self {
        self.transport(WatchTransport::WebSocket)
    }

    /// Reconnects after a drop (see the type docs).
    pub fn resilient(mut self) -> Self {
        self.resilient = true;
        self
    }

    /// The reconnect backoff of a resilient watch: the first delay and
    /// the cap (defaults 250 ms and 30 s); each delay is jittered between
    /// half and all of its value, and the sequence restarts after a
    /// connection that delivered its `state.initial`. Both are clamped to
    /// 1 ms ..= [`MAX_RECONNECT_DELAY`](crate::control::MAX_RECONNECT_DELAY)
    /// (1 hour), so no value overflows.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        let clamp = |d: Duration| d.clamp(Duration::from_millis(1), MAX_RECONNECT_DELAY);
        let initial = clamp(initial);
        self.backoff = DEFAULT_BACKOFF
            .with_initial(initial)
            .with_max(clamp(max).max(initial));
        self
    }

    /// How long a connection may receive nothing at all before it counts
    /// as dead (default [`DEFAULT_READ_DEADLINE`], 90 s; clamped to
    /// 10 ms ..= [`MAX_RECONNECT_DELAY`](crate::control::MAX_RECONNECT_DELAY)).
    /// Any byte resets it: events, SSE keep-alive comments, WebSocket
    /// frames and pongs (WebSocket pings go out every 20 s, or a third of a
    /// shorter deadline). A dead connection ends a plain watch with
    /// `ERR_RSTREAM_WATCH_TIMEOUT` (kind `Timeout`); a resilient one
    /// reconnects. Keep it well above the engine's keep-alive period.
    pub fn read_deadline(mut self, deadline: Duration) -> Self {
        self.read_deadline = deadline.clamp(MIN_READ_DEADLINE, MAX_RECONNECT_DELAY);
        self
    }

    /// The watch's transport.
    pub fn transport_kind(&self) -> WatchTransport {
        self.transport
    }

    fn start(&mut self) -> &mut Running {
        self.running.get_or_insert_with(|| {
            let (tx, events) = mpsc::channel(CHANNEL);
            // A child of the span current at the first poll.
            let span = tracing::info_span!("rstream.watch", transport = self.transport.name());
            let task = tokio::spawn(
                run(
                    self.api.clone(),
                    self.params.clone(),
                    self.transport,
                    self.resilient,
                    self.backoff,
                    self.read_deadline,
                    tx,
                )
                .instrument(span),
            );
            Running { events, task }
        })
    }
}

impl Stream for Watch {
    type Item = Result<Event>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.start().events.poll_recv(cx)
    }
}

/// How one connection ended.
enum End {
    /// The consumer is gone.
    Consumer,
    /// The connection failed or ended; `synced` if it delivered `state.initial`.
    Failed { error: Error, synced: bool },
}

fn permanent(error: &Error) -> bool {
    match error.kind() {
        ErrorKind::Auth | ErrorKind::Config | ErrorKind::Protocol | ErrorKind::Tls => true,
        ErrorKind::Http => ApiError::from_error(error)
            .map(|e| e.status().is_client_error() && !matches!(e.status().as_u16(), 408 | 429))
            .unwrap_or(false),
        _ => false,
    }
}

async fn run(
    api: EngineApi,
    params: WatchParams,
    transport: WatchTransport,
    resilient: bool,
    backoff: Backoff,
    read_deadline: Duration,
    tx: mpsc::Sender<Result<Event>>,
) {
    // Counts from 1 since the last connection that delivered its snapshot.
    let mut attempt: u32 = 1;
    loop {
        let end = match transport {
            WatchTransport::Sse => sse(&api, &params, read_deadline, &tx).await,
            WatchTransport::WebSocket => websocket(&api, &params, read_deadline, &tx).await,
        };
        let (error, synced) = match end {
            End::Consumer => return,
            End::Failed { error, synced } => (error, synced),
        };
        if !resilient || permanent(&error) {
            let _ = tx.send(Err(error)).await;
            return;
        }
        if synced {
            attempt = 1;
        }
        let jittered = backoff.delay(attempt);
        tracing::warn!(code = error.code(), %error, retry_in = ?jittered, "engine watch dropped; reconnecting");
        tokio::select! {
            () = tokio::time::sleep(jittered) => {}
            () = tx.closed() => return,
        }
        attempt = attempt.saturating_add(1);
    }
}

fn closed(message: String) -> Error {
    Error::new(ErrorKind::Closed, code::WATCH_CLOSED, message)
}

/// Hands one event to the consumer; `false` when it is gone.
async fn deliver(tx: &mpsc::Sender<Result<Event>>, event: Event, synced: &mut bool) -> bool {
    if event.event_type == super::EventType::StateInitial {
        *synced = true;
    }
    tx.send(Ok(event)).await.is_ok()
}

// ---------------------------------------------------------------- SSE

/// The error of a connection that stayed silent past its read deadline.
fn silent(transport: &str, deadline: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        code::WATCH_TIMEOUT,
        format!(
            "the {transport} watch received nothing for {deadline:?}; connection presumed dead"
        ),
    )
}

async fn sse(
    api: &EngineApi,
    params: &WatchParams,
    read_deadline: Duration,
    tx: &mpsc::Sender<Result<Event>>,
) -> End {
    let mut synced = false;
    let fail = |error: Error, synced: bool| End::Failed { error, synced };
    let opened = async {
        let target = api.target().await?;
        let http = api.http()?;
        let headers = headers(
            "text/event-stream",
            target.token.as_ref().map(Secret::expose),
        )?;
        let url = format!(
            "https://{}/api/sse{}",
            target.authority,
            filters::query(params)
        );
        let budget = api.options().timeout;
        let response = tokio::time::timeout(budget, http.get(&url, "/api/sse", &headers))
            .await
            .map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    code::ENGINE_API_TIMEOUT,
                    format!("engine API GET /api/sse: no answer within {budget:?}"),
                )
            })??;
        if !response.status().is_success() {
            let status = response.status();
            let body = tokio::time::timeout(
                budget,
                super::http::read_body(response.into_body(), 64 * 1024, "/api/sse"),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default();
            return Err(ApiError::new(Method::GET, "/api/sse", status, &body).into_error());
        }
        Ok(response.into_body())
    };
    let mut body = tokio::select! {
        r = opened => match r {
            Ok(body) => body,
            Err(e) => return fail(e, false),
        },
        () = tx.closed() => return End::Consumer,
    };
    let mut parser = SseParser::new(api.options().max_body);
    loop {
        // Any frame (events and keep-alive comments alike) proves the
        // connection alive; silence past the deadline is a half-open one.
        let frame = tokio::select! {
            f = tokio::time::timeout(read_deadline, body.frame()) => match f {
                Ok(f) => f,
                Err(_) => return fail(silent("SSE", read_deadline), synced),
            },
            () = tx.closed() => return End::Consumer,
        };
        match frame {
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                if let Err(e) = parser.push(&data) {
                    return fail(e, synced);
                }
                while let Some(payload) = parser.next_event() {
                    let event = match payload.and_then(|p| Event::from_json(&p)) {
                        Ok(e) => e,
                        Err(e) => return fail(e, synced),
                    };
                    if !deliver(tx, event, &mut synced).await {
                        return End::Consumer;
                    }
                }
            }
            Some(Err(e)) => {
                let error = Error::new(
                    ErrorKind::Io,
                    code::WATCH_CLOSED,
                    format!("the SSE watch broke: {e}{}", parser.reason()),
                );
                return fail(error, synced);
            }
            None => {
                let error = closed(format!("the engine ended the SSE watch{}", parser.reason()));
                return fail(error, synced);
            }
        }
    }
}

/// Incremental SSE parser: `data:` lines joined with `\n`, dispatched at a
/// blank line; `event:`, `id:`, `retry:` and other fields are ignored;
/// `:` comments are skipped (the last `: rstream: …` one is kept as the
/// reason a watch ended). Lines end with `\n`, `\r\n` or `\r`.
pub(crate) struct SseParser {
    buf: BytesMut,
    data: Option<String>,
    max: usize,
    last_reason: Option<String>,
    ready: std::collections::VecDeque<Result<String>>,
    skip_lf: bool,
}

impl SseParser {
    pub(crate) fn new(max: usize) -> Self {
        SseParser {
            buf: BytesMut::new(),
            data: None,
            max,
            last_reason: None,
            ready: std::collections::VecDeque::new(),
            skip_lf: false,
        }
    }

    /// Feeds bytes; fails when one event grows past the limit.
    pub(crate) fn push(&mut self, bytes: &Bytes) -> Result<()> {
        self.buf.extend_from_slice(bytes);
        loop {
            if self.skip_lf && !self.buf.is_empty() {
                if self.buf[0] == b'\n' {
                    self.buf.advance(1);
                }
                self.skip_lf = false;
            }
            let Some(end) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') else {
                break;
            };
            let line = self.buf.split_to(end);
            let terminator = self.buf[0];
            self.buf.advance(1);
            if terminator == b'\r' {
                self.skip_lf = true;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            self.line(&line);
        }
        let pending = self.buf.len() + self.data.as_ref().map_or(0, String::len);
        if pending > self.max {
            return Err(Error::new(
                ErrorKind::Protocol,
                code::EVENT_TOO_LARGE,
                format!("an SSE event is larger than {} bytes", self.max),
            ));
        }
        Ok(())
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                if !data.trim().is_empty() {
                    self.ready.push_back(Ok(data));
                }
            }
            return;
        }
        if let Some(comment) = line.strip_prefix(':') {
            if let Some(reason) = comment.trim_start().strip_prefix("rstream:") {
                self.last_reason = Some(reason.trim().to_owned());
            }
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        if field == "data" {
            match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
    }

    /// The next complete event's data.
    pub(crate) fn next_event(&mut self) -> Option<Result<String>> {
        self.ready.pop_front()
    }

    /// `" (engine: <reason>)"` when the engine said why it ended the watch.
    fn reason(&self) -> String {
        self.last_reason
            .as_ref()
            .map(|r| format!(" (engine: {r})"))
            .unwrap_or_default()
    }
}

// ---------------------------------------------------------- WebSocket

async fn websocket(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn events(chunks: &[&str]) -> Vec<String> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        for c in chunks {
            p.push(&Bytes::copy_from_slice(c.as_bytes())).unwrap();
            while let Some(e) = p.next_event() {
                out.push(e.unwrap());
            }
        }
        out
    }

    #[test]
    fn sse_framing() {
        assert_eq!(events(&["data: {\"a\":1}\n\n"]), vec!["{\"a\":1}"]);
        assert_eq!(
            events(&[
                "da",
                "ta: 1\r",
                "\ndata:2\r\n",
                "\r\n: keepalive\n\nevent: x\nid: 3\ndata: 3\n\n"
            ]),
            vec!["1\n2", "3"]
        );
        assert_eq!(events(&["data: x\r\rdata: y\n\n"]), vec!["x", "y"]);
        let mut p = SseParser::new(10);
        assert!(p.push(&Bytes::from_static(b"data: 0123456789abc")).is_err());
        let mut p = SseParser::new(100);
        p.push(&Bytes::from_static(b": rstream: fell behind\n\n"))
            .unwrap();
        assert_eq!(p.reason(), " (engine: fell behind)");
    }
}
