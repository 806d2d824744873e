//! HTTP/3 servers (feature `http3`): a tower service (an axum `Router`
//! unchanged) served over HTTP/3 with the `h3` crate on QUIC connections.
//!
//! - [`serve_connection`] / [`serve_connection_with`]: one accepted
//!   `quinn::Connection` (ALPN `h3`), whatever endpoint it came from.
//! - [`serve`] / [`serve_with`]: a QUIC endpoint on a
//!   [`DatagramTunnel`](crate::DatagramTunnel), each connection served as
//!   above: HTTP/3 on a published tunnel's UDP address, or to
//!   `dial_datagram` clients of a private one.
//! - [`TunnelUdpSocket`]: the `quinn::AsyncUdpSocket` under it, for any
//!   QUIC protocol (a raw quinn server on a tunnel, or a quinn client on
//!   a dialed channel).
//!
//! See `docs/HTTP3.md`.

mod serve;
mod server;
mod socket;

pub use serve::{serve, serve_with, HANDSHAKE_TIMEOUT, MAX_CONNECTIONS};

pub use server::{
    serve_connection, serve_connection_with, RequestBody, ServeOptions,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_SHUTDOWN_GRACE, DEFAULT_WRITE_TIMEOUT,
};
pub use socket::{TunnelUdpSocket, MAX_QUIC_PEERS, RECV_QUEUE, SEND_QUEUE};
// The local engine's HTTP/3 upstream drives a socket's one peer itself.
#[cfg(feature = "local-engine")]
pub(crate) use socket::Delivery;
