//! Client options and where they come from.
//!
//! Every setting is resolved by one resolver with the precedence the other
//! rstream SDKs and the CLI share:
//!
//! **option in code > environment variable > selected context of the config
//! file > the file's `environments` entry for the context's API URL > built-in
//! default.**
//!
//! - [`ClientOptions::new`] (= [`Client::builder`](crate::Client::builder))
//!   reads **nothing** but what you set: no environment, no config file.
//!   Pure, for embedding and tests. Add [`config_file`](ClientOptions::config_file)
//!   to read a given file anyway.
//! - [`ClientOptions::from_env`] (= [`Client::from_env`](crate::Client::from_env))
//!   also reads the environment and the CLI's config file
//!   (`RSTREAM_CONFIG`, default `~/.rstream/config.yaml`);
//!   [`no_config_file`](ClientOptions::no_config_file) skips the file.
//! - [`ClientOptions::from_env_with`] is `from_env` with an injected
//!   variable lookup (tests never need to touch the process environment).
//!
//! [`ClientOptions::resolve`] runs the resolver and returns
//! [`ResolvedOptions`], printable for `--debug` output with every secret
//! redacted. The full model, with examples, is in `docs/CONFIGURATION.md`.

mod env;
mod file;
mod headers;
pub(crate) mod jwt;
mod resolve;
mod resolved;
mod yaml_bound;

use std::fmt;
use std::io::Read as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use resolved::{AuthKind, ClientCertificate, EngineTarget, ResolvedOptions, Source};
// `Secret` lives in a leaf module (transport uses it too and must not
// depend on `config`); it stays reachable here where users look for it.
pub use crate::secret::Secret;

use crate::error::{code, Error, Result};
use crate::transport::{ClientIdentity, HttpProxy, TlsOptions};

/// Default TCP connect + TLS handshake timeout.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default timeout for each request/response exchange with the engine.
pub const DEFAULT_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest connect or operation timeout accepted (24 hours); a larger one,
/// `Duration::MAX` included, fails with `ERR_RSTREAM_INVALID_TIMEOUT`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(86_400);
/// Default heartbeat interval.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// Proxy handshakes handled at once per control channel.
pub const DEFAULT_MAX_CONCURRENT_HANDSHAKES: usize = 64;
/// Proxy handshakes queued beyond the concurrent ones before the control
/// channel is declared overloaded.
pub const DEFAULT_HANDSHAKE_QUEUE: usize = 256;
/// Accepted-by-the-engine streams a tunnel buffers until the app accepts them.
pub const DEFAULT_ACCEPT_BACKLOG: usize = 256;
/// The hosted control-plane API.
pub const DEFAULT_API_URL: &str = "https://rstream.io";

type LookupFn = dyn Fn(&str) -> Option<String> + Send + Sync;

#[derive(Clone)]
enum EnvSource {
    None,
    Process,
    Custom(Arc<LookupFn>),
}

#[derive(Clone, Debug)]
enum ProxyChoice {
    Use(HttpProxy),
    Direct,
    FromEnvironment,
}

