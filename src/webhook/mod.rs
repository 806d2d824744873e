//! Signed webhook deliveries: sign, verify, and a tower middleware.
//!
//! rstream POSTs a JSON event to your endpoint with five headers:
//! `rstream-signature`, `rstream-event-id`, `rstream-event-type`,
//! `rstream-webhook-id` and `rstream-delivery-id`. The signature header reads
//! `t=<unix seconds>,v1=<hex>`: the lowercase hex HMAC-SHA256, keyed with the
//! signing secret (the whole `whsec_…` string), of `"<t>."` followed by the
//! raw body. During secret rotation several `v1` entries may be present; any
//! match passes.
//!
//! A receiver checks, in this order:
//!
//! 1. the header is present and well formed (else 400),
//! 2. `t` is within the tolerance of now, 300 s by default, in either
//!    direction (else 401),
//! 3. a `v1` matches, compared in constant time (else 401),
//! 4. the body is a valid event (else 400).
//!
//! # Verifying by hand
//!
//! [`verify`] works on any server: give it the raw body bytes (before any
//! JSON parsing, which would change them) and the header value.
//!
//! ```
//! use rstream::webhook::{sign, verify, VerifyOptions, WebhookSecret};
//!
//! let secret = WebhookSecret::generate();
//! let body = br#"{"id":"evt_1","type":"tunnel.created","object":{"id":"t1"}}"#;
//! let header = sign(body, &secret, 1_700_000_000);
//!
//! let event = verify(body, &header, &secret, &VerifyOptions::new().now(1_700_000_000))?;
//! assert_eq!(event.id(), "evt_1");
//!
//! // Five minutes late still passes; one second more does not.
//! assert!(verify(body, &header, &secret, &VerifyOptions::new().now(1_700_000_300)).is_ok());
//! assert!(verify(body, &header, &secret, &VerifyOptions::new().now(1_700_000_301)).is_err());
//! # Ok::<(), rstream::Error>(())
//! ```
//!
//! [`verify_request`] makes the same decision as the middleware from a
//! [`HeaderMap`](http::HeaderMap) and reports it as a [`WebhookRejection`]
//! with its HTTP status.
//!
//! # The middleware
//!
//! [`WebhookLayer`] reads the body through
//! [`http_body_util::Limited`] (1 MiB by default), verifies it, and passes
//! the request on with the identical bytes as a `Full<Bytes>` body and the
//! [`WebhookEvent`] in the request extensions (axum handlers take it with
//! the [`VerifiedWebhook`] extractor). Refused requests never reach the
//! inner service:
//!
//! | problem | status |
//! |---|---|
//! | missing or malformed `rstream-signature` | 400 |
//! | timestamp outside tolerance, or no matching signature | 401 |
//! | body is not a valid event | 400 |
//! | body over the limit (checked on `Content-Length` first) | 413 |
//!
//! The header, timestamp and `Content-Length` are checked before any body
//! byte is read.
//!
//! ```
//! use std::convert::Infallible;
//!
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt as _, Full};
//! use rstream::webhook::{sign, WebhookEvent, WebhookLayer, WebhookSecret};
//! use tower::{ServiceBuilder, ServiceExt as _};
//!
//! async fn handle(req: Request<Full<Bytes>>) -> Result<Response<Full<Bytes>>, Infallible> {
//!     let event = req.extensions().get::<WebhookEvent>().cloned();
//!     let id = event.map(|e| e.id().to_owned()).unwrap_or_default();
//!     Ok(Response::new(Full::new(Bytes::from(id))))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secret = WebhookSecret::generate();
//! let service = ServiceBuilder::new()
//!     .layer(WebhookLayer::new(secret.clone()))
//!     .service_fn(handle);
//!
//! let body = r#"{"id":"evt_1","type":"client.created","object":{}}"#;
//! let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
//! let signed = Request::post("/")
//!     .header("rstream-signature", sign(body, &secret, now))
//!     .body(Full::new(Bytes::from(body)))?;
//! let response = service.clone().oneshot(signed).await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(response.into_body().collect().await?.to_bytes(), "evt_1");
//!
//! let unsigned = Request::post("/").body(Full::new(Bytes::from(body)))?;
//! let response = service.oneshot(unsigned).await?;
//! assert_eq!(response.status(), StatusCode::BAD_REQUEST);
//! # Ok(())
//! # }
//! ```
//!
//! # Secrets and rotation
//!
//! [`WebhookSecret`] never prints its value (`Debug` is redacted) and no
//! error or log line contains it. To rotate, have the receiver accept both
//! secrets ([`WebhookLayer::add_secret`], [`verify_with_secrets`]), switch
//! the sender, then drop the old one. Senders may also sign with both
//! ([`SignatureHeader::and_sign`]).

mod event;
#[cfg(feature = "axum")]
mod extract;
mod layer;
mod rejection;
mod secret;
mod signature;

pub use event::{WebhookEvent, WebhookEventType};
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use extract::{MissingWebhookEvent, VerifiedWebhook};
pub use layer::{
    RejectionHandler, ResponseFuture, Webhook, WebhookBody, WebhookLayer, DEFAULT_MAX_BODY_SIZE,
};
pub use rejection::{RejectionKind, WebhookRejection};
pub use secret::{generate_signing_secret, WebhookSecret, SECRET_PREFIX};
pub use signature::{
    build_headers, sign, verify, verify_request, verify_with_secrets, SignatureHeader,
    VerifyOptions, DEFAULT_TOLERANCE, DELIVERY_ID_HEADER, EVENT_ID_HEADER, EVENT_TYPE_HEADER,
    SIGNATURE_HEADER, WEBHOOK_ID_HEADER,
};
