//! Published datagram tunnels: a UDP socket on `127.0.0.1` per tunnel.
//!
//! Each downstream source address is one channel: the first datagram from
//! it asks the owner for a stream (`ProxyConnReq`, the owner's proxy
//! connection, `ProxyConnRsp`, exactly as for a TCP downstream), then
//! datagrams flow framed on that stream (DATAGRAM_QUIC.md §2 B: 4-byte
//! big-endian length + payload) and the engine translates UDP ⇄ framed.
//! An owner on plane A (its control channel on QUIC, no guaranteed
//! delivery) opens no stream: UDP ⇄ QUIC DATAGRAM ([`super::plane_a`]).
//!
//! Bounds: at most [`Settings::max_channels`] channels per tunnel (a new
//! source beyond that is ignored and counted), each holding one permit
//! under `max_published_connections`; at most [`CHANNEL_QUEUE`] datagrams
//! and [`CHANNEL_QUEUE_BYTES`] bytes wait per channel for the owner (more
//! are dropped and counted, as a UDP socket buffer would); a channel with no datagram either way for
//! [`Settings::idle_timeout`] is closed, as is one whose owner closes its
//! stream or sends a frame over 65,535 bytes. An idle channel's owner is
//! told with `DatagramChannelClose{stream_id}` on its control channel
//! before the stream closes. Closing the tunnel closes its socket and
//! every channel.
//!
//! A `dtls` tunnel (feature `dtls`) puts a DTLS server session in front of
//! each source ([`super::dtls`]): its channel to the owner opens once the
//! handshake completes, carries the decrypted datagrams, and the owner's
//! datagrams go back encrypted; everything above applies to it unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::limits::Warned;
use super::state::{allowed, TrustedIps};
use super::{streams, Inner};
use crate::datagram::frame::{self, FrameReader};
use crate::proto::{self, message::Payload, DatagramChannelClose, ErrorCode, Message};

/// Default idle timeout of a published datagram channel.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default cap on the channels of one published datagram tunnel.
pub(crate) const DEFAULT_MAX_CHANNELS: usize = 1024;
/// Datagrams queued per channel towards the owner.
pub(crate) const CHANNEL_QUEUE: usize = 64;
/// Bytes queued per channel towards the owner (whichever bound comes
/// first): 1,024 channels of large datagrams hold at most 256 MiB.
pub(crate) const CHANNEL_QUEUE_BYTES: usize = 256 * 1024;
/// The receive buffer: larger than any UDP payload.
const RECV_BUFFER: usize = 65_536;
/// Why a channel ended: no datagram either way for the idle timeout.
pub(super) const IDLE: &str = "idle";
/// How long a source whose channel the owner refused stays refused.
const REFUSED_HOLD: Duration = Duration::from_secs(1);
/// Bound on closing a channel's stream.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// When a channel last carried a datagram (either way), shared by the
/// two directions of a relay, for idle expiry: published channels here,
/// dialed plane-A channels and translations in `super::plane_a`.
pub(super) struct Activity {
    base: Instant,
    /// Milliseconds after `base`.
    last: AtomicU64,
}