/// Every client setting. Build a [`Client`](crate::Client) with
/// [`build`](ClientOptions::build), or inspect the outcome first with
/// [`resolve`](ClientOptions::resolve).
///
/// Setters never fail; everything is validated when the options are
/// resolved. Blank strings count as unset.
///
/// ```
/// use std::time::Duration;
/// let options = rstream::ClientOptions::new()
///     .engine("engine.example.test:443")
///     .token("my-token")
///     .operation_timeout(Duration::from_secs(10));
/// assert!(!format!("{options:?}").contains("my-token"));
/// let resolved = options.resolve().unwrap();
/// assert_eq!(resolved.auth(), rstream::config::AuthKind::Token);
/// assert!(!resolved.to_string().contains("my-token"));
/// ```
#[derive(Clone)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct ClientOptions {
    pub(crate) engine: Option<String>,
    pub(crate) token: Option<Secret>,
    pub(crate) no_token: bool,
    pub(crate) app_credentials: Option<crate::auth::AppCredentials>,
    pub(crate) api_url: Option<String>,
    pub(crate) project_endpoint: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) config_file: Option<PathBuf>,
    pub(crate) read_config_file: Option<bool>,
    pub(crate) control_plane_headers: Vec<(String, String)>,
    proxy: Option<ProxyChoice>,
    pub(crate) tls: TlsOptions,
    pub(crate) ca_files: Vec<PathBuf>,
    pub(crate) connect_timeout: Duration,
    pub(crate) operation_timeout: Duration,
    pub(crate) heartbeat_interval: Option<Duration>,
    pub(crate) zero_rtt: bool,
    pub(crate) max_concurrent_handshakes: usize,
    pub(crate) handshake_queue: usize,
    pub(crate) accept_backlog: usize,
    pub(crate) transport: Option<crate::transport::Transport>,
    env: EnvSource,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            engine: None,
            token: None,
            no_token: false,
            app_credentials: None,
            api_url: None,
            project_endpoint: None,
            region: None,
            context: None,
            config_file: None,
            read_config_file: None,
            control_plane_headers: Vec::new(),
            proxy: None,
            tls: TlsOptions::default(),
            ca_files: Vec::new(),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            operation_timeout: DEFAULT_OPERATION_TIMEOUT,
            heartbeat_interval: Some(DEFAULT_HEARTBEAT_INTERVAL),
            zero_rtt: true,
            max_concurrent_handshakes: DEFAULT_MAX_CONCURRENT_HANDSHAKES,
            handshake_queue: DEFAULT_HANDSHAKE_QUEUE,
            accept_backlog: DEFAULT_ACCEPT_BACKLOG,
            transport: None,
            env: EnvSource::None,
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env = match self.env {
            EnvSource::None => "none",
            EnvSource::Process => "process",
            EnvSource::Custom(_) => "custom lookup",
        };
        f.debug_struct("ClientOptions")
            .field("engine", &self.engine)
            .field("token", &self.token)
            .field("no_token", &self.no_token)
            .field("app_credentials", &self.app_credentials)
            .field("api_url", &self.api_url)
            .field("project_endpoint", &self.project_endpoint)
            .field("region", &self.region)
            .field("context", &self.context)
            .field("config_file", &self.config_file)
            .field("read_config_file", &self.read_config_file)
            .field(
                "control_plane_headers",
                &self
                    .control_plane_headers
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("proxy", &self.proxy)
            .field("tls", &self.tls)
            .field("ca_files", &self.ca_files)
            .field("connect_timeout", &self.connect_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("zero_rtt", &self.zero_rtt)
            .field("max_concurrent_handshakes", &self.max_concurrent_handshakes)
            .field("handshake_queue", &self.handshake_queue)
            .field("accept_backlog", &self.accept_backlog)
            .field("transport", &self.transport)
            .field("env", &env)
            .finish()
    }
}

impl ClientOptions {
    /// Defaults, reading nothing from the environment or the config file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Defaults, with what is not set in code taken from the environment
    /// and the config file (`RSTREAM_CONFIG`, default `~/.rstream/config.yaml`).
    pub fn from_env() -> Self {
        ClientOptions {
            env: EnvSource::Process,
            ..Self::default()
        }
    }

