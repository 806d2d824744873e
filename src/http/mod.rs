//! HTTP over tunnels, with hyper and tower.
//!
//! - Server side: [`serve`] runs any `tower::Service` (an axum `Router`, a
//!   `service_fn`…) on every connection of a [`Tunnel`](crate::Tunnel),
//!   HTTP/1.1 and h2c prior knowledge on the same tunnel, with upgrades
//!   (WebSocket), bounded timeouts and graceful shutdown
//!   ([`Serve::with_graceful_shutdown`]). With axum,
//!   `axum::serve(tunnel, router)` works too; see [`Tunnel`](crate::Tunnel).
//!   [`TlsListener`] terminates TLS in-process with your certificate (`tls`
//!   passthrough tunnels, `upstream_tls`), for both.
//! - Client side: [`Connector`] plugs private dials into
//!   `hyper_util::client::legacy::Client`: the URI host is the tunnel name or
//!   id, and each new pooled connection is a dial.

pub(crate) mod conn;
mod connector;
mod serve;
mod tls;

pub use connector::Connector;
pub use serve::{
    serve, Accept, Serve, WithGracefulShutdown, DEFAULT_DRAIN_TIMEOUT, DEFAULT_HEADER_READ_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT, DEFAULT_WRITE_TIMEOUT,
};
pub use tls::{TlsListener, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_HANDSHAKES};
