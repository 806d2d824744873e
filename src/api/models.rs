//! Typed Engine API objects (ENGINE_API.md §5 and §7): [`ClientRecord`],
//! [`TunnelRecord`], [`Event`] and the `state.initial` snapshot.
//!
//! Every object is snake_case JSON. Unknown fields are kept in `extra`
//! (and written back when serialised), so a newer engine never breaks an
//! older SDK; a `null` where a list or map is expected reads as empty.

use crate::error::code;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// A client's or a tunnel's status: `online` or `offline`. Any other value
/// an engine sends is kept as [`Status::Other`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Status {
    /// `online`.
    Online,
    /// `offline` (the last state of a deleted object).
    Offline,
    /// Any other value, as sent.
    Other(String),
}

impl Status {
    /// The wire value.
    pub fn as_str(&self) -> &str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Other(s) => s,
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<&str> for Status {
    fn from(s: &str) -> Self {
        match s {
            "online" => Status::Online,
            "offline" => Status::Offline,
            other => Status::Other(other.to_owned()),
        }
    }
}

impl From<Status> for String {
    fn from(s: Status) -> String {
        s.as_str().to_owned()
    }
}

impl Serialize for Status {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Status {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Ok(Status::from(s.as_str()))
    }
}

/// `null` (or a missing field) reads as the default value.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + DeserializeOwned,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

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

/// The `object` of a `state.initial` event: everything the watch's filters
/// match at the moment the watch started.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct InitialState {
    /// When the snapshot was taken (ISO-8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_at: Option<String>,
    /// The matching clients.
    #[serde(default, deserialize_with = "null_default")]
    pub clients: Vec<ClientRecord>,
    /// The matching tunnels.
    #[serde(default, deserialize_with = "null_default")]
    pub tunnels: Vec<TunnelRecord>,
}

impl InitialState {
    /// A snapshot of these objects taken at `snapshot_at`.
    pub fn new(
        snapshot_at: Option<String>,
        clients: Vec<ClientRecord>,
        tunnels: Vec<TunnelRecord>,
    ) -> Self {
        InitialState {
            snapshot_at,
            clients,
            tunnels,
        }
    }
}

/// The type of an [`Event`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EventType {
    /// `state.initial`: the first event of every watch.
    StateInitial,
    /// `client.created`.
    ClientCreated,
    /// `client.updated`.
    ClientUpdated,
    /// `client.deleted`.
    ClientDeleted,
    /// `tunnel.created`.
    TunnelCreated,
    /// `tunnel.updated`.
    TunnelUpdated,
    /// `tunnel.deleted`.
    TunnelDeleted,
    /// Any other type, as sent.
    Other(String),
}

impl EventType {
    /// The wire value (`tunnel.created`, …).
    pub fn as_str(&self) -> &str {
        match self {
            EventType::StateInitial => "state.initial",
            EventType::ClientCreated => "client.created",
            EventType::ClientUpdated => "client.updated",
            EventType::ClientDeleted => "client.deleted",
            EventType::TunnelCreated => "tunnel.created",
            EventType::TunnelUpdated => "tunnel.updated",
            EventType::TunnelDeleted => "tunnel.deleted",
            EventType::Other(s) => s,
        }
    }
}