    /// [`from_env`](Self::from_env), but variables are looked up with
    /// `lookup` instead of the process environment (including `HOME`, for
    /// the default config file path).
    ///
    /// ```
    /// let options = rstream::ClientOptions::from_env_with(|name| match name {
    ///     "RSTREAM_ENGINE" => Some("engine.example.test".to_owned()),
    ///     _ => None,
    /// });
    /// let resolved = options.resolve().unwrap();
    /// assert_eq!(resolved.engine().unwrap().to_string(), "engine.example.test:443");
    /// ```
    pub fn from_env_with(lookup: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> Self {
        ClientOptions {
            env: EnvSource::Custom(Arc::new(lookup)),
            ..Self::default()
        }
    }

    /// The engine address, `host[:port]` (default port 443). An explicit
    /// engine that differs from the selected context's refuses that
    /// context's stored credentials.
    pub fn engine(mut self, engine: impl Into<String>) -> Self {
        self.engine = Some(engine.into());
        self
    }

    /// The agent token, sent when opening control channels and dialing.
    pub fn token(mut self, token: impl Into<Secret>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Never reads or sends a stored token: the code equivalent of a
    /// context's `noToken: true` in the config file. The token stored in
    /// the context (or its environment entry) is ignored; a token passed
    /// with [`token`](Self::token) or `RSTREAM_AUTHENTICATION_TOKEN` still
    /// is sent, as with `noToken`.
    ///
    /// ```
    /// let options = rstream::ClientOptions::new()
    ///     .engine("engine.example.test:443")
    ///     .no_token();
    /// let resolved = options.resolve().unwrap();
    /// assert_eq!(resolved.auth(), rstream::config::AuthKind::None);
    /// ```
    pub fn no_token(mut self) -> Self {
        self.no_token = true;
        self
    }

    /// Application credentials: the client mints its own short-lived app
    /// token (60 s, `metadata.engine` set) for every control-channel
    /// (re)connect, dial and Engine API call, instead of sending a static
    /// token. Without this call and without a token, `RSTREAM_CLIENT_ID` /
    /// `RSTREAM_CLIENT_SECRET` are used when both are set. Combining it
    /// with [`token`](Self::token) or a client certificate fails with
    /// `ERR_RSTREAM_AUTH_CONFLICT`. See `docs/ACCESS_CONTROL.md`.
    pub fn app_credentials(mut self, credentials: crate::auth::AppCredentials) -> Self {
        self.app_credentials = Some(credentials);
        self
    }

    /// The hosted project endpoint: the engine is then resolved through the
    /// control-plane API on first connect (unless an engine is also given).
    pub fn project_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.project_endpoint = Some(endpoint.into());
        self
    }

    /// The region of a managed project (`auto` = no preference). Needs a
    /// project endpoint; cannot be combined with an explicit engine.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// The control-plane API URL (default `https://rstream.io`).
    pub fn api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// Adds a header to control-plane API requests (managed resolution).
    pub fn control_plane_header(
        mut self,
        name: impl Into<String>,
        value: impl Into<String>,
    ) -> Self {
        self.control_plane_headers.push((name.into(), value.into()));
        self
    }

    /// Selects a context of the config file by name.
    pub fn context(mut self, name: impl Into<String>) -> Self {
        self.context = Some(name.into());
        self
    }

    /// Reads this config file (also with [`new`](Self::new), which reads
    /// no file by default). A missing file counts as an empty one.
    pub fn config_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config_file = Some(path.into());
        self.read_config_file = Some(true);
        self
    }

    /// Does not read any config file.
    pub fn no_config_file(mut self) -> Self {
        self.config_file = None;
        self.read_config_file = Some(false);
        self
    }

    /// Connects to the engine through this proxy (overrides the config
    /// file and the proxy environment variables).
    pub fn proxy(mut self, proxy: HttpProxy) -> Self {
        self.proxy = Some(ProxyChoice::Use(proxy));
        self
    }

    /// Reads the proxy from `https_proxy`/`HTTPS_PROXY`/`all_proxy`/
    /// `ALL_PROXY` and `no_proxy`/`NO_PROXY`, as
    /// `transport.proxy.fromEnvironment: true` does in the config file,
    /// when the selected config sets no proxy itself. Without this (or
    /// that key) the proxy variables are not read, as in the Node runtime.
    pub fn proxy_from_environment(mut self) -> Self {
        self.proxy = Some(ProxyChoice::FromEnvironment);
        self
    }

    /// Connects directly, ignoring any configured or environment proxy.
    pub fn no_proxy(mut self) -> Self {
        self.proxy = Some(ProxyChoice::Direct);
        self
    }

