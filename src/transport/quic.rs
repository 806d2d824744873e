//! The QUIC transport (feature `quic`): one QUIC connection per client and
//! engine address, each rstream connection (control channel, dial, proxy
//! connection) one client-opened bidirectional stream carrying the same
//! frames as a TLS connection. docs/QUIC.md; wire facts in
//! docs/spec/DATAGRAM_QUIC.md §1.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::datagram::quic::{Drops, Router};
use crate::error::{code, Error, ErrorKind, Result};

/// Plane-A channels one QUIC connection carries at once (a bound on the
/// router's map; the engine's own caps apply first).
const MAX_DATAGRAM_CHANNELS: usize = 4096;

/// The one DATAGRAM router of `conn` (whose [`ConnInfo`] is `info`).
pub(crate) fn router_of(conn: &quinn::Connection, info: &ConnInfo) -> Arc<Router> {
    info.datagrams
        .get_or_init(|| Router::new(conn.clone(), MAX_DATAGRAM_CHANNELS, info.drops.clone()))
        .clone()
}

/// Keep-alive on an idle QUIC connection (the Go SDK's value): NAT bindings
/// stay open and a dead engine is noticed within the idle timeout.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(10);
/// A QUIC connection that hears nothing for this long is dead (quic-go's
/// default, which the Go SDK keeps).
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes of QUIC DATAGRAM frames buffered per connection, each way.
const DATAGRAM_BUFFER: usize = 256 * 1024;
/// QUIC connections a client keeps (the engine, plus the `proxy_endpoint`s
/// it redirects proxy connections to); the oldest is dropped past it.
const MAX_CONNECTIONS: usize = 8;
/// More QUIC connections a client opens to one engine when every stream
/// of the first is in use (the local engine allows 1,024 per connection);
/// past them, a new stream waits for one to end (within the connect
/// timeout).
const MAX_EXTRA_CONNECTIONS: usize = 7;

/// What a QUIC connection negotiated, shared by its streams.
#[derive(Debug, Default)]
pub(crate) struct ConnInfo {
    alpn: Option<Vec<u8>>,
    peer_certificates: Option<Vec<CertificateDer<'static>>>,
    /// The connection's one DATAGRAM router (plane A), made on first use:
    /// two readers would split the frames between them.
    datagrams: std::sync::OnceLock<Arc<Router>>,
    /// Where the router counts the DATAGRAMs it drops.
    drops: Arc<Drops>,
}

impl ConnInfo {
    /// The negotiated ALPN (the engine routes `h3` apart).
    #[cfg(feature = "http3")]
    pub(crate) fn alpn(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The ALPN `conn`'s handshake negotiated, if any.
    pub(crate) fn alpn_of(conn: &quinn::Connection) -> Option<Vec<u8>> {
        conn.handshake_data()
            .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|d| d.protocol)
    }

    /// Reads the negotiated ALPN and the peer's certificate chain; the
    /// connection's router will count its drops in `drops`.
    pub(crate) fn of(conn: &quinn::Connection, drops: Arc<Drops>) -> Arc<ConnInfo> {
        let alpn = Self::alpn_of(conn);
        let peer_certificates = conn
            .peer_identity()
            .and_then(|id| id.downcast::<Vec<CertificateDer<'static>>>().ok())
            .map(|certs| *certs);
        Arc::new(ConnInfo {
            alpn,
            peer_certificates,
            datagrams: std::sync::OnceLock::new(),
            drops,
        })
    }
}

/// One bidirectional QUIC stream as a byte stream: reads from its receive
/// half, writes to its send half; `shutdown()` finishes the send half (FIN)
/// and the peer reads EOF. Dropping it finishes the send half and stops the
/// receive half (STOP_SENDING 0), as the Go SDK's `Close` does.
#[derive(Debug)]
pub struct QuicStream {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    /// Keeps the connection open as long as the stream lives.
    conn: quinn::Connection,
    info: Arc<ConnInfo>,
}

impl QuicStream {
    pub(crate) fn new(
        conn: quinn::Connection,
        info: Arc<ConnInfo>,
        (send, recv): (quinn::SendStream, quinn::RecvStream),
    ) -> Self {
        QuicStream {
            send,
            recv,
            conn,
            info,
        }
    }

    /// The ALPN protocol the QUIC connection negotiated (`rstrm/1`).
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.info.alpn.as_deref()
    }

    /// The peer's certificate chain, if it presented one.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.info.peer_certificates.as_deref()
    }

    /// The peer's UDP address.
    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    /// The DATAGRAM router of the stream's connection (one per connection).
    pub(crate) fn datagram_router(&self) -> Arc<Router> {
        router_of(&self.conn, &self.info)
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}

