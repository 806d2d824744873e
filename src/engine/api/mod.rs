//! The Engine HTTP API (ENGINE_API.md), served on the engine port to `h2` /
//! `http/1.1` connections as an axum [`Router`]:
//!
//! | route | what |
//! |---|---|
//! | `GET /api/clients`, `/api/tunnels` | the live inventory, `?params=` JSON (`limit`, `filters`) |
//! | `GET /api/clients/{id}`, `/api/tunnels/{id}` | one object, 404 when unknown |
//! | `GET /api/sse`, `/api/websocket` | watch: `state.initial`, then deltas |
//! | `GET /api/auth` | 204 when the token is accepted |
//! | `GET /api/health/live`, `/api/health/ready` | probes (no auth) |
//! | `GET /api/openapi.json` | the OpenAPI 3.1 description of all this (no auth) |
//! | `GET /.well-known/rstream/engine` | mTLS discovery, only when client certificates are enabled (no auth) |
//!
//! Authentication: a connection with a verified client certificate (mTLS
//! engines) is authenticated by it. Otherwise, when the engine has tokens,
//! every route but the probes, the OpenAPI document and discovery needs
//! `Authorization: Bearer <token>` (the watch routes also take the
//! `rstream.token` query fallback): 401 without one, 403 with one the
//! engine does not know. Malformed `params` is a 400 whose text body says
//! why.

#[cfg(feature = "http3")]
pub(crate) mod http3;
mod inventory;
mod openapi;
mod scope;
mod watch;

pub(crate) use inventory::{client_object, tunnel_object};

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use hyper::body::Incoming;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tower::ServiceExt;

use super::admission::Admission;
use super::streams::ServerTls;
use super::Inner;
use crate::http::conn::{ConnAbort, ConnLimits, ConnServer};

/// The shared state of every handler.
type Engine = Arc<Inner>;

/// The Engine API routes (ENGINE_API.md). Unknown paths are 404.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/clients", get(inventory::list_clients))
        .route("/api/clients/{id}", get(inventory::get_client))
        .route("/api/tunnels", get(inventory::list_tunnels))
        .route("/api/tunnels/{id}", get(inventory::get_tunnel))
        .route("/api/sse", get(watch::sse))
        .route("/api/websocket", get(watch::websocket))
        .route("/api/auth", get(auth))
        .route("/api/health/live", get(live))
        .route("/api/health/ready", get(ready))
        .route("/api/openapi.json", get(openapi::document))
        .route("/.well-known/rstream/engine", get(discovery))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            inner.clone(),
            scope::list_scope,
        ))
        .with_state(inner)
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

async fn ready() -> Json<Value> {
    Json(json!({ "status": "ready" }))
}

async fn auth(_: Authorized) -> StatusCode {
    StatusCode::NO_CONTENT
}

/// How long clients may cache the discovery document.
const DISCOVERY_MAX_AGE: &str = "max-age=300";

/// `GET /.well-known/rstream/engine` (ENGINE_API.md §1): where the mTLS
/// API lives — this same port — for the host the client used. Only when
/// the engine accepts client certificates.
async fn discovery(
    axum::extract::State(inner): axum::extract::State<Engine>,
    uri: http::Uri,
    headers: http::HeaderMap,
) -> Response {
    if !inner.config.client_ca_enabled() {
        return not_found().await.into_response();
    }
    let authority = uri.authority().map(|a| a.as_str().to_owned()).or_else(|| {
        headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
    });
    let Some(authority) = authority.filter(|a| {
        !a.is_empty()
            && !a.contains(['@', '/', '\\', '%', '?', '#'])
            && !a.contains(char::is_whitespace)
    }) else {
        return Rejection::bad_request("no usable Host header").into_response();
    };
    let host = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority.as_str(),
    };
    let project = host
        .trim_matches(['[', ']'])
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    (
        [(header::CACHE_CONTROL, DISCOVERY_MAX_AGE)],
        Json(json!({
            "version": 1,
            "projectEndpoint": project,
            "capabilities": ["engine-api-mtls"],
            "mtlsApiUrl": format!("https://{authority}/api"),
        })),
    )
        .into_response()
}

async fn not_found() -> Rejection {
    Rejection::new(StatusCode::NOT_FOUND, "not found")
}

/// A refused request: a status and a plain-text reason.
#[derive(Debug)]
pub(crate) struct Rejection {
    status: StatusCode,
    message: Cow<'static, str>,
}

