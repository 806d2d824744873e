//! The Engine API's HTTP client: hyper-util's pooled client over the
//! crate's one [`HttpsConnector`] (ALPN `h2`, then `http/1.1`; the
//! client's proxy — HTTP CONNECT, HTTPS or SOCKS5 — if any), and with
//! feature `http3` in `quic`/`auto` transport mode an HTTP/3 client beside
//! it (`transport::h3_client`), chosen per request: HTTP/3 unless an auto
//! client's HTTP/3 handshake failed once. Redirects are never followed (the
//! legacy client does not), the response body is bounded, and a body-less
//! GET is retried once after a transport error (never after an HTTP
//! status).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::error::{code, BoxError, Error, ErrorKind, Result};
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

/// A response body of the Engine API client, whichever HTTP version
/// carried it. (A concrete enum, not a boxed `dyn Body`: rustc cannot
/// prove a boxed trait object `Send` for every lifetime inside the watch
/// task's future.)
pub(crate) enum ApiBody {
    /// h2 or http/1.1, from the hyper pool.
    Hyper(Incoming),
    /// HTTP/3 (feature `http3`); boxed, its request stream is large.
    #[cfg(feature = "http3")]
    H3(Box<crate::transport::h3_client::ResponseBody>),
}

impl http_body::Body for ApiBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ApiBody::Hyper(b) => std::pin::Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            #[cfg(feature = "http3")]
            ApiBody::H3(b) => std::pin::Pin::new(b.as_mut()).poll_frame(cx),
        }
    }
}

/// The pooled HTTP client of one API handle.
#[derive(Clone)]
pub(crate) struct HttpClient {
    pool: hyper_util::client::legacy::Client<HttpsConnector, Empty<Bytes>>,
    pub(crate) connector: HttpsConnector,
    /// HTTP/3 first (feature `http3`, `quic`/`auto` transport).
    #[cfg(feature = "http3")]
    h3: Option<Arc<crate::transport::h3_client::H3Client>>,
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
        HttpClient {
            pool,
            connector,
            #[cfg(feature = "http3")]
            h3: None,
        }
    }

    /// Sends requests over HTTP/3 first (see [`H3Mode`](crate::transport::h3_client::H3Mode)).
    #[cfg(feature = "http3")]
    pub(crate) fn with_h3(mut self, h3: crate::transport::h3_client::H3Client) -> Self {
        self.h3 = Some(Arc::new(h3));
        self
    }

    /// Sends a body-less GET and returns the response head and body
    /// stream. A transport error is retried once; an HTTP status never.
    pub(crate) async fn get(
        &self,
        url: &str,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Response<ApiBody>> {
        let uri: Uri = url.parse().map_err(|_| {
            Error::config(
                code::INVALID_ENGINE,
                format!("cannot form an Engine API URL for {path}"),
            )
        })?;
        #[cfg(feature = "http3")]
        if let Some(h3) = &self.h3 {
            if h3.in_use() {
                if let Some(response) = self.get_h3(h3, &uri, path, headers).await? {
                    return Ok(response);
                }
            }
        }
        let mut attempt = 0;
        loop {
            let mut request = Request::builder()
                .method(Method::GET)
                .uri(uri.clone())
                .body(Empty::new())
                .map_err(|e| Error::new(ErrorKind::Http, code::ENGINE_API_HTTP, e.to_string()))?;
            *request.headers_mut() = headers.clone();
            match self.pool.request(request).await {
                Ok(response) => return Ok(response.map(ApiBody::Hyper)),
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

#[cfg(feature = "http3")]
impl HttpClient {
    /// The GET over HTTP/3: the response, or `None` when an auto client's
    /// handshake failed just now (it uses TCP from now on). A transport
    /// error after the handshake is retried once, as over TCP.
    async fn get_h3(
        &self,
        h3: &crate::transport::h3_client::H3Client,
        uri: &Uri,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Response<ApiBody>>> {
        use crate::transport::h3_client::{H3Error, H3Mode};
        let sni = match (uri.host(), uri.port_u16()) {
            (Some(host), port) => {
                let authority = crate::transport::https::authority(host, port.unwrap_or(443));
                self.connector
                    .server_name_for(&authority)
                    .unwrap_or_else(|| host.trim_matches(['[', ']']).to_owned())
            }
            _ => String::new(),
        };
        let mut attempt = 0;
        loop {
            match h3.get(uri, &sni, headers).await {
                Ok(response) => return Ok(Some(response.map(|b| ApiBody::H3(Box::new(b))))),
                Err(H3Error::Handshake(error)) if h3.mode() == H3Mode::First => {
                    tracing::debug!(%error, path, "Engine API: no HTTP/3; using h2/http1.1 over TCP from now on");
                    h3.fall_back();
                    return Ok(None);
                }
                Err(H3Error::Handshake(error)) => return Err(error),
                Err(H3Error::Request(error)) => {
                    if attempt > 0 || !error.is_transient() {
                        return Err(error);
                    }
                    tracing::debug!(%error, path, "Engine API HTTP/3 transport error; retrying once");
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
pub(crate) async fn read_body(body: ApiBody, max: usize, path: &str) -> Result<Bytes> {
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
