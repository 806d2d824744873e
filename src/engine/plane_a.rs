//! Plane A in the local engine (DATAGRAM_QUIC.md §2 A): datagram channels
//! whose owner's control channel is on QUIC carry QUIC DATAGRAM frames
//! (`channel_id ‖ payload`) on that connection instead of a proxy stream.
//!
//! A QUIC dialer asks for plane A with `StreamReq{datagram_channel = true}`
//! and keeps its request stream open as the channel's lifeline.
//!
//! [`QuicSide`] is one side of such a channel on one QUIC connection: the
//! owner's, registered on its connection's [`Router`] before the
//! `ProxyConnReq` goes out (so no early datagram is lost), or a dialer's,
//! registered before its `StreamRsp`; unregistered when dropped. The engine
//! relays: published UDP ⇄ DATAGRAM ([`super::datagram`]), DATAGRAM ⇄
//! DATAGRAM ([`relay_dial`]), and framed ⇄ DATAGRAM when the two sides use
//! different planes (translation, [`relay_framed`]). Nothing is ever sent
//! for an id the peer was not told about.
//!
//! Closing: the owner's `DatagramChannelClose{stream_id}` on its control
//! channel unregisters the id (the relay sees its queue end); a channel the
//! engine ends (idle, downstream gone) is announced to the owner with
//! `DatagramChannelClose` when the [`QuicSide`] is dropped (a framed
//! owner of a plane-A dial that went idle gets it on its control channel
//! as its stream closes). A dialed channel (either relay) with no datagram either
//! way for the engine's datagram idle timeout is ended that way.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::datagram::{Activity, IDLE};
use super::streams::{Owner, ServerTls};
use crate::datagram::frame::{self, FrameReader};
use crate::datagram::quic::{channel_id, ChannelId, Router};
use crate::proto::{
    self, message::Payload, read_frame, write_frame, DatagramChannelClose, ErrorCode, Message,
};

/// QUIC DATAGRAM frames (plane A) a [`LocalEngine`](super::LocalEngine)
/// dropped, by reason, all connections together
/// ([`LocalEngine::quic_datagram_drops`](super::LocalEngine::quic_datagram_drops)).
/// Plane A is unreliable: a drop is never reported to either side, only
/// counted here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QuicDatagramDrops {
    /// Received frames shorter than the 12-byte channel id.
    pub short: u64,
    /// Received frames for a channel id not open on their connection
    /// (never announced, already closed, or another connection's).
    pub unknown_channel: u64,
    /// Received frames whose channel already had 64 datagrams waiting
    /// (the relay, or the side it forwards to, is slower than the sender).
    pub queue_full: u64,
    /// Datagrams the engine could not forward as a DATAGRAM frame: larger
    /// than the receiving connection's limit (e.g. a framed dialer's
    /// datagram for a plane-A owner). Never truncated.
    pub too_large: u64,
}

impl QuicDatagramDrops {
    pub(crate) fn of(drops: &crate::datagram::quic::Drops) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        QuicDatagramDrops {
            short: drops.short.load(Relaxed),
            unknown_channel: drops.unknown_channel.load(Relaxed),
            queue_full: drops.queue_full.load(Relaxed),
            too_large: drops.too_large.load(Relaxed),
        }
    }
}

/// Bound on writing the close notice and closing a stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// One side of a plane-A channel (see the module docs).
pub(crate) struct QuicSide {
    router: Arc<Router>,
    id: ChannelId,
    stream_id: String,
    /// Datagrams from the owner (64 at most; more are dropped and counted
    /// by the router).
    incoming: mpsc::Receiver<Bytes>,
    /// The owner's control-channel outbox, for `DatagramChannelClose`
    /// (`None` for a dialer: its lifeline stream carries the close).
    control: Option<mpsc::Sender<Message>>,
}

