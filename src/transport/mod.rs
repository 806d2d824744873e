//! Reaching the engine: endpoints, TLS settings, proxies (HTTP CONNECT,
//! HTTPS, SOCKS5) and dialing.

// `pub` inside for the `unstable` feature (see below), hence the allows.
#[cfg_attr(not(feature = "unstable"), allow(unreachable_pub, dead_code))]
mod buffered;
#[cfg_attr(not(feature = "unstable"), allow(unreachable_pub, dead_code))]
mod dialer;
mod endpoint;
pub(crate) mod https;
mod proxy;
mod tls;

// Internals: public (hidden) only with the `unstable` feature, see lib.rs.
#[cfg(feature = "unstable")]
#[doc(hidden)]
pub use buffered::ReadBuffered;
#[cfg(not(feature = "unstable"))]
pub(crate) use buffered::ReadBuffered;
#[cfg(feature = "unstable")]
#[doc(hidden)]
pub use dialer::{EngineStream, TlsDialer};
#[cfg(not(feature = "unstable"))]
pub(crate) use dialer::{EngineStream, TlsDialer};
pub use endpoint::{Endpoint, DEFAULT_PORT};
pub use proxy::{HttpProxy, ProxiedStream, MAX_PROXY_RESPONSE_HEADER};
#[cfg_attr(not(feature = "local-engine"), allow(unused_imports))]
pub(crate) use tls::provider;
pub(crate) use tls::server_name;
#[cfg(feature = "local-engine")]
pub(crate) use tls::NoVerification;
pub use tls::{ClientIdentity, TlsOptions};
