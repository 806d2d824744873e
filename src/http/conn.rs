//! One hardened HTTP connection server, shared by [`serve`](super::serve)
//! and the local engine's Engine HTTP API.
//!
//! hyper-util's auto builder (HTTP/1.1 and h2 prior knowledge, upgrades)
//! with a timer and four bounds, so no peer holds a connection for free:
//!
//! - **first request**: a connection that has not completed its first
//!   request head within `header_read_timeout` is dropped. This covers what
//!   hyper alone does not: the protocol detection (the auto builder reads the
//!   first bytes without a timer) and the h2 handshake.
//! - **request heads** (HTTP/1.1): a connection with no request in flight
//!   for `header_read_timeout` is dropped, which bounds a slow request head
//!   and the wait for the next request on a keep-alive connection (what
//!   hyper's own `header_read_timeout` does). Checked by the connection's
//!   timer, not with hyper's, which arms (allocates, inserts into the timer
//!   wheel, removes) a timer per request head: ≈ 2,000 instructions of a
//!   keep-alive request, 9 % (docs/BENCHMARKS.md).
//! - **idle**: a connection with no request in flight for `idle_timeout` is
//!   shut down gracefully (HTTP/1.1: closed; h2: GOAWAY, open streams
//!   finish). A request is in flight from the service call until its
//!   response body is dropped, so a slow handler or a long streaming
//!   response is never idle.
//! - **writes**: a write the peer does not accept for `write_timeout`
//!   fails the connection (a reader that stopped reading, a half-open TCP
//!   connection). It applies to upgraded connections (WebSocket) too.
//!
//! h2 connections also send keep-alive pings, so a dead h2 peer is dropped
//! even with streams open.

use std::future::Future;
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use crate::error::BoxError;

/// The bounds of every connection served by a [`ConnServer`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// Time to complete a request head (and, for a new connection, its
    /// first request head, protocol detection and h2 handshake included).
    pub(crate) header_read_timeout: Duration,
    /// Time without a request in flight before a graceful close.
    pub(crate) idle_timeout: Duration,
    /// Time a pending write may wait for the peer before the connection
    /// fails.
    pub(crate) write_timeout: Duration,
    /// h2 keep-alive ping period.
    pub(crate) h2_keep_alive_interval: Duration,
    /// Time to wait for a ping's acknowledgement before dropping an h2
    /// connection.
    pub(crate) h2_keep_alive_timeout: Duration,
}

/// Longest bound taken as given (a day); longer ones are clamped to it, so
/// no deadline computation can overflow (`Duration::MAX` is accepted).
pub(crate) const MAX_BOUND: Duration = Duration::from_secs(24 * 60 * 60);

impl ConnLimits {
    fn clamped(self) -> Self {
        ConnLimits {
            header_read_timeout: self.header_read_timeout.min(MAX_BOUND),
            idle_timeout: self.idle_timeout.min(MAX_BOUND),
            write_timeout: self.write_timeout.min(MAX_BOUND),
            h2_keep_alive_interval: self.h2_keep_alive_interval.min(MAX_BOUND),
            h2_keep_alive_timeout: self.h2_keep_alive_timeout.min(MAX_BOUND),
        }
    }
}

/// Serves HTTP connections with [`ConnLimits`]. Build once, serve many.
#[derive(Clone, Debug)]
pub(crate) struct ConnServer {
    builder: auto::Builder<TokioExecutor>,
    limits: ConnLimits,
}

impl ConnServer {
    /// A server with `limits`; `connect_protocol` enables RFC 8441
    /// extended CONNECT (WebSocket over h2).
    pub(crate) fn new(limits: ConnLimits, connect_protocol: bool) -> Self {
        let limits = limits.clamped();
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // hyper's own h1 head timer stays off (it would arm a timer per
        // request); `serve` bounds heads with the connection's timer. The
        // timer stays set for an `http1()` option a caller may add.
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(limits.h2_keep_alive_interval)
            .keep_alive_timeout(limits.h2_keep_alive_timeout);
        if connect_protocol {
            builder.http2().enable_connect_protocol();
        }
        ConnServer { builder, limits }
    }

    pub(crate) fn limits(&self) -> ConnLimits {
        self.limits
    }

