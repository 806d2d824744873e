//! [`TunnelUdpSocket`]: a `quinn::AsyncUdpSocket` whose packets are the
//! datagrams of a datagram tunnel, so a quinn endpoint (a QUIC or HTTP/3
//! server, or a client) runs on a tunnel instead of a UDP port.

use std::collections::HashMap;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use quinn::udp::{RecvMeta, Transmit};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::datagram::{DatagramChannel, DatagramPeer, DatagramTunnel};
use crate::error::{Error, Result};

/// Peers (channels) one [`TunnelUdpSocket`] maps at once: 1024. A channel
/// beyond it is closed at once and counted
/// ([`TunnelUdpSocket::refused_peers`]).
pub const MAX_QUIC_PEERS: usize = 1024;
/// Received packets waiting for quinn, all peers together: 256. Beyond
/// that packets are dropped and counted, as a UDP socket buffer drops
/// them; QUIC retransmits.
pub const RECV_QUEUE: usize = 256;
/// Packets waiting to be written, per peer: 64. Beyond that quinn's
/// packets are dropped and counted (QUIC's congestion control backs off).
pub const SEND_QUEUE: usize = 64;

/// The synthetic addresses: `fd72:7374:726d::/48` ("rstrm" in a unique
/// local prefix), never routed. The socket's own address is `::0` in it;
/// peers count up from `::1`.
const PREFIX: u128 = 0xfd72_7374_726d_u128 << 80;
/// The port of every synthetic address.
const PORT: u16 = 443;

fn synthetic(n: u64) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(Ipv6Addr::from(PREFIX | u128::from(n))), PORT)
}

/// One mapped peer: its channel's identity (none for a path that is not
/// a [`DatagramChannel`]) and its send queue.
#[derive(Debug)]
struct Peer {
    peer: Option<DatagramPeer>,
    outgoing: mpsc::Sender<Bytes>,
}

#[derive(Debug)]
struct Shared {
    peers: SyncMutex<HashMap<SocketAddr, Peer>>,
    /// The last synthetic address handed out (`::0` is the socket's own).
    next: AtomicU64,
    dropped_received: AtomicU64,
    dropped_sent: AtomicU64,
    refused_peers: AtomicU64,
    /// Why the socket gets no new peers (the tunnel's or the channel's end).
    closed: watch::Sender<Option<Error>>,
}

impl Shared {
    fn peers(&self) -> MutexGuard<'_, HashMap<SocketAddr, Peer>> {
        // Map operations only under the lock: nothing is left half-done.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

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

    /// Maps a new channel to a fresh address, unless [`MAX_QUIC_PEERS`]
    /// are mapped (then the channel is dropped, which closes it).
    fn add(&self, peer: Option<&DatagramPeer>) -> Option<(SocketAddr, mpsc::Receiver<Bytes>)> {
        let mut peers = self.peers();
        if peers.len() >= MAX_QUIC_PEERS {
            drop(peers);
            self.refused_peers.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(?peer, "QUIC socket full: channel refused");
            return None;
        }
        let addr = synthetic(self.next.fetch_add(1, Ordering::Relaxed) + 1);
        let (outgoing, rx) = mpsc::channel(SEND_QUEUE);
        peers.insert(
            addr,
            Peer {
                peer: peer.cloned(),
                outgoing,
            },
        );
        Some((addr, rx))
    }
}

