//! The Engine HTTP API: live inventory, real-time watch and health
//! (ENGINE_API.md).
//!
//! [`Client::api`](crate::Client::api) gives an [`EngineApi`] handle that
//! talks to the client's engine (same address, trust anchors, proxy and
//! token):
//!
//! - [`list_tunnels`](EngineApi::list_tunnels) / [`list_clients`](EngineApi::list_clients)
//!   with typed filters ([`TunnelFilters`], [`ClientFilters`]; a label
//!   mapped to `None` matches any value), [`tunnel`](EngineApi::tunnel) /
//!   [`client`](EngineApi::client) by id;
//! - [`watch`](EngineApi::watch): a `Stream` of [`Event`]s over SSE (default)
//!   or WebSocket — `state.initial` first, then `tunnel.*` / `client.*`
//!   deltas — optionally [`resilient`](Watch::resilient) (reconnects with
//!   backoff and starts again from a fresh `state.initial`);
//! - [`LiveInventory`]: the watch folded into an always-current map of
//!   tunnels and clients, readable at any time or observed through a
//!   `tokio::sync::watch` channel;
//! - [`check_auth`](EngineApi::check_auth), [`health`](EngineApi::health).
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use rstream::api::{TunnelFilters, WatchParams};
//!
//! # async fn run() -> rstream::Result<()> {
//! let client = rstream::Client::from_env()?;
//! let api = client.api();
//! for tunnel in api.list_tunnels(TunnelFilters::new().label_any("service")).await? {
//!     println!("{} {:?}", tunnel.id, tunnel.name);
//! }
//! let mut events = api.watch(WatchParams::new()).resilient();
//! while let Some(event) = events.next().await {
//!     let event = event?;
//!     println!("{}", event.event_type);
//! }
//! # Ok(()) }
//! ```
//!
//! HTTP: one pooled hyper-util client per [`Client`](crate::Client) (every
//! [`Client::api`](crate::Client::api) handle shares it; an
//! [`api_with`](crate::Client::api_with) handle has its own), ALPN `h2`
//! then `http/1.1`, no redirects, a 5 s budget per call (not for watches),
//! bounded bodies, one retry of a GET after a transient transport error.
//! Errors keep the method, path, status and body ([`ApiError`]) and have a
//! stable [`code`](crate::Error::code).
//!
//! A client with a TLS client certificate and no token first discovers the
//! API URL at `/.well-known/rstream/engine` (validated, cached per
//! `Cache-Control`), then calls it with its certificate.

mod discovery;
mod filters;
mod http;
mod inventory;
pub(crate) mod models;
mod watch;

use std::sync::Arc;
use std::time::Duration;

use ::http::{Method, StatusCode};
use serde::de::DeserializeOwned;

use crate::config::{ResolvedOptions, Secret};
use crate::error::{code, Error, ErrorKind, Result};

pub use self::http::ApiError;
pub use filters::{
    ClientFilters, ListClientsParams, ListParams, ListTunnelsParams, TunnelFilters, WatchParams,
};
pub use inventory::{InventorySnapshot, LiveInventory};
pub use models::{
    ClientRecord, Event, EventObject, EventType, Health, InitialState, Status, TunnelRecord,
};
pub use watch::{Watch, WatchTransport, DEFAULT_READ_DEADLINE};

use self::http::{headers, read_body, HttpClient};

/// Default budget of one Engine API call.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default cap on a response body (and on one watch event).
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;

/// Settings of an [`EngineApi`] handle.
#[derive(Clone, Debug)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct ApiOptions {
    timeout: Duration,
    max_body: usize,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            timeout: DEFAULT_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

impl ApiOptions {
    /// The defaults: 5 s per call, 8 MiB bodies.
    pub fn new() -> Self {
        Self::default()
    }

    /// The budget of one call (connect, TLS, request, whole body). Watches
    /// use it for their connection and response head only. Clamped to
    /// 1 ms ..= [`MAX_TIMEOUT`](crate::config::MAX_TIMEOUT) (24 hours).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout.clamp(Duration::from_millis(1), crate::config::MAX_TIMEOUT);
        self
    }

    /// The largest response body (and watch event) accepted.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body = bytes.max(1024);
        self
    }
}

/// Which health probe [`EngineApi::health`] calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HealthProbe {
    /// `GET /api/health/live`.
    Live,
    /// `GET /api/health/ready`.
    Ready,
}

/// A handle on the Engine HTTP API of a [`Client`](crate::Client)'s
/// engine. Cheap to clone; clones share one connection pool, and so do all
/// the handles [`Client::api`](crate::Client::api) returns for one client.
/// See the [module docs](self).
#[derive(Clone)]
pub struct EngineApi {
    inner: Arc<Inner>,
}

struct Inner {
    client: crate::Client,
    options: ApiOptions,
    transport: Arc<ApiTransport>,
}

