//! The one HTTP stack of the control-plane calls (managed resolution and
//! [`ControlPlane`](super::ControlPlane)): the crate's [`HttpsConnector`]
//! (ALPN `h2` or `http/1.1`, the configured proxy), `https://` except for
//! loopback hosts, no redirects (hyper never follows them), bounded bodies,
//! and a deadline on the whole exchange.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Secret;
use crate::error::{code, Error, ErrorKind, Result};
use crate::transport::https::{connect_error, is_loopback, HttpsConnector, PlainHttp, USER_AGENT};
use crate::transport::{HttpProxy, TlsOptions};

/// A pooled HTTP client for one control-plane API URL.
#[derive(Clone)]
pub(crate) struct Http {
    pool: hyper_util::client::legacy::Client<HttpsConnector, Full<Bytes>>,
}

/// A complete answer: status and (bounded) body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

impl Http {
    /// A pool trusting `extra_roots` besides the system/webpki roots,
    /// through `proxy` if any. `connect_timeout` bounds the TCP connect,
    /// proxy and TLS handshakes.
    pub(crate) fn new(
        tls: &TlsOptions,
        proxy: Option<HttpProxy>,
        connect_timeout: Duration,
    ) -> Result<Self> {
        // The API is another service than the engine: same extra trust
        // anchors, but never the engine's client certificate, server-name
        // override or disabled verification.
        let tls = TlsOptions {
            extra_roots: tls.extra_roots.clone(),
            ..TlsOptions::default()
        };
        let connector =
            HttpsConnector::new(tls.client_config(&[b"h2", b"http/1.1"])?, connect_timeout)
                .proxy(proxy)
                .plain_http(PlainHttp::Loopback);
        Ok(Self::with_connector(connector))
    }

    /// A pool over an existing connector (the Engine API's, for the TURN
    /// route on the engine).
    pub(crate) fn with_connector(connector: HttpsConnector) -> Self {
        let pool = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Http { pool }
    }

    /// Sends one request and reads the whole answer, at most
    /// `call.max_body` bytes, all within `call.timeout`. A larger body
    /// fails with `call.codes.too_large`, the deadline with
    /// `call.codes.timeout`, the connection with the connector's own error
    /// (TLS, proxy, connect timeout) or `call.codes.http`.
    pub(crate) async fn send(&self, call: Call<'_>) -> Result<Answer> {
        let Call {
            method,
            uri,
            headers,
            body,
            max_body,
            timeout,
            codes,
            what,
        } = call;
        let authority = uri.authority().map(|a| a.to_string()).unwrap_or_default();
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(h) = request.headers_mut() {
            *h = headers;
            h.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
            h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
            if body.is_some() {
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
            }
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|_| Error::config(code::INVALID_API_URL, "cannot build the API request"))?;
        let exchange = async {
            let response = self.pool.request(request).await.map_err(|e| {
                // The connector's own error (TLS, timeout, proxy…) is the useful one.
                connect_error(&e).unwrap_or_else(|| {
                    Error::new(
                        ErrorKind::Http,
                        codes.http,
                        format!("{what}: the request to {authority} failed: {e}"),
                    )
                    .with_source(e)
                })
            })?;
            let status = response.status();
            let body = Limited::new(response.into_body(), max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Error::new(
                            ErrorKind::Protocol,
                            codes.too_large,
                            format!("{what}: response body larger than {max_body} bytes"),
                        )
                    } else {
                        Error::new(
                            ErrorKind::Http,
                            codes.http,
                            format!("{what}: reading the response from {authority} failed: {e}"),
                        )
                    }
                })?
                .to_bytes();
            Ok::<_, Error>(Answer { status, body })
        };
        tokio::time::timeout(timeout, exchange).await.map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                codes.timeout,
                format!("{what}: no complete answer within {timeout:?}"),
            )
        })?
    }
}

/// The error codes a call reports.
#[derive(Clone, Copy)]
pub(crate) struct Codes {
    pub(crate) http: &'static str,
    pub(crate) too_large: &'static str,
    pub(crate) timeout: &'static str,
}

/// One request.
pub(crate) struct Call<'a> {
    pub(crate) method: Method,
    pub(crate) uri: Uri,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Vec<u8>>,
    pub(crate) max_body: usize,
    pub(crate) timeout: Duration,
    pub(crate) codes: Codes,
    /// For messages: `"GET /api/whoami"`.
    pub(crate) what: &'a str,
}

/// Checks the API URL (https, or http to a loopback host; no userinfo) and
/// returns it without its trailing `/`.
pub(crate) fn check_api_url(url: &str) -> Result<String> {
    let base = url.trim().trim_end_matches('/').to_owned();
    let bad = |m: &str| Error::config(code::INVALID_API_URL, m.to_owned());
    let uri: Uri = base
        .parse()
        .map_err(|_| bad("the API URL is not a valid URL"))?;
    let host = uri.host().ok_or_else(|| bad("the API URL has no host"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        _ => {
            return Err(bad(
                "the API URL must use https:// (http:// is allowed only for loopback hosts)",
            ))
        }
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad(
            "the API URL must not contain credentials (use a token or control-plane headers)",
        ));
    }
    if uri.query().is_some() {
        return Err(bad("the API URL must not have a query"));
    }
    Ok(base)
}

/// `base` + `path` (+ `?query`) as a request URI.
pub(crate) fn request_uri(base: &str, path: &str, query: &str) -> Result<Uri> {
    let url = if query.is_empty() {
        format!("{base}{path}")
    } else {
        format!("{base}{path}?{query}")
    };
    url.parse().map_err(|_| {
        Error::config(
            code::INVALID_API_URL,
            "the API URL does not form a valid request URL",
        )
    })
}

/// Control-plane headers (`name`, `value` pairs from the config, the
/// environment or [`ControlPlaneBuilder::header`](super::ControlPlaneBuilder::header))
/// as a header map: the one place they are checked, for managed resolution
/// and the [`ControlPlane`](super::ControlPlane) client alike.
pub(crate) fn header_map(pairs: &[(String, String)]) -> Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let name_ok = header::HeaderName::from_bytes(name.as_bytes());
        let value_ok = HeaderValue::from_str(value);
        match (name_ok, value_ok) {
            (Ok(n), Ok(mut v)) => {
                // Values may be secrets (team tokens): never printed.
                v.set_sensitive(true);
                headers.append(n, v);
            }
            // The name only: the value may be a secret.
            _ => {
                return Err(Error::config(
                    code::INVALID_CONFIG,
                    format!("invalid control-plane header {name:?}"),
                ))
            }
        }
    }
    Ok(headers)
}

/// `Authorization: Bearer <token>`, marked sensitive.
pub(crate) fn bearer(token: &Secret) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
        Error::config(
            code::INVALID_CONFIG,
            "the token contains characters not allowed in an HTTP header",
        )
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// At most 200 printable characters of an error body, preferring the
/// `{"error": "..."}` message the control plane sends.
pub(crate) fn error_text(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct ApiError {
        error: String,
    }
    let text = match serde_json::from_slice::<ApiError>(body) {
        Ok(e) if !e.error.trim().is_empty() => e.error,
        _ => String::from_utf8_lossy(body).into_owned(),
    };
    text.trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(200)
        .collect()
}
