//! [`LocalEngineBuilder`]: the engine's settings, validated and turned
//! into a running [`LocalEngine`] by [`start`](LocalEngineBuilder::start).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;

use super::{
    admission, api, auth, certs, datagram, events, limits, listener, state, tasks, webhooks,
    Config, Inner, LocalEngine,
};
use crate::error::{code, Error, Result};

/// Default bound on established connections held at once on the engine port.
const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default bound on unauthenticated connections held at once on the engine
/// port.
const DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS: usize = 512;
/// Default admission deadline on the engine port.
const DEFAULT_ADMISSION_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest admission deadline [`LocalEngineBuilder::admission_timeout`]
/// accepts.
const MAX_ADMISSION_TIMEOUT: Duration = Duration::from_secs(300);
/// Default bound on downstream connections held at once by all published
/// endpoints together.
const DEFAULT_MAX_PUBLISHED_CONNECTIONS: usize = 4096;

/// Builds and starts a [`LocalEngine`]. See the [module docs](super).
///
/// `Debug` redacts the agent tokens and webhook secrets.
#[derive(Clone)]
#[must_use = "a LocalEngineBuilder does nothing until `start()` is awaited"]
pub struct LocalEngineBuilder {
    listen: SocketAddr,
    state_dir: Option<PathBuf>,
    tokens: Vec<String>,
    apps: Vec<(String, crate::auth::AppPublicKey)>,
    project_id: Option<String>,
    liveness_timeout: Option<Duration>,
    max_tunnels_per_client: usize,
    max_pending_streams: usize,
    max_connections: usize,
    max_unauthenticated_connections: usize,
    admission_timeout: Duration,
    max_published_connections: usize,
    webhooks: Vec<(String, crate::webhook::WebhookSecret)>,
    client_cas: Vec<ClientCaSource>,
    edge_client_cas: Vec<ClientCaSource>,
    require_client_certificate: bool,
    max_watches: usize,
    api_timeouts: api::ApiTimeouts,
    datagram_idle_timeout: Duration,
    max_datagram_channels: usize,
    #[cfg(feature = "dtls")]
    dtls_handshake_timeout: Duration,
}

impl std::fmt::Debug for LocalEngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// The number of secrets, never their text.
        struct Redacted(usize);
        impl std::fmt::Debug for Redacted {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "[<redacted>; {}]", self.0)
            }
        }
        let webhook_urls: Vec<&str> = self.webhooks.iter().map(|(url, _)| url.as_str()).collect();
        let mut d = f.debug_struct("LocalEngineBuilder");
        d.field("listen", &self.listen)
            .field("state_dir", &self.state_dir)
            .field("tokens", &Redacted(self.tokens.len()))
            .field(
                "apps",
                &self
                    .apps
                    .iter()
                    .map(|(id, _)| id.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("project_id", &self.project_id)
            .field("liveness_timeout", &self.liveness_timeout)
            .field("max_tunnels_per_client", &self.max_tunnels_per_client)
            .field("max_pending_streams", &self.max_pending_streams)
            .field("max_connections", &self.max_connections)
            .field(
                "max_unauthenticated_connections",
                &self.max_unauthenticated_connections,
            )
            .field("admission_timeout", &self.admission_timeout)
            .field("max_published_connections", &self.max_published_connections)
            .field("max_watches", &self.max_watches)
            .field("datagram_idle_timeout", &self.datagram_idle_timeout)
            .field("max_datagram_channels", &self.max_datagram_channels);
        #[cfg(feature = "dtls")]
        d.field("dtls_handshake_timeout", &self.dtls_handshake_timeout);
        d.field("webhook_urls", &webhook_urls)
            .field("webhook_secrets", &Redacted(self.webhooks.len()))
            .field("client_cas", &self.client_cas)
            .field("edge_client_cas", &self.edge_client_cas)
            .field(
                "require_client_certificate",
                &self.require_client_certificate,
            )
            .finish()
    }
}