/// The connection pool, TLS settings and discovery cache of Engine API
/// handles. [`Client::api`](crate::Client::api) builds one per client and
/// caches it in the client; it holds no reference back to the client (no
/// reference cycle).
pub(crate) struct ApiTransport {
    /// The pooled client (h2, http/1.1), with the client certificate if any.
    http: Result<HttpClient>,
    /// TLS for WebSocket watches (`http/1.1` only).
    ws_tls: Result<Arc<rustls::ClientConfig>>,
    /// mTLS discovery (anonymous: no client certificate).
    discovery: discovery::Discovery,
}

impl ApiTransport {
    /// A fresh pool for `resolved`'s TLS, proxy and connect timeout. Does
    /// no I/O.
    pub(crate) fn new(resolved: &ResolvedOptions) -> Self {
        let proxy = resolved.proxy.clone();
        let connect_timeout = resolved.connect_timeout;
        let http = resolved
            .tls
            .client_config(&[b"h2", b"http/1.1"])
            .map(|tls| HttpClient::new(tls, proxy.clone(), connect_timeout));
        #[cfg(feature = "http3")]
        let http = http.and_then(|http| with_h3(http, resolved));
        let ws_tls = resolved.tls.client_config(&[b"http/1.1"]);
        let anonymous = crate::transport::TlsOptions {
            identity: None,
            ..resolved.tls.clone()
        };
        let discovery = discovery::Discovery::new(
            anonymous
                .client_config(&[b"h2", b"http/1.1"])
                .map(|tls| HttpClient::new(tls, proxy, connect_timeout)),
        );
        ApiTransport {
            http,
            ws_tls,
            discovery,
        }
    }
}

/// HTTP/3 first in `quic` mode, and in `auto` mode without a proxy (QUIC
/// does not cross an HTTP or SOCKS proxy; `quic` with a proxy is refused
/// when options are resolved). `tls` never uses HTTP/3.
#[cfg(feature = "http3")]
fn with_h3(http: HttpClient, resolved: &ResolvedOptions) -> Result<HttpClient> {
    use crate::transport::h3_client::{H3Client, H3Mode};
    use crate::transport::Transport;
    let mode = match resolved.transport {
        Transport::Quic => H3Mode::Only,
        Transport::Auto if resolved.proxy.is_none() => H3Mode::First,
        _ => return Ok(http),
    };
    let tls = resolved.tls.client_config(&[b"h3"])?;
    let h3 = H3Client::new(tls, resolved.connect_timeout, mode)?;
    Ok(http.with_h3(h3))
}

impl std::fmt::Debug for EngineApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineApi")
            .field("client", &self.inner.client)
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl EngineApi {
    /// What [`Client::api`](crate::Client::api) returns: a handle on the
    /// client's shared connection pool, built on first use.
    pub(crate) fn shared(client: &crate::Client) -> EngineApi {
        let transport = client
            .api_pool()
            .get_or_init(|| Arc::new(ApiTransport::new(client.options())))
            .clone();
        EngineApi::with_transport(client.clone(), ApiOptions::default(), transport)
    }

    /// What [`Client::api_with`](crate::Client::api_with) returns: a handle
    /// with a connection pool of its own.
    pub(crate) fn with_options(client: &crate::Client, options: ApiOptions) -> EngineApi {
        let transport = Arc::new(ApiTransport::new(client.options()));
        EngineApi::with_transport(client.clone(), options, transport)
    }
}

/// Where API calls go and with which credentials.
pub(crate) struct ApiTarget {
    /// `host:port`.
    pub(crate) authority: String,
    pub(crate) token: Option<Secret>,
}

impl EngineApi {
    fn with_transport(
        client: crate::Client,
        options: ApiOptions,
        transport: Arc<ApiTransport>,
    ) -> Self {
        EngineApi {
            inner: Arc::new(Inner {
                client,
                options,
                transport,
            }),
        }
    }

    /// The client this handle belongs to.
    pub fn client_handle(&self) -> &crate::Client {
        &self.inner.client
    }

    pub(crate) fn options(&self) -> &ApiOptions {
        &self.inner.options
    }

    pub(crate) fn http(&self) -> Result<&HttpClient> {
        self.inner.transport.http.as_ref().map_err(Clone::clone)
    }

    pub(crate) fn ws_tls(&self) -> Result<Arc<rustls::ClientConfig>> {
        self.inner.transport.ws_tls.clone()
    }

    /// Resolves where calls go: the engine (with the token), or the mTLS
    /// API URL discovered from it (no token).
    pub(crate) async fn target(&self) -> Result<ApiTarget> {
        let client = &self.inner.client;
        let engine = client.link().engine().await?;
        let options = client.options();
        let http = self.http()?;
        if options.token.is_none() && options.app.is_none() && options.tls.has_client_identity() {
            let authority = self
                .inner
                .transport
                .discovery
                .resolve(engine.endpoint.host(), &engine.endpoint.to_string())
                .await?;
            return Ok(ApiTarget {
                authority,
                token: None,
            });
        }
        let authority = engine.endpoint.to_string();
        http.connector.server_name(&authority, &engine.sni);
        // Per request: app credentials mint a fresh token each time.
        let token = options.bearer(&authority)?;
        Ok(ApiTarget { authority, token })
    }

