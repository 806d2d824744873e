//! [`serve_connection`]: a tower service (an axum `Router` unchanged) on one
//! accepted QUIC connection, spoken as HTTP/3 by the `h3` crate.
//!
//! Self-contained: it needs a `quinn::Connection` whose handshake
//! negotiated ALPN `h3`, and nothing else of this crate (the datagram
//! tunnels and the Engine API both build on it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use h3::error::{Code, ConnectionError, StreamError};
use h3::server::RequestStream;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::{oneshot, Semaphore};
use tokio::task::JoinSet;
use tower::ServiceExt;
use tower_service::Service;

use crate::error::{code, BoxError, Error, ErrorKind, Result};

/// Default [`ServeOptions::max_concurrent_requests`]: 100 requests of one
/// connection are handled at once (quinn's default stream limit).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 100;
/// Default [`ServeOptions::max_header_size`]: 64 KiB of decoded request
/// header fields (RFC 9114 `SETTINGS_MAX_FIELD_SECTION_SIZE`).
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 64 * 1024;
/// Default [`ServeOptions::header_read_timeout`]: 30 s for a request's
/// headers once its stream is open (as `rstream::http::serve`).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default [`ServeOptions::write_timeout`]: a response whose peer accepts
/// no bytes for 60 s is reset (as `rstream::http::serve`).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default [`ServeOptions::shutdown_grace`]: after the shutdown signal of
/// [`serve_with`](super::serve_with), requests in flight get 10 s to end.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// `H3_NO_ERROR`: the code a connection is closed with once drained.
pub(crate) const H3_NO_ERROR: u32 = 0x100;
/// After a complete response, the rest of a request body the service did
/// not read is drained for at most this long…
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
/// …and at most this many bytes, before the client is asked to stop
/// sending.
const DRAIN_LIMIT: usize = 64 * 1024;

/// The bounds [`serve_connection_with`] applies to one connection.
///
/// QUIC's own bounds (concurrent streams, receive windows, idle timeout)
/// are the endpoint's `quinn::TransportConfig`; these are HTTP/3's.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    // Read by `serve` too (the QUIC stream limit follows it).
    pub(crate) max_concurrent_requests: usize,
    max_header_size: u64,
    header_read_timeout: Duration,
    write_timeout: Duration,
    // Read by `serve_with` (the bound on its graceful shutdown).
    pub(crate) shutdown_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            max_concurrent_requests: DEFAULT_MAX_CONCURRENT_REQUESTS,
            max_header_size: DEFAULT_MAX_HEADER_SIZE,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            shutdown_grace: DEFAULT_SHUTDOWN_GRACE,
        }
    }
}

impl ServeOptions {
    /// The defaults (the `DEFAULT_*` constants of this module).
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests of one connection handled at once (at least 1). Further
    /// request streams wait in QUIC (unread, so bounded by the endpoint's
    /// `max_concurrent_bidi_streams`) until one ends.
    pub fn max_concurrent_requests(mut self, n: usize) -> Self {
        self.max_concurrent_requests = n.max(1);
        self
    }

    /// The largest request header section accepted, advertised to the
    /// client; a larger one is answered `431` by h3.
    pub fn max_header_size(mut self, bytes: u64) -> Self {
        self.max_header_size = bytes;
        self
    }

    /// How long a request stream may take to deliver its headers; the
    /// stream is dropped after that.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.header_read_timeout = timeout;
        self
    }

    /// How long one write of a response (headers, a body frame, trailers,
    /// the end) may wait for the peer; the stream is reset after that.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// How long requests in flight may take to end after the shutdown
    /// signal of [`serve_with`](super::serve_with) (each connection got
    /// GOAWAY); connections still busy then are closed.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }
}

/// Serves `service` over HTTP/3 on one accepted QUIC connection, with
/// the default [`ServeOptions`]. See [`serve_connection_with`].
pub async fn serve_connection<S, B>(conn: quinn::Connection, service: S) -> Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    serve_connection_with(conn, service, ServeOptions::default()).await
}

