//! [`DatagramTunnel`]: a datagram tunnel and the channels it accepts.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::{DatagramChannel, DatagramPeer, DatagramSocket, Registry};
use crate::control::ControlChannel;
use crate::error::{Error, Result};
use crate::stream::RstreamStream;
use crate::tunnel::{Tunnel, TunnelProperties, TunnelStats};

/// A datagram tunnel (`type = "datagram"`), from
/// [`ControlChannel::create_datagram_tunnel`](crate::ControlChannel::create_datagram_tunnel).
///
/// Each peer is one [`DatagramChannel`]: a private dial
/// ([`Client::dial_datagram`](crate::Client::dial_datagram), or any SDK's
/// framed dial), or, for a published tunnel, one downstream UDP source
/// address on the engine. Accept them with [`accept`](Self::accept) (or as
/// a `Stream`), or merge them into one socket with
/// [`into_socket`](Self::into_socket).
///
/// Like a [`Tunnel`], it survives its control channel's reconnects and
/// closes on the engine when dropped. At most
/// [`DATAGRAM_ACCEPT_BACKLOG`](super::DATAGRAM_ACCEPT_BACKLOG) channels wait
/// to be accepted; more are refused at once.
#[must_use = "dropping a DatagramTunnel closes it on the engine"]
#[derive(Debug)]
pub struct DatagramTunnel {
    tunnel: Tunnel,
}

impl DatagramTunnel {
    /// Wraps a tunnel the engine created as `type = "datagram"`.
    pub(crate) fn new(tunnel: Tunnel) -> Self {
        DatagramTunnel { tunnel }
    }

    /// Waits for the next peer's channel. While the control channel
    /// reconnects, it keeps waiting.
    ///
    /// # Errors
    ///
    /// Once the tunnel is closed for good, the reason (as
    /// [`Tunnel::accept`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: no channel is lost.
    pub async fn accept(&mut self) -> Result<DatagramChannel> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next peer's channel (see [`accept`](Self::accept)).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<DatagramChannel>> {
        let registry = self.tunnel.control().datagrams().clone();
        let framed = self
            .tunnel
            .poll_accept(cx)
            .map(|r| r.map(|s| channel(s, registry)));
        #[cfg(feature = "quic")]
        if framed.is_pending() {
            return self.tunnel.shared().quic_channels().poll_recv(cx).map(Ok);
        }
        framed
    }

    /// Merges every peer into one `UdpSocket`-like [`DatagramSocket`].
    pub fn into_socket(self) -> DatagramSocket {
        DatagramSocket::new(self)
    }

    /// The engine-assigned tunnel id (see [`Tunnel::id`]).
    pub fn id(&self) -> String {
        self.tunnel.id()
    }

    /// The tunnel name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.tunnel.name()
    }

    /// The properties the engine returned.
    pub fn properties(&self) -> Arc<TunnelProperties> {
        self.tunnel.properties()
    }

    /// Where peers reach the tunnel: `HOST:PORT (udp)` when published,
    /// `https://HOST:PORT` for an HTTP/3 upstream (`protocol = http`,
    /// `http_version = h3`: downstream clients use HTTPS, the engine
    /// speaks HTTP/3 to this tunnel), else `rstrm://NAME (unpublished)`.
    pub fn forwarding_address(&self) -> String {
        self.tunnel.forwarding_address()
    }

    /// Whether the engine returned `datagram_guaranteed_delivery = true`:
    /// its channels are framed on streams (plane B), reliable and ordered,
    /// even over QUIC. Over the TLS transport every channel is plane B
    /// anyway.
    pub fn guaranteed_delivery(&self) -> bool {
        self.properties().datagram_guaranteed_delivery == Some(true)
    }

    /// The control channel the tunnel lives on.
    pub fn control(&self) -> &ControlChannel {
        self.tunnel.control()
    }

    /// Channels accepted, refused (backlog full) and active (see
    /// [`TunnelStats`]).
    pub fn stats(&self) -> TunnelStats {
        self.tunnel.stats()
    }

    /// Whether the tunnel is closed for good.
    pub fn is_closed(&self) -> bool {
        self.tunnel.is_closed()
    }

    /// Resolves with the reason once the tunnel is closed for good.
    pub fn closed(&self) -> impl std::future::Future<Output = Error> + Send + 'static {
        self.tunnel.closed()
    }

    /// Closes the tunnel on the engine (see [`Tunnel::close`]). Channels
    /// already accepted keep flowing until either side closes them.
    pub async fn close(&self) -> Result<()> {
        self.tunnel.close().await
    }
}

impl futures_core::Stream for DatagramTunnel {
    type Item = Result<DatagramChannel>;

    /// Yields channels; after the tunnel closes, one `Err`, then `None`.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let registry = this.tunnel.control().datagrams().clone();
        let framed = Pin::new(&mut this.tunnel)
            .poll_next(cx)
            .map(|next| next.map(|r| r.map(|s| channel(s, registry))));
        #[cfg(feature = "quic")]
        if framed.is_pending() {
            return this
                .tunnel
                .shared()
                .quic_channels()
                .poll_recv(cx)
                .map(|c| Some(Ok(c)));
        }
        framed
    }
}

/// An accepted stream as a channel: its peer is its stream id (always sent
/// in `ProxyConnReq`) and source IP.
fn channel(stream: RstreamStream, registry: Arc<Registry>) -> DatagramChannel {
    let info = stream.info();
    let stream_id = info.stream_id().map_or_else(|| Arc::from(""), Arc::from);
    let peer = DatagramPeer::new(stream_id, info.source_ip());
    DatagramChannel::new(stream, peer, Some(registry))
}

/// Plane-A channels accepted on a tunnel, waiting for
/// [`DatagramTunnel::accept`]: at most the tunnel's accept backlog
/// (`ClientOptions::accept_backlog`, capped at
/// [`DATAGRAM_ACCEPT_BACKLOG`](super::DATAGRAM_ACCEPT_BACKLOG)).
#[cfg(feature = "quic")]
#[derive(Debug)]
pub(crate) struct QuicAccept {
    tx: tokio::sync::mpsc::Sender<DatagramChannel>,
    rx: std::sync::Mutex<tokio::sync::mpsc::Receiver<DatagramChannel>>,
}

#[cfg(feature = "quic")]
impl QuicAccept {
    /// A queue of at most `backlog` channels (at least one).
    pub(crate) fn new(backlog: usize) -> Self {
        let (tx, rx) = tokio::sync::mpsc::channel(backlog.max(1));
        QuicAccept {
            tx,
            rx: std::sync::Mutex::new(rx),
        }
    }
}

#[cfg(feature = "quic")]
impl QuicAccept {
    /// A place in the queue, or `Err` when it is full.
    pub(crate) fn try_reserve(
        &self,
    ) -> std::result::Result<
        tokio::sync::mpsc::Permit<'_, DatagramChannel>,
        tokio::sync::mpsc::error::TrySendError<()>,
    > {
        self.tx.try_reserve()
    }

    /// The next queued channel (`Pending` while there is none; the queue
    /// never ends, as the tunnel holds both halves).
    fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<DatagramChannel> {
        // Only `poll_recv` under the lock: nothing is left half-done.
        let mut rx = self.rx.lock().unwrap_or_else(|e| e.into_inner());
        match rx.poll_recv(cx) {
            Poll::Ready(Some(c)) => Poll::Ready(c),
            _ => Poll::Pending,
        }
    }
}
