//! The Engine API's HTTP client: hyper-util's pooled client over the
//! crate's one [`HttpsConnector`] (ALPN `h2`, then `http/1.1`; the
//! client's proxy — HTTP CONNECT, HTTPS or SOCKS5 — if any). Redirects are never followed (the legacy client does not), the
//! response body is bounded, and a body-less GET is retried once after a
//! transport error (never after an HTTP status).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{code, Error, ErrorKind, Result};
use crate::transport::https::{connect_error, HttpsConnector, USER_AGENT};
use crate::transport::HttpProxy;

/// A failed Engine API call: the HTTP method, path, status and body text.
///
/// It is the [`source`](std::error::Error::source) of the crate [`Error`]
/// an Engine API call returns for an HTTP status; get it back with
/// [`ApiError::from_error`].
///
/// ```
/// # async fn run(api: rstream::api::EngineApi) {
/// use rstream::api::ApiError;
/// if let Err(e) = api.tunnel("nope").await {
///     if let Some(api_error) = ApiError::from_error(&e) {
///         assert_eq!(api_error.status(), 404);
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct ApiError {
    method: Method,
    path: String,
    status: StatusCode,
    body: String,
}

/// Longest body text kept in an [`ApiError`].
const MAX_ERROR_TEXT: usize = 4096;

impl ApiError {
    /// The request method.
    pub fn method(&self) -> &Method {
        &self.method
    }

    /// The request path (without the query).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The response status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response body as text (trimmed, at most 4 KiB).
    pub fn body(&self) -> &str {
        &self.body
    }

    /// The `ApiError` behind an Engine API [`Error`], if it came from an
    /// HTTP status.
    pub fn from_error(error: &Error) -> Option<&ApiError> {
        std::error::Error::source(error)?.downcast_ref::<ApiError>()
    }

    /// The crate error for this status: a stable code per class
    /// (`ERR_RSTREAM_ENGINE_API_UNAUTHENTICATED` for 401,
    /// `…_FORBIDDEN` 403, `…_NOT_FOUND` 404, `…_BAD_REQUEST` 400,
    /// `…_HTTP` otherwise).
    pub(crate) fn into_error(self) -> Error {
        let (kind, code) = match self.status.as_u16() {
            400 => (ErrorKind::Http, code::ENGINE_API_BAD_REQUEST),
            401 => (ErrorKind::Auth, code::ENGINE_API_UNAUTHENTICATED),
            403 => (ErrorKind::Auth, code::ENGINE_API_FORBIDDEN),
            404 => (ErrorKind::Http, code::ENGINE_API_NOT_FOUND),
            _ => (ErrorKind::Http, code::ENGINE_API_HTTP),
        };
        Error::new(kind, code, self.to_string()).with_source(self)
    }

    pub(crate) fn new(method: Method, path: &str, status: StatusCode, body: &[u8]) -> Self {
        let text = String::from_utf8_lossy(body);
        let mut body: String = text.trim().chars().take(MAX_ERROR_TEXT).collect();
        if body.len() < text.trim().len() {
            body.push('…');
        }
        ApiError {
            method,
            path: path.to_owned(),
            status,
            body,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = if self.body.is_empty() {
            self.status.canonical_reason().unwrap_or("error")
        } else {
            &self.body
        };
        write!(
            f,
            "engine API {} {}: {} ({})",
            self.method,
            self.path,
            text,
            self.status.as_u16()
        )
    }
}

impl std::error::Error for ApiError {}

/// The pooled HTTP client of one API handle.
#[derive(Clone)]
pub(crate) struct HttpClient {
    pool: hyper_util::client::legacy::Client<HttpsConnector, Empty<Bytes>>,
    pub(crate) connector: HttpsConnector,
}

impl HttpClient {
    /// A pool over `tls` (ALPN `h2`, `http/1.1`), through `proxy` if any,
    /// `https://` only.
    pub(crate) fn new(
        tls: Arc<rustls::ClientConfig>,
        proxy: Option<HttpProxy>,
        connect_timeout: Duration,
    ) -> Self {
        let connector = HttpsConnector::new(tls, connect_timeout).proxy(proxy);
        let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector.clone());
        HttpClient { pool, connector }
    }

    /// Sends a body-less GET and returns the response head and body
    /// stream. A transport error is retried once; an HTTP status never.
    pub(crate) async fn get(
        &self,
        url: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Response<Incoming>> {
        let uri: Uri = url.parse().map_err(|_| {
            Error::config(
                code::INVALID_ENGINE,
                format!("cannot form an Engine API URL for {path}"),
            )
        })?;
        let mut attempt = 0;
        loop {
            let mut request = Request::builder()
                .method(Method::GET)
                .uri(uri.clone())
                .body(Empty::new())
                .map_err(|e| Error::new(ErrorKind::Http, code::ENGINE_API_HTTP, e.to_string()))?;
            *request.headers_mut() = headers.clone();
            match self.pool.request(request).await {
                Ok(response) => return Ok(response),
                Err(e) => {
                    let error = transport_error(path, e);
                    if attempt > 0 || !error.is_transient() {
                        return Err(error);
                    }
                    tracing::debug!(%error, path, "Engine API transport error; retrying once");
                    attempt += 1;
                }
            }
        }
    }
}

fn transport_error(path: &str, e: hyper_util::client::legacy::Error) -> Error {
    // The connector's own error (TLS, timeout, proxy…) is the useful one.
    if let Some(inner) = connect_error(&e) {
        return inner;
    }
    Error::new(
        ErrorKind::Io,
        code::ENGINE_API_TRANSPORT,
        format!("engine API GET {path}: {e}"),
    )
    .with_source(e)
}

/// The standard request headers: `Accept`, `User-Agent` and the bearer token.
pub(crate) fn headers(accept: &'static str, token: Option<&str>) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    if let Some(token) = token {
        let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            Error::config(
                code::INVALID_CONFIG,
                "the token contains characters not allowed in an HTTP header",
            )
        })?;
        v.set_sensitive(true);
        headers.insert(header::AUTHORIZATION, v);
    }
    Ok(headers)
}

/// Reads a whole body, at most `max` bytes.
pub(crate) async fn read_body(body: Incoming, max: usize, path: &str) -> Result<Bytes> {
    match Limited::new(body, max).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Error::new(
            ErrorKind::Protocol,
            code::ENGINE_API_BODY_TOO_LARGE,
            format!("engine API GET {path}: response body larger than {max} bytes"),
        )),
        Err(e) => Err(Error::new(
            ErrorKind::Io,
            code::ENGINE_API_TRANSPORT,
            format!("engine API GET {path}: reading the response failed: {e}"),
        )),
    }
}
