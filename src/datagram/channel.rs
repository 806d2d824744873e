//! [`DatagramChannel`]: whole datagrams to and from one peer, framed on an
//! rstream stream (plane B) or, over the QUIC transport, as QUIC DATAGRAM
//! frames (plane A, see [`super::quic`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch, Mutex, Notify};

use super::frame::{self, FrameReader};
use super::{closed, DatagramPeer, Registry, CHANNEL_QUEUE};
use crate::error::{Error, Result};
use crate::stream::RstreamStream;

/// Bound on flushing queued datagrams and closing the stream after a local
/// close (a peer that stopped reading cannot hold the task longer).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many bytes of queued datagrams go into one write.
const WRITE_BATCH: usize = 64 * 1024;

/// State shared by a channel and its driver task.
#[derive(Debug)]
pub(super) struct Shared {
    /// `Some(reason)` once the channel is closed.
    closed: watch::Sender<Option<Error>>,
    /// A local close was asked for.
    close: Notify,
}

impl Shared {
    /// Records the first reason only.
    fn set_closed(&self, reason: Error) {
        self.closed.send_if_modified(|c| {
            if c.is_none() {
                *c = Some(reason);
                true
            } else {
                false
            }
        });
    }

    /// The engine's `DatagramChannelClose`: the channel ends, quietly.
    pub(super) fn closed_by_engine(&self) {
        self.set_closed(closed("the engine closed the datagram channel"));
        self.close.notify_one();
    }

    fn reason(&self) -> Error {
        self.closed
            .borrow()
            .clone()
            .unwrap_or_else(|| closed("datagram channel closed"))
    }
}

/// How a channel's datagrams travel.
#[derive(Debug)]
enum Plane {
    /// Framed on a stream (plane B): queued for the driver task.
    Framed(mpsc::Sender<Bytes>),
    /// QUIC DATAGRAM frames (plane A), sent at once.
    #[cfg(feature = "quic")]
    Quic {
        router: Arc<super::quic::Router>,
        id: super::quic::ChannelId,
        /// Received datagrams dropped: the receive queue was full.
        dropped: Arc<std::sync::atomic::AtomicU64>,
    },
}

/// What ends a plane-A channel besides a local close, and whom a local
/// close tells.
#[cfg(feature = "quic")]
#[derive(Debug)]
pub(crate) enum QuicEnd {
    /// An accepted channel: the control channel's frame outbox, where a
    /// local close sends `DatagramChannelClose` (DATAGRAM_QUIC.md §2 A,
    /// listener step 5). The channel ends with that connection.
    Control(mpsc::Sender<Bytes>),
    /// A dialed channel: its request stream, kept open as a lifeline. The
    /// engine's `DatagramChannelClose` on it, or its end, closes the
    /// channel; a local close closes it.
    Lifeline(Box<RstreamStream>),
}

/// One datagram peer: whole datagrams in both directions. On plane B
/// (framed on an rstream stream) at most
/// [`MAX_DATAGRAM_SIZE`](super::MAX_DATAGRAM_SIZE) bytes each, in order
/// and reliably; on plane A (QUIC DATAGRAM frames, over the QUIC
/// transport, see [`is_quic_datagram`](Self::is_quic_datagram)) at most
/// [`max_datagram_size`](Self::max_datagram_size) bytes each, unreliably
/// and unordered, like UDP. From
/// [`DatagramTunnel::accept`](super::DatagramTunnel::accept) (one per
/// downstream peer) or [`Client::dial_datagram`](crate::Client::dial_datagram).
///
/// [`send`](Self::send) and [`recv`](Self::recv) take `&self`, so one task
/// may send while another receives (share it in an `Arc`). Both are cancel
/// safe. Dropping the channel closes it, as [`close`](Self::close) does.
///
/// # Bounds
///
/// At most 64 received datagrams wait for [`recv`](Self::recv) and at
/// most 64 sent ones wait for the network; beyond that the stream pushes
/// back (`send` waits, the peer's sends wait): nothing is dropped and
/// nothing grows without bound. A peer whose frame header announces more
/// than 65,535 bytes closes the channel with `ERR_RSTREAM_DATAGRAM_TOO_LARGE`
/// before anything is allocated for it. On plane A, `send` never waits,
/// and received datagrams beyond the 64 waiting are dropped and counted
/// ([`dropped`](Self::dropped)).
#[derive(Debug)]
pub struct DatagramChannel {
    peer: DatagramPeer,
    plane: Plane,
    incoming: Mutex<mpsc::Receiver<Bytes>>,
    shared: Arc<Shared>,
}

