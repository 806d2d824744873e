//! Managed resolution: a hosted project endpoint (and optional region) to an
//! engine address, through `GET {apiUrl}/api/projects/tunnels/resolve/{endpoint}`.
//!
//! One request per client (the result is cached by the client), over the
//! crate's one HTTPS client stack ([`HttpsConnector`]: ALPN `h2` or
//! `http/1.1`, the configured HTTP CONNECT proxy if any). Redirects are not followed, the
//! whole exchange is bounded by [`RESOLVE_TIMEOUT`] and the body by
//! [`MAX_RESOLVE_BODY`]. `http://` API URLs are accepted only for loopback
//! hosts (a local control plane or a test), so a token never crosses a
//! network in clear text.

use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

use crate::config::ResolvedOptions;
use crate::error::{code, Error, ErrorKind, Result};
use crate::transport::https::{connect_error, is_loopback, HttpsConnector, PlainHttp};
use crate::transport::{Endpoint, HttpProxy, TlsOptions};

/// Bound on the whole resolve request (connect, TLS, response and body).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest resolve response body accepted.
pub const MAX_RESOLVE_BODY: usize = 1024 * 1024;

fn invalid_response(what: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Http,
        code::API_INVALID_RESPONSE,
        format!("control-plane resolve response: {what}"),
    )
}

/// Resolves the managed engine of `options` (which must be
/// [`EngineTarget::Managed`](crate::config::EngineTarget::Managed)).
pub(crate) async fn resolve_engine(
    options: &ResolvedOptions,
    project_endpoint: &str,
    region: Option<&str>,
) -> Result<Endpoint> {
    let endpoint = project_endpoint.trim();
    if endpoint.is_empty() {
        return Err(Error::config(
            code::PROJECT_ENDPOINT_REQUIRED,
            "the project endpoint is empty",
        ));
    }
    let url = format!(
        "{}/api/projects/tunnels/resolve/{}",
        options.api_url.trim_end_matches('/'),
        crate::percent::encode_component(endpoint)
    );
    let uri: Uri = url.parse().map_err(|_| {
        Error::config(
            code::INVALID_API_URL,
            "the API URL does not form a valid request URL",
        )
    })?;
    let mut headers = Vec::with_capacity(options.control_plane_headers.len() + 1);
    for (name, value) in &options.control_plane_headers {
        let name = HeaderName::from_bytes(name.as_bytes());
        let value = HeaderValue::from_str(value);
        match (name, value) {
            (Ok(n), Ok(v)) => headers.push((n, v)),
            _ => {
                return Err(Error::config(
                    code::INVALID_CONFIG,
                    "invalid control-plane header",
                ))
            }
        }
    }
    if let Some(token) = &options.token {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
            Error::config(
                code::INVALID_CONFIG,
                "the token contains characters not allowed in an HTTP header",
            )
        })?;
        v.set_sensitive(true);
        headers.push((header::AUTHORIZATION, v));
    }
    // The API is another service: same extra trust anchors as the engine,
    // but never the engine's client certificate, server-name override or
    // disabled verification.
    let tls = TlsOptions {
        extra_roots: options.tls.extra_roots.clone(),
        ..TlsOptions::default()
    };
    let fut = get(uri, headers, &tls, options.proxy.clone());
    let (status, body) = tokio::time::timeout(RESOLVE_TIMEOUT, fut)
        .await
        .map_err(|_| {
            Error::new(
                ErrorKind::Timeout,
                code::API_TIMEOUT,
                format!("resolving project {endpoint:?} took longer than {RESOLVE_TIMEOUT:?}"),
            )
        })??;
    if !status.is_success() {
        let snippet: String = String::from_utf8_lossy(&body)
            .chars()
            .filter(|c| !c.is_control())
            .take(200)
            .collect();
        return Err(Error::new(
            ErrorKind::Http,
            code::API_HTTP,
            format!("resolving project {endpoint:?}: HTTP {status}: {snippet}"),
        ));
    }
    engine_from_response(&body, region)
}

/// Picks the engine from a resolve response body.
pub(crate) fn engine_from_response(body: &[u8], region: Option<&str>) -> Result<Endpoint> {
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid_response("not JSON"))?;
    let Value::Object(project) = value else {
        return Err(invalid_response("not a JSON object"));
    };
    // Required, as in the other SDKs, even where unused.
    required_str(&project, "id")?;
    required_str(&project, "routing")?;
    let endpoint = required_str(&project, "endpoint")?;
    let domain = required_str(&project, "domain")?;
    let port = required_port(&project, "enginePort")?;
    let regional = match project.get("regionalEndpoints") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                let Value::Object(item) = item else {
                    return Err(invalid_response("invalid 'regionalEndpoints'"));
                };
                required_str(item, "provider")?;
                out.push((
                    required_str(item, "region")?.trim().to_ascii_lowercase(),
                    required_str(item, "domain")?,
                    required_port(item, "enginePort")?,
                ));
            }
            out
        }
        Some(_) => return Err(invalid_response("invalid 'regionalEndpoints'")),
    };
    let address = match region {
        None => format!("{endpoint}.{domain}:{port}"),
        Some(wanted) => {
            let matches: Vec<_> = regional.iter().filter(|(r, _, _)| r == wanted).collect();
            match matches.as_slice() {
                [] => {
                    let mut available: Vec<&str> = regional
                        .iter()
                        .map(|(r, _, _)| r.as_str())
                        .filter(|r| !r.is_empty())
                        .collect();
                    available.sort_unstable();
                    available.dedup();
                    let list = if available.is_empty() {
                        "none".to_owned()
                    } else {
                        available.join(", ")
                    };
                    return Err(Error::config(
                        code::REGION_UNAVAILABLE,
                        format!("region {wanted:?} is not available for this project; available regions: {list}"),
                    ));
                }
                [(_, domain, port)] => format!("{endpoint}.{domain}:{port}"),
                _ => {
                    return Err(Error::config(
                        code::REGION_AMBIGUOUS,
                        format!("region {wanted:?} matches several engines of this project"),
                    ))
                }
            }
        }
    };
    Endpoint::parse(&address)
        .map_err(|_| invalid_response(format!("engine address {address:?} is not host:port")))
}