/// Serves `service` over HTTP/3 on one accepted QUIC connection (its
/// handshake negotiated ALPN `h3`) until the connection ends.
///
/// Each request runs in its own task: the service gets an
/// `http::Request<`[`RequestBody`]`>` whose body streams from the QUIC
/// stream as the client sends it; the response's body frames are sent as
/// they come (server-sent events work), then its trailers. Any tower
/// service whose response body is an [`http_body::Body`] works, so an
/// axum `Router` is served unchanged:
///
/// ```no_run
/// # async fn run(conn: quinn::Connection) -> rstream::Result<()> {
/// let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello over h3" }));
/// rstream::http3::serve_connection(conn, app).await
/// # }
/// ```
///
/// A service error or a response body error resets that request's stream
/// (`H3_INTERNAL_ERROR`); the connection goes on. A panicking handler
/// ends its own task only.
///
/// Returns `Ok(())` when the connection ends normally: the client closed
/// it or went idle, or it sent GOAWAY and every request finished.
/// Returning (or dropping the future) ends the requests still running.
///
/// # Errors
///
/// `ERR_RSTREAM_PROTOCOL` (kind `Protocol`) when the HTTP/3 session could
/// not start or ended on a protocol error (the h3 error is the source).
pub async fn serve_connection_with<S, B>(
    conn: quinn::Connection,
    service: S,
    options: ServeOptions,
) -> Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    serve_connection_until(conn, service, options, std::future::pending()).await
}

/// [`serve_connection_with`] that also shuts down gracefully once `stop`
/// resolves: GOAWAY (requests up to the last one accepted are served,
/// later ones are refused with `H3_REQUEST_REJECTED`, safe for the client
/// to retry elsewhere), then the connection closes (`H3_NO_ERROR`) as soon
/// as the requests in flight have ended. Bounding that wait is the
/// caller's (dropping the future ends the requests).
pub(crate) async fn serve_connection_until<S, B>(
    conn: quinn::Connection,
    service: S,
    options: ServeOptions,
    stop: impl Future<Output = ()>,
) -> Result<()>
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    let quic = conn.clone();
    let mut h3 = h3::server::builder()
        .max_field_section_size(options.max_header_size)
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await
        .map_err(|e| connection_error("starting an HTTP/3 connection", e))?;
    let limit = Arc::new(Semaphore::new(options.max_concurrent_requests));
    let mut requests = JoinSet::new();
    let mut stop = std::pin::pin!(stop);
    // GOAWAY sent: no request beyond those in flight.
    let mut draining = false;
    let result = loop {
        // A permit before the next stream is read: past the limit, new
        // request streams stay unread in QUIC (bounded by its stream limit).
        // Watching the connection meanwhile: requests that hold every
        // permit (a quiet event stream) must not outlive a dead peer.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                // The semaphore is never closed; ending is the safe answer.
                Err(_) => break Ok(()),
            },
            _ = quic.closed() => break Ok(()),
        };
        // Reap finished requests so the set holds only running ones.
        while requests.try_join_next().is_some() {}
        let accepted = tokio::select! {
            accepted = h3.accept() => accepted,
            () = &mut stop, if !draining => {
                draining = true;
                // The GOAWAY names the stream after the last accepted one;
                // h3 refuses later streams (`H3_REQUEST_REJECTED`).
                match h3.shutdown(1).await {
                    Ok(()) => continue,
                    Err(e) if is_normal_end(&e) => break Ok(()),
                    Err(e) => break Err(connection_error("sending an HTTP/3 GOAWAY", e)),
                }
            }
            // Draining, and every request in flight has ended.
            () = async { while requests.join_next().await.is_some() {} }, if draining => {
                quic.close(H3_NO_ERROR.into(), b"");
                break Ok(());
            }
        };
        match accepted {
            Ok(Some(resolver)) => {
                let service = service.clone();
                let options = options.clone();
                requests.spawn(async move {
                    handle(resolver, service, &options).await;
                    drop(permit);
                });
            }
            // GOAWAY received and every request done.
            Ok(None) => break Ok(()),
            Err(e) if is_normal_end(&e) => {
                tracing::debug!(error = %e, "HTTP/3 connection ended");
                break Ok(());
            }
            Err(e) => break Err(connection_error("serving an HTTP/3 connection", e)),
        }
    };
    // Requests still running finish, unless the connection is gone (a
    // response body waiting for events would otherwise wait forever).
    tokio::select! {
        () = async { while requests.join_next().await.is_some() {} } => {}
        _ = quic.closed() => requests.abort_all(),
    }
    // `h3` lives until here: dropping it closes the connection.
    drop(h3);
    result
}