    /// One GET under the call budget: status and (bounded) body.
    async fn get(&self, path: &str, query: &str) -> Result<(StatusCode, bytes::Bytes)> {
        let target = self.target().await?;
        let http = self.http()?;
        let headers = headers(
            "application/json",
            target.token.as_ref().map(Secret::expose),
        )?;
        let url = format!("https://{}{path}{query}", target.authority);
        let max = self.inner.options.max_body;
        let budget = self.inner.options.timeout;
        let call = async {
            let response = http.get(&url, path, &headers).await?;
            let status = response.status();
            let body = read_body(response.into_body(), max, path).await?;
            Ok::<_, Error>((status, body))
        };
        tokio::time::timeout(budget, call).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                code::ENGINE_API_TIMEOUT,
                format!("engine API GET {path}: no complete answer within {budget:?}"),
            )
        })?
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str, query: &str) -> Result<T> {
        let (status, body) = self.get(path, query).await?;
        if !status.is_success() {
            return Err(ApiError::new(Method::GET, path, status, &body).into_error());
        }
        serde_json::from_slice(&body).map_err(|e| payload_error(path, e))
    }

    /// `GET /api/tunnels`: the live tunnels matching `params` (filters,
    /// limit), oldest first on the local engine.
    pub async fn list_tunnels(
        &self,
        params: impl Into<ListTunnelsParams>,
    ) -> Result<Vec<TunnelRecord>> {
        let params = params.into();
        self.get_json("/api/tunnels", &filters::query(&params))
            .await
    }

    /// `GET /api/clients`: the connected clients matching `params`.
    pub async fn list_clients(
        &self,
        params: impl Into<ListClientsParams>,
    ) -> Result<Vec<ClientRecord>> {
        let params = params.into();
        self.get_json("/api/clients", &filters::query(&params))
            .await
    }

    /// `GET /api/tunnels/{id}`. An unknown id is an error with code
    /// `ERR_RSTREAM_ENGINE_API_NOT_FOUND`.
    pub async fn tunnel(&self, id: &str) -> Result<TunnelRecord> {
        let path = format!("/api/tunnels/{}", path_segment(id)?);
        self.get_json(&path, "").await
    }

    /// `GET /api/clients/{id}`. An unknown id is an error with code
    /// `ERR_RSTREAM_ENGINE_API_NOT_FOUND`.
    pub async fn client(&self, id: &str) -> Result<ClientRecord> {
        let path = format!("/api/clients/{}", path_segment(id)?);
        self.get_json(&path, "").await
    }

    /// `GET /api/auth`: `Ok` when the engine accepts this client's
    /// credentials; an [`ErrorKind::Auth`] error (401 or 403) otherwise.
    pub async fn check_auth(&self) -> Result<()> {
        let (status, body) = self.get("/api/auth", "").await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(ApiError::new(Method::GET, "/api/auth", status, &body).into_error())
        }
    }

    /// A health probe. `Ready` answers `Ok` with status `unavailable` (and
    /// [`Health::is_ok`] false) when the engine says 503 so.
    pub async fn health(&self, probe: HealthProbe) -> Result<Health> {
        let path = match probe {
            HealthProbe::Live => "/api/health/live",
            HealthProbe::Ready => "/api/health/ready",
        };
        let (status, body) = self.get(path, "").await?;
        if status.is_success() || status == StatusCode::SERVICE_UNAVAILABLE {
            if let Ok(health) = serde_json::from_slice::<Health>(&body) {
                return Ok(health);
            }
        }
        if !status.is_success() {
            return Err(ApiError::new(Method::GET, path, status, &body).into_error());
        }
        serde_json::from_slice(&body).map_err(|e| payload_error(path, e))
    }

    /// `GET /api/openapi.json`: the engine's OpenAPI description.
    pub async fn openapi(&self) -> Result<serde_json::Value> {
        self.get_json("/api/openapi.json", "").await
    }

    /// A watch of the tunnels and clients `params` match: a `Stream` of
    /// [`Event`]s, `state.initial` first. Nothing happens until it is
    /// polled. See [`Watch`] for the transport and resilience options.
    pub fn watch(&self, params: WatchParams) -> Watch {
        Watch::new(self.clone(), params)
    }

    /// A [`LiveInventory`] of what `params` match, kept current by a
    /// resilient SSE watch running in the background.
    pub fn live_inventory(&self, params: WatchParams) -> LiveInventory {
        LiveInventory::new(self.watch(params).resilient())
    }
}

/// A decoding error of a 2xx response.
fn payload_error(path: &str, e: serde_json::Error) -> Error {
    Error::new(
        ErrorKind::Protocol,
        code::ENGINE_API_PAYLOAD,
        format!("engine API GET {path}: unexpected response payload: {e}"),
    )
}

/// A non-empty id, percent-encoded as one path segment.
fn path_segment(id: &str) -> Result<String> {
    if id.is_empty() {
        return Err(Error::config(code::INVALID_ID, "the id must not be empty"));
    }
    Ok(crate::percent::encode_component(id))
}
