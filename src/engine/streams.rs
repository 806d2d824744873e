//! Streams: reaching a tunnel's owner (`ProxyConnReq` → the owner's
//! `ProxyReq` connection + `ProxyConnRsp`), private dials (`StreamReq`),
//! and the byte splice between downstream and owner. A dial to a datagram
//! tunnel is spliced the same way: both ends speak framed datagrams
//! (plane B), so the bytes pass through unchanged.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{timeout_at, Instant};

use super::admission::Admission;
use super::state::{allowed, PendingEvent};
use super::Inner;
use crate::proto::{
    self, message::Payload, stream_rsp, write_frame, ErrorCode, Message, ProxyConnReq, ProxyReq,
    ProxyRsp, StreamReq, StreamRsp,
};

/// A connection accepted on the engine port: TLS, or a QUIC stream.
pub(crate) use super::conn::ServerTls;

/// How long a downstream waits for the owner (PROTOCOL.md's operation timeout).
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Bound on writing one handshake frame.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Splice buffer per direction: two full TLS records, so a bulk transfer
/// is relayed two records per write system call (docs/BENCHMARKS.md).
const SPLICE_BUFFER: usize = 32 * 1024;

fn error(code: ErrorCode, message: impl Into<String>) -> proto::Error {
    proto::Error::new(code, message)
}

/// The owner's side of a stream.
// Framed is the common variant (the only one without `quic`): boxing it
// would cost an allocation per stream.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Owner {
    /// Its proxy connection (plane B for a datagram tunnel).
    Framed(ServerTls),
    /// A plane-A datagram channel on the owner's QUIC connection (no
    /// stream; DATAGRAM_QUIC.md §2 A).
    #[cfg(feature = "quic")]
    Quic(super::plane_a::QuicSide),
}

/// Asks the owner of `tunnel_id` for a stream and waits (30 s at most) for
/// both its proxy connection (secret checked) and its positive
/// `ProxyConnRsp`. Returns the stream id and the owner's connection.
pub(crate) async fn reach_owner(
    inner: &Inner,
    tunnel_id: &str,
    source: IpAddr,
) -> Result<(String, ServerTls), proto::Error> {
    match reach_owner_any(inner, tunnel_id, source).await? {
        (stream_id, Owner::Framed(tls)) => Ok((stream_id, tls)),
        // Only datagram tunnels have plane-A channels, and their callers
        // use `reach_owner_any`.
        #[cfg(feature = "quic")]
        (_, Owner::Quic(_)) => Err(error(
            ErrorCode::Internal,
            "a datagram channel where a stream was expected",
        )),
    }
}

/// [`reach_owner`] for a datagram tunnel: the owner's side may be a
/// plane-A channel.
pub(crate) async fn reach_owner_any(
    inner: &Inner,
    tunnel_id: &str,
    source: IpAddr,
) -> Result<(String, Owner), proto::Error> {
    reach_owner_with_control(inner, tunnel_id, source)
        .await
        .map(|(stream_id, owner, _)| (stream_id, owner))
}

