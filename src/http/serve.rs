//! [`serve`]: a tower service on every connection of a tunnel, with
//! axum's shape (`IntoFuture`, `with_graceful_shutdown`).

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::sync::watch;
use tokio::task::JoinSet;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use super::conn::{ConnAbort, ConnLimits, ConnServer, MAX_BOUND};
use super::tls::TlsListener;
use crate::error::{BoxError, Result};
use crate::stream::{RstreamStream, StreamInfo};
use crate::tunnel::Tunnel;

/// Default [`Serve::header_read_timeout`]: 30 s to send a request head
/// (and, on a new connection, its first one).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`Serve::idle_timeout`]: a connection with no request in flight
/// for 120 s is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default [`Serve::write_timeout`]: a connection whose peer accepts no
/// bytes for 60 s is closed.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`Serve::drain_timeout`]: after the shutdown signal, in-flight
/// requests get 30 s; connections still open then are closed.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// h2 keep-alive: a ping every 30 s…
const H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …answered within 20 s, or the connection is dropped.
const H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// What [`serve`] takes its connections from: a [`Tunnel`] (plaintext:
/// HTTP/1.1 and h2c) or a [`TlsListener`] (TLS terminated in-process:
/// HTTP/1.1 or h2 as ALPN chose). Sealed: only these two implement it.
pub trait Accept: sealed::Sealed {}

impl Accept for Tunnel {}
impl Accept for TlsListener {}

mod sealed {
    /// Turns a listener into what the accept loop drives.
    pub trait Sealed {
        fn into_source(self) -> super::Source;
    }

    impl Sealed for crate::tunnel::Tunnel {
        fn into_source(self) -> super::Source {
            super::Source::Plain(self)
        }
    }

    impl Sealed for super::TlsListener {
        fn into_source(self) -> super::Source {
            super::Source::Tls(self)
        }
    }
}

/// The connections [`serve`] accepts (see [`Accept`]).
#[doc(hidden)]
#[derive(Debug)]
pub enum Source {
    Plain(Tunnel),
    Tls(TlsListener),
}

/// One accepted connection.
// Lives for one match in the accept loop, which moves the IO into its task:
// boxing would only add an allocation per TLS connection.
#[allow(clippy::large_enum_variant)]
enum Conn {
    Plain(RstreamStream),
    Tls(TlsStream<RstreamStream>),
}

impl Source {
    fn tunnel(&self) -> &Tunnel {
        match self {
            Source::Plain(tunnel) => tunnel,
            Source::Tls(listener) => listener.tunnel(),
        }
    }

    /// Cancel safe, as [`Tunnel::accept`] and [`TlsListener::accept`] are.
    async fn accept(&mut self) -> Result<Conn> {
        match self {
            Source::Plain(tunnel) => tunnel.accept().await.map(Conn::Plain),
            Source::Tls(listener) => listener.accept().await.map(Conn::Tls),
        }
    }
}

/// Serves `service` on every connection of `tunnel`, like `axum::serve`.
///
/// Await the returned [`Serve`] (it is [`IntoFuture`]): it runs until the
/// tunnel closes and then returns the reason (`Err`), after in-flight
/// requests finish (bounded by the [drain timeout](Serve::drain_timeout)).
/// With [`with_graceful_shutdown`](Serve::with_graceful_shutdown) it stops
/// on a signal instead and returns `Ok(())`.
///
/// HTTP/1.1 and HTTP/2 with prior knowledge (h2c) are detected per
/// connection; upgrades (WebSocket) work, over HTTP/2 too (RFC 8441
/// extended CONNECT is enabled). `tunnel` may also be a [`TlsListener`]:
/// HTTPS on a `tls` passthrough tunnel (or an `http` tunnel with
/// `upstream_tls`), HTTP/1.1 or h2 as ALPN chose. Every request carries the
/// connection's [`StreamInfo`](crate::StreamInfo) in its extensions and,
/// with the `axum` feature, `axum::extract::ConnectInfo<`[`TunnelAddr`](crate::TunnelAddr)`>`,
/// so the downstream client's IP is known.
///
/// No peer holds a connection for free: a request head must arrive within
/// [`header_read_timeout`](Serve::header_read_timeout) (30 s), a
/// connection with no request in flight is closed after
/// [`idle_timeout`](Serve::idle_timeout) (120 s), a write the peer does not
/// accept within [`write_timeout`](Serve::write_timeout) (60 s) closes it,
/// and h2 connections are pinged every 30 s (dropped when a ping is not
/// answered within 20 s). Timeouts longer than a day are taken as a day.
///
/// ```no_run
/// # async fn run(tunnel: rstream::Tunnel) {
/// use std::convert::Infallible;
/// use http_body_util::Full;
/// let svc = tower::service_fn(|_req: http::Request<hyper::body::Incoming>| async {
///     Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from("hi"))))
/// });
/// let reason = rstream::http::serve(tunnel, svc).await;
/// # }
/// ```
///
/// Stopping on ctrl-c or when the tunnel closes, whichever comes first:
///
/// ```no_run
/// # async fn run(tunnel: rstream::Tunnel, app: axum::Router) -> rstream::Result<()> {
/// use std::time::Duration;
///
/// let closed = tunnel.closed();
/// let signal = async move {
///     tokio::select! {
///         _ = tokio::signal::ctrl_c() => {}
///         _ = closed => {}
///     }
/// };
/// rstream::http::serve(tunnel, app)
///     .idle_timeout(Duration::from_secs(60))
///     .drain_timeout(Duration::from_secs(10))
///     .with_graceful_shutdown(signal)
///     .await
/// # }
/// ```
pub fn serve<L, S, B>(tunnel: L, service: S) -> Serve<S>
where
    L: Accept,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    Serve {
        source: tunnel.into_source(),
        service,
        server: ConnServer::new(
            ConnLimits {
                header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
                idle_timeout: DEFAULT_IDLE_TIMEOUT,
                write_timeout: DEFAULT_WRITE_TIMEOUT,
                h2_keep_alive_interval: H2_KEEP_ALIVE_INTERVAL,
                h2_keep_alive_timeout: H2_KEEP_ALIVE_TIMEOUT,
            },
            // WebSocket over h2 (RFC 8441); the Engine API leaves it off.
            true,
        ),
        drain_timeout: DEFAULT_DRAIN_TIMEOUT,
    }
}

