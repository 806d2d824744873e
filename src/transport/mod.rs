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
#[cfg(feature = "quic")]
#[cfg_attr(not(feature = "unstable"), allow(unreachable_pub, dead_code))]
pub(crate) mod quic;
mod tls;

// Internals: public (hidden) only with the `unstable` feature, see lib.rs.
#[cfg(feature = "unstable")]
#[doc(hidden)]
pub use buffered::ReadBuffered;
#[cfg(not(feature = "unstable"))]
pub(crate) use buffered::ReadBuffered;
pub(crate) use dialer::EngineDialer;
#[cfg(feature = "unstable")]
#[doc(hidden)]
pub use dialer::{EngineStream, SessionInfo, TlsDialer, TlsEngineStream};
#[cfg(not(feature = "unstable"))]
#[allow(unused_imports)]
pub(crate) use dialer::{EngineStream, SessionInfo, TlsDialer, TlsEngineStream};
pub use endpoint::{Endpoint, DEFAULT_PORT};
pub use proxy::{HttpProxy, ProxiedStream, MAX_PROXY_RESPONSE_HEADER};
#[cfg(all(feature = "quic", feature = "unstable"))]
#[doc(hidden)]
pub use quic::QuicStream;
#[cfg_attr(not(feature = "local-engine"), allow(unused_imports))]
pub(crate) use tls::provider;
pub(crate) use tls::server_name;
#[cfg(feature = "local-engine")]
pub(crate) use tls::NoVerification;
pub use tls::{ClientIdentity, TlsOptions};

/// How a client reaches the engine ([`ClientOptions::transport`](crate::ClientOptions::transport),
/// `RSTREAM_TUNNEL_TRANSPORT`, config `transport.mode`). See `docs/QUIC.md`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Transport {
    /// The default: today TLS over TCP (the QUIC-first race of the Go SDK
    /// is not implemented yet).
    #[default]
    Auto,
    /// TLS over TCP.
    Tls,
    /// QUIC over UDP (feature `quic`; refused with
    /// `ERR_RSTREAM_UNSUPPORTED_TRANSPORT` without it).
    Quic,
}

impl Transport {
    /// `auto`, `tls` or `quic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Auto => "auto",
            Transport::Tls => "tls",
            Transport::Quic => "quic",
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