/// The transport parameters both ends use: keep-alive, idle timeout, no
/// unidirectional streams, at most `peer_streams` bidirectional streams
/// opened by the peer (0 on the client: the engine opens none), and the
/// receive windows (per stream, per connection) bounding what the peer can
/// make this side buffer.
pub(crate) fn transport_config(
    peer_streams: u32,
    stream_window: u32,
    connection_window: u32,
) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.keep_alive_interval(Some(KEEP_ALIVE));
    // 30 s fits a QUIC varint: the conversion cannot fail.
    if let Ok(idle) = quinn::IdleTimeout::try_from(IDLE_TIMEOUT) {
        t.max_idle_timeout(Some(idle));
    }
    t.max_concurrent_bidi_streams(peer_streams.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window(stream_window.into());
    t.receive_window(connection_window.into());
    // Plane A (QUIC DATAGRAM frames, docs/DATAGRAMS.md): bounded buffers
    // each way; past them quinn drops the oldest frame, as UDP would.
    t.datagram_receive_buffer_size(Some(DATAGRAM_BUFFER));
    t.datagram_send_buffer_size(DATAGRAM_BUFFER);
    // The Go SDK's first packet size (quic-go's 1,280, the IPv6 minimum
    // MTU; quinn starts at 1,200): a DATAGRAM then carries the 12-byte
    // channel id plus a full 1,200-byte QUIC Initial of a QUIC connection
    // tunnelled inside (QUIC or HTTP/3 over a datagram tunnel). quinn
    // falls back to 1,200 if the path turns out not to carry it.
    t.initial_mtu(INITIAL_MTU);
    Arc::new(t)
}

/// The first UDP payload size tried (see `transport_config`).
const INITIAL_MTU: u16 = 1280;

/// Per-stream receive window of the client (what the engine may send ahead).
const STREAM_WINDOW: u32 = 1024 * 1024;
/// Receive window of the client's whole connection.
const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Opens QUIC streams to the engine, keeping one QUIC connection per
/// `(host, port, sni)` and rebuilding it when it is gone.
pub(crate) struct QuicDialer {
    config: quinn::ClientConfig,
    connect_timeout: Duration,
    /// The UDP endpoints, bound on first use (IPv4, IPv6).
    endpoints: ClientEndpoints,
    /// Live connections by `host:port|sni`, with their age order. Held across
    /// a handshake so that concurrent first dials share one connection.
    conns: tokio::sync::Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    next: u64,
    map: HashMap<String, (u64, quinn::Connection, Arc<ConnInfo>)>,
    /// More connections to the same engine, opened when every stream the
    /// first one may carry was in use (at most [`MAX_EXTRA_CONNECTIONS`]
    /// each). Kept like the first: a connection closed with its last
    /// stream would lose what that stream still had to send.
    extra: HashMap<String, Vec<(quinn::Connection, Arc<ConnInfo>)>>,
}