/// A server in the making, returned by [`serve`]: set its options, then
/// `.await` it. See [`serve`].
#[must_use = "a Serve does nothing until it is awaited"]
pub struct Serve<S> {
    source: Source,
    service: S,
    server: ConnServer,
    drain_timeout: Duration,
}

impl<S> fmt::Debug for Serve<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let limits = self.server.limits();
        f.debug_struct("Serve")
            .field("tunnel", &self.source.tunnel().id())
            .field("header_read_timeout", &limits.header_read_timeout)
            .field("idle_timeout", &limits.idle_timeout)
            .field("write_timeout", &limits.write_timeout)
            .field("drain_timeout", &self.drain_timeout)
            .finish_non_exhaustive()
    }
}

impl<S> Serve<S> {
    /// Changes one of the connection bounds.
    fn limit(mut self, set: impl FnOnce(&mut ConnLimits)) -> Self {
        let mut limits = self.server.limits();
        set(&mut limits);
        self.server.set_limits(limits);
        self
    }

    /// Time a client has to send a request head; on a new connection, to
    /// send its first complete request head (protocol detection and the h2
    /// handshake included). Past it the connection is closed. Default
    /// [`DEFAULT_HEADER_READ_TIMEOUT`] (30 s).
    ///
    /// On HTTP/1.1 this also bounds the wait for the next request head on
    /// a keep-alive connection, counted from the end of the last response,
    /// so an idle HTTP/1.1 connection lasts at most the shorter of this and
    /// the [idle timeout](Self::idle_timeout).
    pub fn header_read_timeout(self, timeout: Duration) -> Self {
        self.limit(|limits| limits.header_read_timeout = timeout)
    }

    /// Time a connection may stay open with no request in flight before it
    /// is closed gracefully (HTTP/1.1: closed; h2: GOAWAY). A request is in
    /// flight until its response body is fully sent, so slow handlers and
    /// long streaming responses (SSE) are never cut. Default
    /// [`DEFAULT_IDLE_TIMEOUT`] (120 s).
    pub fn idle_timeout(self, timeout: Duration) -> Self {
        self.limit(|limits| limits.idle_timeout = timeout)
    }

    /// Time a write may wait for the peer to accept bytes before the
    /// connection is closed (a client that stopped reading). Applies to
    /// upgraded connections (WebSocket) too. Default
    /// [`DEFAULT_WRITE_TIMEOUT`] (60 s).
    pub fn write_timeout(self, timeout: Duration) -> Self {
        self.limit(|limits| limits.write_timeout = timeout)
    }

