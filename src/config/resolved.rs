//! The outcome of resolution, inspectable (`--debug`) with secrets redacted.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::headers::Headers;
use super::Secret;
use crate::transport::{Endpoint, HttpProxy, TlsOptions};

/// Where a resolved setting came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Source {
    /// Set in code on [`ClientOptions`](super::ClientOptions).
    Option,
    /// An environment variable (its name).
    Env(&'static str),
    /// The selected context of the config file.
    Context,
    /// The config file's `environments` entry for the context's API URL.
    Environment,
    /// The built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Option => f.write_str("option"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Context => f.write_str("config context"),
            Source::Environment => f.write_str("config environment"),
            Source::Default => f.write_str("default"),
        }
    }
}

/// How the client finds its engine.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EngineTarget {
    /// A known `host:port`.
    Address(Endpoint),
    /// A hosted project, resolved to an engine through the control-plane
    /// API (`GET {api_url}/api/projects/tunnels/resolve/{project_endpoint}`)
    /// the first time the client connects, then cached.
    Managed {
        /// The project endpoint.
        project_endpoint: String,
        /// The region to pick among the project's regional engines.
        region: Option<String>,
    },
}

impl fmt::Display for EngineTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineTarget::Address(e) => write!(f, "{e}"),
            EngineTarget::Managed {
                project_endpoint,
                region: None,
            } => write!(f, "managed project {project_endpoint:?}"),
            EngineTarget::Managed {
                project_endpoint,
                region: Some(region),
            } => write!(f, "managed project {project_endpoint:?}, region {region:?}"),
        }
    }
}

/// How the client authenticates to the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthKind {
    /// No credentials (a local engine, or one that accepts anonymous agents).
    None,
    /// A bearer token.
    Token,
    /// A client certificate on the TLS handshake.
    Mtls,
}

/// Where the client certificate came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientCertificate {
    /// PEM files.
    Files {
        /// The certificate (chain) file.
        cert: PathBuf,
        /// The private key file.
        key: PathBuf,
    },
    /// Inline PEM in the config file.
    Inline,
    /// A [`ClientIdentity`](crate::transport::ClientIdentity) given in code.
    Provided,
}

/// Every client setting after resolution, with where the important ones
/// came from. Get one with [`ClientOptions::resolve`](super::ClientOptions::resolve),
/// print it for `--debug` output (tokens, keys, header values and proxy
/// passwords are redacted in both `Debug` and `Display`), then build the
/// client with [`Client::from_resolved`](crate::Client::from_resolved).
#[derive(Clone)]
pub struct ResolvedOptions {
    pub(crate) engine: Option<EngineTarget>,
    pub(crate) engine_source: Source,
    pub(crate) api_url: String,
    pub(crate) api_url_source: Source,
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) context: Option<String>,
    pub(crate) control_plane_headers: Headers,
    pub(crate) token: Option<Secret>,
    pub(crate) token_source: Option<Source>,
    /// App credentials that mint a token per connection/request.
    pub(crate) app: Option<(crate::auth::AppCredentials, Source)>,
    pub(crate) client_certificate: Option<(ClientCertificate, Source)>,
    pub(crate) tls: TlsOptions,
    pub(crate) proxy: Option<HttpProxy>,
    pub(crate) proxy_source: Option<Source>,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) heartbeat_interval_ms: Option<u32>,
    pub(crate) zero_rtt: bool,
    pub(crate) max_concurrent_handshakes: usize,
    pub(crate) handshake_queue: usize,
    pub(crate) accept_backlog: usize,
    pub(crate) transport: crate::transport::Transport,
    pub(crate) transport_source: Source,
}

impl ResolvedOptions {
    /// The engine, or `None` when neither an engine nor a project endpoint
    /// is configured (building a client then fails with
    /// `ERR_RSTREAM_ENGINE_REQUIRED`).
    pub fn engine(&self) -> Option<&EngineTarget> {
        self.engine.as_ref()
    }

    /// Where the engine (address or project endpoint) came from.
    pub fn engine_source(&self) -> Source {
        self.engine_source
    }

    /// The control-plane API URL: managed resolution and [`ControlPlane`](crate::control_plane::ControlPlane).
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The config file that was read, if any.
    pub fn config_file(&self) -> Option<&Path> {
        self.config_file.as_deref()
    }

    /// The selected context's name, if any.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The names of the control-plane headers (values are not exposed).
    pub fn control_plane_header_names(&self) -> impl Iterator<Item = &str> {
        self.control_plane_headers.iter().map(|(n, _)| n.as_str())
    }

    /// How the client authenticates.
    pub fn auth(&self) -> AuthKind {
        if self.token.is_some() || self.app.is_some() {
            AuthKind::Token
        } else if self.tls.has_client_identity() {
            AuthKind::Mtls
        } else {
            AuthKind::None
        }
    }

    /// The token (redacted when printed) and where it came from.
    pub fn token(&self) -> Option<(&Secret, Source)> {
        Some((self.token.as_ref()?, self.token_source?))
    }

