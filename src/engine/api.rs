//! The Engine HTTP API, served on the engine port to `h2` / `http/1.1`
//! connections. For now: health probes. Grow the [`router`] here.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{json, Value};
use tower::ServiceExt;

use super::streams::ServerTls;
use super::Inner;

/// The Engine API routes (ENGINE_API.md). Unknown paths are 404.
pub(crate) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/api/health/live", get(live))
        .route("/api/health/ready", get(ready))
        .fallback(not_found)
        .with_state(inner)
}

async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

async fn ready() -> Json<Value> {
    Json(json!({ "status": "ready" }))
}

async fn not_found() -> (StatusCode, &'static str) {
    (StatusCode::NOT_FOUND, "not found")
}

/// Serves one API connection (HTTP/1.1 or h2, upgrades allowed).
pub(crate) async fn serve(inner: Arc<Inner>, tls: ServerTls, peer: SocketAddr) {
    let router = router(inner);
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let router = router.clone();
        async move { Ok::<_, Infallible>(router.oneshot(req).await.unwrap_or_else(|e| match e {})) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection_with_upgrades(TokioIo::new(tls), service)
        .await
    {
        tracing::debug!(%peer, error = %e, "Engine API connection ended with an error");
    }
}