impl Activity {
    pub(super) fn new() -> Self {
        Activity {
            base: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    /// A datagram passed.
    pub(super) fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// Resolves once no datagram passed for `timeout`.
    pub(super) async fn idle(&self, timeout: Duration) {
        loop {
            let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = self.base + last + timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// The datagram settings of an engine (from the builder).
#[derive(Debug)]
pub(crate) struct Settings {
    /// A channel idle (no datagram either way) this long is closed.
    pub(crate) idle_timeout: Duration,
    /// Channels one published datagram tunnel holds at once.
    pub(crate) max_channels: usize,
    /// Datagrams dropped (full channel queue) and sources refused (too many
    /// channels), all tunnels together.
    pub(crate) stats: Arc<Stats>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_channels: DEFAULT_MAX_CHANNELS,
            stats: Arc::default(),
        }
    }
}

/// Counters of the published datagram endpoints.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) dropped: AtomicU64,
    pub(crate) refused_channels: AtomicU64,
    pub(crate) opened_channels: AtomicU64,
    warned: Mutex<Warned>,
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("dropped", &self.dropped)
            .field("refused_channels", &self.refused_channels)
            .field("opened_channels", &self.opened_channels)
            .finish_non_exhaustive()
    }
}

impl Stats {
    pub(super) fn drop_one(&self, tunnel_id: &str, peer: SocketAddr, what: &str) {
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = warned.note() {
            tracing::warn!(
                tunnel_id,
                %peer,
                since_last_warning = n,
                "published datagram endpoint: {what}"
            );
        }
    }
}

/// Binds a published datagram endpoint on 127.0.0.1 (a requested port or
/// any). A port in use is `CAPACITY_EXHAUSTED`.
pub(crate) async fn bind(port: Option<u16>) -> Result<UdpSocket, proto::Error> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0)));
    UdpSocket::bind(addr).await.map_err(|e| match e.kind() {
        std::io::ErrorKind::AddrInUse => proto::Error::new(
            ErrorCode::CapacityExhausted,
            format!("UDP port {} is already in use", addr.port()),
        ),
        _ => proto::Error::new(
            ErrorCode::CapacityExhausted,
            format!("cannot listen on UDP {addr}: {e}"),
        ),
    })
}

/// Serves a published datagram tunnel's socket until aborted (the tunnel
/// closes): aborting it drops every channel task with it.
///
/// With `dtls` (a `protocol = dtls` tunnel, feature `dtls`), the engine
/// terminates DTLS on the socket: see [`super::dtls`].
pub(crate) fn spawn_endpoint(
    inner: Arc<Inner>,
    tunnel_id: String,
    socket: UdpSocket,
    trusted: TrustedIps,
    dtls: bool,
) -> JoinHandle<()> {
    let endpoint = Endpoint {
        inner,
        tunnel_id,
        socket: Arc::new(socket),
        trusted,
        dtls,
    };
    tokio::spawn(endpoint.run())
}

/// One published datagram tunnel's socket and what opening its channels
/// needs.
pub(super) struct Endpoint {
    pub(super) inner: Arc<Inner>,
    pub(super) tunnel_id: String,
    pub(super) socket: Arc<UdpSocket>,
    trusted: TrustedIps,
    /// Terminate DTLS (only ever true with feature `dtls`: tunnel creation
    /// refuses `protocol = dtls` without it).
    dtls: bool,
}

/// The channels of one endpoint by source address, and their tasks (each
/// returns its source address when it ends).
pub(super) struct Channels {
    pub(super) queues: HashMap<SocketAddr, Queue>,
    pub(super) tasks: JoinSet<SocketAddr>,
    /// At most this many at once ([`Settings::max_channels`]).
    pub(super) max: usize,
}

impl Channels {
    /// Whether a new source may have a channel; counts and logs a refusal.
    pub(super) fn has_room(&self, endpoint: &Endpoint, peer: SocketAddr) -> bool {
        if self.queues.len() < self.max {
            return true;
        }
        let stats = &endpoint.inner.datagram.stats;
        stats.refused_channels.fetch_add(1, Ordering::Relaxed);
        stats.drop_one(
            &endpoint.tunnel_id,
            peer,
            "too many channels, new source ignored",
        );
        false
    }
}

