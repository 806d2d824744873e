//! [`RstreamStream`]: one tunnel connection as a byte stream.

use std::net::IpAddr;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::transport::EngineStream;
use crate::tunnel::ActiveGuard;

/// One connection through a tunnel: a downstream connection accepted from a
/// [`Tunnel`](crate::Tunnel), or a private stream from
/// [`Client::dial`](crate::Client::dial).
///
/// It is a plain `AsyncRead + AsyncWrite` byte stream (TLS to the engine
/// underneath). `shutdown()` half-closes: the peer reads EOF while this side
/// can still read what the peer sends.
#[derive(Debug)]
pub struct RstreamStream {
    io: EngineStream,
    info: StreamInfo,
    /// `rstream.stream` for accepted streams, disabled for dialed ones.
    span: tracing::Span,
    /// Its tunnel's `rstream.tunnel` (the parent of `span`).
    tunnel_span: tracing::Span,
    /// Counts an accepted stream in its tunnel's `active` until dropped.
    _active: Option<ActiveGuard>,
}

/// What is known about a stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    tunnel: Arc<str>,
    stream_id: Option<Arc<str>>,
    source_ip: Option<IpAddr>,
}

impl StreamInfo {
    pub(crate) fn new(
        tunnel: Arc<str>,
        stream_id: Option<Arc<str>>,
        source_ip: Option<IpAddr>,
    ) -> Self {
        StreamInfo {
            tunnel,
            stream_id,
            source_ip,
        }
    }

    /// For accepted streams, the tunnel id; for dialed streams, the tunnel
    /// id or name that was dialed.
    pub fn tunnel(&self) -> &str {
        &self.tunnel
    }

    /// The engine's stream id (unknown for zero-RTT dials).
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    /// The downstream client's IP address, when the engine sent it.
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.source_ip
    }
}

impl RstreamStream {
    /// A dialed stream: no span, no tunnel counters.
    pub(crate) fn new(io: EngineStream, info: StreamInfo) -> Self {
        RstreamStream {
            io,
            info,
            span: tracing::Span::none(),
            tunnel_span: tracing::Span::none(),
            _active: None,
        }
    }

    /// An accepted stream, carrying its `rstream.stream` span and counted
    /// in its tunnel's active streams.
    pub(crate) fn accepted(
        io: EngineStream,
        info: StreamInfo,
        spans: (tracing::Span, tracing::Span),
        active: ActiveGuard,
    ) -> Self {
        let (tunnel_span, span) = spans;
        RstreamStream {
            io,
            info,
            span,
            tunnel_span,
            _active: Some(active),
        }
    }

    /// Its tunnel's `rstream.tunnel` span (the parent of
    /// [`span`](RstreamStream::span)); disabled for dialed streams.
    ///
    /// `EnvFilter` span directives such as `[rstream.tunnel{name=api}]=debug`
    /// only see *entered* spans, so run a task that serves the stream in
    /// both, the tunnel's outside:
    ///
    /// ```no_run
    /// # async fn serve(stream: rstream::RstreamStream) {}
    /// # fn run(stream: rstream::RstreamStream) {
    /// use tracing::Instrument;
    /// let (tunnel, own) = (stream.tunnel_span().clone(), stream.span().clone());
    /// tokio::spawn(serve(stream).instrument(own).instrument(tunnel));
    /// # }
    /// ```
    ///
    /// [`http::serve`](crate::http::serve) and
    /// [`Tunnel::forward_to`](crate::Tunnel::forward_to) do this for their
    /// connections.
    pub fn tunnel_span(&self) -> &tracing::Span {
        &self.tunnel_span
    }

    /// `fut` inside this stream's spans, as [`tunnel_span`](Self::tunnel_span)
    /// shows; the future does not borrow the stream.
    pub(crate) fn in_spans<F: std::future::Future>(
        &self,
    ) -> impl FnOnce(F) -> tracing::instrument::Instrumented<tracing::instrument::Instrumented<F>>
    {
        let (tunnel, own) = (self.tunnel_span.clone(), self.span.clone());
        move |fut| {
            use tracing::Instrument;
            fut.instrument(own).instrument(tunnel)
        }
    }

    /// The stream's `rstream.stream` span (fields `stream_id`, `source_ip`;
    /// its parent is the tunnel's `rstream.tunnel` span). Disabled for
    /// dialed streams. To run a task inside it, see
    /// [`tunnel_span`](RstreamStream::tunnel_span) and
    /// `docs/OBSERVABILITY.md`.
    pub fn span(&self) -> &tracing::Span {
        &self.span
    }

    /// Metadata: tunnel, stream id, source IP.
    pub fn info(&self) -> &StreamInfo {
        &self.info
    }

    /// Shortcut for `info().source_ip()`.
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.info.source_ip
    }

    /// Whether the TLS connection to the engine resumed an earlier session
    /// (an abbreviated handshake: no certificate exchange or verification),
    /// which the client's shared TLS configuration makes the common case.
    /// For diagnostics and benchmarks.
    pub fn tls_resumed(&self) -> bool {
        matches!(
            self.io.get_ref().1.handshake_kind(),
            Some(rustls::HandshakeKind::Resumed)
        )
    }
}

impl AsyncRead for RstreamStream {
    forward_async_read!(io);
}

impl AsyncWrite for RstreamStream {
    forward_async_write!(io);
}

/// tonic's connect info: `Server::builder()..serve_with_incoming(tunnel)`
/// puts the stream's [`StreamInfo`] into every request's extensions
/// (`request.extensions().get::<StreamInfo>()`, with the downstream source
/// IP). A [`Tunnel`](crate::Tunnel) already is the `Stream` of connections
/// `serve_with_incoming` takes; when the tunnel closes for good it ends and
/// the server drains and returns. See `docs/HTTP.md` ("gRPC").
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
impl tonic::transport::server::Connected for RstreamStream {
    type ConnectInfo = StreamInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.info.clone()
    }
}
