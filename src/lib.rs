//! # rstream
//!
//! The Rust SDK for rstream tunnels: publish axum, hyper or any tower service
//! through an rstream engine with **no loopback socket**, dial private
//! tunnels, and verify rstream webhooks with a Tower layer.
//!
//! ```no_run
//! use axum::{routing::get, Router};
//! use rstream::{Client, TunnelOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::from_env()?;
//! let control = client.connect().await?;
//! let tunnel = control.create_tunnel(TunnelOptions::http()).await?;
//! println!("{}", tunnel.forwarding_address());
//! let router = Router::new().route("/", get(|| async { "hello" }));
//! axum::serve(tunnel, router).await?;
//! # Ok(()) }
//! ```
//!
//! ## Tour
//!
//! - [`Client`]: where the engine is and how to authenticate
//!   ([`ClientOptions`], [`Client::from_env`]); [`Client::connect`] opens a
//!   [`ControlChannel`], [`Client::dial`] a private [`RstreamStream`].
//! - [`ControlChannel::create_tunnel`] with [`TunnelOptions`] gives a
//!   [`Tunnel`]: accept its connections ([`Tunnel::accept`], `Stream`), hand
//!   it to `axum::serve`, to [`http::serve`], or [`Tunnel::forward_to`] a
//!   local port.
//! - [`datagram`]: datagram tunnels ([`ControlChannel::create_datagram_tunnel`],
//!   [`Client::dial_datagram`]): whole datagrams per peer
//!   ([`DatagramChannel`]) or one `UdpSocket`-like [`DatagramSocket`].
//! - [`http`]: hyper/tower serving and the [`http::Connector`] for
//!   hyper-util's pooled client over private dials.
//! - [`webhook`]: signatures, typed events, and `WebhookLayer`.
//! - [`engine`] (feature `local-engine`): a real engine for one machine, for
//!   examples, tests and benchmarks.
//!
//! ## Feature flags
//!
//! - `axum` (default): `axum::serve::Listener` for [`Tunnel`] and the
//!   webhook extractor.
//! - `ring` (default): TLS on ring's crypto provider.
//! - `aws-lc-rs`: TLS on aws-lc-rs instead (with `default-features = false`;
//!   ring is used when both are on), for apps already on rustls' default
//!   provider, so they compile one crypto library, not two. One of `ring`,
//!   `aws-lc-rs` (or `local-engine`, which means ring) is required.
//! - `local-engine`: [`engine`] and the `rstream-local-engine` binary
//!   (examples, tests and benches of this crate turn it on themselves). It
//!   always compiles ring (certificate generation); its TLS follows the
//!   provider above (ring if neither is on).
//! - `native-roots`: the operating system's root certificates beside the
//!   bundled webpki roots.
//! - `tonic`: `tonic::transport::server::Connected` for [`RstreamStream`],
//!   so `Server::builder()..serve_with_incoming(tunnel)` serves gRPC through
//!   a tunnel (requests carry the [`StreamInfo`]).
//! - `unstable`: not a stable API. Makes the wire schema (`proto`) and the
//!   transport internals public, hidden from these docs, for this crate's
//!   tests and benchmarks and for tools that speak the protocol.
//!
//! ## Errors
//!
//! One [`Error`] with a [`kind`](Error::kind) and a stable
//! [`code`](Error::code). Nothing that comes from the network, a file or the
//! environment panics.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

#[macro_use]
mod io_forward;

pub mod api;
pub mod auth;
mod backoff;
mod client;
// What client and control share to reach the engine (no client ↔ control cycle).
pub mod config;
pub mod control;
pub mod control_plane;
pub mod datagram;
pub mod error;
pub mod http;
#[cfg(feature = "http3")]
#[cfg_attr(docsrs, doc(cfg(feature = "http3")))]
pub mod http3;
mod link;
mod percent;
// The wire schema and frame codec are not a stable API (every prost bump
// would break it): public, hidden from the docs, only with the `unstable`
// feature, for the crate's tests, benches and tools that speak the
// protocol. Without it the module is private; its items stay `pub` for
// the feature's sake, hence the allows.
#[cfg(feature = "unstable")]
#[doc(hidden)]
pub mod proto;
#[cfg(not(feature = "unstable"))]
#[allow(unreachable_pub, dead_code, unused_imports)]
mod proto;
mod secret;
mod stream;
pub mod transport;
pub mod tunnel;
pub mod webhook;

#[cfg(feature = "local-engine")]
#[cfg_attr(docsrs, doc(cfg(feature = "local-engine")))]
pub mod engine;

pub use client::{Client, DialOptions, AGENT};
pub use config::ClientOptions;
pub use control::{ConnectOptions, ConnectionStatus, ControlChannel, ReconnectPolicy};
pub use datagram::{DatagramChannel, DatagramPeer, DatagramSocket, DatagramTunnel};
pub use error::{Error, ErrorKind, Result};
pub use secret::Secret;
pub use stream::{RstreamStream, StreamInfo};
pub use transport::{ClientIdentity, TlsOptions, Transport};
#[cfg(feature = "axum")]
pub use tunnel::TunnelAddr;
pub use tunnel::{
    HttpVersion, Protocol, TlsMode, Tunnel, TunnelCounters, TunnelOptions, TunnelStats,
};
