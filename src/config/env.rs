//! The environment variables the SDK reads, through an injectable lookup.

use super::headers::{self, Headers};
use super::normalize_api_url;
use crate::error::Result;

/// The variables, read once. Blank values count as unset.
#[derive(Clone, Debug, Default)]
pub(crate) struct EnvSettings {
    pub(crate) api_url: Option<String>,
    pub(crate) config_path: Option<String>,
    pub(crate) context: Option<String>,
    pub(crate) headers: Headers,
    /// The engine and the variable it came from.
    pub(crate) engine: Option<(String, &'static str)>,
    pub(crate) mtls_cert: Option<String>,
    pub(crate) mtls_key: Option<String>,
    pub(crate) region: Option<String>,
    pub(crate) token: Option<String>,
    /// `RSTREAM_CLIENT_ID` / `RSTREAM_CLIENT_SECRET` (app credentials).
    pub(crate) client_id: Option<String>,
    pub(crate) client_secret: Option<String>,
    pub(crate) tunnel_transport: Option<String>,
    /// `RSTREAM_QUIC_TRANSPORT` as a boolean.
    pub(crate) use_quic: Option<bool>,
    pub(crate) ca_file: Option<String>,
    /// The proxy for TLS destinations (every engine connection) as curl
    /// picks it: `https_proxy`, `HTTPS_PROXY`, `all_proxy`, `ALL_PROXY`,
    /// and the variable it came from. Used only when the selected config
    /// sets `transport.proxy.fromEnvironment: true` (Node runtime).
    pub(crate) https_proxy: Option<(String, &'static str)>,
    /// `no_proxy`, then `NO_PROXY` (curl's order).
    pub(crate) no_proxy: Option<String>,
    pub(crate) home: Option<String>,
}

/// The lookup type: variable name → value.
pub(crate) type Lookup<'a> = &'a (dyn Fn(&str) -> Option<String> + Send + Sync);

impl EnvSettings {
    /// Reads and checks every variable (a malformed one fails even if a
    /// higher-precedence option would have made it irrelevant, as in the
    /// other SDKs).
    pub(crate) fn read(lookup: Lookup<'_>) -> Result<EnvSettings> {
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let first = |names: &[&'static str]| names.iter().find_map(|n| var(n).map(|v| (v, *n)));
        let api_url = match var("RSTREAM_API_URL") {
            Some(url) => normalize_api_url(&url, "RSTREAM_API_URL")?,
            None => None,
        };
        let headers = match var("RSTREAM_CONTROL_PLANE_HEADERS") {
            Some(json) => headers::from_json(&json, "RSTREAM_CONTROL_PLANE_HEADERS")?,
            None => Headers::default(),
        };
        // The Go SDK's rule: "1" means quic, any other non-empty value tls
        // (`true`/`yes`/`on` mean quic too, as CONFIG.md says).
        let use_quic = var("RSTREAM_QUIC_TRANSPORT").map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Ok(EnvSettings {
            api_url,
            config_path: var("RSTREAM_CONFIG"),
            context: var("RSTREAM_CONTEXT"),
            headers,
            engine: first(&["RSTREAM_ENGINE", "RSTREAM_ENGINE_ADDRESS"]),
            mtls_cert: var("RSTREAM_MTLS_CERT_FILE"),
            mtls_key: var("RSTREAM_MTLS_KEY_FILE"),
            region: var("RSTREAM_REGION"),
            token: var("RSTREAM_AUTHENTICATION_TOKEN"),
            client_id: var(crate::auth::CLIENT_ID_ENV),
            client_secret: var(crate::auth::CLIENT_SECRET_ENV),
            tunnel_transport: var("RSTREAM_TUNNEL_TRANSPORT"),
            use_quic,
            ca_file: var("RSTREAM_CA_FILE"),
            // `http_proxy` is curl's variable for http:// destinations; ours
            // are loopback only (never proxied), so it is not read.
            https_proxy: first(&["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"]),
            no_proxy: first(&["no_proxy", "NO_PROXY"]).map(|(v, _)| v),
            home: first(&["HOME", "USERPROFILE"]).map(|(v, _)| v),
        })
    }

    /// Whether mTLS material is given by the environment (even half of it).
    pub(crate) fn has_mtls(&self) -> bool {
        self.mtls_cert.is_some() || self.mtls_key.is_some()
    }
}