/// A `quinn::AsyncUdpSocket` over a datagram tunnel: each
/// [`DatagramChannel`] is one peer with a synthetic IPv6 address
/// (`fd72:7374:726d::N`, port 443, never reused), and each QUIC packet is
/// one datagram of that channel.
///
/// - [`from_tunnel`](Self::from_tunnel): a server; every channel the
///   tunnel accepts (a private dial, or a downstream UDP source of a
///   published tunnel) is a peer.
/// - [`from_channel`](Self::from_channel): a client over one channel
///   (from [`Client::dial_datagram`](crate::Client::dial_datagram)); its
///   peer is [`peer_addr`](Self::peer_addr), the address to connect to.
///
/// Then [`endpoint`](Self::endpoint) builds the `quinn::Endpoint`. A
/// closed channel's address is unmapped (packets to it are dropped, as
/// UDP to nowhere); dropping the endpoint closes the tunnel or channel.
///
/// # Bounds
///
/// [`MAX_QUIC_PEERS`] peers, [`RECV_QUEUE`] received packets in all,
/// [`SEND_QUEUE`] packets to send per peer; beyond the queues packets are
/// dropped and counted, never queued without bound (QUIC retransmits).
#[derive(Debug)]
pub struct TunnelUdpSocket {
    shared: Arc<Shared>,
    incoming: SyncMutex<mpsc::Receiver<(SocketAddr, Bytes)>>,
    /// Keeps `incoming` open, so an empty queue is `Pending`, not an end
    /// that would stop quinn's endpoint driver.
    _incoming_tx: mpsc::Sender<(SocketAddr, Bytes)>,
    /// The only client peer ([`from_channel`](Self::from_channel)).
    peer_addr: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl TunnelUdpSocket {
    /// A server socket: every channel `tunnel` accepts is a peer. Must be
    /// called within a Tokio runtime.
    pub fn from_tunnel(tunnel: DatagramTunnel) -> Arc<Self> {
        let (shared, incoming_tx, incoming) = Self::parts();
        let task = tokio::spawn(run_tunnel(tunnel, shared.clone(), incoming_tx.clone()));
        Arc::new(TunnelUdpSocket {
            shared,
            incoming: SyncMutex::new(incoming),
            _incoming_tx: incoming_tx,
            peer_addr: None,
            task,
        })
    }

    /// A client socket over one channel, whose address is
    /// [`peer_addr`](Self::peer_addr). Must be called within a Tokio
    /// runtime.
    pub fn from_channel(channel: DatagramChannel) -> Arc<Self> {
        let peer = channel.peer().clone();
        Self::from_pump(Some(&peer), move |outgoing, delivery| {
            run_peer(channel, outgoing, delivery)
        })
    }

    /// A client socket over one packet path that `pump` moves: it gets the
    /// packets quinn sends and hands over those it receives
    /// ([`Delivery`]); its end (with the reason) closes the socket. Used by
    /// [`from_channel`](Self::from_channel), and by the local engine over
    /// its own side of a channel to a tunnel's owner. Must be called
    /// within a Tokio runtime.
    pub(crate) fn from_pump<P, F>(peer: Option<&DatagramPeer>, pump: P) -> Arc<Self>
    where
        P: FnOnce(mpsc::Receiver<Bytes>, Delivery) -> F,
        F: std::future::Future<Output = Error> + Send + 'static,
    {
        let (shared, incoming_tx, incoming) = Self::parts();
        // The map is empty: the first peer always fits.
        let (addr, outgoing) = shared.add(peer).unwrap_or_else(|| {
            let (_, rx) = mpsc::channel(1);
            (synthetic(1), rx)
        });
        let delivery = Delivery {
            addr,
            incoming: incoming_tx.clone(),
            shared: shared.clone(),
        };
        let task = {
            let shared = shared.clone();
            let pumped = pump(outgoing, delivery);
            tokio::spawn(async move {
                let reason = pumped.await;
                shared.set_closed(reason);
            })
        };
        Arc::new(TunnelUdpSocket {
            shared,
            incoming: SyncMutex::new(incoming),
            _incoming_tx: incoming_tx,
            peer_addr: Some(addr),
            task,
        })
    }

    #[allow(clippy::type_complexity)]
    fn parts() -> (
        Arc<Shared>,
        mpsc::Sender<(SocketAddr, Bytes)>,
        mpsc::Receiver<(SocketAddr, Bytes)>,
    ) {
        let shared = Arc::new(Shared {
            peers: SyncMutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            dropped_received: AtomicU64::new(0),
            dropped_sent: AtomicU64::new(0),
            refused_peers: AtomicU64::new(0),
            closed: watch::Sender::new(None),
        });
        let (tx, rx) = mpsc::channel(RECV_QUEUE);
        (shared, tx, rx)
    }

    /// A `quinn::Endpoint` on this socket (Tokio runtime, quinn's default
    /// endpoint configuration); `server` makes it accept connections.
    ///
    /// # Errors
    ///
    /// Kind `Io` when quinn refuses the socket.
    pub fn endpoint(
        self: &Arc<Self>,
        server: Option<quinn::ServerConfig>,
    ) -> Result<quinn::Endpoint> {
        quinn::Endpoint::new_with_abstract_socket(
            quinn::EndpointConfig::default(),
            server,
            self.clone(),
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|e| Error::io("starting a QUIC endpoint on a datagram tunnel", e))
    }

    /// For a [`from_channel`](Self::from_channel) socket: the channel's
    /// synthetic address, where the client connects.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// The channel behind a synthetic address (e.g. a
    /// `quinn::Connection::remote_address()`), while it is open.
    pub fn peer(&self, addr: &SocketAddr) -> Option<DatagramPeer> {
        self.shared.peers().get(addr).and_then(|p| p.peer.clone())
    }

    /// The number of peers mapped now.
    pub fn peer_count(&self) -> usize {
        self.shared.peers().len()
    }

    /// Received packets dropped because [`RECV_QUEUE`] were waiting.
    pub fn dropped_received(&self) -> u64 {
        self.shared.dropped_received.load(Ordering::Relaxed)
    }

    /// Packets to send dropped because [`SEND_QUEUE`] were waiting for
    /// their peer.
    pub fn dropped_sent(&self) -> u64 {
        self.shared.dropped_sent.load(Ordering::Relaxed)
    }

    /// Channels closed at once because [`MAX_QUIC_PEERS`] were mapped.
    pub fn refused_peers(&self) -> u64 {
        self.shared.refused_peers.load(Ordering::Relaxed)
    }

    /// Resolves with the reason once the socket gets no new peers: the
    /// tunnel is closed (server) or the channel is (client). `'static`.
    pub fn closed(&self) -> impl std::future::Future<Output = Error> + Send + 'static {
        let mut rx = self.shared.closed.subscribe();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(reason) => reason
                    .clone()
                    .unwrap_or_else(|| crate::datagram::closed("datagram tunnel closed")),
                Err(_) => crate::datagram::closed("datagram tunnel closed"),
            }
        }
    }
}

