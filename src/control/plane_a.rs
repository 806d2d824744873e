//! Accepting a plane-A datagram channel (DATAGRAM_QUIC.md §2 A, listener
//! side): over the QUIC transport, a `ProxyConnReq` for a datagram tunnel
//! opens **no stream**. The channel id is registered on the control
//! channel's QUIC connection, the channel queued for
//! [`DatagramTunnel::accept`](crate::DatagramTunnel::accept), and the
//! engine answered with `ProxyConnRsp{stream_id}`, or an error with
//! `SERVICE_UNAVAILABLE`.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::datagram::quic::{channel_id, Router};
use crate::datagram::{DatagramChannel, DatagramPeer, QuicEnd, Registry};
use crate::proto::{self, ErrorCode, ProxyConnReq, ProxyConnRsp};
use crate::tunnel::TunnelShared;

/// Whether `req` opens a plane-A channel (given a QUIC control channel):
/// the tunnel is a datagram tunnel without guaranteed delivery, and the
/// engine did not redirect the stream (`proxy_endpoint`).
pub(super) fn applies(tunnel: &TunnelShared, req: &ProxyConnReq) -> bool {
    let current = tunnel.current();
    let p = &current.properties;
    p.r#type.as_deref().map(str::trim) == Some("datagram")
        && p.datagram_guaranteed_delivery != Some(true)
        && req.proxy_endpoint.is_none()
}

/// Registers and queues the channel; returns the answer for the engine.
pub(super) fn accept(
    router: Arc<Router>,
    req: ProxyConnReq,
    tunnel: &TunnelShared,
    registry: &Arc<Registry>,
    control_out: mpsc::Sender<Bytes>,
) -> ProxyConnRsp {
    let stream_id = req.stream_id;
    let refuse = |why: &str| {
        tracing::debug!(%stream_id, why, "refusing QUIC datagram channel");
        ProxyConnRsp {
            stream_id: stream_id.clone(),
            error: Some(proto::Error::new(ErrorCode::ServiceUnavailable, why)),
        }
    };
    let Some(id) = channel_id(&stream_id) else {
        return refuse("the stream id does not name a datagram channel");
    };
    if tunnel.is_closed() {
        return refuse("tunnel closed");
    }
    // A place in the accept queue first: a full backlog refuses at once.
    let counters = tunnel.counters();
    let Ok(place) = tunnel.quic_channels().try_reserve() else {
        counters.note_refused_backlog_full();
        return refuse("tunnel accept backlog full");
    };
    let Some(incoming) = router.register(id) else {
        return refuse("the datagram channel cannot be registered on the QUIC connection");
    };
    let source_ip = req.source_ip.as_ref().and_then(|ip| ip.to_ip());
    let peer = DatagramPeer::new(Arc::from(stream_id.as_str()), source_ip);
    let channel = DatagramChannel::quic(
        router,
        id,
        incoming,
        peer,
        Some(registry.clone()),
        QuicEnd::Control(control_out),
    );
    place.send(channel);
    counters.note_accepted();
    tracing::debug!(%stream_id, "QUIC datagram channel queued for the application");
    ProxyConnRsp {
        stream_id,
        error: None,
    }
}
