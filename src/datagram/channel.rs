//! [`DatagramChannel`]: whole datagrams to and from one peer, framed on an
//! rstream stream (plane B).

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

/// One datagram peer: whole datagrams (at most
/// [`MAX_DATAGRAM_SIZE`](super::MAX_DATAGRAM_SIZE) bytes each) in both
/// directions, in order and reliably (plane B: framed on an rstream
/// stream). From [`DatagramTunnel::accept`](super::DatagramTunnel::accept)
/// (one per downstream peer) or [`Client::dial_datagram`](crate::Client::dial_datagram).
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
/// before anything is allocated for it.
#[derive(Debug)]
pub struct DatagramChannel {
    peer: DatagramPeer,
    outgoing: mpsc::Sender<Bytes>,
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
            outgoing,
            incoming: Mutex::new(incoming),
            shared,
        }
    }

    /// Who is at the other end (stream id and, for accepted channels, the
    /// downstream source IP).
    pub fn peer(&self) -> &DatagramPeer {
        &self.peer
    }

    /// Sends one datagram, waiting while 64 are already queued.
    ///
    /// # Errors
    ///
    /// `ERR_RSTREAM_DATAGRAM_TOO_LARGE` (kind `Protocol`) for more than
    /// 65,535 bytes: nothing is sent, the channel stays open. Once the
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
        self.outgoing
            .send(datagram)
            .await
            .map_err(|_| self.shared.reason())
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
