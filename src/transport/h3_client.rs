//! [`H3Client`]: the Engine API's HTTP/3 client (feature `http3`), beside
//! the hyper pool of [`HttpsConnector`](super::https::HttpsConnector).
//!
//! In `quic` and `auto` transport modes the Engine API client sends its
//! requests here first: ALPN `h3`, the engine's `host:port` over UDP, the
//! same TLS settings (CA, server name override, client certificate). One
//! HTTP/3 connection per `host:port|sni` is kept and shared by every
//! request. docs/QUIC.md "The Engine API over HTTP/3"; wire facts in
//! docs/spec/DATAGRAM_QUIC.md §1.
//!
//! A failure is one of two kinds, because auto mode treats them apart
//! (the Go SDK's rule): a [handshake](H3Error::Handshake) failure (no
//! answer within the dial bound, no `h3` ALPN, a TLS error) means the
//! engine does not serve HTTP/3, and switches an auto client to TCP for
//! good; a failure [after](H3Error::Request) the connection was made is an
//! ordinary transport error.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Request, Response, Uri};
use http_body::{Body, Frame};

use super::quic::{IDLE_TIMEOUT, KEEP_ALIVE};
use crate::error::{code, BoxError, Error, ErrorKind, Result};

/// HTTP/3 connections one client keeps (by `host:port|sni`); the oldest is
/// dropped past it.
const MAX_CONNECTIONS: usize = 8;
/// Unidirectional streams the engine may open to the client: HTTP/3's
/// control stream and the two QPACK streams, plus room for the grease
/// streams some servers send (RFC 9114 §6.2.3).
const PEER_UNI_STREAMS: u32 = 8;
/// Per-stream receive window (what the engine may send ahead on one
/// response): a watch or a list body.
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Receive window of a whole connection.
const CONNECTION_WINDOW: u32 = 8 * 1024 * 1024;
/// Largest response head accepted (QPACK field section), as the pooled
/// hyper client's default header limits.
const MAX_FIELD_SECTION: u64 = 64 * 1024;

/// How an Engine API client uses HTTP/3.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum H3Mode {
    /// `quic` transport: HTTP/3 only, the handshake bounded by the connect
    /// timeout; a failure is the call's error.
    Only,
    /// `auto` transport: HTTP/3 first, its handshake bounded by
    /// [`AUTO_DIAL_BOUND`]; a handshake failure switches the client to
    /// h2/http1.1 over TCP for good.
    First,
}

/// Bound on the HTTP/3 dial in auto mode (the Go SDK's 300 ms).
pub(crate) const AUTO_DIAL_BOUND: Duration = Duration::from_millis(300);

/// Why an HTTP/3 request failed.
#[derive(Debug)]
pub(crate) enum H3Error {
    /// No HTTP/3 connection could be made (timeout, refused, no `h3`
    /// ALPN, TLS): the engine does not serve HTTP/3 here.
    Handshake(Error),
    /// The connection was made; the request failed.
    Request(Error),
}

/// One HTTP/3 connection: the request handle and the QUIC connection
/// (whose `close_reason` says whether it is still usable).
struct Conn {
    age: u64,
    quic: quinn::Connection,
    send: h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    /// Set when the connection's driver task ended.
    ended: Arc<AtomicBool>,
}

impl Conn {
    fn usable(&self) -> bool {
        self.quic.close_reason().is_none() && !self.ended.load(Ordering::Acquire)
    }
}

/// The HTTP/3 client of one Engine API handle. See the [module docs](self).
pub(crate) struct H3Client {
    mode: H3Mode,
    config: quinn::ClientConfig,
    /// Bound on one handshake (QUIC + HTTP/3 settings).
    dial_bound: Duration,
    /// Auto mode only: a handshake failed, the client uses TCP from now on.
    fell_back: AtomicBool,
    /// The UDP endpoints, bound on first use (IPv4, IPv6).
    endpoints: super::quic::ClientEndpoints,
    /// Live connections by `host:port|sni`. Held across a handshake so that
    /// concurrent first requests share one connection.
    conns: tokio::sync::Mutex<(u64, HashMap<String, Conn>)>,
}

impl std::fmt::Debug for H3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H3Client")
            .field("mode", &self.mode)
            .field("dial_bound", &self.dial_bound)
            .field("fell_back", &self.fell_back)
            .finish_non_exhaustive()
    }
}

