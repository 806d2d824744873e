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

mod inventory;
mod openapi;
mod watch;

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;
use tower::ServiceExt;

use super::admission::Admission;
use super::streams::ServerTls;
use super::Inner;

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
        authorize(parts, inner)?;
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
fn authorize(parts: &Parts, inner: &Engine) -> Result<(), Rejection> {
    if parts.extensions.get::<VerifiedCertificate>().is_some() {
        return Ok(());
    }
    let tokens = &inner.config.tokens;
    if tokens.is_empty() {
        return Ok(());
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
        Ok(())
    } else {
        Err(Rejection::new(
            StatusCode::FORBIDDEN,
            "token not authorized for this engine",
        ))
    }
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

/// Serves one API connection (HTTP/1.1 or h2, upgrades allowed).
pub(crate) async fn serve(
    inner: Arc<Inner>,
    tls: ServerTls,
    peer: SocketAddr,
    admission: Admission,
) {
    let router = router(inner);
    let certificate = super::control::peer_certificate(&tls)
        .map(|leaf| VerifiedCertificate(super::certs::client_identity(leaf).0));
    let service = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
        let router = router.clone();
        if let Some(c) = &certificate {
            req.extensions_mut().insert(c.clone());
        }
        req.extensions_mut().insert(admission.clone());
        async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // WebSocket over h2 (RFC 8441), as axum supports it.
    builder.http2().enable_connect_protocol();
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "Engine API connection ended with an error");
    }
}
