//! Client and tunnel records as the Engine API lists them (ENGINE_API.md §5).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::{null_default, Status};

/// A connected runtime client (one control channel), as the Engine API
/// lists it (`GET /api/clients`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ClientRecord {
    /// Engine-assigned client id.
    pub id: String,
    /// `online` while connected; `offline` in a `client.deleted` event.
    pub status: Status,
    /// The owning user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// The project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The engine cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The cloud provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// The SDK or agent name (`rstream-rust-runtime`, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The agent's release channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The agent's version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The client's operating system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    /// The client's CPU architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// The runtime protocol version (`x.y.z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<String>,
    /// Labels.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// Fields this SDK does not know, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ClientRecord {
    /// A client with only an id and a status (every other field unset).
    pub fn new(id: impl Into<String>, status: Status) -> Self {
        ClientRecord {
            id: id.into(),
            status,
            user_id: None,
            workspace_id: None,
            project_id: None,
            cluster_id: None,
            plan: None,
            provider: None,
            region: None,
            agent: None,
            channel: None,
            version: None,
            os: None,
            arch: None,
            protocol_version: None,
            labels: BTreeMap::new(),
            extra: Map::new(),
        }
    }
}

/// A live tunnel, as the Engine API lists it (`GET /api/tunnels`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TunnelRecord {
    /// Engine-assigned tunnel id.
    pub id: String,
    /// The owning client's id.
    #[serde(default)]
    pub client_id: String,
    /// `online` while open; `offline` in a `tunnel.deleted` event.
    pub status: Status,
    /// The owning user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// The workspace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace_id: Option<String>,
    /// The project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_id: Option<String>,
    /// The engine cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_id: Option<String>,
    /// The plan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// The cloud provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Creation time (ISO-8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_date: Option<String>,
    /// The tunnel's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `bytestream` or `datagram` (JSON `type`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub tunnel_type: Option<String>,
    /// Whether the tunnel is published (reachable from outside).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<bool>,
    /// `tls`, `dtls`, `quic`, `http`, `tcp`, `webtty`, …
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// Labels.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    /// GeoIP allow-list (country codes).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub geo_ip: Vec<String>,
    /// Trusted downstream IPs / CIDRs.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub trusted_ips: Vec<String>,
    /// The engine host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The public hostname (published tunnels).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The public port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// `passthrough` or `terminated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_mode: Option<String>,
    /// ALPN protocols offered downstream.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tls_alpns: Vec<String>,
    /// The minimum TLS version downstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_min_version: Option<String>,
    /// TLS cipher suites downstream.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tls_ciphers: Vec<String>,
    /// Whether downstream clients must present a certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtls_auth: Option<bool>,
    /// `http/1.1`, `h2`, `h2c` or `h3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_version: Option<String>,
    /// Whether the HTTP upstream speaks TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_use_tls: Option<bool>,
    /// Whether the upstream uses TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_tls: Option<bool>,
    /// Edge token authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_auth: Option<bool>,
    /// Edge rstream (SSO) authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rstream_auth: Option<bool>,
    /// Edge challenge mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub challenge_mode: Option<bool>,
    /// Guaranteed delivery for datagram tunnels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub datagram_guaranteed_delivery: Option<bool>,
    /// Whether traffic may be routed across regions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_cross_region_routing: Option<bool>,
    /// Fields this SDK does not know, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl TunnelRecord {
    /// A tunnel with only an id, its client and a status.
    pub fn new(id: impl Into<String>, client_id: impl Into<String>, status: Status) -> Self {
        TunnelRecord {
            id: id.into(),
            client_id: client_id.into(),
            status,
            user_id: None,
            workspace_id: None,
            project_id: None,
            cluster_id: None,
            plan: None,
            provider: None,
            region: None,
            creation_date: None,
            name: None,
            tunnel_type: None,
            publish: None,
            protocol: None,
            labels: BTreeMap::new(),
            geo_ip: Vec::new(),
            trusted_ips: Vec::new(),
            host: None,
            hostname: None,
            port: None,
            tls_mode: None,
            tls_alpns: Vec::new(),
            tls_min_version: None,
            tls_ciphers: Vec::new(),
            mtls_auth: None,
            http_version: None,
            http_use_tls: None,
            upstream_tls: None,
            token_auth: None,
            rstream_auth: None,
            challenge_mode: None,
            datagram_guaranteed_delivery: None,
            allow_cross_region_routing: None,
            extra: Map::new(),
        }
    }

    /// Where the tunnel is reachable, for display: `hostname`, with
    /// `:port` unless the port is unset or 443, else `host`.
    ///
    /// ```
    /// # use rstream::api::{Status, TunnelRecord};
    /// let mut t = TunnelRecord::new("t1", "c1", Status::Online);
    /// t.hostname = Some("127.0.0.1".into());
    /// t.port = Some(8443);
    /// assert_eq!(t.display_host().as_deref(), Some("127.0.0.1:8443"));
    /// ```
    pub fn display_host(&self) -> Option<String> {
        match (&self.hostname, self.port) {
            (Some(h), Some(p)) if p != 443 => Some(format!("{h}:{p}")),
            (Some(h), _) => Some(h.clone()),
            (None, _) => self.host.clone(),
        }
    }
}
