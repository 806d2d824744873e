//! Why a webhook delivery was refused, as an HTTP answer.

use std::fmt;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;

use crate::error::{code, Error, ErrorKind};

/// The category of a [`WebhookRejection`]. New kinds may be added.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RejectionKind {
    /// No `rstream-signature` header, or an empty one (400).
    MissingSignature,
    /// The signature header could not be parsed: no `t=`, no `v1=`, a
    /// non-digit timestamp or a non-text value (400).
    MalformedSignature,
    /// The signed timestamp is further from now than the tolerance (401).
    TimestampOutOfTolerance,
    /// No `v1` signature matches any accepted secret (401).
    SignatureMismatch,
    /// The signature is valid but the body is not a valid event (400).
    InvalidPayload,
    /// The body is larger than the configured limit (413).
    PayloadTooLarge,
    /// The request body could not be read (400).
    BodyRead,
}

impl RejectionKind {
    /// The HTTP status sent for this kind of rejection.
    pub fn status(self) -> StatusCode {
        match self {
            RejectionKind::MissingSignature
            | RejectionKind::MalformedSignature
            | RejectionKind::InvalidPayload
            | RejectionKind::BodyRead => StatusCode::BAD_REQUEST,
            RejectionKind::TimestampOutOfTolerance | RejectionKind::SignatureMismatch => {
                StatusCode::UNAUTHORIZED
            }
            RejectionKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The stable error code: `ERR_RSTREAM_WEBHOOK_SIGNATURE` for header
    /// and signature failures, `ERR_RSTREAM_WEBHOOK_PAYLOAD` for body ones.
    pub fn code(self) -> &'static str {
        match self {
            RejectionKind::MissingSignature
            | RejectionKind::MalformedSignature
            | RejectionKind::TimestampOutOfTolerance
            | RejectionKind::SignatureMismatch => code::WEBHOOK_SIGNATURE,
            RejectionKind::InvalidPayload
            | RejectionKind::PayloadTooLarge
            | RejectionKind::BodyRead => code::WEBHOOK_PAYLOAD,
        }
    }
}

/// A refused webhook delivery: what [`WebhookLayer`](super::WebhookLayer)
/// answers and [`verify_request`](super::verify_request) returns.
///
/// | kind | status |
/// |---|---|
/// | missing or malformed `rstream-signature` | 400 |
/// | timestamp outside tolerance, no matching signature | 401 |
/// | invalid payload (checked only once the signature passed) | 400 |
/// | body over the size limit | 413 |
///
/// The text ([`body_text`](Self::body_text), `Display`) is short, fixed and
/// never contains secret material or request data. It converts into the
/// crate's [`Error`] (kind [`ErrorKind::Webhook`]) with the same
/// [`code`](Self::code).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookRejection {
    kind: RejectionKind,
    text: &'static str,
}

impl WebhookRejection {
    pub(crate) const fn new(kind: RejectionKind, text: &'static str) -> Self {
        WebhookRejection { kind, text }
    }

    pub(crate) const fn missing() -> Self {
        Self::new(
            RejectionKind::MissingSignature,
            "missing rstream-signature header",
        )
    }

    pub(crate) const fn malformed(text: &'static str) -> Self {
        Self::new(RejectionKind::MalformedSignature, text)
    }

    pub(crate) const fn stale() -> Self {
        Self::new(
            RejectionKind::TimestampOutOfTolerance,
            "webhook timestamp outside tolerance",
        )
    }

    pub(crate) const fn mismatch() -> Self {
        Self::new(
            RejectionKind::SignatureMismatch,
            "webhook signature verification failed",
        )
    }

    pub(crate) const fn payload(text: &'static str) -> Self {
        Self::new(RejectionKind::InvalidPayload, text)
    }

    pub(crate) const fn too_large() -> Self {
        Self::new(RejectionKind::PayloadTooLarge, "webhook payload too large")
    }

    pub(crate) const fn body_read() -> Self {
        Self::new(RejectionKind::BodyRead, "failed to read webhook body")
    }

    /// The category of the rejection.
    pub fn kind(&self) -> RejectionKind {
        self.kind
    }

    /// The HTTP status: 400, 401 or 413 (see the table above).
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }

    /// The stable error code, e.g. `"ERR_RSTREAM_WEBHOOK_SIGNATURE"`.
    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    /// The short `text/plain` reason sent as the response body.
    pub fn body_text(&self) -> &'static str {
        self.text
    }

    /// The default response: [`status`](Self::status), a
    /// `text/plain; charset=utf-8` content type and
    /// [`body_text`](Self::body_text) as the body.
    pub fn to_response(&self) -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::from_static(self.text.as_bytes())));
        *res.status_mut() = self.status();
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
}

impl fmt::Display for WebhookRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text)
    }
}

impl std::error::Error for WebhookRejection {}

impl From<WebhookRejection> for Error {
    fn from(rejection: WebhookRejection) -> Self {
        Error::new(ErrorKind::Webhook, rejection.code(), rejection.text)
    }
}

#[cfg(feature = "axum")]
impl axum::response::IntoResponse for WebhookRejection {
    fn into_response(self) -> axum::response::Response {
        tracing::trace!(
            target: "rstream::webhook",
            status = self.status().as_u16(),
            code = self.code(),
            reason = self.text,
            "rejecting webhook"
        );
        (
            self.status(),
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            )],
            self.text,
        )
            .into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_codes() {
        assert_eq!(WebhookRejection::missing().status(), 400);
        assert_eq!(WebhookRejection::malformed("x").status(), 400);
        assert_eq!(WebhookRejection::stale().status(), 401);
        assert_eq!(WebhookRejection::mismatch().status(), 401);
        assert_eq!(WebhookRejection::payload("x").status(), 400);
        assert_eq!(WebhookRejection::too_large().status(), 413);
        assert_eq!(WebhookRejection::mismatch().code(), code::WEBHOOK_SIGNATURE);
        assert_eq!(WebhookRejection::payload("x").code(), code::WEBHOOK_PAYLOAD);
        let err: Error = WebhookRejection::stale().into();
        assert_eq!(err.kind(), ErrorKind::Webhook);
        assert_eq!(err.code(), code::WEBHOOK_SIGNATURE);
    }
}