/// The peer closed the connection (any application code: clients often
/// close with 0, not `H3_NO_ERROR`), or it timed out: the end of a
/// connection, not a failure of the server.
fn is_normal_end(e: &ConnectionError) -> bool {
    use h3::quic::ConnectionErrorIncoming;
    e.is_h3_no_error()
        || matches!(
            e,
            ConnectionError::Timeout { .. }
                | ConnectionError::Remote {
                    0: ConnectionErrorIncoming::ApplicationClose { .. }
                        | ConnectionErrorIncoming::Timeout,
                    ..
                }
        )
}

fn connection_error(context: &'static str, e: ConnectionError) -> Error {
    Error::new(ErrorKind::Protocol, code::PROTOCOL, context).with_source(e)
}

fn stream_error(context: &'static str, e: StreamError) -> Error {
    Error::new(ErrorKind::Protocol, code::PROTOCOL, context).with_source(e)
}

type Resolver = h3::server::RequestResolver<h3_quinn::Connection, Bytes>;

/// One request: read its headers, call the service, stream the response.
async fn handle<S, B>(resolver: Resolver, service: S, options: &ServeOptions)
where
    S: Service<Request<RequestBody>, Response = Response<B>> + Send,
    S::Future: Send,
    S::Error: Into<BoxError>,
    B: Body,
    B::Error: Into<BoxError>,
{
    let (request, stream) =
        match tokio::time::timeout(options.header_read_timeout, resolver.resolve_request()).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                // h3 already answered what it could (431, a reset).
                tracing::debug!(error = %e, "HTTP/3 request refused");
                return;
            }
            Err(_) => {
                tracing::debug!("HTTP/3 request headers timed out");
                return;
            }
        };
    let (mut send, recv) = stream.split();
    let (give_back, mut unread) = oneshot::channel();
    let request = request.map(|()| RequestBody::new(recv, give_back));
    let response = match service.oneshot(request).await {
        Ok(response) => response,
        Err(e) => {
            let e: BoxError = e.into();
            tracing::debug!(error = %e, "HTTP/3 service error: resetting the stream");
            send.stop_stream(Code::H3_INTERNAL_ERROR);
            return;
        }
    };
    if let Err(e) = respond(&mut send, response, options.write_timeout).await {
        tracing::debug!(code = e.code(), error = %e, "HTTP/3 response not completed");
        send.stop_stream(Code::H3_INTERNAL_ERROR);
    }
    // A request body dropped before its end comes back here, after the
    // response: see `drain`. (Still held elsewhere: its drop stops it.)
    if let Ok(recv) = unread.try_recv() {
        drain(recv).await;
    }
}

/// The rest of a request the service did not read, once its response is
/// complete: usually just the client's FIN (a GET), which this waits for,
/// so the client's end of the request does not fail. A client still
/// sending after [`DRAIN_LIMIT`] bytes or [`DRAIN_TIMEOUT`] is asked to
/// stop (`STOP_SENDING`, RFC 9114 §4.1: see [`stop`]).
async fn drain(mut recv: RecvHalf) {
    let ended = async {
        let mut read = 0usize;
        loop {
            match recv.recv_data().await {
                Ok(Some(data)) => {
                    read = read.saturating_add(data.remaining());
                    if read > DRAIN_LIMIT {
                        return false;
                    }
                }
                // The end (or a broken stream: nothing left to stop).
                Ok(None) | Err(_) => return true,
            }
        }
    };
    if !matches!(tokio::time::timeout(DRAIN_TIMEOUT, ended).await, Ok(true)) {
        stop(recv);
    }
}

/// Asks the client to stop sending a request body no one will read, by
/// dropping its stream: quinn then sends `STOP_SENDING` (code 0, which
/// HTTP/3 does not define: peers take unknown codes as `H3_NO_ERROR`).
/// Not h3's `stop_sending`: h3-quinn 0.0.10 panics on it while a read is
/// in flight (one the drain timeout cut, or one cut when the service
/// dropped the body mid-read).
fn stop(recv: RecvHalf) {
    drop(recv);
}

