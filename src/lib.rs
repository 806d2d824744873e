//! # rstream
//!
//! The Rust SDK for rstream tunnels.
#![cfg_attr(docsrs, feature(doc_cfg))]
#![forbid(unsafe_code)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

mod client;
pub mod config;
pub mod control;
pub mod error;
pub mod http;
pub mod proto;
mod stream;
pub mod transport;
pub mod tunnel;
pub mod webhook;

#[cfg(feature = "local-engine")]
#[cfg_attr(docsrs, doc(cfg(feature = "local-engine")))]
pub mod engine;

pub use client::{Client, DialOptions, AGENT};
pub use config::{ClientOptions, Secret};
pub use control::ControlChannel;
pub use error::{Error, ErrorKind, Result};
pub use stream::{RstreamStream, StreamInfo};
pub use tunnel::{HttpVersion, Protocol, TlsMode, Tunnel, TunnelOptions};