    /// TLS settings (extra CAs, client certificate, server name, verification).
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = tls;
        self
    }

    /// Adds a PEM file of extra trust anchors (read when the options are resolved).
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

    /// TCP connect + TLS handshake timeout (default 15 s; must be > 0 and at
    /// most [`MAX_TIMEOUT`], else `ERR_RSTREAM_INVALID_TIMEOUT` at build).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Timeout of each request/response exchange (default 30 s; must be > 0
    /// and at most [`MAX_TIMEOUT`], else `ERR_RSTREAM_INVALID_TIMEOUT` at build).
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

    /// How to reach the engine: [`Transport::Quic`](crate::Transport::Quic)
    /// (feature `quic`: one QUIC connection, each rstream connection a QUIC
    /// stream), [`Transport::Tls`](crate::Transport::Tls), or
    /// [`Transport::Auto`](crate::Transport::Auto) (the default: QUIC
    /// raced against TLS, the winner pinned; TLS behind a proxy or
    /// without the `quic` feature). Beats
    /// `RSTREAM_TUNNEL_TRANSPORT`, `RSTREAM_QUIC_TRANSPORT` and the config
    /// file's `transport.mode` / `useQuic` (docs/QUIC.md). Without the
    /// `quic` feature, quic fails with `ERR_RSTREAM_UNSUPPORTED_TRANSPORT`.
    pub fn transport(mut self, transport: crate::transport::Transport) -> Self {
        self.transport = Some(transport);
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

    /// Resolves and validates every setting: reads the environment and the
    /// config file when enabled, and the CA, certificate and key files.
    /// No network I/O (a managed engine is resolved on first connect).
    pub fn resolve(&self) -> Result<ResolvedOptions> {
        let env = match &self.env {
            EnvSource::None => env::EnvSettings::default(),
            EnvSource::Process => env::EnvSettings::read(&|name| std::env::var(name).ok())?,
            EnvSource::Custom(lookup) => env::EnvSettings::read(&**lookup)?,
        };
        let read_file = self
            .read_config_file
            .unwrap_or(!matches!(self.env, EnvSource::None));
        let (file, file_path) = if read_file {
            let path = self
                .config_file
                .clone()
                .or_else(|| env.config_path.as_ref().map(PathBuf::from))
                .or_else(|| {
                    env.home
                        .as_ref()
                        .map(|h| PathBuf::from(h).join(".rstream").join("config.yaml"))
                });
            match path {
                Some(path) => match read_config_text(&path)? {
                    Some(text) => (
                        file::ConfigFile::parse(&text, &path.display().to_string())?,
                        Some(path),
                    ),
                    None => (None, None),
                },
                None => (None, None),
            }
        } else {
            (None, None)
        };
        let proxy = match &self.proxy {
            None => None,
            Some(ProxyChoice::Use(p)) => Some(Some(p.clone())),
            Some(ProxyChoice::Direct) => Some(None),
            Some(ProxyChoice::FromEnvironment) => None,
        };
        let plan = resolve::resolve(resolve::Inputs {
            options: self,
            proxy,
            proxy_from_env: matches!(self.proxy, Some(ProxyChoice::FromEnvironment)),
            env: &env,
            file: file.as_ref(),
            file_enabled: read_file,
            file_path,
            now: jwt::now(),
        })?;
        plan.load()
    }
}