impl Drop for TunnelUdpSocket {
    fn drop(&mut self) {
        // The task owns the tunnel (or channel) and every channel task.
        self.task.abort();
    }
}

/// quinn asks before each send; sends never wait (a full queue drops).
#[derive(Debug)]
struct AlwaysWritable;

impl UdpPoller for AlwaysWritable {
    fn poll_writable(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsyncUdpSocket for TunnelUdpSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(AlwaysWritable)
    }

    fn try_send(&self, transmit: &Transmit<'_>) -> io::Result<()> {
        let peers = self.shared.peers();
        // A closed or unknown peer: the packet goes nowhere, as UDP's would.
        let Some(peer) = peers.get(&transmit.destination) else {
            return Ok(());
        };
        // One datagram, or several of `segment_size` bytes (GSO).
        let size = match transmit.segment_size {
            Some(size) if size > 0 => size,
            _ => transmit.contents.len().max(1),
        };
        for packet in transmit.contents.chunks(size) {
            if peer
                .outgoing
                .try_send(Bytes::copy_from_slice(packet))
                .is_err()
            {
                self.shared.dropped_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let mut incoming = self.incoming.lock().unwrap_or_else(|e| e.into_inner());
        let room = bufs.len().min(meta.len());
        let mut filled = 0;
        while filled < room {
            let (addr, packet) = if filled == 0 {
                match incoming.poll_recv(cx) {
                    Poll::Ready(Some(item)) => item,
                    // `_incoming_tx` keeps the queue open: `None` cannot
                    // come; either way there is nothing to return yet.
                    _ => return Poll::Pending,
                }
            } else {
                match incoming.try_recv() {
                    Ok(item) => item,
                    Err(_) => break,
                }
            };
            let (Some(buf), Some(meta)) = (bufs.get_mut(filled), meta.get_mut(filled)) else {
                break;
            };
            let Some(dst) = buf.get_mut(..packet.len()) else {
                // Larger than quinn's buffer: no QUIC packet is; dropped.
                self.shared.dropped_received.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            dst.copy_from_slice(&packet);
            *meta = RecvMeta {
                addr,
                len: packet.len(),
                // One packet per buffer (quinn splits a buffer by stride).
                stride: packet.len(),
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        Poll::Ready(Ok(filled))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(synthetic(0))
    }

    fn may_fragment(&self) -> bool {
        // A datagram crosses the tunnel whole (up to 65,535 bytes).
        false
    }
}

/// Accepts the tunnel's channels and runs each as a peer; ends when the
/// tunnel is closed and every peer is gone (or when aborted).
async fn run_tunnel(
    mut tunnel: DatagramTunnel,
    shared: Arc<Shared>,
    incoming: mpsc::Sender<(SocketAddr, Bytes)>,
) {
    let mut peers = JoinSet::new();
    let mut accepting = true;
    loop {
        tokio::select! {
            accepted = tunnel.accept(), if accepting => match accepted {
                Ok(channel) => {
                    // `None`: refused and counted; dropping closes it.
                    if let Some((addr, outgoing)) = shared.add(Some(channel.peer())) {
                        let delivery = Delivery {
                            addr,
                            incoming: incoming.clone(),
                            shared: shared.clone(),
                        };
                        peers.spawn(async move {
                            run_peer(channel, outgoing, delivery).await;
                        });
                    }
                }
                Err(e) => {
                    shared.set_closed(e);
                    accepting = false;
                }
            },
            Some(_) = peers.join_next(), if !peers.is_empty() => {}
        }
        if !accepting && peers.is_empty() {
            return;
        }
    }
}

/// Where one peer's received packets go: quinn's receive queue. Dropping
/// it unmaps the peer's address (packets to it go nowhere).
pub(crate) struct Delivery {
    addr: SocketAddr,
    incoming: mpsc::Sender<(SocketAddr, Bytes)>,
    shared: Arc<Shared>,
}

impl Delivery {
    /// Hands a received packet to quinn; dropped and counted when
    /// [`RECV_QUEUE`] are waiting. `false` once the socket is gone.
    pub(crate) fn received(&self, packet: Bytes) -> bool {
        match self.incoming.try_send((self.addr, packet)) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.dropped_received.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    /// Counts a packet to send that the path could not carry (larger than
    /// it carries now: lost, as UDP loses a packet over the path MTU).
    pub(crate) fn lost(&self) {
        self.shared.dropped_sent.fetch_add(1, Ordering::Relaxed);
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        tracing::debug!(addr = %self.addr, "QUIC peer closed");
        self.shared.peers().remove(&self.addr);
    }
}

/// Moves one peer's packets both ways until its channel closes (dropping
/// `delivery` then unmaps its address).
async fn run_peer(
    channel: DatagramChannel,
    mut outgoing: mpsc::Receiver<Bytes>,
    delivery: Delivery,
) -> Error {
    let receive = async {
        loop {
            let packet = match channel.recv().await {
                Ok(packet) => packet,
                Err(e) => return e,
            };
            if !delivery.received(packet) {
                return crate::datagram::closed("QUIC socket dropped");
            }
        }
    };
    let send = async {
        while let Some(packet) = outgoing.recv().await {
            match channel.send_bytes(packet).await {
                Ok(()) => {}
                // Larger than the channel carries now (plane A: one QUIC
                // DATAGRAM). QUIC's path MTU discovery sends such probes
                // on purpose.
                Err(e) if e.code() == crate::error::code::DATAGRAM_TOO_LARGE => delivery.lost(),
                Err(e) => return e,
            }
        }
        crate::datagram::closed("QUIC socket dropped")
    };
    let reason = tokio::select! {
        reason = receive => reason,
        reason = send => reason,
    };
    tracing::debug!(code = reason.code(), "QUIC peer channel closed");
    reason
}
