//! HTTP/3 servers (feature `http3`): a tower service (an axum `Router`
//! unchanged) served over HTTP/3 with the `h3` crate on QUIC connections.
//!
//! - [`serve_connection`] / [`serve_connection_with`]: one accepted
//!   `quinn::Connection` (ALPN `h3`), whatever endpoint it came from.
//!
//! See `docs/HTTP3.md`.

mod server;

pub use server::{
    serve_connection, serve_connection_with, RequestBody, ServeOptions,
    DEFAULT_HEADER_READ_TIMEOUT, DEFAULT_MAX_CONCURRENT_REQUESTS, DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_WRITE_TIMEOUT,
};
