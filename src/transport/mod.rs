//! Reaching the engine: endpoints, TLS settings, proxies (HTTP CONNECT,
//! HTTPS, SOCKS5) and dialing.

// `pub` inside for the `unstable` feature (see below), hence the allows.
/// `AsyncRead` + `AsyncWrite` for an enum of one connection to or from the
/// engine port: variant `Tls(_)`, and with feature `quic` variant `Quic(_)`,
/// each call handed to the variant (the client's `EngineStream`, the
/// engine's `ServerTls`).
macro_rules! tls_or_quic_io {
    ($ty:ident) => {
        impl ::tokio::io::AsyncRead for $ty {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut ::tokio::io::ReadBuf<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Tls(t) => ::std::pin::Pin::new(t).poll_read(cx, buf),
                    #[cfg(feature = "quic")]
                    $ty::Quic(q) => ::std::pin::Pin::new(q).poll_read(cx, buf),
                }
            }
        }

        impl ::tokio::io::AsyncWrite for $ty {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                match self.get_mut() {
                    $ty::Tls(t) => ::std::pin::Pin::new(t).poll_write(cx, buf),
                    #[cfg(feature = "quic")]
                    $ty::Quic(q) => ::std::pin::Pin::new(q).poll_write(cx, buf),
                }
            }

            fn poll_write_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                match self.get_mut() {
                    $ty::Tls(t) => ::std::pin::Pin::new(t).poll_write_vectored(cx, bufs),
                    #[cfg(feature = "quic")]
                    $ty::Quic(q) => ::std::pin::Pin::new(q).poll_write_vectored(cx, bufs),
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $ty::Tls(t) => t.is_write_vectored(),
                    #[cfg(feature = "quic")]
                    $ty::Quic(q) => q.is_write_vectored(),
                }
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Tls(t) => ::std::pin::Pin::new(t).poll_flush(cx),
                    #[cfg(feature = "quic")]
                    $ty::Quic(q) => ::std::pin::Pin::new(q).poll_flush(cx),
                }
            }

            fn poll_shutdown(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                match self.get_mut() {
                    $ty::Tls(t) => ::std::pin::Pin::new(t).poll_shutdown(cx),
                    #[cfg(feature = "quic")]
                    $ty::Quic(q) => ::std::pin::Pin::new(q).poll_shutdown(cx),
                }
            }
        }
    };
}
pub(crate) use tls_or_quic_io;

#[cfg(feature = "quic")]
mod auto;
#[cfg_attr(not(feature = "unstable"), allow(unreachable_pub, dead_code))]
mod buffered;
#[cfg_attr(not(feature = "unstable"), allow(unreachable_pub, dead_code))]
mod dialer;
mod endpoint;
#[cfg(feature = "http3")]
pub(crate) mod h3_client;
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
    /// The default. With feature `quic`: the first connection races QUIC
    /// against TLS (TLS starts 300 ms after QUIC, or at once when QUIC
    /// fails) and the first to connect is pinned for every later
    /// connection of the client; while nothing has connected, each
    /// connection races again. With a proxy configured, or without the
    /// `quic` feature: TLS.
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
