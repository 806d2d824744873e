//! `Client::dial_datagram` over the QUIC transport: plane A, dial side
//! (DATAGRAM_QUIC.md §2 A). A new stream carries
//! `StreamReq{datagram_channel = true}`; the `StreamRsp`'s stream id names
//! the channel, whose datagrams then travel as DATAGRAM frames on that
//! stream's QUIC connection. The request stream stays open as the
//! channel's lifeline. A `StreamRsp` error means "not here": the caller
//! falls back, quietly, to an ordinary framed dial (plane B), which is how
//! an engine forces plane B (e.g. for guaranteed delivery).

use std::sync::Arc;

use super::quic::channel_id;
use super::{DatagramChannel, DatagramPeer, QuicEnd};
use crate::error::Result;
use crate::link::EngineLink;
use crate::proto::{
    message::Payload, read_answer_within, write_frame, Message, StreamReq, StreamRsp,
};
use crate::secret::Secret;
use crate::stream::{RstreamStream, StreamInfo};
use crate::transport::EngineStream;

/// Dials `target` on plane A. `Ok(None)`: plane A does not apply (the TLS
/// transport) or the engine refused it; dial framed instead.
pub(crate) async fn dial(
    link: &EngineLink,
    target: &str,
    token: Option<Secret>,
) -> Result<Option<DatagramChannel>> {
    if !link.dialer.may_use_quic() {
        return Ok(None);
    }
    let engine = link.engine().await?;
    let token = match token {
        Some(t) => Some(t),
        None => link.options.bearer(&engine.endpoint.to_string())?,
    };
    let mut io = link.dialer.connect(&engine.endpoint, &engine.sni).await?;
    let router = match &io {
        EngineStream::Quic(q) => q.datagram_router(),
        // E.g. a transport that settled on TLS: this connection is dropped.
        EngineStream::Tls(_) => return Ok(None),
    };
    if router.max_payload().is_none() {
        // The engine takes no DATAGRAM frames.
        return Ok(None);
    }
    let request = StreamReq {
        client_details: Some(link.details(token.map(|t| t.expose().to_owned()))),
        tunnel_id_name: target.to_owned(),
        zero_rtt: Some(false),
        datagram_channel: Some(true),
    };
    write_frame(&mut io, &Message::new(Payload::StreamReq(request))).await?;
    let op = link.options.operation_timeout;
    let answer = read_answer_within::<StreamRsp, _>(&mut io, op, || {
        crate::Error::protocol("engine closed the dial before answering")
    })
    .await?;
    let stream_id = match answer.into_result() {
        Ok(id) => id,
        Err(e) => {
            tracing::debug!(code = e.code(), error = %e, "QUIC datagram channel refused; dialing framed");
            return Ok(None);
        }
    };
    let Some(id) = channel_id(&stream_id) else {
        tracing::debug!(stream_id, "stream id without a channel id; dialing framed");
        return Ok(None);
    };
    let Some(registered) = router.register(id) else {
        tracing::debug!(stream_id, "datagram channel not registered; dialing framed");
        return Ok(None);
    };
    let stream_id: Arc<str> = Arc::from(stream_id);
    let lifeline = RstreamStream::new(
        io,
        StreamInfo::new(Arc::from(target), Some(stream_id.clone()), None),
    );
    Ok(Some(DatagramChannel::quic(
        router,
        id,
        registered,
        DatagramPeer::new(stream_id, None),
        None,
        QuicEnd::Lifeline(Box::new(lifeline)),
    )))
}