/// Reads the CA bundles of `sources` (`None` when there are none).
fn load_cas(
    sources: &[ClientCaSource],
    what: &str,
    required: bool,
) -> Result<Option<certs::ClientCa>> {
    if sources.is_empty() {
        return Ok(None);
    }
    let mut pems = Vec::with_capacity(sources.len());
    for source in sources {
        pems.push(match source {
            ClientCaSource::Pem(pem) => (format!("{what} PEM"), pem.clone()),
            ClientCaSource::File(path) => (
                path.display().to_string(),
                std::fs::read(path)
                    .map_err(|e| Error::io(format!("reading {what} {}", path.display()), e))?,
            ),
        });
    }
    certs::ClientCa::from_pems(
        pems.iter()
            .map(|(what, pem)| (what.as_str(), pem.as_slice())),
        required,
    )
    .map(Some)
}

/// Where a trusted client CA comes from (read by `start`).
#[derive(Clone, Debug)]
enum ClientCaSource {
    Pem(Vec<u8>),
    File(PathBuf),
}

impl Default for LocalEngineBuilder {
    fn default() -> Self {
        LocalEngineBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            state_dir: None,
            tokens: Vec::new(),
            apps: Vec::new(),
            project_id: None,
            liveness_timeout: None,
            max_tunnels_per_client: 64,
            max_pending_streams: 256,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_unauthenticated_connections: DEFAULT_MAX_UNAUTHENTICATED_CONNECTIONS,
            admission_timeout: DEFAULT_ADMISSION_TIMEOUT,
            max_published_connections: DEFAULT_MAX_PUBLISHED_CONNECTIONS,
            webhooks: Vec::new(),
            client_cas: Vec::new(),
            edge_client_cas: Vec::new(),
            require_client_certificate: false,
            max_watches: api::DEFAULT_MAX_WATCHES,
            api_timeouts: api::ApiTimeouts::default(),
            datagram_idle_timeout: datagram::DEFAULT_IDLE_TIMEOUT,
            max_datagram_channels: datagram::DEFAULT_MAX_CHANNELS,
            #[cfg(feature = "dtls")]
            dtls_handshake_timeout: super::dtls::DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

impl LocalEngineBuilder {
    /// The address to listen on (default `127.0.0.1:0`, an ephemeral port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Where the engine keeps its CA (`ca.pem`, `ca-key.pem`). Default: a
    /// fresh directory under [`std::env::temp_dir`], left in place after
    /// shutdown. Restarting with the same directory reuses the same CA.
    /// Run one engine per state directory at a time.
    ///
    /// The engine creates a missing directory with mode 0700 (the key file
    /// 0600). On Unix, [`start`](Self::start) refuses
    /// (`ERR_RSTREAM_LOCAL_ENGINE_STATE_DIR`, kind `Config`, naming the
    /// path) a directory not owned by the current user or writable by its
    /// group or others, a `ca-key.pem` not owned by the current user or
    /// accessible to its group or others, and a `ca.pem` not owned by the
    /// current user or writable by others: whoever controls them controls
    /// the CA clients trust. Prefer a per-user path (e.g. under
    /// `$XDG_RUNTIME_DIR` or `~/.rstream/local-engine`) over a shared one
    /// such as `/tmp/rstream`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Adds a static agent token (repeatable). Once any token is
    /// configured, control channels and private dials must present one of
    /// them, or get `UNAUTHORIZED`. Without tokens, everyone is admitted.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.tokens.push(token.into());
        self
    }

    /// Registers an application (repeatable): app tokens it mints (ES512,
    /// `type: "app"`, its `clientId`) authenticate agents and Engine API
    /// callers, as static tokens do. Once an application or a token is
    /// configured, anonymous clients are refused. The engine checks the
    /// signature, `exp`/`nbf`/`iat` (60 s leeway), a lifetime of at most
    /// 3600 s, and `metadata.engine` when present. See
    /// `docs/ACCESS_CONTROL.md`.
    pub fn app(
        mut self,
        client_id: impl Into<String>,
        public_key: crate::auth::AppPublicKey,
    ) -> Self {
        self.apps.push((client_id.into(), public_key));
        self
    }

    /// The engine's project id: token resources that target projects must
    /// name it (default: none, so project-targeted leaves never match).
    pub fn project_id(mut self, project_id: impl Into<String>) -> Self {
        self.project_id = Some(project_id.into());
        self
    }

    /// The liveness timeout answered to clients that negotiate heartbeats
    /// (and enforced on them). Default `max(3 × interval, 15 s)`. It is
    /// always clamped into `[interval, 900 s]`, as the protocol requires.
    pub fn liveness_timeout(mut self, timeout: Duration) -> Self {
        self.liveness_timeout = Some(timeout);
        self
    }

    /// How many tunnels one control channel may hold (default 64); one more
    /// is refused with `CAPACITY_EXHAUSTED`.
    pub fn max_tunnels_per_client(mut self, n: usize) -> Self {
        self.max_tunnels_per_client = n;
        self
    }

    /// How many streams per tunnel may wait for their owner's proxy
    /// connection at once (default 256); more downstream connections are
    /// refused (dials get `CAPACITY_EXHAUSTED`).
    pub fn max_pending_streams(mut self, n: usize) -> Self {
        self.max_pending_streams = n;
        self
    }

    /// How many *established* connections the engine port holds at once
    /// (default 4096): control channels and private dials that
    /// authenticated, and Engine HTTP API connections that made one
    /// authorized request, counted from then until closed. Connections
    /// that have not proved anything yet count against
    /// [`max_unauthenticated_connections`](Self::max_unauthenticated_connections)
    /// instead, and proxy connections against what they serve (see
    /// [`max_published_connections`](Self::max_published_connections)).
    /// One more is refused once it authenticates (`CAPACITY_EXHAUSTED` on
    /// the tunnel protocol, 503 on the Engine API) and a `WARN` says so
    /// (at most once per 10 s, with the number refused). Must be at
    /// least 1.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// How many *unauthenticated* connections the engine port holds at
    /// once (default 512): accepted connections still in their TLS
    /// handshake, before their first frame or authorized API request, or
    /// authenticating. When the limit is reached, a new connection closes
    /// the oldest unauthenticated one (so a flood that keeps reconnecting
    /// never keeps an agent out for longer than it takes the flood to
    /// open this many sockets), and a `WARN` says so (at most once per
    /// 10 s, with the number evicted). Each one is also closed when it has
    /// proved nothing within the [admission timeout](Self::admission_timeout).
    /// Must be at least 1.
    pub fn max_unauthenticated_connections(mut self, n: usize) -> Self {
        self.max_unauthenticated_connections = n;
        self
    }

    /// The admission deadline on the engine port (default 10 s, at most
    /// 300 s): counted from accept, a connection must have completed its
    /// TLS handshake, sent its first frame (or request head) and
    /// authenticated within it, or it is closed. What counts: a control
    /// channel or private dial that authenticated (token or client
    /// certificate; without tokens and client CAs, its first valid
    /// frame), a proxy connection that claimed its stream with the right
    /// secret, an Engine API connection whose request passed
    /// authentication (health probes, the OpenAPI document and discovery
    /// need none and do not count). The TLS handshake and the first frame
    /// are also bounded by 10 s each.
    pub fn admission_timeout(mut self, timeout: Duration) -> Self {
        self.admission_timeout = timeout;
        self
    }

    /// How many downstream connections all published endpoints together
    /// hold at once (default 4096), from accept until closed. One more is
    /// closed at once (the tunnel's owner never hears of it), and a `WARN`
    /// says so (at most once per 10 s, with the number refused). A
    /// downstream connection that reaches its owner also has the owner's
    /// proxy connection on the engine port: that one is counted here, with
    /// its downstream, not under [`max_connections`](Self::max_connections),
    /// so held downstreams never lock the owner (or any agent) out. Must
    /// be at least 1.
    pub fn max_published_connections(mut self, n: usize) -> Self {
        self.max_published_connections = n;
        self
    }

    /// Delivers signed webhooks (`client.created`, `tunnel.created`,
    /// `tunnel.deleted`, `client.deleted`) to `url`, an `http://` or
    /// `https://` URL, signed with `secret` (repeatable: one endpoint per
    /// call). `https://` targets are verified against the webpki roots and
    /// the engine's own CA, so an address published through this engine
    /// works. The URL is checked by [`start`](Self::start). See
    /// `docs/WEBHOOKS.md`, "Deliveries from the local engine".
    pub fn webhook(
        mut self,
        url: impl Into<String>,
        secret: crate::webhook::WebhookSecret,
    ) -> Self {
        self.webhooks.push((url.into(), secret));
        self
    }

    /// Trusts the CA certificate(s) of a PEM bundle to issue agent client
    /// certificates (mTLS; repeatable). The engine port then asks every
    /// TLS client for a certificate; one that verifies against these CAs
    /// authenticates the agent without a token (and must not come with
    /// one), and identifies it ([`ClientInfo::identity`](super::ClientInfo::identity)). Connections
    /// without a certificate still use tokens, unless
    /// [`require_client_certificate`](Self::require_client_certificate).
    /// Published `https://` endpoints never ask for client certificates.
    /// See `docs/LOCAL_ENGINE.md`, "mTLS agents".
    pub fn client_ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.client_cas
            .push(ClientCaSource::Pem(pem.as_ref().to_vec()));
        self
    }