/// Reads a config file: `None` when it does not exist.
fn read_config_text(path: &std::path::Path) -> Result<Option<String>> {
    let unreadable = |e: std::io::Error| {
        Error::config(
            code::INVALID_CONFIG,
            format!("cannot read config file {}", path.display()),
        )
        .with_source(e)
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(unreadable(e)),
    };
    let mut bytes = Vec::new();
    file.take(file::MAX_CONFIG_FILE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() > file::MAX_CONFIG_FILE_BYTES {
        return Err(Error::config(
            code::INVALID_CONFIG,
            format!(
                "config file {} is larger than {} bytes",
                path.display(),
                file::MAX_CONFIG_FILE_BYTES
            ),
        ));
    }
    String::from_utf8(bytes).map(Some).map_err(|_| {
        Error::config(
            code::INVALID_CONFIG,
            format!("config file {} is not UTF-8", path.display()),
        )
    })
}

/// Checks an API URL (absolute `http(s)://` with a host) and drops trailing
/// slashes; blank is `None`. `what` names the key or variable in errors.
pub(crate) fn normalize_api_url(value: &str, what: &str) -> Result<Option<String>> {
    let v = value.trim();
    if v.is_empty() {
        return Ok(None);
    }
    let invalid = || {
        Error::config(
            code::INVALID_API_URL,
            format!("{what} must be an absolute http(s) URL"),
        )
    };
    let uri: http::Uri = v.parse().map_err(|_| invalid())?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err(invalid()),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid());
    }
    Ok(Some(v.trim_end_matches('/').to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> ClientOptions {
        ClientOptions::from_env_with(move |k| {
            pairs
                .iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        })
    }

    fn engine(r: &ResolvedOptions) -> String {
        r.engine().map(|e| e.to_string()).unwrap_or_default()
    }

    #[test]
    fn env_fills_unset_values_only() {
        let r = env(&[
            ("RSTREAM_ENGINE", "a.test:1"),
            ("RSTREAM_AUTHENTICATION_TOKEN", "tok"),
        ])
        .resolve()
        .unwrap();
        assert_eq!(engine(&r), "a.test:1");
        assert_eq!(r.token().unwrap().0.expose(), "tok");
        assert_eq!(r.engine_source(), Source::Env("RSTREAM_ENGINE"));
        let r = env(&[("RSTREAM_ENGINE", "a.test:1")])
            .engine("b.test")
            .resolve()
            .unwrap();
        assert_eq!(engine(&r), "b.test:443");
        assert_eq!(r.engine_source(), Source::Option);
    }

    #[test]
    fn legacy_variable_and_empty_values() {
        let r = env(&[
            ("RSTREAM_ENGINE", "  "),
            ("RSTREAM_ENGINE_ADDRESS", "legacy.test:8443"),
            ("RSTREAM_AUTHENTICATION_TOKEN", ""),
        ])
        .resolve()
        .unwrap();
        assert_eq!(engine(&r), "legacy.test:8443");
        assert!(r.token().is_none());
    }

    #[test]
    fn new_ignores_environment_and_file() {
        let r = ClientOptions::new().resolve().unwrap();
        assert!(r.engine().is_none());
        assert!(r.config_file().is_none());
        let e = ClientOptions::new().build().unwrap_err();
        assert_eq!(e.code(), code::ENGINE_REQUIRED);
    }

    #[test]
    fn validation() {
        let base = || ClientOptions::new().engine("a.test");
        let code = |o: ClientOptions| o.resolve().unwrap_err().code();
        assert_eq!(
            code(base().operation_timeout(Duration::ZERO)),
            code::INVALID_TIMEOUT
        );
        assert_eq!(
            code(base().heartbeat_interval(Duration::from_millis(999))),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code(base().heartbeat_interval(Duration::from_secs(301))),
            code::INVALID_CONFIG
        );
        assert_eq!(
            code(base().heartbeat_interval(Duration::from_micros(1_000_500))),
            code::INVALID_CONFIG
        );
        assert!(base()
            .heartbeat_interval(Duration::from_secs(300))
            .resolve()
            .is_ok());
        assert_eq!(
            code(ClientOptions::new().engine("https://a.test")),
            code::INVALID_ENGINE
        );
        assert_eq!(
            code(base().ca_file("/nonexistent/ca.pem")),
            code::INVALID_CONFIG
        );
        assert_eq!(code(base().context("dev")), code::CONTEXT_NOT_FOUND);
    }

    #[test]
    fn api_url_normalization() {
        assert_eq!(
            normalize_api_url(" https://x.test/ ", "t")
                .unwrap()
                .as_deref(),
            Some("https://x.test")
        );
        assert_eq!(normalize_api_url(" ", "t").unwrap(), None);
        for bad in ["x.test", "ftp://x.test", "https://", "/relative"] {
            assert_eq!(
                normalize_api_url(bad, "t").unwrap_err().code(),
                code::INVALID_API_URL,
                "{bad}"
            );
        }
    }

    #[test]
    fn redaction() {
        let o = ClientOptions::new()
            .engine("a.test")
            .token("sekret-token")
            .control_plane_header("X-Api-Key", "sekret-header")
            .proxy(HttpProxy::parse("http://u:sekret-pw@proxy.test:3128").unwrap());
        let r = o.resolve().unwrap();
        for text in [format!("{o:?}"), format!("{r:?}"), r.to_string()] {
            assert!(!text.contains("sekret"), "{text}");
        }
        assert!(r.to_string().contains("X-Api-Key"));
        assert!(r.to_string().contains("proxy.test:3128"));
    }
}
