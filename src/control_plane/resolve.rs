//! Managed resolution: a hosted project endpoint (and optional region) to an
//! engine address, through `GET {apiUrl}/api/projects/tunnels/resolve/{endpoint}`.
//!
//! One request per client (the result is cached by the client), over the
//! crate's one HTTPS client stack ([`HttpsConnector`]: ALPN `h2` or
//! `http/1.1`, the configured proxy — HTTP CONNECT, HTTPS or SOCKS5 — if any). Redirects are not followed, the
//! whole exchange is bounded by [`RESOLVE_TIMEOUT`] and the body by
//! [`MAX_RESOLVE_BODY`]. `http://` API URLs are accepted only for loopback
//! hosts (a local control plane or a test), so a token never crosses a
//! network in clear text.

use std::time::Duration;

use http::{header, Method};

use super::client::Auth;
use super::http::{self as cp_http, Call, Codes, Http};
use super::models::{invalid_response, Project};
use crate::config::ResolvedOptions;
use crate::error::{code, Error, ErrorKind, Result};
use crate::transport::Endpoint;

/// Bound on the whole resolve request (connect, TLS, response and body).
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest resolve response body accepted.
pub const MAX_RESOLVE_BODY: usize = 1024 * 1024;

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
    let base = cp_http::check_api_url(&options.api_url)?;
    let path = format!(
        "/api/projects/tunnels/resolve/{}",
        crate::percent::encode_component(endpoint)
    );
    let uri = cp_http::request_uri(&base, &path, "")?;
    let mut headers = cp_http::header_map(&options.control_plane_headers)?;
    // The credentials as the `ControlPlane` client sends them: app
    // credentials win (a fresh `{permissions: null}` app token for this one
    // call), else the token as it is.
    if let Some(v) = Auth::from_resolved(options).header()? {
        headers.insert(header::AUTHORIZATION, v);
    }
    // One request per client (the result is cached by the client): a pool
    // of its own, dropped with it.
    let http = Http::new(&options.tls, options.proxy.clone(), RESOLVE_TIMEOUT)?;
    let what = format!("resolving project {endpoint:?}");
    let answer = http
        .send(Call {
            method: Method::GET,
            uri,
            headers,
            body: None,
            max_body: MAX_RESOLVE_BODY,
            timeout: RESOLVE_TIMEOUT,
            codes: Codes {
                http: code::API_HTTP,
                too_large: code::API_INVALID_RESPONSE,
                timeout: code::API_TIMEOUT,
            },
            what: &what,
        })
        .await?;
    if !answer.status.is_success() {
        return Err(Error::new(
            ErrorKind::Http,
            code::API_HTTP,
            format!(
                "{what}: HTTP {}: {}",
                answer.status,
                cp_http::error_text(&answer.body)
            ),
        ));
    }
    engine_from_response(&answer.body, region)
}

/// Picks the engine from a resolve response body (the typed [`Project`]).
pub(crate) fn engine_from_response(body: &[u8], region: Option<&str>) -> Result<Endpoint> {
    let project: Project =
        serde_json::from_slice(body).map_err(|e| invalid_response(format!("resolve: {e}")))?;
    // Required, as in the other SDKs, even where unused.
    if project.id.trim().is_empty() {
        return Err(invalid_response("missing 'id'"));
    }
    if project
        .routing
        .as_deref()
        .is_none_or(|r| r.trim().is_empty())
    {
        return Err(invalid_response("missing 'routing'"));
    }
    project.engine(region)
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
