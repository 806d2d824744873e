//! Reaching the engine: endpoints, TLS settings and dialing.

mod dialer;
mod endpoint;
mod tls;

pub use dialer::{EngineStream, TlsDialer};
pub use endpoint::{Endpoint, DEFAULT_PORT};
pub(crate) use tls::{provider, server_name};
pub use tls::{ClientIdentity, TlsOptions};