    /// Changes the bounds, keeping any other builder setting.
    pub(crate) fn set_limits(&mut self, limits: ConnLimits) {
        let limits = limits.clamped();
        self.builder
            .http2()
            .keep_alive_interval(limits.h2_keep_alive_interval)
            .keep_alive_timeout(limits.h2_keep_alive_timeout);
        self.limits = limits;
    }

    /// hyper-util's builder, for the HTTP/1.1 and h2 settings.
    pub(crate) fn builder_mut(&mut self) -> &mut auto::Builder<TokioExecutor> {
        &mut self.builder
    }

    /// Serves one connection until it ends. When `shutdown` completes, the
    /// connection is shut down gracefully (in-flight requests finish); to
    /// stop it at once, drop the future.
    /// `abort`, when signalled (by a handler holding a clone), closes the
    /// connection at once.
    pub(crate) async fn serve<I, S, B>(
        &self,
        io: I,
        service: S,
        shutdown: impl Future<Output = ()>,
        abort: ConnAbort,
        what: &'static str,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let limits = self.limits;
        let activity = Arc::new(Activity::new());
        let service = Tracked {
            inner: service,
            activity: activity.clone(),
        };
        let io = TokioIo::new(WriteDeadline::new(io, limits.write_timeout));
        let mut conn = pin!(self.builder.serve_connection_with_upgrades(io, service));
        let mut shutdown = pin!(shutdown);
        let first_request_by = Instant::now() + limits.header_read_timeout;
        // The first check comes at whichever bound is nearer.
        let timer = tokio::time::sleep(limits.header_read_timeout.min(limits.idle_timeout));
        let mut timer = pin!(timer);
        let mut closing = false;
        loop {
            tokio::select! {
                ended = conn.as_mut() => {
                    if let Err(e) = ended {
                        tracing::debug!(error = %e, "{what} connection ended with an error");
                    }
                    return;
                }
                () = abort.aborted() => {
                    tracing::debug!("{what} connection aborted by its handler");
                    return;
                }
                () = &mut shutdown, if !closing => {
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
                () = timer.as_mut(), if !closing => {
                    let now = Instant::now();
                    match activity.state() {
                        State::NoRequestYet if now < first_request_by => {
                            timer.as_mut().reset(first_request_by);
                        }
                        State::NoRequestYet => {
                            tracing::debug!(
                                timeout = ?limits.header_read_timeout,
                                "{what} connection sent no complete request in time; closing"
                            );
                            return;
                        }
                        State::Busy => timer.as_mut().reset(now + activity.idle_bound(&limits)),
                        State::IdleSince(since)
                            if !activity.is_h2() && since + limits.header_read_timeout <= now =>
                        {
                            tracing::debug!(
                                timeout = ?limits.header_read_timeout,
                                "{what} connection sent no complete request head in time; closing"
                            );
                            return;
                        }
                        State::IdleSince(since) if since + limits.idle_timeout <= now => {
                            tracing::debug!(
                                timeout = ?limits.idle_timeout,
                                "{what} connection idle; closing"
                            );
                            conn.as_mut().graceful_shutdown();
                            closing = true;
                        }
                        State::IdleSince(since) => {
                            timer.as_mut().reset(since + activity.idle_bound(&limits));
                        }
                    }
                }
            }
        }
    }
}

/// Closes one connection at once, from a handler (e.g. a watch whose
/// events the peer does not take). Clones share the connection.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConnAbort(Arc<tokio::sync::Notify>);

impl ConnAbort {
    pub(crate) fn new() -> Self {
        ConnAbort::default()
    }

    /// Closes the connection (now, or as soon as it is served).
    // Only the Engine API's watches use it today.
    #[cfg_attr(not(feature = "local-engine"), allow(dead_code))]
    pub(crate) fn abort(&self) {
        self.0.notify_one();
    }

