//! The local engine as a server: its wire protocol, Engine API (HTTP and
//! the typed client), and mutual TLS. One test binary, one module per
//! topic, so CI links it once.

#[path = "../support/mod.rs"]
mod support;

mod access_control;
mod datagram;
#[cfg(feature = "dtls")]
mod dtls;
mod engine_api;
mod engine_api_h3;
mod engine_api_http;
mod engine_mtls;
mod engine_protocol;