impl Endpoint {
    async fn run(self) {
        let stats = self.inner.datagram.stats.clone();
        let mut channels = Channels {
            queues: HashMap::new(),
            tasks: JoinSet::new(),
            max: self.inner.datagram.max_channels.max(1),
        };
        let mut buf = vec![0u8; RECV_BUFFER];
        loop {
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => {
                    let (n, peer) = match received {
                        Ok(r) => r,
                        // E.g. an ICMP port unreachable for an earlier send_to:
                        // nothing to do with the next datagram.
                        Err(e) => {
                            tracing::trace!(tunnel_id = self.tunnel_id, error = %e, "UDP receive error");
                            continue;
                        }
                    };
                    let datagram = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                    let first = match channels.queues.get(&peer) {
                        None => datagram,
                        Some(queue) => match queue.push(datagram) {
                            Ok(()) => continue,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                stats.dropped.fetch_add(1, Ordering::Relaxed);
                                stats.drop_one(&self.tunnel_id, peer, "channel queue full, datagram dropped");
                                continue;
                            }
                            // The channel ended: this datagram starts a new one.
                            Err(mpsc::error::TrySendError::Closed(d)) => {
                                channels.queues.remove(&peer);
                                d
                            }
                        },
                    };
                    if !allowed(&self.trusted, peer.ip().to_canonical()) {
                        tracing::debug!(tunnel_id = self.tunnel_id, %peer, "datagram refused by trusted_ips");
                        continue;
                    }
                    self.open(peer, first, &mut channels);
                }
                Some(done) = channels.tasks.join_next(), if !channels.tasks.is_empty() => {
                    if let Ok(peer) = done {
                        if channels.queues.get(&peer).is_some_and(|q| q.tx.is_closed()) {
                            channels.queues.remove(&peer);
                        }
                    }
                }
            }
        }
    }

    /// Starts a channel for a new source address (unless refused).
    fn open(&self, peer: SocketAddr, first: Bytes, channels: &mut Channels) {
        #[cfg(feature = "dtls")]
        if self.dtls {
            return super::dtls::open(self, peer, first, channels);
        }
        #[cfg(not(feature = "dtls"))]
        let _ = self.dtls;
        if !channels.has_room(self, peer) {
            return;
        }
        // Each channel holds a published-connection permit (its proxy
        // connection rides on it, as a TCP downstream's does).
        let Some(permit) = self.inner.published_connections.admit(peer) else {
            return;
        };
        let (queue, rx) = queue();
        // Empty, and one datagram (≤ 65,536 bytes) is within both bounds.
        let _ = queue.push(first);
        channels.queues.insert(peer, queue);
        self.inner
            .datagram
            .stats
            .opened_channels
            .fetch_add(1, Ordering::Relaxed);
        let channel = Channel {
            inner: self.inner.clone(),
            tunnel_id: self.tunnel_id.clone(),
            down: Downstream::Udp(self.socket.clone()),
            peer,
            _permit: permit,
        };
        channels.tasks.spawn(async move {
            channel.run(rx).await;
            peer
        });
    }
}

/// A new, empty channel queue.
pub(super) fn queue() -> (Queue, QueueRx) {
    let (tx, rx) = mpsc::channel(CHANNEL_QUEUE);
    let bytes = Arc::<AtomicUsize>::default();
    (
        Queue {
            tx,
            bytes: bytes.clone(),
        },
        QueueRx { rx, bytes },
    )
}

/// A channel's queue towards the owner: at most [`CHANNEL_QUEUE`]
/// datagrams and [`CHANNEL_QUEUE_BYTES`] bytes.
pub(super) struct Queue {
    tx: mpsc::Sender<Bytes>,
    /// Bytes queued now (the receiving side subtracts what it takes).
    bytes: Arc<AtomicUsize>,
}

impl Queue {
    /// Queues `d`, or hands it back when a bound is reached (`Full`) or
    /// the channel ended (`Closed`).
    pub(super) fn push(&self, d: Bytes) -> Result<(), mpsc::error::TrySendError<Bytes>> {
        let len = d.len();
        if self.bytes.load(Ordering::Relaxed) + len > CHANNEL_QUEUE_BYTES {
            if self.tx.is_closed() {
                return Err(mpsc::error::TrySendError::Closed(d));
            }
            return Err(mpsc::error::TrySendError::Full(d));
        }
        self.tx.try_send(d)?;
        self.bytes.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }
}

/// The receiving end of a [`Queue`].
pub(super) struct QueueRx {
    rx: mpsc::Receiver<Bytes>,
    bytes: Arc<AtomicUsize>,
}