    /// The application credentials the client mints its tokens with, and
    /// where they came from.
    pub fn app_credentials(&self) -> Option<(&crate::auth::AppCredentials, Source)> {
        self.app.as_ref().map(|(c, s)| (c, *s))
    }

    /// The bearer to send to `engine` (`host:port`) now: the static token,
    /// or a fresh 60 s app token minted for that engine.
    pub(crate) fn bearer(&self, engine: &str) -> crate::error::Result<Option<Secret>> {
        match &self.app {
            Some((creds, _)) => creds
                .mint(&crate::auth::TokenRequest::new().engine(engine))
                .map(Some),
            None => Ok(self.token.clone()),
        }
    }

    /// Where the client certificate came from.
    pub fn client_certificate(&self) -> Option<(&ClientCertificate, Source)> {
        self.client_certificate.as_ref().map(|(c, s)| (c, *s))
    }

    /// The TLS settings for the engine.
    pub fn tls(&self) -> &TlsOptions {
        &self.tls
    }

    /// The proxy (HTTP CONNECT, HTTPS or SOCKS5) and where it came from.
    pub fn proxy(&self) -> Option<(&HttpProxy, Source)> {
        Some((self.proxy.as_ref()?, self.proxy_source?))
    }

    /// TCP connect + TLS handshake timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Timeout of each request/response exchange with the engine.
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// The heartbeat interval, `None` when heartbeats are off.
    pub fn heartbeat_interval(&self) -> Option<Duration> {
        self.heartbeat_interval_ms
            .map(|ms| Duration::from_millis(u64::from(ms)))
    }

    /// Whether zero-RTT stream setup is on.
    pub fn zero_rtt(&self) -> bool {
        self.zero_rtt
    }

    /// The transport to the engine (`auto` means TLS today).
    pub fn transport(&self) -> crate::transport::Transport {
        self.transport
    }

    /// Where [`transport`](Self::transport) came from.
    pub fn transport_source(&self) -> Source {
        self.transport_source
    }
}

impl fmt::Display for ResolvedOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.engine {
            Some(e) => writeln!(f, "engine: {e} ({})", self.engine_source)?,
            None => writeln!(f, "engine: none")?,
        }
        writeln!(f, "api url: {} ({})", self.api_url, self.api_url_source)?;
        match &self.config_file {
            Some(p) => writeln!(f, "config file: {}", p.display())?,
            None => writeln!(f, "config file: none")?,
        }
        writeln!(f, "context: {}", self.context.as_deref().unwrap_or("none"))?;
        match (self.auth(), self.token_source, &self.client_certificate) {
            (AuthKind::Token, Some(src), _) => writeln!(f, "auth: token <redacted> ({src})")?,
            (AuthKind::Mtls, _, Some((ClientCertificate::Files { cert, key }, src))) => writeln!(
                f,
                "auth: mTLS, certificate {} key {} ({src})",
                cert.display(),
                key.display()
            )?,
            (AuthKind::Mtls, _, Some((c, src))) => writeln!(f, "auth: mTLS, {c:?} ({src})")?,
            (kind, _, _) => writeln!(f, "auth: {kind:?}")?,
        }
        let names: Vec<&str> = self.control_plane_header_names().collect();
        if !names.is_empty() {
            writeln!(
                f,
                "control-plane headers: {} (values redacted)",
                names.join(", ")
            )?;
        }
        match (&self.proxy, self.proxy_source) {
            (Some(p), Some(src)) => writeln!(f, "proxy: {p} ({src})")?,
            _ => writeln!(f, "proxy: none")?,
        }
        writeln!(
            f,
            "transport: {} ({})",
            self.transport, self.transport_source
        )?;
        writeln!(f, "tls: {:?}", self.tls)?;
        writeln!(
            f,
            "timeouts: connect {:?}, operation {:?}",
            self.connect_timeout, self.operation_timeout
        )?;
        match self.heartbeat_interval() {
            Some(d) => write!(f, "heartbeat: every {d:?}")?,
            None => write!(f, "heartbeat: off")?,
        }
        write!(f, "; zero-rtt: {}", self.zero_rtt)
    }
}

impl fmt::Debug for ResolvedOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedOptions")
            .field("engine", &self.engine)
            .field("engine_source", &self.engine_source)
            .field("api_url", &self.api_url)
            .field("config_file", &self.config_file)
            .field("context", &self.context)
            .field(
                "control_plane_headers",
                &self.control_plane_header_names().collect::<Vec<_>>(),
            )
            .field("token", &self.token)
            .field("app", &self.app.as_ref().map(|(c, s)| (c.client_id(), s)))
            .field("token_source", &self.token_source)
            .field("client_certificate", &self.client_certificate)
            .field("tls", &self.tls)
            .field("proxy", &self.proxy)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("heartbeat_interval_ms", &self.heartbeat_interval_ms)
            .field("zero_rtt", &self.zero_rtt)
            .field("max_concurrent_handshakes", &self.max_concurrent_handshakes)
            .field("handshake_queue", &self.handshake_queue)
            .field("accept_backlog", &self.accept_backlog)
            .field("transport", &self.transport)
            .field("transport_source", &self.transport_source)
            .finish()
    }
}
