//! What the control plane (and the engine's TURN route) answer, typed.
//!
//! Field names follow the Go SDK's `controlplane` types (camelCase on the
//! wire). Unknown fields are kept in `extra` rather than refused, so a
//! newer control plane does not break an older client; known fields with
//! the wrong JSON type are refused (`ERR_RSTREAM_API_INVALID_RESPONSE`).

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::config::Secret;
use crate::error::{code, Error, ErrorKind, Result};
use crate::transport::Endpoint;

/// `GET /api/whoami`: who the credentials belong to.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Whoami {
    /// The user or application id.
    pub id: String,
    /// The role (`user`, `app`, …).
    #[serde(default)]
    pub role: Option<String>,
    /// The display name, if any.
    #[serde(default)]
    pub name: Option<String>,
    /// The e-mail address, if any.
    #[serde(default)]
    pub email: Option<String>,
    /// The permissions the credentials carry.
    #[serde(default)]
    pub permissions: Vec<String>,
    /// Fields this SDK does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// A hosted tunnels project.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Project {
    /// The project id (`projects` targets in token resources use it).
    pub id: String,
    /// The project endpoint: the first DNS label of its engine.
    pub endpoint: String,
    /// The workspace the project belongs to.
    #[serde(default)]
    pub workspace_id: Option<String>,
    /// The display name.
    #[serde(default)]
    pub name: Option<String>,
    /// The cluster domain of the project's engine.
    #[serde(default)]
    pub domain: Option<String>,
    /// The engine's port.
    #[serde(default)]
    pub engine_port: Option<u16>,
    /// How clients reach the engine (`direct`, …).
    #[serde(default)]
    pub routing: Option<String>,
    /// Lifecycle status.
    #[serde(default)]
    pub status: Option<String>,
    /// Cloud provider.
    #[serde(default)]
    pub provider: Option<String>,
    /// Region of the main engine.
    #[serde(default)]
    pub region: Option<String>,
    /// Plan name.
    #[serde(default)]
    pub plan: Option<String>,
    /// Deployment kind.
    #[serde(default)]
    pub deployment: Option<String>,
    /// The TURN server's domain.
    #[serde(default)]
    pub turn_domain: Option<String>,
    /// The TURN server's `turn:` port.
    #[serde(default)]
    pub turn_port: Option<u16>,
    /// The TURN server's `turns:` port.
    #[serde(default)]
    pub turns_port: Option<u16>,
    /// The project's regional engines.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub regional_endpoints: Vec<RegionalEndpoint>,
    /// Fields this SDK does not model (e.g. the deprecated `url`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One regional engine of a [`Project`].
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RegionalEndpoint {
    /// Cloud provider.
    pub provider: String,
    /// Region name (matched case-insensitively).
    pub region: String,
    /// Cluster domain.
    pub domain: String,
    /// Engine port.
    pub engine_port: u16,
    /// Fields this SDK does not model.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn null_as_empty<'de, D, T>(d: D) -> std::result::Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

pub(crate) fn invalid_response(what: impl fmt::Display) -> Error {
    Error::new(
        ErrorKind::Http,
        code::API_INVALID_RESPONSE,
        format!("control-plane response: {what}"),
    )
}

fn non_empty<'a>(value: Option<&'a str>, key: &str) -> Result<&'a str> {
    value
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid_response(format!("missing '{key}'")))
}