fn required_str(map: &Map<String, Value>, key: &str) -> Result<String> {
    match map.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        _ => Err(invalid_response(format!("missing '{key}'"))),
    }
}

fn required_port(map: &Map<String, Value>, key: &str) -> Result<u16> {
    map.get(key)
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| invalid_response(format!("missing '{key}'")))
}

/// One GET; returns the status and the (bounded) body.
async fn get(
    uri: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    tls: &TlsOptions,
    proxy: Option<HttpProxy>,
) -> Result<(StatusCode, Bytes)> {
    let bad_url = || Error::config(code::INVALID_API_URL, "the API URL has no host");
    let host = uri.host().ok_or_else(bad_url)?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if is_loopback(host) => {}
        _ => {
            return Err(Error::config(
                code::INVALID_API_URL,
                "the API URL must use https:// (http:// is allowed only for loopback hosts)",
            ))
        }
    }
    let authority = uri.authority().ok_or_else(bad_url)?.clone();
    if authority.as_str().contains('@') {
        return Err(Error::config(
            code::INVALID_API_URL,
            "the API URL must not contain credentials (use a token or control-plane headers)",
        ));
    }
    // One request per client: a pool of its own, dropped with it. The
    // whole call is bounded by RESOLVE_TIMEOUT, so the connect is too.
    let connector = HttpsConnector::new(tls.client_config(&[b"h2", b"http/1.1"])?, RESOLVE_TIMEOUT)
        .proxy(proxy)
        .plain_http(PlainHttp::Loopback);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build::<_, Empty<Bytes>>(connector);
    let mut request = Request::builder().method(Method::GET).uri(uri);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let request = request
        .header(header::ACCEPT, "application/json")
        .header(
            header::USER_AGENT,
            concat!("rstream-rust-runtime/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|_| Error::config(code::INVALID_API_URL, "cannot build the API request"))?;
    let response = client.request(request).await.map_err(|e| {
        // The connector's own error (TLS, timeout, proxy…) is the useful one.
        connect_error(&e).unwrap_or_else(|| {
            Error::new(
                ErrorKind::Http,
                code::API_HTTP,
                format!("request to the API at {authority} failed: {e}"),
            )
            .with_source(e)
        })
    })?;
    let status = response.status();
    let body = Limited::new(response.into_body(), MAX_RESOLVE_BODY)
        .collect()
        .await
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                invalid_response(format!("body larger than {MAX_RESOLVE_BODY} bytes"))
            } else {
                Error::new(
                    ErrorKind::Http,
                    code::API_HTTP,
                    format!("reading the API response from {authority} failed: {e}"),
                )
            }
        })?
        .to_bytes();
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROJECT: &str = r#"{"id":"p1","endpoint":"myproj","domain":"eu.rstream.test","enginePort":443,"routing":"direct",
        "regionalEndpoints":[{"provider":"aws","region":"us","domain":"us.rstream.test","enginePort":8443},
                             {"provider":"gcp","region":"EU","domain":"eu2.rstream.test","enginePort":443},
                             {"provider":"aws","region":"dup","domain":"a.test","enginePort":1},
                             {"provider":"gcp","region":"dup","domain":"b.test","enginePort":1}]}"#;

    #[test]
    fn picks_the_engine() {
        let e = |r| engine_from_response(PROJECT.as_bytes(), r);
        assert_eq!(e(None).unwrap().to_string(), "myproj.eu.rstream.test:443");
        assert_eq!(
            e(Some("us")).unwrap().to_string(),
            "myproj.us.rstream.test:8443"
        );
        assert_eq!(
            e(Some("eu")).unwrap().to_string(),
            "myproj.eu2.rstream.test:443"
        );
        let err = e(Some("ap")).unwrap_err();
        assert_eq!(err.code(), code::REGION_UNAVAILABLE);
        assert!(err.message().contains("dup, eu, us"), "{err}");
        assert_eq!(e(Some("dup")).unwrap_err().code(), code::REGION_AMBIGUOUS);
    }

    #[test]
    fn invalid_responses() {
        for body in [
            "",
            "[]",
            r#"{"endpoint":"x","domain":"d.test","enginePort":443,"routing":"r"}"#,
            r#"{"id":"1","endpoint":"x","domain":"d.test","enginePort":0,"routing":"r"}"#,
            r#"{"id":"1","endpoint":"x","domain":"d.test","enginePort":"443","routing":"r"}"#,
            r#"{"id":"1","endpoint":"x","domain":"d.test","enginePort":443,"routing":"r","regionalEndpoints":{}}"#,
            r#"{"id":"1","endpoint":"x","domain":"d.test","enginePort":443,"routing":"r","regionalEndpoints":[{"region":"eu"}]}"#,
            r#"{"id":"1","endpoint":"x/y","domain":"d.test","enginePort":443,"routing":"r"}"#,
        ] {
            assert_eq!(
                engine_from_response(body.as_bytes(), None)
                    .unwrap_err()
                    .code(),
                code::API_INVALID_RESPONSE,
                "{body}"
            );
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(crate::percent::encode_component("a b/c"), "a%20b%2Fc");
    }
}
