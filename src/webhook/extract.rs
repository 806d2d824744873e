//! The axum extractor.

use std::convert::Infallible;
use std::fmt;
use std::ops::Deref;

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::response::{IntoResponse, Response};
use http::request::Parts;
use http::{header, HeaderValue, StatusCode};

use super::event::WebhookEvent;

/// The event verified by [`WebhookLayer`](super::WebhookLayer), for axum
/// handlers.
///
/// Taking it in a handler that the layer does not cover is a server bug and
/// answers 500 ([`MissingWebhookEvent`]); use `Option<VerifiedWebhook>` to
/// make it optional.
///
/// ```
/// use axum::{routing::post, Router};
/// use rstream::webhook::{sign, VerifiedWebhook, WebhookLayer, WebhookSecret};
/// use tower::ServiceExt as _;
///
/// async fn handler(VerifiedWebhook(event): VerifiedWebhook) -> String {
///     format!("{} {}", event.event_type(), event.id())
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let secret = WebhookSecret::generate();
/// let app = Router::new()
///     .route("/webhooks/rstream", post(handler))
///     .route_layer(WebhookLayer::new(secret.clone()));
///
/// let body = r#"{"id":"evt_1","type":"tunnel.created","object":{"id":"t1"}}"#;
/// let now = std::time::SystemTime::now()
///     .duration_since(std::time::UNIX_EPOCH)
///     .unwrap()
///     .as_secs();
/// let request = http::Request::post("/webhooks/rstream")
///     .header("rstream-signature", sign(body, &secret, now))
///     .body(axum::body::Body::from(body))
///     .unwrap();
/// let response = app.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 200);
/// # }
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct VerifiedWebhook(pub WebhookEvent);

impl Deref for VerifiedWebhook {
    type Target = WebhookEvent;

    fn deref(&self) -> &WebhookEvent {
        &self.0
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedWebhook {
    type Rejection = MissingWebhookEvent;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<WebhookEvent>()
            .cloned()
            .map(VerifiedWebhook)
            .ok_or(MissingWebhookEvent)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for VerifiedWebhook {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        _state: &S,
    ) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts
            .extensions
            .get::<WebhookEvent>()
            .cloned()
            .map(VerifiedWebhook))
    }
}

/// Rejection of [`VerifiedWebhook`] when the request carries no verified
/// event, i.e. [`WebhookLayer`](super::WebhookLayer) does not cover the
/// route: 500, since this is a server configuration error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MissingWebhookEvent;

impl MissingWebhookEvent {
    /// Always 500.
    pub fn status(&self) -> StatusCode {
        StatusCode::INTERNAL_SERVER_ERROR
    }

    /// The short `text/plain` body.
    pub fn body_text(&self) -> &'static str {
        "no verified webhook event: is WebhookLayer installed on this route?"
    }
}

impl fmt::Display for MissingWebhookEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.body_text())
    }
}

impl std::error::Error for MissingWebhookEvent {}

impl IntoResponse for MissingWebhookEvent {
    fn into_response(self) -> Response {
        tracing::error!(target: "rstream::webhook", "{}", self.body_text());
        (
            self.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            self.body_text(),
        )
            .into_response()
    }
}