impl Rejection {
    pub(crate) fn new(status: StatusCode, message: impl Into<Cow<'static, str>>) -> Self {
        Rejection {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<Cow<'static, str>>) -> Self {
        Rejection::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        tracing::debug!(status = %self.status, message = %self.message, "Engine API request refused");
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            self.message.into_owned(),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"rstream-engine\""),
            );
        }
        response
    }
}

/// Extractor: the connection has a verified client certificate, or the
/// request carries a token the engine accepts (or the engine has no
/// tokens). On the watch routes the `rstream.token` query value is
/// accepted too.
pub(crate) struct Authorized;

/// Request extension: the connection's verified client certificate
/// (`sha256:<hex>` fingerprint).
#[derive(Clone, Debug)]
pub(crate) struct VerifiedCertificate(#[allow(dead_code)] pub(crate) String);

impl FromRequestParts<Engine> for Authorized {
    type Rejection = Rejection;

    /// Also admits the connection on the engine port: its first authorized
    /// request moves it under `max_connections` (503 when the engine holds
    /// that many already), so it is no longer subject to the admission
    /// deadline.
    async fn from_request_parts(parts: &mut Parts, inner: &Engine) -> Result<Self, Rejection> {
        if let Some(grant) = authorize(parts, inner)? {
            // The list-scope layer filters and projects what the handler
            // answers (list filters and `select`).
            if let Some(slot) = parts.extensions.get::<scope::GrantSlot>() {
                let _ = slot.0.set(grant);
            }
        }
        if let Some(admission) = parts.extensions.get::<Admission>() {
            admission.establish().map_err(|_| {
                Rejection::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the engine holds its maximum of established connections (max_connections)",
                )
            })?;
        }
        Ok(Authorized)
    }
}

/// The checks of [`Authorized`].
fn authorize(
    parts: &Parts,
    inner: &Engine,
) -> Result<Option<Arc<crate::engine::auth::Grant>>, Rejection> {
    if parts.extensions.get::<VerifiedCertificate>().is_some() {
        return Ok(None);
    }
    let tokens = &inner.config.tokens;
    let apps = &inner.config.apps;
    if tokens.is_empty() && apps.is_empty() {
        return Ok(None);
    }
    let header = match parts.headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or_default();
            match v.split_once(' ') {
                Some((scheme, token))
                    if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
                {
                    Some(token.trim().to_owned())
                }
                _ => {
                    return Err(Rejection::new(
                        StatusCode::UNAUTHORIZED,
                        "malformed Authorization header: expected `Bearer <token>`",
                    ))
                }
            }
        }
    };
    let streaming = matches!(parts.uri.path(), "/api/sse" | "/api/websocket");
    let from_query = header.is_none() && streaming;
    let token = match header {
        Some(t) => Some(t),
        None if streaming => query_value(parts, "rstream.token")?,
        None => None,
    };
    let Some(token) = token else {
        return Err(Rejection::new(
            StatusCode::UNAUTHORIZED,
            "authentication required: send `Authorization: Bearer <token>`",
        ));
    };
    let mut ok = subtle::Choice::from(0);
    for t in tokens {
        ok |= t.as_bytes().ct_eq(token.as_bytes());
    }
    if bool::from(ok) {
        return Ok(None);
    }
    if apps.is_empty() || !token.starts_with("ey") {
        return Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "token not authorized for this engine",
        ));
    }
    // An app token: unusable (bad signature, expired, unknown app) is 401.
    let grant = apps
        .verify(&token, crate::config::jwt::now())
        .map_err(|refusal| Rejection::new(StatusCode::UNAUTHORIZED, refusal.0))?;
    if from_query {
        scope::check_query_token(&grant, crate::config::jwt::now())?;
    }
    scope::check_list_permission(&grant, apps)?;
    Ok(Some(grant))
}

/// One query value (`None` when absent, 400 when repeated or undecodable).
fn query_value(parts: &Parts, name: &str) -> Result<Option<String>, Rejection> {
    let axum::extract::Query(pairs) =
        axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map_err(|e| Rejection::bad_request(format!("malformed query string: {e}")))?;
    let mut found = None;
    for (k, v) in pairs {
        if k == name {
            if found.is_some() {
                return Err(Rejection::bad_request(format!(
                    "query parameter `{name}` given more than once"
                )));
            }
            found = Some(v);
        }
    }
    Ok(found)
}