impl From<&str> for EventType {
    fn from(s: &str) -> Self {
        match s {
            "state.initial" => EventType::StateInitial,
            "client.created" => EventType::ClientCreated,
            "client.updated" => EventType::ClientUpdated,
            "client.deleted" => EventType::ClientDeleted,
            "tunnel.created" => EventType::TunnelCreated,
            "tunnel.updated" => EventType::TunnelUpdated,
            "tunnel.deleted" => EventType::TunnelDeleted,
            other => EventType::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The typed `object` of an [`Event`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EventObject {
    /// `state.initial`.
    Initial(InitialState),
    /// `client.*`.
    Client(Box<ClientRecord>),
    /// `tunnel.*`.
    Tunnel(Box<TunnelRecord>),
    /// An event type this SDK does not know: the raw object.
    Other(Value),
}

/// One real-time event from a watch (`/api/sse` or `/api/websocket`).
///
/// Deltas carry the full object, not a patch; a deleted event carries the
/// object's last state (with `status` `offline`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawEvent", into = "RawEvent")]
#[non_exhaustive]
pub struct Event {
    /// The event type.
    pub event_type: EventType,
    /// The event id, when the engine sends one.
    pub id: Option<String>,
    /// When it happened (ISO-8601).
    pub created_at: Option<String>,
    /// The user it concerns.
    pub user_id: Option<String>,
    /// The workspace it concerns.
    pub workspace_id: Option<String>,
    /// The project it concerns.
    pub project_id: Option<String>,
    /// The cluster it happened on.
    pub cluster_id: Option<String>,
    /// The typed payload.
    pub object: EventObject,
}

impl Event {
    /// An event with no id or metadata.
    pub fn new(event_type: EventType, object: EventObject) -> Self {
        Event {
            event_type,
            id: None,
            created_at: None,
            user_id: None,
            workspace_id: None,
            project_id: None,
            cluster_id: None,
            object,
        }
    }

    /// The snapshot, for `state.initial`.
    pub fn initial(&self) -> Option<&InitialState> {
        match &self.object {
            EventObject::Initial(s) => Some(s),
            _ => None,
        }
    }

    /// The client, for `client.*` events.
    pub fn client(&self) -> Option<&ClientRecord> {
        match &self.object {
            EventObject::Client(c) => Some(c),
            _ => None,
        }
    }

    /// The tunnel, for `tunnel.*` events.
    pub fn tunnel(&self) -> Option<&TunnelRecord> {
        match &self.object {
            EventObject::Tunnel(t) => Some(t),
            _ => None,
        }
    }

    /// Parses one event from its JSON text.
    pub fn from_json(text: &str) -> crate::Result<Event> {
        serde_json::from_str(text).map_err(|e| {
            crate::Error::new(
                crate::ErrorKind::Protocol,
                code::EVENT_JSON,
                format!("invalid event JSON: {e}"),
            )
        })
    }
}

#[derive(Clone, Serialize, Deserialize)]
struct RawEvent {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    workspace_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    project_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cluster_id: Option<String>,
    object: Value,
}

impl TryFrom<RawEvent> for Event {
    type Error = serde_json::Error;

    fn try_from(raw: RawEvent) -> Result<Self, Self::Error> {
        let event_type = EventType::from(raw.event_type.as_str());
        let object = match &event_type {
            EventType::StateInitial => EventObject::Initial(serde_json::from_value(raw.object)?),
            EventType::ClientCreated | EventType::ClientUpdated | EventType::ClientDeleted => {
                EventObject::Client(Box::new(serde_json::from_value(raw.object)?))
            }
            EventType::TunnelCreated | EventType::TunnelUpdated | EventType::TunnelDeleted => {
                EventObject::Tunnel(Box::new(serde_json::from_value(raw.object)?))
            }
            EventType::Other(_) => EventObject::Other(raw.object),
        };
        Ok(Event {
            event_type,
            id: raw.id,
            created_at: raw.created_at,
            user_id: raw.user_id,
            workspace_id: raw.workspace_id,
            project_id: raw.project_id,
            cluster_id: raw.cluster_id,
            object,
        })
    }
}

impl From<Event> for RawEvent {
    fn from(e: Event) -> Self {
        let object = match e.object {
            EventObject::Initial(s) => serde_json::to_value(s),
            EventObject::Client(c) => serde_json::to_value(c),
            EventObject::Tunnel(t) => serde_json::to_value(t),
            EventObject::Other(v) => Ok(v),
        }
        // Plain structs with string keys always serialise.
        .unwrap_or(Value::Null);
        RawEvent {
            event_type: e.event_type.as_str().to_owned(),
            id: e.id,
            created_at: e.created_at,
            user_id: e.user_id,
            workspace_id: e.workspace_id,
            project_id: e.project_id,
            cluster_id: e.cluster_id,
            object,
        }
    }
}

/// The answer of a health probe (`/api/health/live`, `/api/health/ready`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Health {
    /// `live`, `ready` or `unavailable`.
    pub status: String,
}

impl Health {
    /// Whether the probe passed (`live` or `ready`).
    pub fn is_ok(&self) -> bool {
        matches!(self.status.as_str(), "live" | "ready")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_and_tolerate() {
        let text = r#"{"type":"state.initial","id":"e1","extra":1,"object":{"snapshot_at":"2026-01-01T00:00:00Z",
            "clients":[{"id":"c1","status":"online","labels":null,"future":true}],
            "tunnels":[{"id":"t1","client_id":"c1","status":"online","type":"bytestream","port":443,"geo_ip":null}]}}"#;
        let e = Event::from_json(text).unwrap();
        assert_eq!(e.event_type, EventType::StateInitial);
        let s = e.initial().unwrap();
        assert_eq!(s.clients[0].extra["future"], Value::Bool(true));
        assert_eq!(s.tunnels[0].tunnel_type.as_deref(), Some("bytestream"));
        let again = Event::from_json(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(again, e);
        let other = Event::from_json(r#"{"type":"stream.summary","object":{"x":1}}"#).unwrap();
        assert!(matches!(other.object, EventObject::Other(_)));
        let t = Event::from_json(
            r#"{"type":"tunnel.deleted","object":{"id":"t","client_id":"c","status":"gone"}}"#,
        )
        .unwrap();
        assert_eq!(t.tunnel().unwrap().status, Status::Other("gone".into()));
        assert_eq!(Event::from_json("{}").unwrap_err().code(), code::EVENT_JSON);
    }
}
