//! Tunnels: create them with [`ControlChannel::create_tunnel`], then accept
//! the downstream connections they receive. A tunnel survives its control
//! channel's reconnects (see [`Tunnel`]).

mod address;
mod forward;
#[cfg(feature = "axum")]
mod listener;
mod options;
mod stats;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::{mpsc, watch};

/// The engine's description of a tunnel ([`Tunnel::properties`]).
pub use crate::proto::TunnelProperties;
pub use address::forwarding_address;
pub use forward::{ForwardOptions, DEFAULT_FORWARD_CONNECT_TIMEOUT, DEFAULT_MAX_RELAYS};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use listener::TunnelAddr;
#[cfg(feature = "local-engine")]
pub(crate) use options::check_labels;
pub use options::{
    HttpVersion, Protocol, TlsMode, TunnelOptions, MAX_LABELS, MAX_LABEL_KEY_BYTES,
    MAX_LABEL_VALUE_BYTES,
};
pub(crate) use stats::{ActiveGuard, Counters};
pub use stats::{TunnelCounters, TunnelStats};

use crate::control::{ControlChannel, TunnelHandle};
use crate::error::{Error, Result};
use crate::stream::RstreamStream;

/// What the engine currently says about a tunnel. Replaced (never
/// mutated) when the tunnel is re-created after a reconnect.
#[derive(Debug)]
pub(crate) struct Current {
    pub(crate) id: Arc<str>,
    pub(crate) properties: Arc<TunnelProperties>,
    pub(crate) address: Arc<str>,
}

impl Current {
    fn new(properties: TunnelProperties) -> Result<Self> {
        let id = properties
            .id
            .as_deref()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| Error::protocol("tunnel properties without an id"))?;
        Ok(Current {
            id: Arc::from(id),
            address: Arc::from(forwarding_address(&properties)?),
            properties: Arc::new(properties),
        })
    }
}

/// State shared between a [`Tunnel`] and the control task. It outlives
/// reconnects: the control task rebinds it to each re-created engine tunnel.
#[derive(Debug)]
pub(crate) struct TunnelShared {
    /// The control task's stable key for this tunnel (engine ids change).
    key: u64,
    current: watch::Sender<Arc<Current>>,
    closed: watch::Sender<Option<Error>>,
    waker: AtomicWaker,
    /// Set once a full accept backlog was logged, until the next accept.
    backlog_full: AtomicBool,
    /// `rstream.tunnel`: the parent of the tunnel's streams' spans.
    span: tracing::Span,
    counters: Arc<Counters>,
    /// Plane-A datagram channels waiting for `DatagramTunnel::accept`
    /// (they have no stream to queue).
    #[cfg(feature = "quic")]
    quic_channels: crate::datagram::QuicAccept,
}

impl TunnelShared {
    /// Fails when the engine's properties lack an id or an address.
    /// Its `rstream.tunnel` span is a child of the current span (the
    /// control channel's, when called from the control task). `backlog`
    /// bounds the plane-A channels waiting for `accept` (as it bounds the
    /// streams of the other planes).
    pub(crate) fn new(key: u64, properties: TunnelProperties, backlog: usize) -> Result<Self> {
        let current = Current::new(properties)?;
        // Only plane A (feature `quic`) has a queue of its own to bound.
        #[cfg(not(feature = "quic"))]
        let _ = backlog;
        let span = tracing::info_span!(
            "rstream.tunnel",
            tunnel.id = %current.id,
            name = current.properties.name.as_deref(),
        );
        Ok(TunnelShared {
            key,
            current: watch::Sender::new(Arc::new(current)),
            closed: watch::Sender::new(None),
            waker: AtomicWaker::new(),
            backlog_full: AtomicBool::new(false),
            span,
            counters: Arc::default(),
            #[cfg(feature = "quic")]
            quic_channels: crate::datagram::QuicAccept::new(backlog),
        })
    }

    /// The tunnel's `rstream.tunnel` span.
    pub(crate) fn span(&self) -> &tracing::Span {
        &self.span
    }