type SendHalf = RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;

/// Sends the response head, then each body frame as the body yields it,
/// then the end of the stream.
async fn respond<B>(
    send: &mut SendHalf,
    response: Response<B>,
    write_timeout: Duration,
) -> Result<()>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = response.into_parts();
    bounded(
        write_timeout,
        send.send_response(Response::from_parts(parts, ())),
    )
    .await?;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Error::new(ErrorKind::Io, code::IO, "an HTTP/3 response body failed").with_source(e)
        })?;
        let frame = match frame.into_data() {
            Ok(mut data) => {
                let data = data.copy_to_bytes(data.remaining());
                if !data.is_empty() {
                    bounded(write_timeout, send.send_data(data)).await?;
                }
                continue;
            }
            Err(frame) => frame,
        };
        if let Ok(trailers) = frame.into_trailers() {
            bounded(write_timeout, send.send_trailers(trailers)).await?;
            // Trailers end the message; anything after them is ignored.
            break;
        }
    }
    bounded(write_timeout, send.finish()).await
}

/// One write to the peer, bounded by `timeout`.
async fn bounded(
    timeout: Duration,
    write: impl Future<Output = std::result::Result<(), StreamError>>,
) -> Result<()> {
    match tokio::time::timeout(timeout, write).await {
        Ok(result) => result.map_err(|e| stream_error("sending an HTTP/3 response", e)),
        Err(_) => Err(Error::timeout("sending an HTTP/3 response")),
    }
}

type RecvHalf = RequestStream<h3_quinn::RecvStream, Bytes>;

/// The body of a request served by [`serve_connection`]: an
/// [`http_body::Body`] read from the request's QUIC stream as the service
/// polls it (flow control pushes back on the client; nothing is buffered
/// ahead), then its trailers, if any.
///
/// Errors are `rstream::Error`s: kind `Protocol` when the client reset the
/// stream or broke HTTP/3's framing. A body dropped before its end is
/// drained after the response (at most 64 KiB or 1 s, usually just the
/// client's FIN), then the client is asked to stop sending
/// (`STOP_SENDING`, RFC 9114 §4.1: a response may come
/// before the whole request).
pub struct RequestBody {
    /// `None` once the body ended (or failed).
    stream: Option<RecvHalf>,
    /// The DATA frames are read; trailers (or the end) come next.
    data_done: bool,
    give_back: Option<oneshot::Sender<RecvHalf>>,
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("ended", &self.stream.is_none())
            .finish_non_exhaustive()
    }
}

impl RequestBody {
    /// `give_back`: where the stream goes when the body is dropped before
    /// its end (the request's task drains it after the response).
    fn new(stream: RecvHalf, give_back: oneshot::Sender<RecvHalf>) -> Self {
        RequestBody {
            stream: Some(stream),
            data_done: false,
            give_back: Some(give_back),
        }
    }

    /// Ends the body: after an error or the last frame.
    fn end(&mut self) {
        self.stream = None;
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>>>> {
        let Some(stream) = self.stream.as_mut() else {
            return Poll::Ready(None);
        };
        if !self.data_done {
            match ready!(stream.poll_recv_data(cx)) {
                Ok(Some(mut data)) => {
                    let data = data.copy_to_bytes(data.remaining());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => self.data_done = true,
                Err(e) => {
                    self.end();
                    return Poll::Ready(Some(Err(stream_error(
                        "reading an HTTP/3 request body",
                        e,
                    ))));
                }
            }
        }
        let trailers: std::result::Result<Option<HeaderMap>, StreamError> =
            ready!(stream.poll_recv_trailers(cx));
        self.end();
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(stream_error(
                "reading HTTP/3 request trailers",
                e,
            )))),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>>>> {
        self.get_mut().poll_next(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.stream.is_none()
    }
}

impl Drop for RequestBody {
    fn drop(&mut self) {
        let Some(stream) = self.stream.take() else {
            return;
        };
        let unread = match self.give_back.take() {
            Some(give_back) => give_back.send(stream),
            None => Err(stream),
        };
        // The request's task is gone (the body outlived it): read no
        // further; the client may stop sending (RFC 9114 §4.1).
        if let Err(stream) = unread {
            stop(stream);
        }
    }
}
