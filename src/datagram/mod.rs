//! Datagram tunnels: whole datagrams (UDP-style messages) through rstream.
//!
//! ```no_run
//! # async fn run(client: rstream::Client) -> rstream::Result<()> {
//! use rstream::TunnelOptions;
//!
//! // The server: one channel per peer.
//! let control = client.connect().await?;
//! let mut tunnel = control
//!     .create_datagram_tunnel(TunnelOptions::datagram().name("udp-echo"))
//!     .await?;
//! tokio::spawn(async move {
//!     while let Ok(channel) = tunnel.accept().await {
//!         tokio::spawn(async move {
//!             while let Ok(datagram) = channel.recv().await {
//!                 if channel.send(&datagram).await.is_err() {
//!                     break;
//!                 }
//!             }
//!         });
//!     }
//! });
//!
//! // A client: dial the private tunnel by name.
//! let channel = client.dial_datagram("udp-echo").await?;
//! channel.send(b"ping").await?;
//! assert_eq!(&channel.recv().await?[..], b"ping");
//! # Ok(()) }
//! ```
//!
//! - [`DatagramTunnel`] (from
//!   [`ControlChannel::create_datagram_tunnel`](crate::ControlChannel::create_datagram_tunnel)):
//!   [`accept`](DatagramTunnel::accept) yields one [`DatagramChannel`] per
//!   peer; a published one has a UDP address where each downstream source
//!   address is one peer.
//! - [`DatagramSocket`] ([`DatagramTunnel::into_socket`]): every peer
//!   merged into one `UdpSocket`-like `recv_from` / `send_to`.
//! - [`Client::dial_datagram`](crate::Client::dial_datagram): one channel to
//!   a private datagram tunnel.
//!
//! # Planes
//!
//! Over the TLS transport every channel is **plane B** (DATAGRAM_QUIC.md
//! §2): the datagrams of one peer travel framed (a 4-byte big-endian
//! length, then at most [`MAX_DATAGRAM_SIZE`] bytes) on an ordinary rstream
//! stream, reliably and in order. Over the QUIC transport (feature `quic`)
//! a channel of a tunnel without guaranteed delivery is **plane A**: each
//! datagram is one QUIC DATAGRAM frame, unreliable and unordered, at most
//! [`DatagramChannel::max_datagram_size`] bytes
//! ([`DatagramChannel::is_quic_datagram`] tells). A published DTLS
//! tunnel (`TunnelOptions::dtls()`) is an ordinary datagram tunnel to the
//! app: the engine terminates DTLS and the channels carry plaintext.
//! QUIC published tunnels and the h3 upstream are not supported yet
//! (`docs/DATAGRAMS.md`).

mod channel;
#[cfg(feature = "quic")]
pub(crate) mod dial;
pub(crate) mod frame;
#[cfg(feature = "quic")]
pub(crate) mod quic;
mod registry;
mod socket;
mod tunnel;

use std::net::IpAddr;
use std::sync::Arc;

pub use channel::DatagramChannel;
#[cfg(feature = "quic")]
pub(crate) use channel::QuicEnd;
pub(crate) use registry::Registry;
pub use socket::{DatagramSocket, MAX_SOCKET_PEERS, SOCKET_QUEUE};
pub use tunnel::DatagramTunnel;
#[cfg(feature = "quic")]
pub(crate) use tunnel::QuicAccept;

use crate::error::{code, Error, ErrorKind};

/// The largest datagram: 65,535 bytes. Larger sends fail with
/// `ERR_RSTREAM_DATAGRAM_TOO_LARGE` (nothing is sent, never truncated).
pub const MAX_DATAGRAM_SIZE: usize = 65_535;

/// Datagrams queued per channel in each direction.
pub(crate) const CHANNEL_QUEUE: usize = 64;

/// Channels of a [`DatagramTunnel`] waiting for
/// [`accept`](DatagramTunnel::accept) (at most; the client's
/// `accept_backlog` when smaller). More are refused at once.
pub const DATAGRAM_ACCEPT_BACKLOG: usize = 64;

/// A `Closed` datagram error.
pub(crate) fn closed(message: &'static str) -> Error {
    Error::new(ErrorKind::Closed, code::DATAGRAM_CLOSED, message)
}

/// The peer of a [`DatagramChannel`]: the engine's stream id and, for
/// accepted channels, the downstream source IP. Two channels never share a
/// stream id, so the peer is a key (the [`DatagramSocket`] routes
/// `send_to` by it).
///
/// `Display` prints `rstrm://STREAM_ID` and, when known, `@IP`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DatagramPeer {
    pub(crate) stream_id: Arc<str>,
    source_ip: Option<IpAddr>,
}

impl DatagramPeer {
    pub(crate) fn new(stream_id: Arc<str>, source_ip: Option<IpAddr>) -> Self {
        DatagramPeer {
            stream_id,
            source_ip,
        }
    }

    /// The engine's stream id of the channel.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The downstream client's IP address, when the engine sent it
    /// (accepted channels).
    pub fn source_ip(&self) -> Option<IpAddr> {
        self.source_ip
    }
}

impl std::fmt::Display for DatagramPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rstrm://{}", self.stream_id)?;
        if let Some(ip) = self.source_ip {
            write!(f, "@{ip}")?;
        }
        Ok(())
    }
}