impl std::fmt::Debug for QuicDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuicDialer")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl QuicDialer {
    /// A dialer over `tls` (which must offer the ALPN `rstrm/1` only and
    /// allow TLS 1.3); `connect_timeout` bounds the QUIC handshake and the
    /// opening of a stream.
    pub(crate) fn new(tls: Arc<rustls::ClientConfig>, connect_timeout: Duration) -> Result<Self> {
        let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
            .map_err(|e| Error::tls("QUIC TLS configuration", e))?;
        let mut config = quinn::ClientConfig::new(Arc::new(crypto));
        config.transport_config(transport_config(0, STREAM_WINDOW, CONNECTION_WINDOW));
        Ok(QuicDialer {
            config,
            connect_timeout,
            endpoints: ClientEndpoints::default(),
            conns: tokio::sync::Mutex::new(Conns::default()),
        })
    }

    /// Opens a stream on the connection to `host:port` (building the
    /// connection if there is none or it is closed; a stream that cannot be
    /// opened on a cached connection is retried once on a fresh one).
    pub(crate) async fn connect(&self, host: &str, port: u16, sni: &str) -> Result<QuicStream> {
        let key = format!("{host}:{port}|{sni}");
        let shown = super::dialer::display(host, port);
        let bounded = async {
            let (conn, info, fresh) = self.connection(&key, host, port, sni).await?;
            match self
                .open_or_overflow(&key, conn.clone(), info, host, port, sni)
                .await?
            {
                Ok(stream) => Ok(stream),
                Err(e) if !fresh => {
                    tracing::debug!(error = %e, "QUIC connection lost; reconnecting");
                    self.forget(&key, &conn).await;
                    let (conn, info, _) = self.connection(&key, host, port, sni).await?;
                    let pair = conn.open_bi().await.map_err(|e| lost(&shown, e))?;
                    Ok(QuicStream::new(conn, info, pair))
                }
                Err(e) => Err(lost(&shown, e)),
            }
        };
        self.within_connect_timeout(|| format!("QUIC connection to {shown}"), bounded)
            .await
    }

    /// A stream on the live connection to `host:port` already open, if
    /// there is one (`Ok(None)`: a new connection, hence a new handshake, is
    /// needed). Bounded by the connect timeout like
    /// [`connect`](Self::connect). The auto transport's pinned QUIC.
    pub(crate) async fn connect_cached(
        &self,
        host: &str,
        port: u16,
        sni: &str,
    ) -> Result<Option<QuicStream>> {
        let key = format!("{host}:{port}|{sni}");
        let shown = super::dialer::display(host, port);
        let bounded = async {
            let cached = {
                let conns = self.conns.lock().await;
                conns
                    .map
                    .get(&key)
                    .filter(|(_, conn, _)| conn.close_reason().is_none())
                    .map(|(_, conn, info)| (conn.clone(), info.clone()))
            };
            let Some((conn, info)) = cached else {
                return Ok(None);
            };
            match self
                .open_or_overflow(&key, conn.clone(), info, host, port, sni)
                .await?
            {
                Ok(stream) => Ok(Some(stream)),
                Err(e) => {
                    tracing::debug!(error = %e, "QUIC connection lost");
                    self.forget(&key, &conn).await;
                    Ok(None)
                }
            }
        };
        self.within_connect_timeout(|| format!("opening a QUIC stream to {shown}"), bounded)
            .await
    }

    /// A stream on `conn`; when every stream the engine allows on it is
    /// in use right now (1,024 at once on the local engine), a stream on
    /// another connection to the same engine (`key`), opened if none has
    /// a free stream (at most [`MAX_EXTRA_CONNECTIONS`]): a burst of dials
    /// past the engine's per-connection limit neither waits for a stream
    /// to end nor fails. Past the extra connections, it waits on `conn`.
    /// The inner error is `conn`'s (lost); the outer one an extra
    /// connection's handshake or loss.
    async fn open_or_overflow(
        &self,
        key: &str,
        conn: quinn::Connection,
        info: Arc<ConnInfo>,
        host: &str,
        port: u16,
        sni: &str,
    ) -> Result<std::result::Result<QuicStream, quinn::ConnectionError>> {
        match open_now(&conn).await {
            Some(Ok(pair)) => return Ok(Ok(QuicStream::new(conn, info, pair))),
            Some(Err(e)) => return Ok(Err(e)),
            None => {}
        }
        let extra = {
            let mut conns = self.conns.lock().await;
            let extra = conns.extra.entry(key.to_owned()).or_default();
            extra.retain(|(c, _)| c.close_reason().is_none());
            extra.clone()
        };
        for (c, info) in &extra {
            if let Some(Ok(pair)) = open_now(c).await {
                return Ok(Ok(QuicStream::new(c.clone(), info.clone(), pair)));
            }
        }
        if extra.len() >= MAX_EXTRA_CONNECTIONS {
            tracing::debug!("every stream of every QUIC connection is in use: waiting for one");
            return Ok(conn
                .open_bi()
                .await
                .map(|pair| QuicStream::new(conn.clone(), info, pair)));
        }
        tracing::debug!(
            "every stream of the QUIC connection is in use: opening another connection"
        );
        let added = self.handshake(host, port, sni).await?;
        let added_info = ConnInfo::of(&added, Arc::default());
        self.conns
            .lock()
            .await
            .extra
            .entry(key.to_owned())
            .or_default()
            .push((added.clone(), added_info.clone()));
        let shown = super::dialer::display(host, port);
        let pair = added.open_bi().await.map_err(|e| lost(&shown, e))?;
        Ok(Ok(QuicStream::new(added, added_info, pair)))
    }

    /// `fut` bounded by the connect timeout; `what` names it in the
    /// `ERR_RSTREAM_CONNECT_TIMEOUT` error.
    async fn within_connect_timeout<T>(
        &self,
        what: impl FnOnce() -> String,
        fut: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(self.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(Error::new(
                ErrorKind::Timeout,
                code::CONNECT_TIMEOUT,
                format!("{} took longer than {:?}", what(), self.connect_timeout),
            )),
        }
    }

    /// The live connection for `key`, or a new one (`true`).
    async fn connection(
        &self,
        key: &str,
        host: &str,
        port: u16,
        sni: &str,
    ) -> Result<(quinn::Connection, Arc<ConnInfo>, bool)> {
        let mut conns = self.conns.lock().await;
        if let Some((_, conn, info)) = conns.map.get(key) {
            if conn.close_reason().is_none() {
                return Ok((conn.clone(), info.clone(), false));
            }
        }
        conns.map.remove(key);
        let conn = self.handshake(host, port, sni).await?;
        let info = ConnInfo::of(&conn, Arc::default());
        if conns.map.len() >= MAX_CONNECTIONS {
            // Drop the oldest handle; its streams keep it open until they end.
            if let Some(oldest) = conns
                .map
                .iter()
                .min_by_key(|(_, (age, _, _))| *age)
                .map(|(k, _)| k.clone())
            {
                conns.map.remove(&oldest);
                conns.extra.remove(&oldest);
            }
        }
        conns.next += 1;
        let age = conns.next;
        conns
            .map
            .insert(key.to_owned(), (age, conn.clone(), info.clone()));
        Ok((conn, info, true))
    }

    /// Forgets `conn` if it is still the one cached under `key`.
    async fn forget(&self, key: &str, conn: &quinn::Connection) {
        let mut conns = self.conns.lock().await;
        if conns
            .map
            .get(key)
            .is_some_and(|(_, c, _)| c.stable_id() == conn.stable_id())
        {
            conns.map.remove(key);
        }
    }

    async fn handshake(&self, host: &str, port: u16, sni: &str) -> Result<quinn::Connection> {
        let shown = super::dialer::display(host, port);
        let connecting = self
            .endpoints
            .connect(&self.config, host, port, sni, "QUIC")
            .await?;
        connecting.await.map_err(|e| match e {
            quinn::ConnectionError::TransportError(_)
            | quinn::ConnectionError::ConnectionClosed(_) => {
                Error::tls(format!("QUIC handshake with {shown}"), e)
            }
            other => Error::io(
                format!("QUIC handshake with {shown}"),
                std::io::Error::new(std::io::ErrorKind::ConnectionRefused, other),
            ),
        })
    }
}