    pub(crate) fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The queue of accepted plane-A datagram channels.
    #[cfg(feature = "quic")]
    pub(crate) fn quic_channels(&self) -> &crate::datagram::QuicAccept {
        &self.quic_channels
    }

    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// The current engine id, properties and address.
    pub(crate) fn current(&self) -> Arc<Current> {
        self.current.borrow().clone()
    }

    /// Points the tunnel at a re-created engine tunnel. Returns the previous
    /// state, or the error if the new properties are unusable (then nothing
    /// changes).
    pub(crate) fn rebind(&self, properties: TunnelProperties) -> Result<Arc<Current>> {
        let next = Arc::new(Current::new(properties)?);
        self.span
            .record("tunnel.id", tracing::field::display(&next.id));
        Ok(self.current.send_replace(next))
    }

    /// Marks the tunnel closed (first reason wins) and wakes its acceptor.
    pub(crate) fn close(&self, reason: Error) {
        self.closed.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(reason);
                true
            } else {
                false
            }
        });
        self.waker.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    fn closed_error(&self) -> Option<Error> {
        self.closed.borrow().clone()
    }

    /// Records that the backlog overflowed; `true` the first time since the
    /// last accept (so the overflow is logged once per episode).
    pub(crate) fn note_backlog_full(&self) -> bool {
        !self.backlog_full.swap(true, Ordering::Relaxed)
    }
}

/// A tunnel created on a control channel.
///
/// Accept its downstream connections with [`accept`](Tunnel::accept), or use
/// it as a `Stream` of connections, or hand it to `axum::serve`. Dropping it
/// closes it on the engine.
///
/// # Reconnects
///
/// When the control channel reconnects (see
/// [`ReconnectPolicy`](crate::control::ReconnectPolicy)), the tunnel is
/// re-created on the engine with the properties it was created with, plus
/// the hostname (and non-default port) the engine assigned the first time,
/// so its published address stays the same wherever the engine honours
/// them. The same `Tunnel` value keeps yielding connections; meanwhile
/// `accept` just waits. The engine may assign a new [`id`](Tunnel::id).
///
/// # Closing
///
/// When the tunnel closes for good (explicitly, by the engine, because its
/// control channel ended, or because re-creating it failed permanently)
/// `accept` returns the reason, connections delivered but not yet accepted
/// are closed, and connections already accepted keep flowing.
///
/// # Bounds
///
/// At most `accept_backlog` connections
/// ([`ClientOptions::accept_backlog`](crate::ClientOptions::accept_backlog),
/// default 256) wait for the application to accept them; while the backlog
/// is full, new downstream connections are refused at once (the engine gets
/// an `INVALID_STREAM` answer saying so) instead of queueing without bound.
#[must_use = "dropping a Tunnel closes it on the engine"]
pub struct Tunnel {
    name: Option<String>,
    control: TunnelHandle,
    streams: mpsc::Receiver<RstreamStream>,
    shared: Arc<TunnelShared>,
    ended: bool,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let current = self.shared.current();
        f.debug_struct("Tunnel")
            .field("id", &current.id)
            .field("address", &current.address)
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

impl Tunnel {
    pub(crate) fn new(
        streams: mpsc::Receiver<RstreamStream>,
        shared: Arc<TunnelShared>,
        control: TunnelHandle,
    ) -> Self {
        let name = shared.current().properties.name.clone();
        Tunnel {
            name,
            control,
            streams,
            shared,
            ended: false,
        }
    }

    /// The engine-assigned tunnel id.
    ///
    /// It may change when the tunnel is re-created after a reconnect; this
    /// always returns the current one (the id in each accepted stream's
    /// [`StreamInfo`](crate::StreamInfo) is the one it arrived on).
    pub fn id(&self) -> String {
        self.shared.current().id.to_string()
    }

    /// The tunnel name, if it has one (it never changes).
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The properties the engine returned (hostname, port, labels…), as of
    /// the last (re-)creation.
    pub fn properties(&self) -> Arc<TunnelProperties> {
        self.shared.current().properties.clone()
    }