impl Project {
    /// The engine to connect to: `{endpoint}.{domain}:{enginePort}`, or the
    /// regional engine of `region` (case-insensitive) when one is given.
    ///
    /// Fails with `ERR_RSTREAM_REGION_UNAVAILABLE` (listing the regions
    /// there are) or `ERR_RSTREAM_REGION_AMBIGUOUS`, and with
    /// `ERR_RSTREAM_API_INVALID_RESPONSE` when the project lacks what an
    /// address needs.
    pub fn engine(&self, region: Option<&str>) -> Result<Endpoint> {
        let endpoint = non_empty(Some(&self.endpoint), "endpoint")?;
        let address = match region {
            None => {
                let domain = non_empty(self.domain.as_deref(), "domain")?;
                let port = self
                    .engine_port
                    .filter(|p| *p != 0)
                    .ok_or_else(|| invalid_response("missing 'enginePort'"))?;
                format!("{endpoint}.{domain}:{port}")
            }
            Some(wanted) => {
                let wanted = wanted.trim().to_ascii_lowercase();
                let matches: Vec<&RegionalEndpoint> = self
                    .regional_endpoints
                    .iter()
                    .filter(|r| r.region.trim().eq_ignore_ascii_case(&wanted))
                    .collect();
                match matches.as_slice() {
                    [] => {
                        let mut available: Vec<String> = self
                            .regional_endpoints
                            .iter()
                            .map(|r| r.region.trim().to_ascii_lowercase())
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
                    [r] => {
                        let domain = non_empty(Some(&r.domain), "regionalEndpoints[].domain")?;
                        if r.engine_port == 0 {
                            return Err(invalid_response(
                                "missing 'regionalEndpoints[].enginePort'",
                            ));
                        }
                        format!("{endpoint}.{domain}:{}", r.engine_port)
                    }
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
}

/// `GET /api/projects/tunnels`: one page of projects.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ProjectList {
    /// The projects on this page.
    #[serde(deserialize_with = "null_as_empty")]
    pub projects: Vec<Project>,
    /// The page number.
    #[serde(default)]
    pub page: Option<u64>,
    /// The page size.
    #[serde(default)]
    pub page_size: Option<u64>,
    /// How many projects match in all.
    #[serde(default)]
    pub total: Option<u64>,
    /// How many pages there are.
    #[serde(default)]
    pub total_pages: Option<u64>,
}

/// Largest TURN credentials answer accepted (TOKENS.md §6).
pub const MAX_TURN_BODY: usize = 16 * 1024;
/// Longest TURN username accepted.
pub const MAX_TURN_USERNAME: usize = 512;
/// Longest TURN credential accepted.
pub const MAX_TURN_CREDENTIAL: usize = 1024;
/// Most TURN URLs accepted.
pub const MAX_TURN_URLS: usize = 16;
/// Longest TURN credential lifetime (one hour).
pub const MAX_TURN_TTL: Duration = Duration::from_secs(3600);

/// Short-lived TURN credentials (for a WebRTC `iceServers` entry).
///
/// The credential is a secret: `Debug` redacts it.
#[derive(Clone, PartialEq, Eq)]
pub struct TurnCredentials {
    username: String,
    credential: Secret,
    urls: Vec<String>,
    ttl: Duration,
}

impl fmt::Debug for TurnCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TurnCredentials")
            .field("username", &self.username)
            .field("credential", &self.credential)
            .field("urls", &self.urls)
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl TurnCredentials {
    /// The TURN username.
    pub fn username(&self) -> &str {
        &self.username
    }

    /// The TURN credential (password).
    pub fn credential(&self) -> &Secret {
        &self.credential
    }

    /// The TURN/STUN URLs (`turn:`, `turns:`, `stun:`, `stuns:`), 1 to 16.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// How long the credentials are valid (1 s to 1 h).
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Parses and checks an answer (TOKENS.md §6 bounds). `invalid` makes
    /// the error of the calling API.
    pub(crate) fn from_json(body: &[u8], invalid: impl Fn(String) -> Error) -> Result<Self> {
        #[derive(Deserialize)]
        struct Wire {
            username: String,
            credential: String,
            urls: Vec<String>,
            ttl: u64,
        }
        let wire: Wire = serde_json::from_slice(body)
            .map_err(|e| invalid(format!("TURN credentials are not the expected JSON: {e}")))?;
        if wire.username.is_empty() || wire.username.len() > MAX_TURN_USERNAME {
            return Err(invalid(format!(
                "TURN username is empty or longer than {MAX_TURN_USERNAME} bytes"
            )));
        }
        if wire.credential.is_empty() || wire.credential.len() > MAX_TURN_CREDENTIAL {
            return Err(invalid(format!(
                "TURN credential is empty or longer than {MAX_TURN_CREDENTIAL} bytes"
            )));
        }
        if wire.urls.is_empty() || wire.urls.len() > MAX_TURN_URLS {
            return Err(invalid(format!(
                "TURN credentials carry {} URLs (1 to {MAX_TURN_URLS} expected)",
                wire.urls.len()
            )));
        }
        for url in &wire.urls {
            let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
            let rest_ok = url
                .split_once(':')
                .is_some_and(|(_, r)| !r.trim().is_empty());
            if !matches!(scheme.as_deref(), Some("turn" | "turns" | "stun" | "stuns")) || !rest_ok {
                return Err(invalid(format!(
                    "TURN URL {:?} is not turn:, turns:, stun: or stuns:",
                    url.chars().take(100).collect::<String>()
                )));
            }
        }
        if !(1..=MAX_TURN_TTL.as_secs()).contains(&wire.ttl) {
            return Err(invalid(format!(
                "TURN ttl {} is outside 1..=3600 seconds",
                wire.ttl
            )));
        }
        Ok(TurnCredentials {
            username: wire.username,
            credential: Secret::new(wire.credential),
            urls: wire.urls,
            ttl: Duration::from_secs(wire.ttl),
        })
    }
}

/// The `{"ttlSeconds": n}` request body (`{}` without a ttl), after
/// checking `ttl` is whole seconds in 1..=3600.
pub(crate) fn turn_request_body(ttl: Option<Duration>) -> Result<Vec<u8>> {
    let body = match ttl {
        None => serde_json::json!({}),
        Some(d) if d.subsec_nanos() == 0 && (1..=MAX_TURN_TTL.as_secs()).contains(&d.as_secs()) => {
            serde_json::json!({ "ttlSeconds": d.as_secs() })
        }
        Some(d) => {
            return Err(Error::config(
                code::INVALID_TURN_TTL,
                format!("the TURN ttl must be a whole number of seconds from 1 to 3600, got {d:?}"),
            ))
        }
    };
    Ok(body.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(username: &str, credential: &str, urls: &[&str], ttl: i64) -> Vec<u8> {
        serde_json::json!({"username": username, "credential": credential, "urls": urls, "ttl": ttl})
            .to_string()
            .into_bytes()
    }

    fn parse(body: &[u8]) -> Result<TurnCredentials> {
        TurnCredentials::from_json(body, invalid_response)
    }

    #[test]
    fn turn_answers_within_bounds() {
        let long_user = "u".repeat(MAX_TURN_USERNAME);
        let long_cred = "c".repeat(MAX_TURN_CREDENTIAL);
        let urls: Vec<&str> = vec!["stuns:t.test:5349"; MAX_TURN_URLS];
        let ok = parse(&answer(&long_user, &long_cred, &urls, 3600)).unwrap();
        assert_eq!(ok.ttl(), MAX_TURN_TTL);
        assert_eq!(ok.urls().len(), MAX_TURN_URLS);
        assert!(!format!("{ok:?}").contains("ccc"));
        let ok = parse(&answer("u", "c", &["TURN:t.test:3478?transport=udp"], 1)).unwrap();
        assert_eq!(ok.username(), "u");
    }

    #[test]
    fn turn_answers_out_of_bounds() {
        let too_many: Vec<&str> = vec!["turn:t.test"; MAX_TURN_URLS + 1];
        for body in [
            answer("", "c", &["turn:t.test"], 60),
            answer(
                &"u".repeat(MAX_TURN_USERNAME + 1),
                "c",
                &["turn:t.test"],
                60,
            ),
            answer("u", "", &["turn:t.test"], 60),
            answer(
                "u",
                &"c".repeat(MAX_TURN_CREDENTIAL + 1),
                &["turn:t.test"],
                60,
            ),
            answer("u", "c", &[], 60),
            answer("u", "c", &too_many, 60),
            answer("u", "c", &["http://t.test"], 60),
            answer("u", "c", &["turn:"], 60),
            answer("u", "c", &["turn:t.test"], 0),
            answer("u", "c", &["turn:t.test"], 3601),
            answer("u", "c", &["turn:t.test"], -1),
            br#"{"username":"u","credential":"c","urls":"turn:t.test","ttl":60}"#.to_vec(),
            b"not json".to_vec(),
        ] {
            let err = parse(&body).unwrap_err();
            assert_eq!(
                err.code(),
                code::API_INVALID_RESPONSE,
                "{}",
                String::from_utf8_lossy(&body)
            );
        }
    }

    #[test]
    fn turn_request_bodies() {
        assert_eq!(turn_request_body(None).unwrap(), b"{}");
        assert_eq!(
            turn_request_body(Some(Duration::from_secs(600))).unwrap(),
            br#"{"ttlSeconds":600}"#
        );
        for bad in [
            Duration::ZERO,
            Duration::from_secs(3601),
            Duration::from_millis(10),
        ] {
            assert_eq!(
                turn_request_body(Some(bad)).unwrap_err().code(),
                code::INVALID_TURN_TTL
            );
        }
    }

    #[test]
    fn projects_tolerate_unknown_fields_and_nulls() {
        let p: Project = serde_json::from_str(
            r#"{"id":"p","endpoint":"e","regionalEndpoints":null,"domain":null,"new":[1]}"#,
        )
        .unwrap();
        assert!(p.regional_endpoints.is_empty());
        assert_eq!(p.extra["new"], serde_json::json!([1]));
        assert_eq!(
            p.engine(None).unwrap_err().code(),
            code::API_INVALID_RESPONSE
        );
    }
}
