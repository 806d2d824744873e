//! Real-time watch events (ENGINE_API.md §7): [`Event`], its typed
//! [`EventObject`] and the `state.initial` snapshot.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{null_default, ClientRecord, TunnelRecord};
use crate::error::code;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::models::Status;

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
