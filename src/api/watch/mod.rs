//! [`Watch`]: real-time events over SSE or WebSocket, optionally resilient.
//!
//! The stream, its reconnect loop and what both transports share live here;
//! each transport's connection (open, read, deadline) is in `sse` and
//! `websocket`.

mod sse;
mod websocket;

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio::sync::mpsc;
use tracing::Instrument;

use super::filters::WatchParams;
use super::http::ApiError;
use super::models::Event;
use super::{EngineApi, ErrorKind};
use crate::backoff::{Backoff, Jitter};
use crate::control::MAX_RECONNECT_DELAY;
use crate::error::{code, Error, Result};

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
            WatchTransport::Sse => sse::sse(&api, &params, read_deadline, &tx).await,
            WatchTransport::WebSocket => {
                websocket::websocket(&api, &params, read_deadline, &tx).await
            }
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
