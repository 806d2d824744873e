//! mTLS Engine API discovery (ENGINE_API.md §1): a client with a TLS
//! client certificate and no token asks the engine anonymously where its
//! mTLS API lives (`GET https://<engine>/.well-known/rstream/engine`),
//! checks the answer strictly, and caches it per `Cache-Control`.

use std::time::Duration;

use http::{header, HeaderMap, StatusCode, Uri};
use serde_json::Value;
use tokio::time::Instant;

use super::http::{headers, read_body, HttpClient};
use crate::error::{code, Error, ErrorKind, Result};

/// The discovery document's path.
pub(crate) const PATH: &str = "/.well-known/rstream/engine";
/// Bound on the whole discovery request.
const TIMEOUT: Duration = Duration::from_secs(5);
/// Largest discovery document accepted.
const MAX_BODY: usize = 16 * 1024;
/// Cache lifetime without `max-age`.
const DEFAULT_TTL: u64 = 3600;
/// Longest cache lifetime honoured.
const MAX_TTL: u64 = 86_400;

fn invalid(why: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Protocol,
        code::ENGINE_DISCOVERY,
        format!("engine returned invalid or unavailable mTLS API discovery: {why}"),
    )
}

struct Cached {
    engine: String,
    authority: String,
    expires: Instant,
}

/// The discovery cache of one API handle (one discovery in flight at a time).
pub(crate) struct Discovery {
    http: Result<HttpClient>,
    cache: tokio::sync::Mutex<Option<Cached>>,
}