/// [`reach_owner`], also returning the owner's control-channel outbox
/// (where a published datagram channel's `DatagramChannelClose` goes).
///
/// A plane-A channel (a datagram tunnel without guaranteed delivery whose
/// owner is on QUIC) is registered on the owner's connection before the
/// `ProxyConnReq`, and is ready with the positive `ProxyConnRsp` alone.
pub(crate) async fn reach_owner_with_control(
    inner: &Inner,
    tunnel_id: &str,
    source: IpAddr,
) -> Result<(String, Owner, tokio::sync::mpsc::Sender<Message>), proto::Error> {
    let start = inner
        .state()
        .open_pending(tunnel_id, inner.config.max_pending_streams)?;
    let stream_id = start.stream_id;
    let _pending = PendingGuard {
        inner,
        stream_id: &stream_id,
    };
    #[cfg(feature = "quic")]
    let mut quic = match start.plane_a {
        Some(router) => Some(super::plane_a::QuicSide::register(
            router,
            &stream_id,
            Some(start.owner.clone()),
        )?),
        None => None,
    };
    let deadline = Instant::now() + OPERATION_TIMEOUT;
    let req = Message::new(Payload::ProxyConnReq(ProxyConnReq {
        tunnel_id: tunnel_id.to_owned(),
        stream_id: stream_id.clone(),
        secret: Some(start.secret),
        source_ip: Some(source.into()),
        proxy_endpoint: None,
    }));
    let too_late = || {
        error(
            ErrorCode::ServiceUnavailable,
            "the tunnel's client did not answer within 30 s",
        )
    };
    match timeout_at(deadline, start.owner.send(req)).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => return Err(error(ErrorCode::TunnelNotFound, "the tunnel is closed")),
        Err(_) => return Err(too_late()),
    }
    let mut events = start.events;
    let mut connection = None;
    let mut answered = false;
    loop {
        match timeout_at(deadline, events.recv()).await {
            Err(_) => return Err(too_late()),
            Ok(None) => return Err(error(ErrorCode::TunnelNotFound, "the tunnel is closed")),
            Ok(Some(PendingEvent::Connected(tls))) => connection = Some(*tls),
            Ok(Some(PendingEvent::Answered(Ok(())))) => answered = true,
            Ok(Some(PendingEvent::Answered(Err(e)))) => {
                let why = e.message.unwrap_or_else(|| "no reason given".into());
                return Err(error(
                    ErrorCode::InvalidStream,
                    format!("the tunnel's client refused the stream: {why}"),
                ));
            }
        }
        if answered {
            if let Some(tls) = connection.take() {
                return Ok((stream_id.clone(), Owner::Framed(tls), start.owner));
            }
            #[cfg(feature = "quic")]
            if let Some(quic) = quic.take() {
                return Ok((stream_id.clone(), Owner::Quic(quic), start.owner));
            }
        }
    }
}

/// Unregisters a pending stream however its waiter ends.
struct PendingGuard<'a> {
    inner: &'a Inner,
    stream_id: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.inner.state().close_pending(self.stream_id);
    }
}

/// Serves a proxy connection (first frame `ProxyReq`): the owner's side
/// of a pending stream.
///
/// Once it claimed its stream (secret checked), the connection leaves the
/// engine port's admission without taking a permit under
/// `max_connections`: it rides on the permit of what it serves, a
/// published downstream (`max_published_connections`) or a private dial
/// (`max_connections`), so downstreams never take slots from agents.
/// Their number stays bounded: each claim consumes one pending stream (at
/// most `max_pending_streams` per tunnel, each claimed once, each with a
/// downstream or dial waiting for it), and the claimed connection is
/// released only when handed to that waiter, whose task it then lives in
/// (dropped at once when the waiter is gone). So at most
/// `max_published_connections + max_connections` released proxy
/// connections exist at once.
pub(crate) async fn serve_proxy(
    inner: &Inner,
    mut tls: ServerTls,
    req: ProxyReq,
    admission: &Admission,
) {
    let zero_rtt = req.zero_rtt.unwrap_or(false);
    let token = req.client_details.and_then(|d| d.token);
    let claimed = inner
        .state()
        .claim_pending(&req.stream_id, token.as_deref());
    match claimed {
        Some(waiter) => {
            if !zero_rtt {
                let ok = Message::new(Payload::ProxyRsp(ProxyRsp { error: None }));
                if let Err(e) = write(&mut tls, &ok).await {
                    // The owner's ProxyConnRsp will carry the failure.
                    tracing::debug!(stream_id = req.stream_id, error = %e, "ProxyRsp not sent");
                    return;
                }
            }
            // Released only when handed over: the waiter's permit covers it.
            admission.release();
            // Capacity 2 and one connection per stream: never full.
            let _ = waiter.try_send(PendingEvent::Connected(Box::new(tls)));
        }
        None => {
            tracing::debug!(stream_id = req.stream_id, "proxy connection refused");
            if !zero_rtt {
                let rsp = Message::new(Payload::ProxyRsp(ProxyRsp {
                    error: Some(error(
                        ErrorCode::InvalidStream,
                        "unknown stream, wrong secret, or stream already connected",
                    )),
                }));
                let _ = write(&mut tls, &rsp).await;
            }
            close(tls).await;
        }
    }
}