    /// Like [`client_ca_pem`](Self::client_ca_pem), read from a PEM file
    /// by [`start`](Self::start).
    pub fn client_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.client_cas.push(ClientCaSource::File(path.into()));
        self
    }

    /// Trusts the CA certificate(s) of a PEM bundle to issue the client
    /// certificates of **downstream users** of published tunnels created
    /// with `mtls_auth = true` (repeatable; separate from
    /// [`client_ca_pem`](Self::client_ca_pem), which authenticates agents).
    /// Such a tunnel's `https://` endpoint then requires a client
    /// certificate chained to one of these CAs and closes every other
    /// connection during the TLS handshake, before the app hears of it.
    /// Without an edge CA, `mtls_auth = true` is refused at tunnel
    /// creation. See `docs/ACCESS_CONTROL.md`.
    pub fn edge_client_ca(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.edge_client_cas
            .push(ClientCaSource::Pem(pem.as_ref().to_vec()));
        self
    }

    /// Like [`edge_client_ca`](Self::edge_client_ca), read from a PEM
    /// file by [`start`](Self::start).
    pub fn edge_client_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.edge_client_cas.push(ClientCaSource::File(path.into()));
        self
    }

    /// With `true`, the engine port refuses every TLS connection without a
    /// client certificate issued by a [client CA](Self::client_ca_pem)
    /// (tokens alone no longer admit anyone; the Engine HTTP API needs a
    /// certificate too). Default `false`. Needs a client CA.
    pub fn require_client_certificate(mut self, required: bool) -> Self {
        self.require_client_certificate = required;
        self
    }

    /// How many Engine API watches (`/api/sse`, `/api/websocket`) the
    /// engine serves at once (default 256); one more is refused with
    /// `429 Too Many Requests`. Each connection also holds at most 8.
    /// Must be at least 1.
    pub fn max_watches(mut self, n: usize) -> Self {
        self.max_watches = n;
        self
    }

    /// How long a channel of a published datagram tunnel (one downstream
    /// UDP source address) lives without a datagram either way (default
    /// 60 s); then its stream to the owner is closed. Must be greater
    /// than zero.
    pub fn datagram_idle_timeout(mut self, timeout: Duration) -> Self {
        self.datagram_idle_timeout = timeout;
        self
    }

    /// How many channels (downstream UDP source addresses) one published
    /// datagram tunnel holds at once (default 1024); datagrams from a new
    /// source beyond that are ignored and counted. Must be at least 1.
    pub fn max_datagram_channels(mut self, n: usize) -> Self {
        self.max_datagram_channels = n;
        self
    }

    /// How long a downstream source of a published `dtls` tunnel has to
    /// complete its DTLS handshake (default 10 s), from its first
    /// ClientHello; then its session is dropped and it holds nothing (the
    /// owner never hears of it). Must be greater than zero and at most
    /// 300 s.
    #[cfg(feature = "dtls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "dtls")))]
    pub fn dtls_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.dtls_handshake_timeout = timeout;
        self
    }

    /// Test knob: the Engine API connection bounds (request head 10 s,
    /// idle 60 s, write 30 s by default), shortened by tests that observe
    /// them.
    #[doc(hidden)]
    pub fn api_timeouts_for_tests(
        mut self,
        head: Duration,
        idle: Duration,
        write: Duration,
    ) -> Self {
        self.api_timeouts = api::ApiTimeouts { head, idle, write };
        self
    }

    /// Creates (or reuses) the CA, binds the port and starts serving.
    ///
    /// Fails on an invalid setting (a blank token, a zero liveness timeout,
    /// a zero connection limit, an admission timeout of zero or above
    /// 300 s, an unreadable or empty client CA, a
    /// required client certificate without a client CA),
    /// an unusable or insecure state directory (see
    /// [`state_dir`](Self::state_dir)), a CA that does not match its key,
    /// or a port that cannot be bound.
    pub async fn start(self) -> Result<LocalEngine> {
        if self.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::config(
                code::INVALID_CONFIG,
                "local engine: agent tokens must not be blank",
            ));
        }
        if self.liveness_timeout == Some(Duration::ZERO) {
            return Err(Error::config(
                code::INVALID_CONFIG,
                "local engine: the liveness timeout must be greater than zero",
            ));
        }
        if self.max_connections == 0
            || self.max_unauthenticated_connections == 0
            || self.max_published_connections == 0
        {
            return Err(Error::config(
                code::INVALID_CONFIG,
                "local engine: max_connections, max_unauthenticated_connections and max_published_connections must be at least 1",
            ));
        }
        if self.admission_timeout.is_zero() || self.admission_timeout > MAX_ADMISSION_TIMEOUT {
            return Err(Error::config(
                code::INVALID_CONFIG,
                "local engine: admission_timeout must be greater than zero and at most 300 s",
            ));
        }
        if self.datagram_idle_timeout.is_zero() || self.max_datagram_channels == 0 {
            return Err(Error::config(
                code::INVALID_CONFIG,
                "local engine: datagram_idle_timeout must be greater than zero and max_datagram_channels at least 1",
            ));
        }
        #[cfg(feature = "dtls")]
        if self.dtls_handshake_timeout.is_zero()
            || self.dtls_handshake_timeout > MAX_ADMISSION_TIMEOUT
        {
            return Err(Error::config(
                code::INVALID_CONFIG,
                "local engine: dtls_handshake_timeout must be greater than zero and at most 300 s",
            ));
        }
        if self.max_watches == 0 {
            return Err(Error::config(
                code::INVALID_CONFIG,
                "local engine: max_watches must be at least 1",
            ));
        }
        if self.require_client_certificate && self.client_cas.is_empty() {
            return Err(Error::config(
                code::INVALID_CONFIG,
                "local engine: require_client_certificate needs a client CA (client_ca_pem / client_ca_file)",
            ));
        }
        let client_ca = load_cas(
            &self.client_cas,
            "client CA",
            self.require_client_certificate,
        )?;
        // Downstream users of mtls_auth tunnels must always present one.
        let edge_ca = load_cas(&self.edge_client_cas, "edge client CA", true)?;
        let webhook_targets = self
            .webhooks
            .into_iter()
            .map(|(url, secret)| webhooks::Target::new(&url, secret))
            .collect::<Result<Vec<_>>>()?;
        let state_dir = match self.state_dir {
            Some(dir) => dir,
            None => std::env::temp_dir().join(format!(
                "rstream-local-engine-{}",
                uuid::Uuid::new_v4().simple()
            )),
        };
        let state_dir = std::path::absolute(&state_dir)
            .map_err(|e| Error::io(format!("resolving {}", state_dir.display()), e))?;
        let tls = certs::EngineTls::load_or_create(&state_dir)?;
        let configs = tls.server_configs(client_ca.as_ref(), edge_ca.as_ref())?;
        let webhooks = webhooks::Webhooks::new(&tls.ca_pem)?;
        #[cfg(feature = "quic")]
        let mut attempt = 0;
        // Without `quic`, one pass.
        #[cfg_attr(not(feature = "quic"), allow(clippy::never_loop))]
        let (listener, local_addr, quic) = loop {
            let listener = TcpListener::bind(self.listen)
                .await
                .map_err(|e| Error::io(format!("local engine: binding {}", self.listen), e))?;
            let local_addr = listener
                .local_addr()
                .map_err(|e| Error::io("local engine: reading the bound address", e))?;
            // The same port over UDP for QUIC.
            #[cfg(feature = "quic")]
            let quic = match bind_quic(&configs.engine, local_addr, self.listen.port() == 0).await {
                Ok(endpoint) => endpoint,
                // An ephemeral TCP port whose UDP twin is taken: another port.
                Err(e) if self.listen.port() == 0 && attempt < 8 => {
                    attempt += 1;
                    tracing::debug!(error = %e, "UDP twin of an ephemeral port is taken; retrying");
                    continue;
                }
                Err(e) => return Err(e),
            };
            #[cfg(not(feature = "quic"))]
            let quic = ();
            break (listener, local_addr, quic);
        };
        #[cfg(not(feature = "quic"))]
        let () = quic;

        let inner = Arc::new(Inner {
            config: Config {
                tokens: self.tokens,
                apps: {
                    let mut apps = auth::Apps {
                        project_id: self.project_id,
                        listen: Some(local_addr),
                        ..auth::Apps::default()
                    };
                    for (id, key) in self.apps {
                        apps.insert(id, key);
                    }
                    apps
                },
                liveness_timeout: self.liveness_timeout,
                max_tunnels_per_client: self.max_tunnels_per_client,
                max_pending_streams: self.max_pending_streams,
                client_ca: client_ca.is_some(),
                require_client_certificate: self.require_client_certificate,
            },
            tls: configs,
            state: Mutex::new(state::State::new(events::Bus::new())),
            tasks: tasks::Tasks::new(),
            admissions: admission::Admissions::new(
                limits::ConnectionLimit::new(
                    self.max_connections,
                    "the engine port (established connections)",
                    "max_connections",
                ),
                self.max_unauthenticated_connections,
                self.admission_timeout,
            ),
            published_connections: limits::ConnectionLimit::new(
                self.max_published_connections,
                "the published endpoints",
                "max_published_connections",
            ),
            api: api::ApiShared::new(self.max_watches, self.api_timeouts),
            datagram: datagram::Settings {
                idle_timeout: self.datagram_idle_timeout,
                max_channels: self.max_datagram_channels,
                ..datagram::Settings::default()
            },
            #[cfg(feature = "dtls")]
            dtls: tls.dtls_server(self.dtls_handshake_timeout)?,
            #[cfg(feature = "quic")]
            quic_streams: std::sync::atomic::AtomicU64::new(0),
            #[cfg(feature = "quic")]
            plane_a_drops: Arc::default(),
            #[cfg(feature = "http3")]
            api_h3_requests: std::sync::atomic::AtomicU64::new(0),
        });
        for target in webhook_targets {
            // Subscribed before the first connection: no event is missed.
            webhooks.start(target, inner.state().subscribe(), &inner.tasks);
        }
        let accept_loop = tokio::spawn(listener::run(inner.clone(), listener));
        #[cfg(feature = "quic")]
        let quic = {
            let run = super::quic::run(inner.clone(), quic.clone(), self.max_connections);
            (quic, tokio::spawn(run))
        };
        tracing::debug!(
            %local_addr,
            state_dir = %state_dir.display(),
            client_ca = inner.config.client_ca_enabled(),
            "local engine listening"
        );
        Ok(LocalEngine {
            inner,
            accept_loop: Some(accept_loop),
            #[cfg(feature = "quic")]
            quic: Some(quic),
            local_addr,
            ca_pem: tls.ca_pem,
            ca_file: tls.ca_file,
            state_dir,
            webhooks,
        })
    }
}

/// Binds the QUIC endpoint on `addr`'s port over UDP. A fixed port may
/// still be held for a moment by an engine that just stopped on it: retried
/// for up to 2 s (an ephemeral one fails at once, and the caller picks
/// another).
#[cfg(feature = "quic")]
async fn bind_quic(
    tls: &rustls::ServerConfig,
    addr: SocketAddr,
    ephemeral: bool,
) -> Result<quinn::Endpoint> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        match super::quic::endpoint(tls, addr) {
            Ok(endpoint) => return Ok(endpoint),
            Err(e) if !ephemeral && tokio::time::Instant::now() < deadline => {
                tracing::debug!(error = %e, "UDP port busy; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