impl DatagramChannel {
    /// Wraps a stream (accepted or dialed) and starts its driver task.
    /// Accepted channels are registered in their control channel's
    /// `registry`, so the engine's `DatagramChannelClose` reaches them.
    pub(crate) fn new(
        stream: RstreamStream,
        peer: DatagramPeer,
        registry: Option<Arc<Registry>>,
    ) -> Self {
        let (outgoing, out_rx) = mpsc::channel(CHANNEL_QUEUE);
        let (in_tx, incoming) = mpsc::channel(CHANNEL_QUEUE);
        let shared = Arc::new(Shared {
            closed: watch::Sender::new(None),
            close: Notify::new(),
        });
        if let Some(registry) = &registry {
            registry.insert(peer.stream_id.clone(), &shared);
        }
        let spans = stream.in_spans();
        let task = {
            let (shared, stream_id) = (shared.clone(), peer.stream_id.clone());
            async move {
                drive(stream, out_rx, in_tx, shared.clone()).await;
                if let Some(registry) = registry {
                    registry.remove(&stream_id, &shared);
                }
            }
        };
        tokio::spawn(spans(task));
        DatagramChannel {
            peer,
            plane: Plane::Framed(outgoing),
            incoming: Mutex::new(incoming),
            shared,
        }
    }

    /// A plane-A channel: datagrams for `id` arrive on `incoming` (from
    /// the connection's [`Router`](super::quic::Router), where `id` is
    /// registered) and go out as DATAGRAM frames. `end` says what else
    /// ends it. Accepted channels are registered in `registry` too.
    #[cfg(feature = "quic")]
    pub(crate) fn quic(
        router: Arc<super::quic::Router>,
        id: super::quic::ChannelId,
        (incoming, dropped): (mpsc::Receiver<Bytes>, Arc<std::sync::atomic::AtomicU64>),
        peer: DatagramPeer,
        registry: Option<Arc<Registry>>,
        end: QuicEnd,
    ) -> Self {
        let shared = Arc::new(Shared {
            closed: watch::Sender::new(None),
            close: Notify::new(),
        });
        if let Some(registry) = &registry {
            registry.insert(peer.stream_id.clone(), &shared);
        }
        let task = {
            let (shared, stream_id, router) =
                (shared.clone(), peer.stream_id.clone(), router.clone());
            async move {
                drive_quic(&router, id, &stream_id, &shared, end).await;
                if let Some(registry) = registry {
                    registry.remove(&stream_id, &shared);
                }
            }
        };
        tokio::spawn(task);
        DatagramChannel {
            peer,
            plane: Plane::Quic {
                router,
                id,
                dropped,
            },
            incoming: Mutex::new(incoming),
            shared,
        }
    }

    /// Whether the channel's datagrams travel as QUIC DATAGRAM frames
    /// (plane A: unreliable, unordered, about 1.2 KB each) rather than
    /// framed on a stream (plane B: reliable, ordered, up to 65,535
    /// bytes). See `docs/DATAGRAMS.md`.
    pub fn is_quic_datagram(&self) -> bool {
        match &self.plane {
            Plane::Framed(_) => false,
            #[cfg(feature = "quic")]
            Plane::Quic { .. } => true,
        }
    }