impl H3Client {
    /// A client over `tls` (which must offer the ALPN `h3` and allow TLS
    /// 1.3). `connect_timeout` bounds the handshake in [`H3Mode::Only`];
    /// [`AUTO_DIAL_BOUND`] (or the connect timeout if shorter) in
    /// [`H3Mode::First`].
    pub(crate) fn new(
        tls: Arc<rustls::ClientConfig>,
        connect_timeout: Duration,
        mode: H3Mode,
    ) -> Result<Self> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| Error::tls("HTTP/3 TLS configuration", e))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        let mut transport = client_transport();
        transport.stream_receive_window(STREAM_WINDOW.into());
        transport.receive_window(CONNECTION_WINDOW.into());
        config.transport_config(Arc::new(transport));
        let dial_bound = match mode {
            H3Mode::Only => connect_timeout,
            H3Mode::First => AUTO_DIAL_BOUND.min(connect_timeout),
        };
        Ok(H3Client {
            mode,
            config,
            dial_bound,
            fell_back: AtomicBool::new(false),
            endpoints: super::quic::ClientEndpoints::default(),
            conns: tokio::sync::Mutex::new((0, HashMap::new())),
        })
    }

    /// The mode this client was built for.
    pub(crate) fn mode(&self) -> H3Mode {
        self.mode
    }

    /// Whether requests go over HTTP/3 (false once an auto client fell
    /// back to TCP).
    pub(crate) fn in_use(&self) -> bool {
        !self.fell_back.load(Ordering::Acquire)
    }

    /// Auto mode: HTTP/3 failed its handshake; TCP from now on.
    pub(crate) fn fall_back(&self) {
        self.fell_back.store(true, Ordering::Release);
    }

    /// Sends a body-less GET to `uri` (an `https://` URL), presenting `sni`.
    pub(crate) async fn get(
        &self,
        uri: &Uri,
        sni: &str,
        headers: &HeaderMap,
    ) -> std::result::Result<Response<ResponseBody>, H3Error> {
        let host = uri
            .host()
            .map(|h| h.trim_matches(['[', ']']))
            .filter(|h| !h.is_empty())
            .ok_or_else(|| {
                H3Error::Request(Error::config(code::INVALID_CONFIG, "URL without a host"))
            })?;
        let port = uri.port_u16().unwrap_or(443);
        let key = format!("{host}:{port}|{sni}");
        let mut send = self.connection(&key, host, port, sni).await?;
        let shown = super::dialer::display(host, port);
        let mut request = Request::get(uri.clone())
            .body(())
            .map_err(|e| H3Error::Request(request_error(&shown, e)))?;
        *request.headers_mut() = headers.clone();
        let result = async {
            let (mut tx, mut rx) = send.send_request(request).await?.split();
            tx.finish().await?;
            let response = rx.recv_response().await?;
            Ok::<_, h3::error::StreamError>(response.map(|()| ResponseBody::new(rx)))
        }
        .await;
        result.map_err(|e| H3Error::Request(request_error(&shown, e)))
    }

    /// A request handle on the live connection for `key`, or on a new one.
    async fn connection(
        &self,
        key: &str,
        host: &str,
        port: u16,
        sni: &str,
    ) -> std::result::Result<h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>, H3Error> {
        let mut guard = self.conns.lock().await;
        let (next, conns) = &mut *guard;
        if let Some(conn) = conns.get(key) {
            if conn.usable() {
                return Ok(conn.send.clone());
            }
        }
        conns.remove(key);
        let shown = super::dialer::display(host, port);
        let bound = self.dial_bound;
        let conn = match tokio::time::timeout(bound, self.handshake(host, port, sni)).await {
            Ok(r) => r.map_err(H3Error::Handshake)?,
            Err(_) => {
                return Err(H3Error::Handshake(Error::new(
                    ErrorKind::Timeout,
                    code::CONNECT_TIMEOUT,
                    format!("HTTP/3 connection to {shown} took longer than {bound:?}"),
                )))
            }
        };
        // The QUIC handshake negotiated `h3`: the engine speaks HTTP/3, so
        // what fails from here on is not a handshake failure.
        let (send, ended) = start_h3(&conn, "the engine")
            .await
            .map_err(|e| H3Error::Request(request_error(&shown, e)))?;
        if conns.len() >= MAX_CONNECTIONS {
            // Drop the oldest handle; its requests keep it open until they end.
            if let Some(oldest) = conns
                .iter()
                .min_by_key(|(_, c)| c.age)
                .map(|(k, _)| k.clone())
            {
                conns.remove(&oldest);
            }
        }
        *next += 1;
        conns.insert(
            key.to_owned(),
            Conn {
                age: *next,
                quic: conn,
                send: send.clone(),
                ended,
            },
        );
        Ok(send)
    }

    async fn handshake(&self, host: &str, port: u16, sni: &str) -> Result<quinn::Connection> {
        let shown = super::dialer::display(host, port);
        let connecting = self
            .endpoints
            .connect(&self.config, host, port, sni, "HTTP/3")
            .await?;
        connecting
            .await
            .map_err(|e| Error::tls(format!("HTTP/3 handshake with {shown}"), e))
    }
}

