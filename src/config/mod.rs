//! Client options and where they come from.
//!
//! [`ClientOptions`] holds every client setting. Explicit setters always win;
//! [`ClientOptions::from_env`] additionally fills what was not set from the
//! environment (`RSTREAM_ENGINE`, legacy `RSTREAM_ENGINE_ADDRESS`,
//! `RSTREAM_AUTHENTICATION_TOKEN`, `RSTREAM_CA_FILE`). Empty or
//! whitespace-only variables count as unset.

mod secret;

use std::path::PathBuf;
use std::time::Duration;

pub use secret::Secret;

use crate::error::{Error, Result};
use crate::transport::{ClientIdentity, Endpoint, TlsOptions};

/// Default TCP connect + TLS handshake timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default timeout for each request/response exchange with the engine.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Proxy handshakes handled at once per control channel.
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 64;
/// Proxy handshakes queued beyond the concurrent ones before the control
/// channel is declared overloaded.
pub const DEFAULT_HANDSHAKE_QUEUE: usize = 256;
/// Accepted-by-the-engine streams a tunnel buffers until the app accepts them.
pub const DEFAULT_ACCEPT_BACKLOG: usize = 256;

/// Every client setting. Build a [`Client`](crate::Client) with
/// [`build`](ClientOptions::build) or [`Client::new`](crate::Client::new).
///
/// ```
/// use std::time::Duration;
/// let options = rstream::ClientOptions::new()
///     .engine("engine.example.test:443")
///     .token("my-token")
///     .operation_timeout(Duration::from_secs(10));
/// assert!(!format!("{options:?}").contains("my-token"));
/// ```
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub(crate) engine: Option<String>,
    pub(crate) token: Option<Secret>,
    pub(crate) tls: TlsOptions,
    pub(crate) ca_files: Vec<PathBuf>,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) zero_rtt: bool,
    pub(crate) max_concurrent_handshakes: usize,
    pub(crate) handshake_queue: usize,
    pub(crate) accept_backlog: usize,
    pub(crate) read_env: bool,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            engine: None,
            token: None,
            tls: TlsOptions::default(),
            ca_files: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            heartbeat_interval: Some(DEFAULT_HEARTBEAT_INTERVAL),
            zero_rtt: true,
            max_concurrent_handshakes: DEFAULT_MAX_CONCURRENT_HANDSHAKES,
            handshake_queue: DEFAULT_HANDSHAKE_QUEUE,
            accept_backlog: DEFAULT_ACCEPT_BACKLOG,
            read_env: false,
        }
    }
}

impl ClientOptions {
    /// Defaults, reading nothing from the environment.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults, with unset values later filled from the environment.
    pub fn from_env() -> Self {
        ClientOptions {
            read_env: true,
            ..Self::default()
        }
    }

    /// The engine address, `host[:port]` (default port 443).
    pub fn engine(mut self, engine: impl Into<String>) -> Self {
        self.engine = Some(engine.into());
        self
    }

    /// The agent token, sent when opening control channels and dialing.
    pub fn token(mut self, token: impl Into<Secret>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// TLS settings (extra CAs, client certificate, server name, verification).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Adds a PEM file of extra trust anchors (read when the client is built).
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_files.push(path.into());
        self
    }

    /// Presents a client certificate (mTLS) instead of a token.
    pub fn client_identity(mut self, identity: ClientIdentity) -> Self {
        self.tls = self.tls.client_identity(identity);
        self
    }