    /// Received datagrams dropped because 64 were already waiting for
    /// [`recv`](Self::recv) (plane A only, which is unreliable like UDP;
    /// plane B pushes back instead and never drops).
    pub fn dropped(&self) -> u64 {
        match &self.plane {
            Plane::Framed(_) => 0,
            #[cfg(feature = "quic")]
            Plane::Quic { dropped, .. } => dropped.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// The largest datagram [`send`](Self::send) takes now: 65,535 bytes
    /// on plane B; on plane A the QUIC connection's largest DATAGRAM less
    /// the 12-byte channel id (it follows the path, typically 1.1–1.4 KB;
    /// 0 once the connection is gone).
    pub fn max_datagram_size(&self) -> usize {
        match &self.plane {
            Plane::Framed(_) => super::MAX_DATAGRAM_SIZE,
            #[cfg(feature = "quic")]
            Plane::Quic { router, .. } => router.max_payload().unwrap_or(0),
        }
    }

    /// Who is at the other end (stream id and, for accepted channels, the
    /// downstream source IP).
    pub fn peer(&self) -> &DatagramPeer {
        &self.peer
    }

    /// Sends one datagram, waiting while 64 are already queued (plane B;
    /// on plane A it goes out at once, unreliably).
    ///
    /// # Errors
    ///
    /// `ERR_RSTREAM_DATAGRAM_TOO_LARGE` (kind `Protocol`) for more than
    /// [`max_datagram_size`](Self::max_datagram_size) bytes: nothing is
    /// sent, never truncated, the channel stays open. Once the
    /// channel is closed, the reason (kind `Closed` after a close by
    /// either side).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the datagram is either queued whole or not at all.
    pub async fn send(&self, datagram: &[u8]) -> Result<()> {
        frame::check_len(datagram.len())?;
        self.send_bytes(Bytes::copy_from_slice(datagram)).await
    }

    /// [`send`](Self::send) without a copy.
    pub async fn send_bytes(&self, datagram: Bytes) -> Result<()> {
        frame::check_len(datagram.len())?;
        if self.shared.closed.borrow().is_some() {
            return Err(self.shared.reason());
        }
        match &self.plane {
            Plane::Framed(outgoing) => outgoing
                .send(datagram)
                .await
                .map_err(|_| self.shared.reason()),
            #[cfg(feature = "quic")]
            Plane::Quic { router, id, .. } => router.send(id, &datagram),
        }
    }

    /// Receives the next datagram, whole.
    ///
    /// # Errors
    ///
    /// Once the channel is closed and every datagram received before that
    /// was returned: the reason (kind `Closed` when either side closed it,
    /// `Protocol` for a peer that broke the framing).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a datagram is never lost by dropping the future.
    pub async fn recv(&self) -> Result<Bytes> {
        let mut incoming = self.incoming.lock().await;
        match incoming.recv().await {
            Some(datagram) => Ok(datagram),
            None => Err(self.shared.reason()),
        }
    }

    /// Whether the channel is closed (by either side, or broken).
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Resolves with the reason once the channel is closed. `'static`.
    pub fn closed(&self) -> impl std::future::Future<Output = Error> + Send + 'static {
        let mut rx = self.shared.closed.subscribe();
        let shared = self.shared.clone();
        async move {
            let _ = rx.wait_for(Option::is_some).await;
            shared.reason()
        }
    }

    /// Asks for the close without waiting for it.
    pub(crate) fn close_now(&self) {
        self.shared.close.notify_one();
    }

    /// Closes the channel: datagrams already queued are sent, then the
    /// stream is closed, so the peer's `recv` returns a `Closed` error
    /// (bounded by 5 s when the peer does not read). Returns once done.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the close proceeds whether or not the future is then
    /// dropped.
    pub async fn close(&self) {
        self.shared.close.notify_one();
        let mut rx = self.shared.closed.subscribe();
        let _ = tokio::time::timeout(
            CLOSE_TIMEOUT + Duration::from_secs(1),
            rx.wait_for(Option::is_some),
        )
        .await;
    }
}

impl Drop for DatagramChannel {
    fn drop(&mut self) {
        self.shared.close.notify_one();
    }
}

/// Runs one channel: frames from the stream into `incoming`, datagrams
/// from `outgoing` onto the stream, until either side closes.
async fn drive(
    stream: RstreamStream,
    mut outgoing: mpsc::Receiver<Bytes>,
    incoming: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
) {
    let (rd, mut wr) = tokio::io::split(stream);
    let reason = tokio::select! {
        reason = read_loop(rd, incoming) => reason,
        reason = write_loop(&mut wr, &mut outgoing, &shared) => reason,
    };
    tracing::debug!(code = reason.code(), error = %reason, "datagram channel closed");
    shared.set_closed(reason);
}

async fn read_loop(rd: ReadHalf<RstreamStream>, incoming: mpsc::Sender<Bytes>) -> Error {
    let mut reader = FrameReader::new(rd);
    loop {
        match reader.next().await {
            Ok(Some(datagram)) => {
                // Waits while the queue is full: the stream pushes back.
                if incoming.send(datagram).await.is_err() {
                    return closed("datagram channel dropped");
                }
            }
            Ok(None) => return closed("the peer closed the datagram channel"),
            Err(e) => return e,
        }
    }
}

async fn write_loop(
    wr: &mut WriteHalf<RstreamStream>,
    outgoing: &mut mpsc::Receiver<Bytes>,
    shared: &Shared,
) -> Error {
    let mut buf = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            d = outgoing.recv() => d,
            () = shared.close.notified() => None,
        };
        let Some(first) = first else { break };
        frame::encode(&first, &mut buf);
        // Everything already queued goes in the same write.
        while buf.len() < WRITE_BATCH {
            match outgoing.try_recv() {
                Ok(d) => frame::encode(&d, &mut buf),
                Err(_) => break,
            }
        }
        if let Err(e) = write_out(wr, &mut buf).await {
            return e;
        }
    }
    // A local close: flush what is queued, then close the stream.
    let flush = async {
        outgoing.close();
        while let Some(d) = outgoing.recv().await {
            frame::encode(&d, &mut buf);
        }
        write_out(wr, &mut buf).await?;
        wr.shutdown()
            .await
            .map_err(|e| Error::io("closing a datagram channel", e))
    };
    match tokio::time::timeout(CLOSE_TIMEOUT, flush).await {
        Ok(Err(e)) => e,
        _ => closed("datagram channel closed"),
    }
}

