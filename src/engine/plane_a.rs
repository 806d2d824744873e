//! Plane A in the local engine (DATAGRAM_QUIC.md §2 A): datagram channels
//! whose owner's control channel is on QUIC carry QUIC DATAGRAM frames
//! (`channel_id ‖ payload`) on that connection instead of a proxy stream.
//!
//! [`QuicOwner`] is the owner's side of one such channel: registered on the
//! owner connection's [`Router`] before the `ProxyConnReq` goes out (so no
//! early datagram is lost), unregistered when dropped. The engine relays:
//! published UDP ⇄ DATAGRAM ([`super::datagram`]) and a framed dial ⇄
//! DATAGRAM (translation, [`relay_framed`]). Nothing is ever sent for an
//! id the owner was not asked about.
//!
//! Closing: the owner's `DatagramChannelClose{stream_id}` on its control
//! channel unregisters the id (the relay sees its queue end); a channel the
//! engine ends (idle, downstream gone) is announced to the owner with
//! `DatagramChannelClose` when the [`QuicOwner`] is dropped.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::datagram::frame::{self, FrameReader};
use crate::datagram::quic::{channel_id, ChannelId, Router};
use crate::proto::{self, message::Payload, DatagramChannelClose, ErrorCode, Message};

/// The owner's side of a plane-A channel (see the module docs).
pub(crate) struct QuicOwner {
    router: Arc<Router>,
    id: ChannelId,
    stream_id: String,
    /// Datagrams from the owner (64 at most; more are dropped and counted
    /// by the router).
    incoming: mpsc::Receiver<Bytes>,
    /// The owner's control-channel outbox, for `DatagramChannelClose`.
    control: mpsc::Sender<Message>,
}

impl QuicOwner {
    /// Registers `stream_id` on the owner's connection.
    pub(crate) fn register(
        router: Arc<Router>,
        stream_id: &str,
        control: mpsc::Sender<Message>,
    ) -> Result<Self, proto::Error> {
        let id = channel_id(stream_id).ok_or_else(|| {
            proto::Error::new(ErrorCode::Internal, "stream id without a channel id")
        })?;
        let (incoming, _) = router.register(id).ok_or_else(|| {
            proto::Error::new(
                ErrorCode::CapacityExhausted,
                "the owner's QUIC connection cannot take another datagram channel",
            )
        })?;
        Ok(QuicOwner {
            router,
            id,
            stream_id: stream_id.to_owned(),
            incoming,
            control,
        })
    }

    /// The next datagram from the owner; `None` once the owner closed the
    /// channel or its connection is gone.
    pub(crate) async fn recv(&mut self) -> Option<Bytes> {
        self.incoming.recv().await
    }

    /// Sends one datagram to the owner. `false` when it cannot go: too
    /// large for a DATAGRAM frame (dropped, as an oversized UDP datagram
    /// would be), or the connection is gone.
    pub(crate) fn send(&self, datagram: &[u8]) -> bool {
        match self.router.send(&self.id, datagram) {
            Ok(()) => true,
            Err(e) => {
                tracing::trace!(stream_id = self.stream_id, error = %e, "datagram to the owner dropped");
                false
            }
        }
    }
}

impl Drop for QuicOwner {
    fn drop(&mut self) {
        // Still registered: the engine ends the channel, the owner is told
        // (never waits: a full outbox skips the notice).
        if self.router.unregister(&self.id) {
            let close = DatagramChannelClose {
                stream_id: self.stream_id.clone(),
                error: None,
            };
            let _ = self
                .control
                .try_send(Message::new(Payload::DatagramChannelClose(close)));
        }
    }
}

/// The owner's `DatagramChannelClose{stream_id}`: the channel ends (its
/// relay sees the owner's queue close). Unknown ids are ignored.
pub(crate) fn closed_by_owner(router: &Router, stream_id: &str) {
    if let Some(id) = channel_id(stream_id) {
        router.unregister(&id);
    }
}

/// Translates a framed stream (a plane-B dialer) ⇄ DATAGRAM frames (a
/// plane-A owner) until either side ends. Datagrams too large for a
/// DATAGRAM frame are dropped (plane A never truncates).
pub(crate) async fn relay_framed<S>(stream: S, mut owner: QuicOwner)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let (router, id) = (owner.router.clone(), owner.id);
    let why = {
        let to_owner = async {
            let mut reader = FrameReader::new(rd);
            loop {
                match reader.next().await {
                    Ok(Some(d)) => {
                        // Too large or connection gone: dropped.
                        let _ = router.send(&id, &d);
                    }
                    Ok(None) => return "closed by the dialer",
                    Err(_) => return "dialer connection failed",
                }
            }
        };
        let from_owner = async {
            let mut out = BytesMut::new();
            while let Some(d) = owner.incoming.recv().await {
                frame::encode(&d, &mut out);
                while let Ok(d) = owner.incoming.try_recv() {
                    frame::encode(&d, &mut out);
                }
                if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                    return "dialer connection failed";
                }
                out.clear();
            }
            "closed by the owner"
        };
        tokio::select! {
            why = to_owner => why,
            why = from_owner => why,
        }
    };
    tracing::debug!(
        stream_id = owner.stream_id,
        why,
        "translated datagram channel closed"
    );
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), wr.shutdown()).await;
}
