//! [`DatagramSocket`]: every peer of a datagram tunnel merged into one
//! `UdpSocket`-like socket (Go's `PacketConnFromPacketListener`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as SyncMutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, watch, Mutex};
use tokio::task::JoinSet;

use super::frame::too_large;
use super::{closed, DatagramChannel, DatagramPeer, DatagramTunnel};
use crate::error::{Error, Result};
use crate::tunnel::TunnelProperties;

/// Received datagrams waiting for [`DatagramSocket::recv_from`]: 100. When
/// the queue is full, new datagrams are dropped and counted
/// ([`DatagramSocket::dropped`]), as a UDP socket's buffer would.
pub const SOCKET_QUEUE: usize = 100;

/// Peers one [`DatagramSocket`] holds at once: 1024. A channel beyond it is
/// closed at once and counted ([`DatagramSocket::refused_peers`]).
pub const MAX_SOCKET_PEERS: usize = 1024;

/// Bound on closing the tunnel from [`DatagramSocket::close`].
const CLOSE_TIMEOUT: Duration = Duration::from_secs(35);

type Peers = HashMap<DatagramPeer, Arc<DatagramChannel>>;

#[derive(Debug)]
struct Shared {
    peers: SyncMutex<Peers>,
    dropped: AtomicU64,
    refused_peers: AtomicU64,
    /// Why the socket stopped accepting peers (the tunnel's close reason).
    closed: watch::Sender<Option<Error>>,
}

impl Shared {
    fn peers(&self) -> std::sync::MutexGuard<'_, Peers> {
        // Map operations only under the lock: nothing is left half-done.
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Every peer of a [`DatagramTunnel`] in one socket, like a
/// `tokio::net::UdpSocket` on a server: [`recv_from`](Self::recv_from)
/// returns the next datagram of any peer and who sent it,
/// [`send_to`](Self::send_to) answers a peer. From
/// [`DatagramTunnel::into_socket`].
///
/// Peers are keyed by [`DatagramPeer`] (stream id and source IP); a new
/// channel with the key of an open one replaces it (the old one is
/// closed). Both methods take `&self`: share the socket in an `Arc` to
/// receive and send from different tasks.
///
/// # Bounds
///
/// [`SOCKET_QUEUE`] received datagrams wait for `recv_from`; beyond that
/// datagrams are dropped and counted ([`dropped`](Self::dropped)), never
/// queued without bound. At most [`MAX_SOCKET_PEERS`] peers at once.
///
/// Dropping the socket closes the tunnel and every channel.
#[derive(Debug)]
pub struct DatagramSocket {
    shared: Arc<Shared>,
    queue: Mutex<mpsc::Receiver<(DatagramPeer, Bytes)>>,
    close: mpsc::Sender<oneshot::Sender<Result<()>>>,
    task: tokio::task::JoinHandle<()>,
    id: String,
    address: String,
    properties: Arc<TunnelProperties>,
}

impl DatagramSocket {
    pub(crate) fn new(tunnel: DatagramTunnel) -> Self {
        let shared = Arc::new(Shared {
            peers: SyncMutex::new(HashMap::new()),
            dropped: AtomicU64::new(0),
            refused_peers: AtomicU64::new(0),
            closed: watch::Sender::new(None),
        });
        let (queue_tx, queue) = mpsc::channel(SOCKET_QUEUE);
        let (close, close_rx) = mpsc::channel(1);
        let (id, address, properties) = (
            tunnel.id(),
            tunnel.forwarding_address(),
            tunnel.properties(),
        );
        let task = tokio::spawn(run(tunnel, shared.clone(), queue_tx, close_rx));
        DatagramSocket {
            shared,
            queue: Mutex::new(queue),
            close,
            task,
            id,
            address,
            properties,
        }
    }

    /// Receives the next datagram of any peer into `buf`: its length and
    /// its sender.
    ///
    /// # Errors
    ///
    /// `ERR_RSTREAM_DATAGRAM_TOO_LARGE` when the datagram does not fit in
    /// `buf` (it is dropped, never truncated; the socket goes on: a buffer
    /// of [`MAX_DATAGRAM_SIZE`](super::MAX_DATAGRAM_SIZE) bytes always
    /// fits). Once the tunnel is closed and no peer is left, the reason.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, DatagramPeer)> {
        let (datagram, peer) = self.recv_bytes_from().await?;
        let Some(dst) = buf.get_mut(..datagram.len()) else {
            return Err(too_large(
                datagram.len(),
                "a datagram larger than the receive buffer",
            ));
        };
        dst.copy_from_slice(&datagram);
        Ok((datagram.len(), peer))
    }

    /// [`recv_from`](Self::recv_from) without a copy (never too large).
    pub async fn recv_bytes_from(&self) -> Result<(Bytes, DatagramPeer)> {
        let mut queue = self.queue.lock().await;
        match queue.recv().await {
            Some((peer, datagram)) => Ok((datagram, peer)),
            None => Err(self
                .shared
                .closed
                .borrow()
                .clone()
                .unwrap_or_else(|| closed("datagram socket closed"))),
        }
    }

