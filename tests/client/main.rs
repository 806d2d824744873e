//! The client SDK against the local engine and the scripted engine:
//! protocol, tunnels, close, TLS, reliability, HTTP serving and
//! configuration. One test binary, one module per topic, so CI links it
//! once.

#[path = "../support/mod.rs"]
mod support;

mod client_protocol;
mod close;
mod config;
mod control_plane;
mod datagram;
#[cfg(feature = "quic")]
mod datagram_quic;
#[cfg(feature = "tonic")]
mod grpc;
mod http;
mod http2_websocket;
#[cfg(feature = "http3")]
mod http3;
#[cfg(feature = "http3")]
mod http3_upstream;
mod http_streaming;
mod http_tls;
mod observability;
mod proxies;
#[cfg(feature = "quic")]
mod quic;
mod reliability;
mod tls;
mod tunnels;
