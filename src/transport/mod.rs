//! Reaching the engine: endpoints, TLS settings, HTTP CONNECT proxies and dialing.

mod buffered;
mod dialer;
mod endpoint;
pub(crate) mod https;
mod proxy;
mod tls;

pub use buffered::ReadBuffered;
pub use dialer::{EngineStream, TlsDialer};
pub use endpoint::{Endpoint, DEFAULT_PORT};
pub use proxy::{HttpProxy, MAX_PROXY_RESPONSE_HEADER};
#[cfg_attr(not(feature = "local-engine"), allow(unused_imports))]
pub(crate) use tls::provider;
pub(crate) use tls::server_name;
pub use tls::{ClientIdentity, TlsOptions};