    /// Sends one datagram to `peer` (see [`DatagramChannel::send`]).
    ///
    /// # Errors
    ///
    /// `ERR_RSTREAM_DATAGRAM_TOO_LARGE` over 65,535 bytes;
    /// `ERR_RSTREAM_DATAGRAM_CLOSED` when no channel to `peer` is open.
    pub async fn send_to(&self, datagram: &[u8], peer: &DatagramPeer) -> Result<()> {
        super::frame::check_len(datagram.len())?;
        let channel = self.shared.peers().get(peer).cloned();
        match channel {
            Some(channel) => channel.send(datagram).await,
            None => Err(closed("no open datagram channel to this peer")),
        }
    }

    /// The peers with an open channel now.
    pub fn peers(&self) -> Vec<DatagramPeer> {
        self.shared.peers().keys().cloned().collect()
    }

    /// Datagrams dropped because [`SOCKET_QUEUE`] were already waiting.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Channels closed at once because [`MAX_SOCKET_PEERS`] were open.
    pub fn refused_peers(&self) -> u64 {
        self.shared.refused_peers.load(Ordering::Relaxed)
    }

    /// The tunnel id (as of [`into_socket`](DatagramTunnel::into_socket)).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tunnel's forwarding address (as of
    /// [`into_socket`](DatagramTunnel::into_socket)).
    pub fn forwarding_address(&self) -> &str {
        &self.address
    }

    /// The tunnel's properties (as of
    /// [`into_socket`](DatagramTunnel::into_socket)).
    pub fn properties(&self) -> &Arc<TunnelProperties> {
        &self.properties
    }

    /// Closes the tunnel on the engine and every channel.
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        if self.close.send(reply).await.is_err() {
            return Ok(());
        }
        match tokio::time::timeout(CLOSE_TIMEOUT, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Ok(()),
            Err(_) => Err(Error::timeout("closing the datagram tunnel")),
        }
    }
}

impl Drop for DatagramSocket {
    fn drop(&mut self) {
        // The task owns the tunnel and the channels: all close with it.
        self.task.abort();
    }
}

/// Accepts peers and pumps each one's datagrams into the shared queue.
async fn run(
    mut tunnel: DatagramTunnel,
    shared: Arc<Shared>,
    queue: mpsc::Sender<(DatagramPeer, Bytes)>,
    mut close: mpsc::Receiver<oneshot::Sender<Result<()>>>,
) {
    let mut readers = JoinSet::new();
    let mut accepting = true;
    loop {
        tokio::select! {
            accepted = tunnel.accept(), if accepting => match accepted {
                Ok(channel) => {
                    let channel = Arc::new(channel);
                    let peer = channel.peer().clone();
                    let mut peers = shared.peers();
                    if peers.len() >= MAX_SOCKET_PEERS && !peers.contains_key(&peer) {
                        drop(peers);
                        shared.refused_peers.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "datagram socket full: channel refused");
                        continue;
                    }
                    // A new peer with the same key replaces the old one,
                    // whose reader ends when its channel closes.
                    if let Some(old) = peers.insert(peer, channel.clone()) {
                        old.close_now();
                    }
                    drop(peers);
                    readers.spawn(pump(channel, shared.clone(), queue.clone()));
                }
                Err(e) => {
                    shared.closed.send_replace(Some(e));
                    accepting = false;
                }
            },
            Some(_) = readers.join_next(), if !readers.is_empty() => {}
            request = close.recv() => {
                let result = match request {
                    Some(_) => tunnel.close().await,
                    None => Ok(()),
                };
                shared.closed.send_if_modified(|c| {
                    if c.is_none() {
                        *c = Some(closed("datagram socket closed"));
                        true
                    } else {
                        false
                    }
                });
                readers.abort_all();
                for (_, channel) in shared.peers().drain() {
                    channel.close_now();
                }
                if let Some(reply) = request {
                    let _ = reply.send(result);
                }
                return;
            }
        }
        if !accepting && readers.is_empty() {
            return;
        }
    }
}

/// Moves one peer's datagrams into the socket's queue, dropping (and
/// counting) what does not fit.
async fn pump(
    channel: Arc<DatagramChannel>,
    shared: Arc<Shared>,
    queue: mpsc::Sender<(DatagramPeer, Bytes)>,
) {
    let peer = channel.peer().clone();
    while let Ok(datagram) = channel.recv().await {
        match queue.try_send((peer.clone(), datagram)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let n = shared.dropped.fetch_add(1, Ordering::Relaxed);
                if n.is_power_of_two() || n == 0 {
                    tracing::debug!(dropped = n + 1, "datagram socket queue full: dropping");
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => break,
        }
    }
    let mut peers = shared.peers();
    if peers.get(&peer).is_some_and(|c| Arc::ptr_eq(c, &channel)) {
        peers.remove(&peer);
    }
}