impl QuicSide {
    /// Registers `stream_id` on `router`'s connection (an owner's, with
    /// its `control` outbox, or a dialer's).
    pub(crate) fn register(
        router: Arc<Router>,
        stream_id: &str,
        control: Option<mpsc::Sender<Message>>,
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
        Ok(QuicSide {
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

impl Drop for QuicSide {
    fn drop(&mut self) {
        // Still registered: the engine ends the channel, the owner is told
        // (never waits: a full outbox skips the notice).
        if self.router.unregister(&self.id) {
            if let Some(control) = &self.control {
                let _ = control.try_send(close_message(&self.stream_id));
            }
        }
    }
}

fn close_message(stream_id: &str) -> Message {
    Message::new(Payload::DatagramChannelClose(DatagramChannelClose {
        stream_id: stream_id.to_owned(),
        error: None,
    }))
}

/// The owner's `DatagramChannelClose{stream_id}`: the channel ends (its
/// relay sees the owner's queue close). Unknown ids are ignored.
pub(crate) fn closed_by_owner(router: &Router, stream_id: &str) {
    if let Some(id) = channel_id(stream_id) {
        router.unregister(&id);
    }
}

/// Translates a framed stream (a plane-B dialer) ⇄ DATAGRAM frames (a
/// plane-A owner) until either side ends or no datagram passed for
/// `idle_timeout` ([`IDLE`]). Datagrams too large for a DATAGRAM frame are
/// dropped (plane A never truncates) and counted by the router.
pub(crate) async fn relay_framed<S>(
    stream: S,
    mut owner: QuicSide,
    idle_timeout: Duration,
) -> &'static str
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (rd, mut wr) = tokio::io::split(stream);
    let (router, id) = (owner.router.clone(), owner.id);
    let activity = Activity::new();
    let why = {
        let to_owner = async {
            let mut reader = FrameReader::new(rd);
            loop {
                match reader.next().await {
                    Ok(Some(d)) => {
                        activity.touch();
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
                activity.touch();
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
            () = activity.idle(idle_timeout) => IDLE,
        }
    };
    tracing::debug!(
        stream_id = owner.stream_id,
        why,
        "translated datagram channel closed"
    );
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, wr.shutdown()).await;
    why
}

/// Relays DATAGRAM ⇄ DATAGRAM between two plane-A sides until either
/// ends or no datagram passed for `idle_timeout` ([`IDLE`]).
async fn relay_quic(mut a: QuicSide, mut b: QuicSide, idle_timeout: Duration) -> &'static str {
    let mut deadline = Instant::now() + idle_timeout;
    loop {
        tokio::select! {
            d = a.recv() => match d {
                Some(d) => {
                    deadline = Instant::now() + idle_timeout;
                    b.send(&d);
                }
                None => return "closed by the dialer",
            },
            d = b.recv() => match d {
                Some(d) => {
                    deadline = Instant::now() + idle_timeout;
                    a.send(&d);
                }
                None => return "closed by the owner",
            },
            () = tokio::time::sleep_until(deadline) => return IDLE,
        }
    }
}

/// Serves a plane-A dial (a QUIC dialer's `datagram_channel = true`, its
/// `StreamRsp` sent): relays the dialer's DATAGRAMs to the owner (plane A
/// or framed) until either side ends, the dialer closes its request
/// stream (the lifeline), or no datagram passed for `idle_timeout`. When
/// the engine ends it, the dialer gets `DatagramChannelClose{stream_id}`
/// on the lifeline, then its end; an idle channel's owner gets one on its
/// control channel (`control`) too.
pub(crate) async fn relay_dial(
    mut lifeline: ServerTls,
    dialer: QuicSide,
    owner: Owner,
    control: mpsc::Sender<Message>,
    idle_timeout: Duration,
) {
    let stream_id = dialer.stream_id.clone();
    let by_dialer = {
        let relay = async {
            match owner {
                Owner::Framed(up) => {
                    let why = relay_framed(up, dialer, idle_timeout).await;
                    if why == IDLE {
                        // A plane-A owner hears it when its side is
                        // dropped; a framed one here, never waiting.
                        let _ = control.try_send(close_message(&stream_id));
                    }
                    why
                }
                Owner::Quic(up) => relay_quic(dialer, up, idle_timeout).await,
            }
        };
        let watch = async {
            // Frames on the lifeline mean nothing; its end closes the channel.
            loop {
                match read_frame(&mut lifeline).await {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return,
                }
            }
        };
        tokio::select! {
            why = relay => {
                tracing::debug!(stream_id, why, "QUIC datagram dial closed");
                false
            }
            () = watch => true,
        }
    };
    if !by_dialer {
        let close = close_message(&stream_id);
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, write_frame(&mut lifeline, &close)).await;
    }
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, lifeline.shutdown()).await;
}
