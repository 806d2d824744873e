//! [`EngineLink`]: what every connection to the engine needs — the
//! resolved options, the shared TLS dialer, the engine's address (resolved
//! once for a managed project) and the `ClientDetails` sent on each
//! connection.
//!
//! `client` builds it and `control` holds it, so the control task dials
//! and re-dials (on reconnect, for proxy connections) without naming
//! [`Client`](crate::Client): neither module imports the other's internals
//! (docs/ARCHITECTURE.md, "Cycles kept").

use crate::config::{EngineTarget, ResolvedOptions};
use crate::error::{code, Error, Result};
use crate::proto::{ClientDetails, ALPN, PROTOCOL_VERSION};
use crate::transport::{Endpoint, EngineDialer, TlsDialer};

/// The agent name this SDK identifies as.
pub const AGENT: &str = "rstream-rust-runtime";

/// The engine connection settings of one [`Client`](crate::Client), shared
/// (behind an `Arc`) with its control channels.
pub(crate) struct EngineLink {
    /// The engine address and SNI: set at construction for a known engine,
    /// on first use for a managed one (resolved once, then cached; a failed
    /// resolution is retried by the next connect).
    engine: tokio::sync::OnceCell<EngineAddr>,
    /// TLS or QUIC, as the resolved transport says.
    pub(crate) dialer: EngineDialer,
    pub(crate) options: ResolvedOptions,
}

/// Where to connect to reach the engine.
#[derive(Clone, Debug)]
pub(crate) struct EngineAddr {
    pub(crate) endpoint: Endpoint,
    pub(crate) sni: String,
}

impl EngineAddr {
    fn new(endpoint: Endpoint, options: &ResolvedOptions) -> Self {
        let sni = options
            .tls
            .server_name
            .clone()
            .unwrap_or_else(|| endpoint.host().to_owned());
        EngineAddr { endpoint, sni }
    }
}

impl EngineLink {
    /// The link for these options; no I/O.
    ///
    /// Fails with `ERR_RSTREAM_ENGINE_REQUIRED` when neither an engine nor a
    /// project endpoint is configured.
    pub(crate) fn new(options: ResolvedOptions) -> Result<EngineLink> {
        let engine = match &options.engine {
            Some(EngineTarget::Address(endpoint)) => {
                tokio::sync::OnceCell::new_with(Some(EngineAddr::new(endpoint.clone(), &options)))
            }
            Some(EngineTarget::Managed { .. }) => tokio::sync::OnceCell::new(),
            None => {
                return Err(Error::config(
                    code::ENGINE_REQUIRED,
                    "no engine: set ClientOptions::engine, RSTREAM_ENGINE, a context engine or a project endpoint",
                ))
            }
        };
        let config = options.tls.client_config(&[ALPN])?;
        let tls = TlsDialer::new(config, options.connect_timeout).with_proxy(options.proxy.clone());
        let dialer = match options.transport {
            #[cfg(feature = "quic")]
            crate::transport::Transport::Quic => {
                // Its own configuration (and session cache): QUIC tickets
                // carry transport parameters a TLS connection cannot use.
                let quic = options.tls.client_config(&[ALPN])?;
                EngineDialer::quic(
                    tls,
                    crate::transport::quic::QuicDialer::new(quic, options.connect_timeout)?,
                )
            }
            // QUIC through a proxy is not supported (MASQUE, SOCKS5 UDP):
            // auto behind a proxy is TLS.
            #[cfg(feature = "quic")]
            crate::transport::Transport::Auto if options.proxy.is_none() => {
                let quic = options.tls.client_config(&[ALPN])?;
                EngineDialer::auto(
                    tls,
                    crate::transport::quic::QuicDialer::new(quic, options.connect_timeout)?,
                )
            }
            // `resolve` refuses quic without the feature; auto is TLS then.
            _ => EngineDialer::tls(tls),
        };
        Ok(EngineLink {
            engine,
            dialer,
            options,
        })
    }

    /// The engine to connect to, resolving a managed project once.
    pub(crate) async fn engine(&self) -> Result<&EngineAddr> {
        self.engine
            .get_or_try_init(|| async {
                let endpoint = match &self.options.engine {
                    Some(EngineTarget::Address(endpoint)) => endpoint.clone(),
                    Some(EngineTarget::Managed {
                        project_endpoint,
                        region,
                    }) => {
                        let region = region.as_deref();
                        let endpoint =
                            crate::control_plane::resolve_engine(&self.options, project_endpoint, region)
                                .await?;
                        tracing::debug!(%endpoint, project = %project_endpoint, "managed engine resolved");
                        endpoint
                    }
                    // from_resolved refuses a client without an engine.
                    None => {
                        return Err(Error::config(
                            code::ENGINE_REQUIRED,
                            "no engine configured",
                        ))
                    }
                };
                Ok(EngineAddr::new(endpoint, &self.options))
            })
            .await
    }

    /// The engine, if already known (always, once a control channel is open).
    pub(crate) fn resolved_engine(&self) -> Option<&EngineAddr> {
        self.engine.get()
    }

    /// `ClientDetails`, identical on every connection but for the token.
    pub(crate) fn details(&self, token: Option<String>) -> ClientDetails {
        ClientDetails {
            agent: Some(AGENT.to_owned()),
            channel: Some("sdk".to_owned()),
            version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            os: Some(std::env::consts::OS.to_owned()),
            arch: Some(std::env::consts::ARCH.to_owned()),
            token,
            protocol_version: Some(PROTOCOL_VERSION.to_owned()),
        }
    }
}