/// Serves a private dial (first frame `StreamReq`). Once authenticated,
/// the dialer's connection is established (a permit under
/// `max_connections`, which also covers the owner's proxy connection).
pub(crate) async fn serve_dial(
    inner: &Inner,
    mut tls: ServerTls,
    peer: SocketAddr,
    req: StreamReq,
    admission: &Admission,
) {
    let zero_rtt = req.zero_rtt.unwrap_or(false);
    let has_certificate = super::control::peer_certificate(&tls).is_some();
    #[cfg(feature = "quic")]
    if req.datagram_channel == Some(true) {
        return serve_quic_dial(inner, tls, peer, req, has_certificate, admission).await;
    }
    match dial(inner, peer, req, has_certificate, admission).await {
        Ok((stream_id, upstream)) => {
            if !zero_rtt {
                let rsp = Message::new(Payload::StreamRsp(StreamRsp {
                    payload: Some(stream_rsp::Payload::StreamId(stream_id)),
                }));
                if write(&mut tls, &rsp).await.is_err() {
                    return;
                }
            }
            match upstream {
                Owner::Framed(upstream) => splice(tls, upstream).await,
                // A framed dialer, a plane-A owner: translated.
                #[cfg(feature = "quic")]
                Owner::Quic(owner) => {
                    super::plane_a::relay_framed(tls, owner, inner.datagram.idle_timeout).await;
                }
            }
        }
        Err(e) => {
            tracing::debug!(%peer, code = e.code, message = ?e.message, "dial refused");
            if !zero_rtt {
                let rsp = Message::new(Payload::StreamRsp(StreamRsp {
                    payload: Some(stream_rsp::Payload::Error(e)),
                }));
                let _ = write(&mut tls, &rsp).await;
            }
            close(tls).await;
        }
    }
}

async fn dial(
    inner: &Inner,
    peer: SocketAddr,
    req: StreamReq,
    has_certificate: bool,
    admission: &Admission,
) -> Result<(String, Owner), proto::Error> {
    let target = authorize_dial(inner, peer, &req, has_certificate, admission)?;
    #[cfg(not(feature = "quic"))]
    if req.datagram_channel == Some(true) {
        // QUIC datagram channels (plane A) need the QUIC transport; a
        // refusal makes Go-like clients fall back to an ordinary framed
        // dial (plane B), which is spliced like any stream.
        return Err(error(
            ErrorCode::FeatureNotAvailable,
            "datagram_channel needs the QUIC transport; dial without it for framed datagrams",
        ));
    }
    reach_owner_any(inner, &target.id, peer.ip().to_canonical()).await
}

/// Authenticates a dial (its token, or the client certificate),
/// establishes the dialer's connection, and returns the tunnel it names
/// once its connect scope and `trusted_ips` allow the dialer.
fn authorize_dial(
    inner: &Inner,
    peer: SocketAddr,
    req: &StreamReq,
    has_certificate: bool,
    admission: &Admission,
) -> Result<super::state::DialTarget, proto::Error> {
    let token = req.client_details.as_ref().and_then(|d| d.token.as_deref());
    let grant = super::control::authenticate(
        &inner.config,
        token,
        has_certificate,
        super::auth::Action::Connect,
    )?;
    super::control::establish(admission)?;
    let name = req.tunnel_id_name.trim();
    if name.is_empty() {
        return Err(error(ErrorCode::InvalidRequest, "tunnel_id_name is empty"));
    }
    let target = inner.state().find_tunnel(name).ok_or_else(|| {
        error(
            ErrorCode::TunnelNotFound,
            format!("tunnel {name:?} not found"),
        )
    })?;
    if let Some(grant) = &grant {
        super::access::check_connect(&inner.config.apps, grant, &target.info)?;
    }
    let ip = peer.ip().to_canonical();
    if !allowed(&target.trusted, ip) {
        return Err(error(
            ErrorCode::Unauthorized,
            format!("{ip} is not in the tunnel's trusted_ips"),
        ));
    }
    Ok(target)
}