    /// **Disables engine certificate verification.** For tests only.
    pub fn danger_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.tls = self.tls.danger_accept_invalid_certs(yes);
        self
    }

    /// TCP connect + TLS handshake timeout (default 15 s; must be > 0).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of each request/response exchange (default 30 s; must be > 0).
    pub fn operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Heartbeat interval (default 5 s; 1–300 s, whole milliseconds).
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.heartbeat_interval = Some(interval);
        self
    }

    /// Turns heartbeats off (no liveness negotiation; legacy engines only).
    pub fn disable_heartbeats(mut self) -> Self {
        self.heartbeat_interval = None;
        self
    }

    /// Zero-RTT stream setup (default on): dials and proxy connections do
    /// not wait for the engine's response frame before carrying data.
    pub fn zero_rtt(mut self, enabled: bool) -> Self {
        self.zero_rtt = enabled;
        self
    }

    /// Proxy handshakes handled at once (default 64) and queued beyond that
    /// (default 256) per control channel. A burst past both fails the
    /// control channel with `ERR_RSTREAM_CONTROL_OVERLOAD`.
    pub fn proxy_handshake_limits(mut self, concurrent: usize, queued: usize) -> Self {
        self.max_concurrent_handshakes = concurrent.max(1);
        self.handshake_queue = queued;
        self
    }

    /// Streams a tunnel holds for the application before it accepts them (default 256).
    pub fn accept_backlog(mut self, backlog: usize) -> Self {
        self.accept_backlog = backlog.max(1);
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<crate::Client> {
        crate::Client::new(self)
    }

    /// Applies the environment (when enabled) and validates everything,
    /// without any I/O other than reading CA/certificate files.
    pub(crate) fn resolve(self) -> Result<Resolved> {
        self.resolve_with(&|name| std::env::var(name).ok())
    }

    pub(crate) fn resolve_with(mut self, env: &dyn Fn(&str) -> Option<String>) -> Result<Resolved> {
        let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        if self.read_env {
            if self.engine.is_none() {
                self.engine = var("RSTREAM_ENGINE").or_else(|| var("RSTREAM_ENGINE_ADDRESS"));
            }
            if self.token.is_none() {
                self.token = var("RSTREAM_AUTHENTICATION_TOKEN").map(|t| Secret::new(t.trim()));
            }
            if let Some(ca) = var("RSTREAM_CA_FILE") {
                self.ca_files.push(PathBuf::from(ca.trim()));
            }
        }
        let engine = match self.engine.as_deref() {
            Some(e) => Endpoint::parse(e)?,
            None => {
                return Err(Error::config(
                    "ERR_RSTREAM_ENGINE_REQUIRED",
                    "no engine address: set ClientOptions::engine or RSTREAM_ENGINE",
                ))
            }
        };
        for (what, t) in [
            ("connect timeout", self.connect_timeout),
            ("operation timeout", self.operation_timeout),
        ] {
            if t.is_zero() {
                return Err(Error::config(
                    "ERR_RSTREAM_INVALID_TIMEOUT",
                    format!("{what} must be greater than zero"),
                ));
            }
        }
        let heartbeat_interval_ms = match self.heartbeat_interval {
            None => None,
            Some(d) => {
                let ms = d.as_millis();
                if d.subsec_nanos() % 1_000_000 != 0 || !(1_000..=300_000).contains(&ms) {
                    return Err(Error::config(
                        "ERR_RSTREAM_INVALID_CONFIG",
                        "heartbeat interval must be 1-300 s in whole milliseconds",
                    ));
                }
                // 1_000..=300_000 fits in u32.
                Some(ms as u32)
            }
        };
        let mut tls = self.tls;
        for path in &self.ca_files {
            tls = tls.add_ca_file(path)?;
        }
        if self.token.is_some() && tls.has_client_identity() {
            return Err(Error::config(
                "ERR_RSTREAM_AUTH_CONFLICT",
                "a token and a client certificate were both configured; use one",
            ));
        }
        Ok(Resolved {
            engine,
            token: self.token,
            tls,
            connect_timeout: self.connect_timeout,
            operation_timeout: self.operation_timeout,
            heartbeat_interval_ms,
            zero_rtt: self.zero_rtt,
            max_concurrent_handshakes: self.max_concurrent_handshakes,
            handshake_queue: self.handshake_queue,
            accept_backlog: self.accept_backlog,
        })
    }
}

/// Validated options.
#[derive(Clone, Debug)]
pub(crate) struct Resolved {
    pub(crate) engine: Endpoint,
    pub(crate) token: Option<Secret>,
    pub(crate) tls: TlsOptions,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) heartbeat_interval_ms: Option<u32>,
    pub(crate) zero_rtt: bool,
    pub(crate) max_concurrent_handshakes: usize,
    pub(crate) handshake_queue: usize,
    pub(crate) accept_backlog: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn env_fills_unset_values_only() {
        let r = ClientOptions::from_env()
            .resolve_with(&env(&[
                ("RSTREAM_ENGINE", "a.test:1"),
                ("RSTREAM_AUTHENTICATION_TOKEN", "tok"),
            ]))
            .unwrap();
        assert_eq!(r.engine.to_string(), "a.test:1");
        assert_eq!(r.token.unwrap().expose(), "tok");
        let r = ClientOptions::from_env()
            .engine("b.test")
            .resolve_with(&env(&[("RSTREAM_ENGINE", "a.test:1")]))
            .unwrap();
        assert_eq!(r.engine.to_string(), "b.test:443");
    }

    #[test]
    fn legacy_variable_and_empty_values() {
        let r = ClientOptions::from_env()
            .resolve_with(&env(&[
                ("RSTREAM_ENGINE", "  "),
                ("RSTREAM_ENGINE_ADDRESS", "legacy.test:8443"),
                ("RSTREAM_AUTHENTICATION_TOKEN", ""),
            ]))
            .unwrap();
        assert_eq!(r.engine.to_string(), "legacy.test:8443");
        assert!(r.token.is_none());
    }

    #[test]
    fn new_ignores_environment() {
        let err = ClientOptions::new()
            .resolve_with(&env(&[("RSTREAM_ENGINE", "a.test")]))
            .unwrap_err();
        assert_eq!(err.code(), "ERR_RSTREAM_ENGINE_REQUIRED");
    }

    #[test]
    fn validation() {
        let base = || ClientOptions::new().engine("a.test");
        let code = |o: ClientOptions| o.resolve_with(&|_| None).unwrap_err().code();
        assert_eq!(
            code(base().operation_timeout(Duration::ZERO)),
            "ERR_RSTREAM_INVALID_TIMEOUT"
        );
        assert_eq!(
            code(base().heartbeat_interval(Duration::from_millis(999))),
            "ERR_RSTREAM_INVALID_CONFIG"
        );
        assert_eq!(
            code(base().heartbeat_interval(Duration::from_secs(301))),
            "ERR_RSTREAM_INVALID_CONFIG"
        );
        assert_eq!(
            code(base().heartbeat_interval(Duration::from_micros(1_000_500))),
            "ERR_RSTREAM_INVALID_CONFIG"
        );
        assert!(base()
            .heartbeat_interval(Duration::from_secs(300))
            .resolve_with(&|_| None)
            .is_ok());
        assert_eq!(
            code(ClientOptions::new().engine("https://a.test")),
            "ERR_RSTREAM_INVALID_ENGINE"
        );
        assert_eq!(
            code(base().ca_file("/nonexistent/ca.pem")),
            "ERR_RSTREAM_INVALID_CONFIG"
        );
    }
}