    /// Resolves when a handler asked to close the connection (at once if
    /// one did before).
    pub(crate) async fn aborted(&self) {
        self.0.notified().await;
    }
}

/// What a connection is doing, as far as its deadlines care.
enum State {
    NoRequestYet,
    Busy,
    IdleSince(Instant),
}

/// Requests in flight on one connection, and since when there are none.
///
/// Updated with a few atomic operations per request; the connection's
/// timer reads it only when it fires, so requests never wake it.
/// Requests in flight on one connection, and since when there are none
/// (shared with the Engine API's HTTP/3 connections).
pub(crate) struct Activity {
    base: Instant,
    seen: AtomicBool,
    in_flight: AtomicUsize,
    /// Milliseconds from `base` to the end of the last request.
    idle_since_ms: AtomicU64,
    /// An h2 connection (its requests say so): no request-head bound
    /// between requests, only the idle one.
    h2: AtomicBool,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Activity {
            base: Instant::now(),
            seen: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            idle_since_ms: AtomicU64::new(0),
            h2: AtomicBool::new(false),
        }
    }

    fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    /// How long the connection may go without a request in flight:
    /// HTTP/1.1 also bounds the next request head.
    fn idle_bound(&self, limits: &ConnLimits) -> Duration {
        if self.is_h2() {
            limits.idle_timeout
        } else {
            limits.idle_timeout.min(limits.header_read_timeout)
        }
    }

    pub(crate) fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.seen.store(true, Ordering::Release);
        InFlight(self.clone())
    }

    // Used by the Engine API over HTTP/3 only.
    #[cfg(all(feature = "local-engine", feature = "http3"))]
    /// Resolves once no request has been in flight for `bound` (counted
    /// from the connection's start while none came).
    pub(crate) async fn idle_for(&self, bound: Duration) {
        /// How often the bound is checked.
        const CHECK: Duration = Duration::from_millis(500);
        let mut check = tokio::time::interval(CHECK.min(bound));
        loop {
            check.tick().await;
            let since = match self.state() {
                State::Busy => continue,
                State::NoRequestYet => self.base,
                State::IdleSince(since) => since,
            };
            if since.elapsed() >= bound {
                return;
            }
        }
    }

    fn state(&self) -> State {
        if !self.seen.load(Ordering::Acquire) {
            return State::NoRequestYet;
        }
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return State::Busy;
        }
        let ms = self.idle_since_ms.load(Ordering::Acquire);
        State::IdleSince(self.base + Duration::from_millis(ms))
    }
}

/// One request in flight; dropped with its response body (or with its
/// future when the request is cancelled).
pub(crate) struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let ms = Instant::now().duration_since(self.0.base).as_millis();
            self.0
                .idle_since_ms
                .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Release);
        }
    }
}

/// The service, counting requests in flight.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Tracked<S>
where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if req.version() == http::Version::HTTP_2 {
            self.activity.h2.store(true, Ordering::Relaxed);
        }
        let guard = self.activity.begin();
        TrackedFuture {
            inner: self.inner.call(req),
            guard: Some(guard),
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's future; hands its [`InFlight`] to the response body.
    struct TrackedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            inner: body,
            _guard: guard,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until dropped.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<InFlight>,
    }
}

impl<B> TrackedBody<B> {
    // Used by the Engine API over HTTP/3 only.
    #[cfg(all(feature = "local-engine", feature = "http3"))]
    /// `inner`, keeping `guard`'s request in flight until dropped.
    pub(crate) fn new(inner: B, guard: InFlight) -> Self {
        TrackedBody {
            inner,
            _guard: Some(guard),
        }
    }
}

impl<B: http_body::Body> http_body::Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// An IO whose pending writes fail after `timeout` without progress.
struct WriteDeadline<I> {
    io: I,
    timeout: Duration,
    /// Armed while a write is pending; allocated on the first stall.
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<I> WriteDeadline<I> {
    fn new(io: I, timeout: Duration) -> Self {
        WriteDeadline {
            io,
            timeout,
            sleep: None,
            armed: false,
        }
    }

    fn bound<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        let deadline = Instant::now() + self.timeout;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            sleep.as_mut().reset(deadline);
            self.armed = true;
        }
        if sleep.as_mut().poll(cx).is_ready() {
            self.armed = false;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer accepted no bytes for {:?}", self.timeout),
            )));
        }
        Poll::Pending
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    forward_async_read!(io);
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.bound(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.bound(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.bound(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.bound(cx, polled)
    }
}