/// QUIC settings of an HTTP/3 client (this one, and the local engine's
/// HTTP/3 upstream): keep-alive and idle timeout as the QUIC transport;
/// the server may open HTTP/3's unidirectional control and QPACK streams,
/// no request streams, and no DATAGRAM frames.
pub(crate) fn client_transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    transport.keep_alive_interval(Some(KEEP_ALIVE));
    // 30 s fits a QUIC varint: the conversion cannot fail.
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        transport.max_idle_timeout(Some(idle));
    }
    transport.max_concurrent_bidi_streams(0u32.into());
    transport.max_concurrent_uni_streams(PEER_UNI_STREAMS.into());
    transport.datagram_receive_buffer_size(None);
    transport
}

/// Starts HTTP/3 on `conn` (a client whose QUIC handshake negotiated
/// `h3`; response heads up to 64 KiB) and spawns its driver, which reads
/// the server's control stream (SETTINGS, GOAWAY) and ends with the
/// connection, setting the returned flag. `peer` names the server in the
/// log.
pub(crate) async fn start_h3(
    conn: &quinn::Connection,
    peer: &'static str,
) -> std::result::Result<
    (
        h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
        Arc<AtomicBool>,
    ),
    h3::error::ConnectionError,
> {
    let (mut driver, send) = h3::client::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .build::<_, _, Bytes>(h3_quinn::Connection::new(conn.clone()))
        .await?;
    let ended = Arc::new(AtomicBool::new(false));
    let flag = ended.clone();
    tokio::spawn(async move {
        let e = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        flag.store(true, Ordering::Release);
        tracing::debug!(error = %e, peer, "HTTP/3 connection ended");
    });
    Ok((send, ended))
}

/// A transport error of an HTTP/3 request (transient: retried once).
fn request_error(shown: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(
        ErrorKind::Io,
        code::ENGINE_API_TRANSPORT,
        format!("engine API over HTTP/3 to {shown}: {e}"),
    )
    .with_source(e)
}

/// The body of an HTTP/3 response, read from its request stream as it is
/// polled: DATA frames, then the trailers, if any.
pub(crate) struct ResponseBody {
    /// `None` once the body ended (or failed).
    rx: Option<h3::client::RequestStream<h3_quinn::RecvStream, Bytes>>,
    /// The DATA frames are read; trailers (or the end) come next.
    data_done: bool,
    /// Whatever must live as long as the body (see [`Self::holding`]).
    _held: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl ResponseBody {
    /// The body of the response just read from `rx`.
    pub(crate) fn new(rx: h3::client::RequestStream<h3_quinn::RecvStream, Bytes>) -> Self {
        ResponseBody {
            rx: Some(rx),
            data_done: false,
            _held: None,
        }
    }

    /// Keeps `guard` until the body is dropped (the local engine's HTTP/3
    /// upstream: the request body's upload, cancelled with the response).
    #[cfg(feature = "local-engine")]
    pub(crate) fn holding(mut self, guard: impl std::any::Any + Send + Sync) -> Self {
        self._held = Some(Box::new(guard));
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let Some(rx) = this.rx.as_mut() else {
            return Poll::Ready(None);
        };
        if !this.data_done {
            match ready!(rx.poll_recv_data(cx)) {
                Ok(Some(mut data)) => {
                    let data = data.copy_to_bytes(data.remaining());
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(None) => this.data_done = true,
                Err(e) => {
                    this.rx = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
            }
        }
        let trailers = ready!(rx.poll_recv_trailers(cx));
        this.rx = None;
        match trailers {
            Ok(Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
            Ok(None) => Poll::Ready(None),
            Err(e) => Poll::Ready(Some(Err(Box::new(e)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rx.is_none()
    }
}