/// A client's UDP endpoints, one per address family, each bound on first
/// use (shared by the QUIC transport's and the HTTP/3 client's dialers).
#[derive(Debug, Default)]
pub(crate) struct ClientEndpoints(Mutex<(Option<quinn::Endpoint>, Option<quinn::Endpoint>)>);

impl ClientEndpoints {
    /// Resolves `host:port` and starts a `what` (QUIC, HTTP/3) handshake
    /// with it from the endpoint of its address family.
    pub(crate) async fn connect(
        &self,
        config: &quinn::ClientConfig,
        host: &str,
        port: u16,
        sni: &str,
        what: &str,
    ) -> Result<quinn::Connecting> {
        let shown = super::dialer::display(host, port);
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| Error::io(format!("resolving {shown}"), e))?
            .next()
            .ok_or_else(|| {
                Error::io(
                    format!("resolving {shown}"),
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
                )
            })?;
        let endpoint = self.for_addr(addr)?;
        // Validated like the TLS dialer's server name.
        super::server_name(sni)?;
        endpoint
            .connect_with(config.clone(), addr, sni)
            .map_err(|e| Error::tls(format!("{what} connection to {shown}"), e))
    }

    /// The endpoint for `addr`'s family.
    fn for_addr(&self, addr: SocketAddr) -> Result<quinn::Endpoint> {
        let mut endpoints = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (slot, bind): (&mut Option<quinn::Endpoint>, SocketAddr) = if addr.is_ipv4() {
            (
                &mut endpoints.0,
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            )
        } else {
            (
                &mut endpoints.1,
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
            )
        };
        if let Some(endpoint) = slot {
            return Ok(endpoint.clone());
        }
        let endpoint = quinn::Endpoint::client(bind)
            .map_err(|e| Error::io(format!("binding a UDP socket on {bind}"), e))?;
        *slot = Some(endpoint.clone());
        Ok(endpoint)
    }
}

/// A stream on `conn` if one is free now (`None`: every stream the peer
/// allows is in use). One poll: a pending open takes no stream, so
/// dropping it is harmless.
async fn open_now(
    conn: &quinn::Connection,
) -> Option<std::result::Result<(quinn::SendStream, quinn::RecvStream), quinn::ConnectionError>> {
    let mut open = std::pin::pin!(conn.open_bi());
    match std::future::poll_fn(|cx| Poll::Ready(std::future::Future::poll(open.as_mut(), cx))).await
    {
        Poll::Ready(r) => Some(r),
        Poll::Pending => None,
    }
}

fn lost(shown: &str, e: quinn::ConnectionError) -> Error {
    Error::io(
        format!("opening a QUIC stream to {shown}"),
        std::io::Error::new(std::io::ErrorKind::ConnectionAborted, e),
    )
}