/// Serves `StreamReq{datagram_channel = true}`: a plane-A dial. Refused
/// (`FEATURE_NOT_AVAILABLE`, so the dialer falls back to a framed dial)
/// over TLS, for a tunnel that is not a datagram tunnel or has guaranteed
/// delivery (plane B), when the dialer's connection takes no DATAGRAM
/// frames, or when the dialer is on the owner's own QUIC connection (a
/// client dialing its own tunnel: both sides would share one channel id
/// on one connection). All of it is decided before the owner is asked, so
/// the owner sees exactly one channel: the framed dial's.
#[cfg(feature = "quic")]
async fn serve_quic_dial(
    inner: &Inner,
    mut tls: ServerTls,
    peer: SocketAddr,
    req: StreamReq,
    has_certificate: bool,
    admission: &Admission,
) {
    let answer = async {
        let ServerTls::Quic(stream) = &tls else {
            return Err(error(
                ErrorCode::FeatureNotAvailable,
                "datagram_channel needs the QUIC transport",
            ));
        };
        let router = stream.get_ref().datagram_router();
        let target = authorize_dial(inner, peer, &req, has_certificate, admission)?;
        let p = &target.info.properties;
        if p.r#type.as_deref() != Some("datagram") || p.datagram_guaranteed_delivery == Some(true) {
            return Err(error(
                ErrorCode::FeatureNotAvailable,
                "no QUIC datagram channel for this tunnel (not a datagram tunnel, or guaranteed delivery); dial framed",
            ));
        }
        let owner_router = inner.state().client_router(&target.info.client_id);
        if owner_router.is_some_and(|r| std::sync::Arc::ptr_eq(&r, &router)) {
            return Err(error(
                ErrorCode::FeatureNotAvailable,
                "the tunnel's owner is on this QUIC connection; dial framed",
            ));
        }
        let (stream_id, owner, control) =
            reach_owner_with_control(inner, &target.id, peer.ip().to_canonical()).await?;
        let dialer = super::plane_a::QuicSide::register(router, &stream_id, None)?;
        Ok((stream_id, dialer, owner, control))
    };
    match answer.await {
        Ok((stream_id, dialer, owner, control)) => {
            let rsp = Message::new(Payload::StreamRsp(StreamRsp {
                payload: Some(stream_rsp::Payload::StreamId(stream_id)),
            }));
            if write(&mut tls, &rsp).await.is_ok() {
                let idle = inner.datagram.idle_timeout;
                super::plane_a::relay_dial(tls, dialer, owner, control, idle).await;
            }
        }
        Err(e) => {
            tracing::debug!(%peer, code = e.code, message = ?e.message, "QUIC datagram dial refused");
            let rsp = Message::new(Payload::StreamRsp(StreamRsp {
                payload: Some(stream_rsp::Payload::Error(e)),
            }));
            let _ = write(&mut tls, &rsp).await;
            close(tls).await;
        }
    }
}

async fn write(tls: &mut ServerTls, msg: &Message) -> crate::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, write_frame(tls, msg)).await {
        Ok(r) => r,
        Err(_) => Err(crate::Error::timeout("writing a handshake frame")),
    }
}

/// Closes a connection cleanly (TLS close_notify), bounded in time.
pub(crate) async fn close(mut tls: ServerTls) {
    let _ = tokio::time::timeout(WRITE_TIMEOUT, tls.shutdown()).await;
}

/// Copies bytes both ways until both directions are done (an EOF on one
/// side shuts down the other's write side); an error on either side closes
/// both. Bounded buffers; each read takes all that is ready (several TLS
/// records), so each write carries as much as the buffer holds.
pub(crate) async fn splice<A, B>(a: A, b: B)
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut a, mut b) = (Greedy::new(a), Greedy::new(b));
    match tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, SPLICE_BUFFER, SPLICE_BUFFER)
        .await
    {
        Ok((down, up)) => tracing::trace!(down, up, "stream finished"),
        Err(e) => tracing::debug!(error = %e, "stream ended with an error"),
    }
}

/// A reader that fills the caller's buffer with everything already
/// readable, instead of returning after one TLS record: one call per
/// burst, not per 16 KiB. Writes go straight through.
///
/// An error met after some bytes were read is kept for the next call, so
/// it is never lost (nor turned into an EOF).
struct Greedy<T> {
    io: T,
    deferred: Option<std::io::Error>,
}

impl<T> Greedy<T> {
    fn new(io: T) -> Self {
        Greedy { io, deferred: None }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Greedy<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(e) = self.deferred.take() {
            return Poll::Ready(Err(e));
        }
        let start = buf.filled().len();
        // Bounded: every turn either fills more of `buf` or returns.
        while buf.remaining() > 0 {
            let before = buf.filled().len();
            match Pin::new(&mut self.io).poll_read(cx, buf) {
                // EOF: report what was read; the next call sees EOF again.
                Poll::Ready(Ok(())) if buf.filled().len() == before => break,
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) if buf.filled().len() == start => return Poll::Ready(Err(e)),
                Poll::Ready(Err(e)) => {
                    self.deferred = Some(e);
                    break;
                }
                Poll::Pending if buf.filled().len() == start => return Poll::Pending,
                Poll::Pending => break,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Greedy<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