impl QueueRx {
    pub(super) async fn recv(&mut self) -> Option<Bytes> {
        let d = self.rx.recv().await?;
        self.bytes.fetch_sub(d.len(), Ordering::Relaxed);
        Some(d)
    }

    fn try_recv(&mut self) -> Option<Bytes> {
        let d = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(d.len(), Ordering::Relaxed);
        Some(d)
    }
}

/// Where a channel's datagrams from the owner go.
pub(super) enum Downstream {
    /// Sent as they are from the endpoint's socket.
    Udp(Arc<UdpSocket>),
    /// Into the source's DTLS session, which encrypts and sends them; at
    /// most [`CHANNEL_QUEUE`] wait (more are dropped and counted).
    #[cfg(feature = "dtls")]
    Dtls(mpsc::Sender<Bytes>),
}

impl Downstream {
    async fn send(&self, d: Bytes, peer: SocketAddr, stats: &Stats) {
        match self {
            Downstream::Udp(socket) => {
                if let Err(e) = socket.send_to(&d, peer).await {
                    tracing::trace!(%peer, error = %e, "UDP send failed");
                }
            }
            #[cfg(feature = "dtls")]
            Downstream::Dtls(session) => {
                // Closed: the session ended, and so will the channel.
                if let Err(mpsc::error::TrySendError::Full(_)) = session.try_send(d) {
                    stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        #[cfg(not(feature = "dtls"))]
        let _ = stats;
    }
}

/// One downstream source address and its stream to the owner.
pub(super) struct Channel {
    pub(super) inner: Arc<Inner>,
    pub(super) tunnel_id: String,
    pub(super) down: Downstream,
    pub(super) peer: SocketAddr,
    pub(super) _permit: OwnedSemaphorePermit,
}

impl Channel {
    /// Keeps a refused source's slot a moment (its datagrams are dropped
    /// and counted meanwhile), so a source that keeps sending while the
    /// owner refuses costs one `ProxyConnReq` per [`REFUSED_HOLD`], not one
    /// per datagram.
    async fn hold_refused(&self, rx: &mut QueueRx) {
        let stats = &self.inner.datagram.stats;
        let hold = tokio::time::sleep(REFUSED_HOLD);
        tokio::pin!(hold);
        loop {
            tokio::select! {
                () = &mut hold => return,
                d = rx.recv() => match d {
                    Some(_) => {
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    None => return,
                },
            }
        }
    }

    /// Reaches the owner, then relays until the channel ends (see the
    /// module docs); `rx` closing ends it too.
    pub(super) async fn run(self, mut rx: QueueRx) {
        let ip = self.peer.ip().to_canonical();
        let (stream_id, upstream, owner) = match streams::reach_owner_with_control(
            &self.inner,
            &self.tunnel_id,
            ip,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(tunnel_id = self.tunnel_id, peer = %self.peer, code = e.code, message = ?e.message, "datagram channel abandoned");
                self.hold_refused(&mut rx).await;
                return;
            }
        };
        // One arm without feature `quic`, where clippy would want a `let`.
        #[allow(clippy::infallible_destructuring_match)]
        let upstream = match upstream {
            streams::Owner::Framed(tls) => tls,
            #[cfg(feature = "quic")]
            streams::Owner::Quic(quic) => return self.run_quic(rx, quic, &stream_id).await,
        };
        let idle_timeout = self.inner.datagram.idle_timeout;
        let (rd, mut wr) = tokio::io::split(upstream);
        let activity = Activity::new();
        let why = {
            // UDP → framed, to the owner.
            let up = async {
                let mut out = BytesMut::new();
                while let Some(d) = rx.recv().await {
                    activity.touch();
                    frame::encode(&d, &mut out);
                    while out.len() < 64 * 1024 {
                        match rx.try_recv() {
                            Some(d) => frame::encode(&d, &mut out),
                            None => break,
                        }
                    }
                    if wr.write_all(&out).await.is_err() || wr.flush().await.is_err() {
                        return "owner connection failed";
                    }
                    out.clear();
                }
                "endpoint closed"
            };
            // Framed → UDP, from the owner.
            let down = async {
                let mut reader = FrameReader::new(rd);
                loop {
                    match reader.next().await {
                        Ok(Some(d)) => {
                            activity.touch();
                            self.down
                                .send(d, self.peer, &self.inner.datagram.stats)
                                .await;
                        }
                        Ok(None) => return "closed by the owner",
                        Err(e) if e.code() == crate::error::code::DATAGRAM_TOO_LARGE => {
                            return "the owner sent a frame over 65,535 bytes"
                        }
                        Err(_) => return "owner connection failed",
                    }
                }
            };
            tokio::select! {
                why = up => why,
                why = down => why,
                () = activity.idle(idle_timeout) => IDLE,
            }
        };
        tracing::debug!(tunnel_id = self.tunnel_id, stream_id, peer = %self.peer, why, "datagram channel closed");
        if why == IDLE {
            // The engine ends the channel: the owner hears it on its control
            // channel too (DatagramChannelClose), then its stream closes.
            // Never waits: a full outbox just skips the notice.
            let close = DatagramChannelClose {
                stream_id: stream_id.clone(),
                error: None,
            };
            let _ = owner.try_send(Message::new(Payload::DatagramChannelClose(close)));
        }
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, wr.shutdown()).await;
    }
}

/// Channels of a plane-A owner (QUIC DATAGRAM frames, no stream).
#[cfg(feature = "quic")]
impl Channel {
    /// Relays UDP ⇄ DATAGRAM until the owner closes the channel, its
    /// connection is lost, or the channel is idle; dropping `owner` then
    /// tells the owner when the engine ended it.
    async fn run_quic(self, mut rx: QueueRx, mut owner: super::plane_a::QuicSide, stream_id: &str) {
        let idle_timeout = self.inner.datagram.idle_timeout;
        let mut deadline = Instant::now() + idle_timeout;
        let why = loop {
            tokio::select! {
                d = rx.recv() => match d {
                    Some(d) => {
                        deadline = Instant::now() + idle_timeout;
                        owner.send(&d);
                    }
                    None => break "endpoint closed",
                },
                d = owner.recv() => match d {
                    Some(d) => {
                        deadline = Instant::now() + idle_timeout;
                        self.down.send(d, self.peer, &self.inner.datagram.stats).await;
                    }
                    None => break "closed by the owner",
                },
                () = tokio::time::sleep_until(deadline) => break IDLE,
            }
        };
        tracing::debug!(tunnel_id = self.tunnel_id, stream_id, peer = %self.peer, why, "QUIC datagram channel closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_queues_are_bounded_in_datagrams_and_bytes() {
        let (tx, rx) = mpsc::channel(CHANNEL_QUEUE);
        let queue = Queue {
            tx,
            bytes: Arc::default(),
        };
        let mut rx = QueueRx {
            rx,
            bytes: queue.bytes.clone(),
        };
        let big = Bytes::from(vec![0u8; 60_000]);
        for _ in 0..CHANNEL_QUEUE_BYTES / big.len() {
            queue.push(big.clone()).unwrap();
        }
        assert!(matches!(
            queue.push(big.clone()),
            Err(mpsc::error::TrySendError::Full(_))
        ));
        assert_eq!(rx.recv().await.unwrap().len(), 60_000);
        queue.push(big.clone()).unwrap();
        while rx.try_recv().is_some() {}
        assert_eq!(queue.bytes.load(Ordering::Relaxed), 0);
        // Small datagrams meet the count bound first.
        for _ in 0..CHANNEL_QUEUE {
            queue.push(Bytes::from_static(b"x")).unwrap();
        }
        assert!(queue.push(Bytes::from_static(b"x")).is_err());
        drop(rx);
        assert!(matches!(
            queue.push(big),
            Err(mpsc::error::TrySendError::Closed(_))
        ));
    }
}