/// Extractor: the `params` query value, parsed as JSON into `T` (the
/// default when absent). Unknown keys and wrong types are a 400.
pub(crate) struct Params<T>(pub(crate) T);

impl<T> FromRequestParts<Engine> for Params<T>
where
    T: DeserializeOwned + Default + Send,
{
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _: &Engine) -> Result<Self, Rejection> {
        match query_value(parts, "params")? {
            None => Ok(Params(T::default())),
            Some(text) => {
                let invalid =
                    |e: serde_json::Error| Rejection::bad_request(format!("invalid params: {e}"));
                let value: serde_json::Value = serde_json::from_str(&text).map_err(invalid)?;
                if !value.is_object() {
                    return Err(Rejection::bad_request(
                        "invalid params: expected a JSON object",
                    ));
                }
                serde_json::from_value(value).map(Params).map_err(invalid)
            }
        }
    }
}

/// Engine API: time to send a request head, and for a new connection its
/// first complete one (TLS is already done): 10 s, as for `rstrm/1`.
const API_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Engine API: a connection with no request in flight for 60 s is closed
/// (HTTP/1.1 closed, h2 GOAWAY).
const API_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Engine API: a write the peer does not accept for 30 s closes the
/// connection; a watch event (SSE or WebSocket) that cannot be written
/// within 30 s ends the watch.
const API_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Engine API h2 keep-alive: a ping every 30 s…
const API_H2_KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …answered within 20 s, or the connection is dropped.
const API_H2_KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `LocalEngineBuilder::max_watches`: 256 watches per engine.
pub(crate) const DEFAULT_MAX_WATCHES: usize = 256;
/// Watches one connection may hold at once (8); one more is a 429.
const MAX_WATCHES_PER_CONNECTION: usize = 8;

/// The Engine API connection bounds (shortened only by tests).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ApiTimeouts {
    pub(crate) head: Duration,
    pub(crate) idle: Duration,
    pub(crate) write: Duration,
}

impl Default for ApiTimeouts {
    fn default() -> Self {
        ApiTimeouts {
            head: API_HEADER_READ_TIMEOUT,
            idle: API_IDLE_TIMEOUT,
            write: API_WRITE_TIMEOUT,
        }
    }
}

/// What every Engine API connection shares: the connection server and the
/// engine-wide watch slots.
pub(crate) struct ApiShared {
    server: ConnServer,
    pub(super) watches: watch::WatchSlots,
    pub(super) write_timeout: Duration,
}

impl ApiShared {
    pub(crate) fn new(max_watches: usize, timeouts: ApiTimeouts) -> Self {
        let limits = ConnLimits {
            header_read_timeout: timeouts.head,
            idle_timeout: timeouts.idle,
            write_timeout: timeouts.write,
            h2_keep_alive_interval: API_H2_KEEP_ALIVE_INTERVAL,
            h2_keep_alive_timeout: API_H2_KEEP_ALIVE_TIMEOUT,
        };
        ApiShared {
            // WebSocket over h2 (RFC 8441), as axum supports it.
            server: ConnServer::new(limits, true),
            watches: watch::WatchSlots::new(
                max_watches,
                "the engine",
                "LocalEngineBuilder::max_watches",
            ),
            write_timeout: timeouts.write,
        }
    }
}

/// Serves one API connection (HTTP/1.1 or h2, upgrades allowed), with the
/// bounds of [`ApiTimeouts`].
pub(crate) async fn serve(
    inner: Arc<Inner>,
    tls: ServerTls,
    peer: SocketAddr,
    admission: Admission,
) {
    let router = router(inner.clone());
    let certificate = super::control::peer_certificate(&tls)
        .map(|leaf| VerifiedCertificate(super::certs::client_identity(leaf).0));
    let connection_watches = watch::WatchSlots::new(
        MAX_WATCHES_PER_CONNECTION,
        "this connection",
        "8 per connection",
    );
    let abort = ConnAbort::new();
    let abort_handle = abort.clone();
    // Per-connection request extensions, added to every request.
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        let router = router.clone();
        let extensions = req.extensions_mut();
        if let Some(c) = &certificate {
            extensions.insert(c.clone());
        }
        extensions.insert(connection_watches.clone());
        extensions.insert(abort_handle.clone());
        extensions.insert(admission.clone());
        async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    tracing::trace!(%peer, "Engine API connection");
    inner
        .api
        .server
        .serve(tls, service, std::future::pending(), abort, "Engine API")
        .await;
}