    /// Where downstream clients reach the tunnel, e.g. `https://host:port`,
    /// `host:port (tcp)` or `rstrm://name (unpublished)`, as of the last
    /// (re-)creation.
    pub fn forwarding_address(&self) -> String {
        self.shared.current().address.to_string()
    }

    /// The control channel this tunnel lives on.
    pub fn control(&self) -> &ControlChannel {
        self.control.control()
    }

    /// Waits for the next downstream connection. While the control channel
    /// reconnects, it simply keeps waiting.
    ///
    /// # Errors
    ///
    /// Once the tunnel is closed for good, every call returns the reason.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no
    /// connection is lost; it stays queued for the next call.
    pub async fn accept(&mut self) -> Result<RstreamStream> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// What the tunnel shares with its control task.
    #[cfg(feature = "quic")]
    pub(crate) fn shared(&self) -> &Arc<TunnelShared> {
        &self.shared
    }

    /// Polls for the next downstream connection (see [`accept`](Tunnel::accept)).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<RstreamStream>> {
        self.shared.waker.register(cx.waker());
        if let Some(reason) = self.shared.closed_error() {
            // Delivered-but-unaccepted connections are closed with the tunnel.
            self.streams.close();
            while self.streams.try_recv().is_ok() {}
            return Poll::Ready(Err(reason));
        }
        match self.streams.poll_recv(cx) {
            Poll::Ready(Some(s)) => {
                self.shared.backlog_full.store(false, Ordering::Relaxed);
                Poll::Ready(Ok(s))
            }
            Poll::Ready(None) => Poll::Ready(Err(self
                .shared
                .closed_error()
                .unwrap_or_else(|| Error::tunnel_closed("tunnel closed")))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// The tunnel's counters: connections accepted, refused because the
    /// accept backlog was full, and still active (see [`TunnelStats`]).
    pub fn stats(&self) -> TunnelStats {
        self.shared.counters.snapshot()
    }

    /// A handle on the same counters that stays readable after the tunnel
    /// is moved into a server: `let counters = tunnel.counters();` before
    /// `http::serve(tunnel, app)`, then `counters.get()`.
    pub fn counters(&self) -> TunnelCounters {
        self.shared.counters.handle()
    }

    /// The tunnel's `rstream.tunnel` span (fields `tunnel.id`, recorded
    /// anew when the tunnel is re-created, and `name`), the parent of its
    /// streams' `rstream.stream` spans. See `docs/OBSERVABILITY.md`.
    pub fn span(&self) -> &tracing::Span {
        &self.shared.span
    }

    /// Whether the tunnel is closed for good.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Resolves with the reason once the tunnel is closed for good (not on
    /// a reconnect). The future owns what it needs (`'static`), so take it
    /// before handing the tunnel to `axum::serve` and pass it to graceful
    /// shutdown.
    pub fn closed(&self) -> impl Future<Output = Error> + Send + 'static {
        let mut rx = self.shared.closed.subscribe();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v
                    .clone()
                    .unwrap_or_else(|| Error::tunnel_closed("tunnel closed")),
                Err(_) => Error::tunnel_closed("tunnel closed"),
            }
        }
    }

    /// Closes the tunnel on the engine and waits for the acknowledgement.
    /// After a timeout the tunnel stays open and `close` may be retried.
    /// While the control channel is reconnecting, the tunnel is closed at
    /// once (it no longer exists on the engine).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the close request is sent when the future is first
    /// polled and proceeds whether or not the future is then dropped.
    pub async fn close(&self) -> Result<()> {
        if self.is_closed() {
            return Ok(());
        }
        self.control.close().await
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if !self.shared.is_closed() {
            self.control.release();
        }
    }
}

impl futures_core::Stream for Tunnel {
    type Item = Result<RstreamStream>;

    /// Yields connections; after the tunnel closes, one `Err` with the
    /// reason, then `None`.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.poll_accept(cx) {
            Poll::Ready(Ok(s)) => Poll::Ready(Some(Ok(s))),
            Poll::Ready(Err(e)) => {
                this.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