    /// After the shutdown signal (or the tunnel closing), how long
    /// in-flight requests may take to finish; connections still open then
    /// are closed. Default [`DEFAULT_DRAIN_TIMEOUT`] (30 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout.min(MAX_BOUND);
        self
    }

    /// Any other hyper setting: `f` gets hyper-util's auto builder
    /// (`.http1()`, `.http2()`), e.g. to cap h2 streams or size h2 windows.
    /// The timeouts above are set through their own methods; extended
    /// CONNECT (WebSocket over h2) is already enabled.
    ///
    /// ```no_run
    /// # async fn run(tunnel: rstream::Tunnel, app: axum::Router) -> rstream::Result<()> {
    /// rstream::http::serve(tunnel, app)
    ///     .hyper(|builder| {
    ///         builder.http2().max_concurrent_streams(64);
    ///     })
    ///     .await
    /// # }
    /// ```
    pub fn hyper(mut self, f: impl FnOnce(&mut auto::Builder<TokioExecutor>)) -> Self {
        f(self.server.builder_mut());
        self
    }

    /// Stops serving when `signal` completes: the tunnel is closed (no new
    /// connections), in-flight requests finish (bounded by the
    /// [drain timeout](Self::drain_timeout)) and `Ok(())` is returned.
    pub fn with_graceful_shutdown<F>(self, signal: F) -> WithGracefulShutdown<S, F>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        WithGracefulShutdown {
            serve: self,
            signal,
        }
    }
}

/// [`Serve`] with a shutdown signal; `.await` it. See
/// [`Serve::with_graceful_shutdown`].
#[must_use = "a WithGracefulShutdown does nothing until it is awaited"]
pub struct WithGracefulShutdown<S, F> {
    serve: Serve<S>,
    signal: F,
}

impl<S, F> fmt::Debug for WithGracefulShutdown<S, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WithGracefulShutdown")
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

impl<S, B> IntoFuture for Serve<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self, std::future::pending()))
    }
}

impl<S, B, F> IntoFuture for WithGracefulShutdown<S, F>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send + 'static,
{
    type Output = Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(run(self.serve, self.signal))
    }
}

/// The accept loop, then the drain.
async fn run<S, B, F>(serve: Serve<S>, signal: F) -> Result<()>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    F: Future<Output = ()> + Send,
{
    let Serve {
        mut source,
        service,
        server,
        drain_timeout,
    } = serve;
    let server = std::sync::Arc::new(server);
    // `true` once the connections are to shut down gracefully.
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut signal = std::pin::pin!(signal);
    let outcome: Result<()> = loop {
        // Biased, the signal first: a `tunnel.closed()` signal and a failing
        // accept become ready together when the tunnel closes, and that is
        // the graceful shutdown the caller asked for, not an error.
        tokio::select! {
            biased;
            () = &mut signal => {
                if let Err(e) = source.tunnel().close().await {
                    tracing::debug!(error = %e, "closing the tunnel on shutdown");
                }
                break Ok(());
            }
            // Reap finished connections so the set stays small (ready only
            // when one has finished, so it never starves the accept).
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = source.accept() => match accepted {
                Ok(conn) => {
                    let server = server.clone();
                    let service = service.clone();
                    let mut stopped = stopped.clone();
                    let shutdown = async move {
                        // An error means `run` is gone: stop as well.
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    // The connection's events name its tunnel and stream.
                    match conn {
                        Conn::Plain(stream) => {
                            let (in_spans, info) = (stream.in_spans(), stream.info().clone());
                            connections.spawn(in_spans(async move {
                                serve_stream(&server, stream, info, service, shutdown).await;
                            }));
                        }
                        Conn::Tls(tls) => {
                            let stream = tls.get_ref().0;
                            let (in_spans, info) = (stream.in_spans(), stream.info().clone());
                            connections.spawn(in_spans(async move {
                                serve_stream(&server, tls, info, service, shutdown).await;
                            }));
                        }
                    }
                }
                // The signal may be woken by the same close a moment later.
                Err(e) => match futures_util::FutureExt::now_or_never(signal.as_mut()) {
                    Some(()) => break Ok(()),
                    None => break Err(e),
                },
            },
        }
    };
    drop(source);
    stop.send_replace(true);
    let drained = tokio::time::timeout(drain_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            timeout = ?drain_timeout,
            "drain timeout with requests still in flight; closing their connections"
        );
        connections.shutdown().await;
    }
    outcome
}

/// One tunnel connection, with its [`StreamInfo`](crate::StreamInfo) (and
/// `ConnectInfo<TunnelAddr>`) in every request.
async fn serve_stream<I, S, B>(
    server: &ConnServer,
    io: I,
    info: StreamInfo,
    service: S,
    shutdown: impl Future<Output = ()>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: tower_service::Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    #[cfg(feature = "axum")]
    let connect_info = axum::extract::ConnectInfo(crate::tunnel::TunnelAddr::from_info(&info));
    let service = TowerToHyperService::new(service);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(info.clone());
        #[cfg(feature = "axum")]
        req.extensions_mut().insert(connect_info.clone());
        hyper::service::Service::call(&service, req)
    });
    server
        .serve(io, service, shutdown, ConnAbort::new(), "tunnel HTTP")
        .await;
}