impl Discovery {
    pub(crate) fn new(http: Result<HttpClient>) -> Self {
        Discovery {
            http,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The mTLS API's `host:port` for `engine` (`host:port`), from the
    /// cache or a fresh discovery.
    pub(crate) async fn resolve(&self, engine_host: &str, engine: &str) -> Result<String> {
        let mut cache = self.cache.lock().await;
        if let Some(c) = cache.as_ref() {
            if c.engine == engine && c.expires > Instant::now() {
                return Ok(c.authority.clone());
            }
        }
        let http = self.http.as_ref().map_err(Clone::clone)?;
        let url = format!("https://{engine}{PATH}");
        let fetch = async {
            let response = http
                .get(&url, PATH, &headers("application/json", None)?)
                .await?;
            if response.status() != StatusCode::OK {
                return Err(invalid(format!("HTTP {}", response.status().as_u16())));
            }
            let ttl = ttl(response.headers());
            let body = read_body(response.into_body(), MAX_BODY, PATH)
                .await
                .map_err(invalid)?;
            Ok((validate(&body, engine_host)?, ttl))
        };
        let (authority, ttl) = tokio::time::timeout(TIMEOUT, fetch)
            .await
            .map_err(|_| invalid(format!("no answer within {TIMEOUT:?}")))??;
        *cache = (ttl > Duration::ZERO).then(|| Cached {
            engine: engine.to_owned(),
            authority: authority.clone(),
            expires: Instant::now() + ttl,
        });
        Ok(authority)
    }
}

/// How long a discovery answer may be reused: `max-age` (capped at 24 h,
/// default 1 h) less `Age`; zero with `no-store` / `no-cache` or an
/// unparsable `Age`.
pub(crate) fn ttl(headers: &HeaderMap) -> Duration {
    let cache_control = headers
        .get(header::CACHE_CONTROL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if cache_control.contains("no-store") || cache_control.contains("no-cache") {
        return Duration::ZERO;
    }
    let max_age = cache_control.split(',').find_map(|d| {
        let v = d.trim().strip_prefix("max-age=")?;
        (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .then(|| v.parse::<u64>().unwrap_or(MAX_TTL))
    });
    let ttl = max_age.map_or(DEFAULT_TTL, |a| a.min(MAX_TTL));
    let age = headers
        .get(header::AGE)
        .map(|v| v.to_str().unwrap_or("x"))
        .unwrap_or("0");
    if age.is_empty() || !age.bytes().all(|b| b.is_ascii_digit()) {
        return Duration::ZERO;
    }
    Duration::from_secs(ttl.saturating_sub(age.parse::<u64>().unwrap_or(u64::MAX)))
}

/// Checks a discovery document against the engine host; returns the mTLS
/// API's `host:port`.
pub(crate) fn validate(body: &[u8], engine_host: &str) -> Result<String> {
    let value: Value = serde_json::from_slice(body).map_err(|_| invalid("not JSON"))?;
    let Value::Object(doc) = value else {
        return Err(invalid("not a JSON object"));
    };
    let project = first_label(engine_host);
    if doc.get("version").and_then(Value::as_u64) != Some(1)
        || doc.get("version").is_some_and(|v| !v.is_u64())
    {
        return Err(invalid("version is not 1"));
    }
    if doc.get("projectEndpoint").and_then(Value::as_str) != Some(project.as_str()) {
        return Err(invalid("projectEndpoint does not match the engine host"));
    }
    let capabilities = match doc.get("capabilities") {
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items,
        _ => return Err(invalid("capabilities is not a list of strings")),
    };
    if !capabilities.iter().any(|c| c == "engine-api-mtls") {
        return Err(invalid("no engine-api-mtls capability"));
    }
    let Some(url) = doc.get("mtlsApiUrl").and_then(Value::as_str) else {
        return Err(invalid("mtlsApiUrl missing"));
    };
    if url.contains(['#', '@', '\\', '%']) || url.chars().any(char::is_whitespace) {
        return Err(invalid("mtlsApiUrl has forbidden characters"));
    }
    let uri: Uri = url
        .parse()
        .map_err(|_| invalid("mtlsApiUrl is not a URL"))?;
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("mtlsApiUrl has no host"))?;
    if uri.scheme_str() != Some("https") || uri.path() != "/api" || uri.query().is_some() {
        return Err(invalid("mtlsApiUrl must be https://<host>/api"));
    }
    let host = authority.host().to_ascii_lowercase();
    if host.is_empty() || first_label(&host) != project {
        return Err(invalid("mtlsApiUrl is not on the project's host"));
    }
    let port = match authority.port_u16() {
        Some(0) => return Err(invalid("mtlsApiUrl has port 0")),
        Some(p) => p,
        None if authority.as_str().ends_with(':') => {
            return Err(invalid("mtlsApiUrl has an empty port"))
        }
        None => 443,
    };
    Ok(format!("{host}:{port}"))
}

fn first_label(host: &str) -> String {
    host.trim_matches(['[', ']'])
        .split('.')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn doc(url: &str) -> String {
        format!(
            r#"{{"version":1,"projectEndpoint":"proj","capabilities":["x","engine-api-mtls"],"mtlsApiUrl":"{url}"}}"#
        )
    }

    #[test]
    fn validates() {
        let host = "proj.eu.rstream.test";
        assert_eq!(
            validate(doc("https://proj.mtls.rstream.test/api").as_bytes(), host).unwrap(),
            "proj.mtls.rstream.test:443"
        );
        assert_eq!(
            validate(doc("https://PROJ.mtls.test:8443/api").as_bytes(), "Proj.x").unwrap(),
            "proj.mtls.test:8443"
        );
        for bad in [
            doc("http://proj.mtls.test/api"),
            doc("https://proj.mtls.test/api/"),
            doc("https://proj.mtls.test/v1"),
            doc("https://proj.mtls.test/api?x=1"),
            doc("https://other.mtls.test/api"),
            doc("https://u:p@proj.mtls.test/api"),
            doc("https://proj.mtls.test:0/api"),
            doc("https://proj.mtls%2e.test/api"),
            r#"{"version":2,"projectEndpoint":"proj","capabilities":["engine-api-mtls"],"mtlsApiUrl":"https://proj.x/api"}"#.into(),
            r#"{"version":1.0,"projectEndpoint":"proj","capabilities":["engine-api-mtls"],"mtlsApiUrl":"https://proj.x/api"}"#.into(),
            r#"{"version":1,"projectEndpoint":"other","capabilities":["engine-api-mtls"],"mtlsApiUrl":"https://proj.x/api"}"#.into(),
            r#"{"version":1,"projectEndpoint":"proj","capabilities":["other"],"mtlsApiUrl":"https://proj.x/api"}"#.into(),
            r#"{"version":1,"projectEndpoint":"proj","capabilities":[1],"mtlsApiUrl":"https://proj.x/api"}"#.into(),
            "[]".into(),
        ] {
            let e = validate(bad.as_bytes(), host).unwrap_err();
            assert_eq!(e.code(), code::ENGINE_DISCOVERY, "{bad}");
        }
    }

    #[test]
    fn cache_lifetimes() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(*k, HeaderValue::from_static(v));
            }
            ttl(&m)
        };
        assert_eq!(h(&[]), Duration::from_secs(3600));
        assert_eq!(
            h(&[("cache-control", "public, max-age=60")]),
            Duration::from_secs(60)
        );
        assert_eq!(
            h(&[("cache-control", "max-age=999999")]),
            Duration::from_secs(86_400)
        );
        assert_eq!(
            h(&[("cache-control", "max-age=60"), ("age", "50")]),
            Duration::from_secs(10)
        );
        assert_eq!(
            h(&[("cache-control", "max-age=60"), ("age", "x")]),
            Duration::ZERO
        );
        assert_eq!(h(&[("cache-control", "no-store")]), Duration::ZERO);
        assert_eq!(
            h(&[("cache-control", "max-age=60, no-cache")]),
            Duration::ZERO
        );
    }
}