async fn write_out(wr: &mut WriteHalf<RstreamStream>, buf: &mut BytesMut) -> Result<()> {
    if buf.is_empty() {
        return Ok(());
    }
    wr.write_all(buf)
        .await
        .map_err(|e| Error::io("sending a datagram", e))?;
    buf.clear();
    wr.flush()
        .await
        .map_err(|e| Error::io("sending a datagram", e))
}

/// Runs a plane-A channel until a local close, the engine's close, or the
/// loss of its connection (or of its lifeline, when dialed).
#[cfg(feature = "quic")]
async fn drive_quic(
    router: &super::quic::Router,
    id: super::quic::ChannelId,
    stream_id: &str,
    shared: &Shared,
    end: QuicEnd,
) {
    let conn = router.conn().clone();
    match end {
        QuicEnd::Control(out) => {
            let lost = tokio::select! {
                () = shared.close.notified() => None,
                _ = conn.closed() => Some("the QUIC connection was lost"),
                // The control channel's connection ended (its writer is
                // gone): the engine dropped the channel with it.
                () = out.closed() => Some("the control channel was lost"),
            };
            // Set before anything else: a close by the engine came first.
            let by_engine = shared.closed.borrow().is_some();
            shared.set_closed(closed(lost.unwrap_or("datagram channel closed")));
            router.unregister(&id);
            if lost.is_none() && !by_engine {
                notify_engine(&out, stream_id).await;
            }
        }
        QuicEnd::Lifeline(stream) => {
            let (rd, mut wr) = tokio::io::split(*stream);
            let reason = tokio::select! {
                () = shared.close.notified() => closed("datagram channel closed"),
                _ = conn.closed() => closed("the QUIC connection was lost"),
                reason = watch_lifeline(rd, stream_id) => reason,
            };
            shared.set_closed(reason);
            router.unregister(&id);
            let _ = tokio::time::timeout(CLOSE_TIMEOUT, wr.shutdown()).await;
        }
    }
    tracing::debug!(stream_id, "QUIC datagram channel closed");
}

/// Tells the engine that an accepted plane-A channel closed (bounded: a
/// full or gone control channel skips it).
#[cfg(feature = "quic")]
async fn notify_engine(out: &mpsc::Sender<Bytes>, stream_id: &str) {
    use crate::proto::{encode_frame, message::Payload, DatagramChannelClose, Message};
    let close = DatagramChannelClose {
        stream_id: stream_id.to_owned(),
        error: None,
    };
    if let Ok(frame) = encode_frame(&Message::new(Payload::DatagramChannelClose(close))) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, out.send(frame)).await;
    }
}

/// Reads a dialed plane-A channel's request stream until the engine's
/// `DatagramChannelClose` for it, or the stream's end.
#[cfg(feature = "quic")]
async fn watch_lifeline(mut rd: ReadHalf<RstreamStream>, stream_id: &str) -> Error {
    use crate::proto::{message::Payload, read_frame};
    loop {
        match read_frame(&mut rd).await {
            Ok(Some(msg)) => {
                if let Some(Payload::DatagramChannelClose(c)) = msg.payload {
                    if c.stream_id.trim() == stream_id {
                        return closed("the engine closed the datagram channel");
                    }
                }
            }
            Ok(None) => return closed("the engine closed the datagram channel"),
            Err(e) => return e,
        }
    }
}
