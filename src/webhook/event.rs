//! The verified event.

use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::rejection::WebhookRejection;
use crate::error::Error;

/// The type of a webhook event: one of the four types rstream delivers.
///
/// Any other `type` in a payload is a payload error, never a silent
/// "unknown" value. New types may be added in later releases.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum WebhookEventType {
    /// `client.created`: a client connected.
    #[serde(rename = "client.created")]
    ClientCreated,
    /// `client.deleted`: a client disconnected.
    #[serde(rename = "client.deleted")]
    ClientDeleted,
    /// `tunnel.created`: a tunnel was created.
    #[serde(rename = "tunnel.created")]
    TunnelCreated,
    /// `tunnel.deleted`: a tunnel was deleted.
    #[serde(rename = "tunnel.deleted")]
    TunnelDeleted,
}

impl WebhookEventType {
    /// Every deliverable event type.
    pub const ALL: [WebhookEventType; 4] = [
        WebhookEventType::ClientCreated,
        WebhookEventType::ClientDeleted,
        WebhookEventType::TunnelCreated,
        WebhookEventType::TunnelDeleted,
    ];

    /// The wire name, e.g. `"tunnel.created"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::ClientCreated => "client.created",
            WebhookEventType::ClientDeleted => "client.deleted",
            WebhookEventType::TunnelCreated => "tunnel.created",
            WebhookEventType::TunnelDeleted => "tunnel.deleted",
        }
    }

    fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl fmt::Display for WebhookEventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for WebhookEventType {
    type Err = Error;

    /// Parses an exact wire name; anything else is an
    /// `ERR_RSTREAM_WEBHOOK_PAYLOAD` error.
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::from_wire(s).ok_or_else(|| {
            WebhookRejection::payload("webhook event type is not deliverable").into()
        })
    }
}

/// A verified (or at least validated) webhook event.
///
/// Built by [`verify`](super::verify), by [`WebhookLayer`](super::WebhookLayer)
/// (found in the request extensions) and by [`WebhookEvent::from_json`].
#[derive(Clone, Debug, PartialEq)]
pub struct WebhookEvent {
    id: String,
    event_type: WebhookEventType,
    created_at: Option<String>,
    user_id: Option<String>,
    workspace_id: Option<String>,
    project_id: Option<String>,
    cluster_id: Option<String>,
    object: Map<String, Value>,
    raw: Value,
}

impl WebhookEvent {
    /// Parses and validates a JSON payload **without checking any
    /// signature**: for senders (to feed [`build_headers`](super::build_headers))
    /// and tests. Receivers use [`verify`](super::verify).
    ///
    /// # Errors
    ///
    /// `ERR_RSTREAM_WEBHOOK_PAYLOAD` when the payload is not UTF-8 JSON of
    /// the documented shape.
    pub fn from_json(payload: impl AsRef<[u8]>) -> Result<Self, Error> {
        Self::parse(payload.as_ref()).map_err(Error::from)
    }

    pub(crate) fn parse(payload: &[u8]) -> Result<Self, WebhookRejection> {
        let text = std::str::from_utf8(payload)
            .map_err(|_| WebhookRejection::payload("webhook payload is not valid UTF-8"))?;
        let raw: Value = serde_json::from_str(text)
            .map_err(|_| WebhookRejection::payload("webhook payload is not valid JSON"))?;
        Self::from_value(raw)
    }

    fn from_value(raw: Value) -> Result<Self, WebhookRejection> {
        let Value::Object(map) = &raw else {
            return Err(WebhookRejection::payload(
                "webhook payload must be a JSON object",
            ));
        };
        let id = match map.get("id") {
            Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
            _ => return Err(WebhookRejection::payload("webhook event id is required")),
        };
        let event_type = match map.get("type") {
            Some(Value::String(s)) if !s.trim().is_empty() => WebhookEventType::from_wire(s)
                .ok_or(WebhookRejection::payload(
                    "webhook event type is not deliverable",
                ))?,
            _ => return Err(WebhookRejection::payload("webhook event type is required")),
        };
        let created_at = optional_string(map, "created_at", "webhook event created_at is invalid")?;
        let object = match map.get("object") {
            Some(Value::Object(o)) => o.clone(),
            _ => {
                return Err(WebhookRejection::payload(
                    "webhook event object is required",
                ))
            }
        };
        let user_id = optional_string(map, "user_id", "webhook event user_id is invalid")?;
        let workspace_id =
            optional_string(map, "workspace_id", "webhook event workspace_id is invalid")?;
        let project_id = optional_string(map, "project_id", "webhook event project_id is invalid")?;
        let cluster_id = optional_string(map, "cluster_id", "webhook event cluster_id is invalid")?;
        Ok(WebhookEvent {
            id,
            event_type,
            created_at,
            user_id,
            workspace_id,
            project_id,
            cluster_id,
            object,
            raw,
        })
    }

    /// The event id (trimmed, never empty).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The event type.
    pub fn event_type(&self) -> WebhookEventType {
        self.event_type
    }

    /// When the event was created, as sent (an RFC 3339 string), if present.
    pub fn created_at(&self) -> Option<&str> {
        self.created_at.as_deref()
    }

    /// The user the event belongs to, if present.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The workspace the event belongs to, if present.
    pub fn workspace_id(&self) -> Option<&str> {
        self.workspace_id.as_deref()
    }

    /// The project the event belongs to, if present.
    pub fn project_id(&self) -> Option<&str> {
        self.project_id.as_deref()
    }

    /// The cluster the event belongs to, if present.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// The event's `object` (the client or tunnel), as sent.
    pub fn object(&self) -> &Map<String, Value> {
        &self.object
    }

    /// The whole payload as parsed JSON, including fields this SDK does not
    /// model.
    pub fn raw(&self) -> &Value {
        &self.raw
    }

    /// Consumes the event and returns the whole payload.
    pub fn into_raw(self) -> Value {
        self.raw
    }
}

fn optional_string(
    map: &Map<String, Value>,
    field: &str,
    error: &'static str,
) -> Result<Option<String>, WebhookRejection> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(WebhookRejection::payload(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::code;
    use crate::webhook::RejectionKind;

    fn parse(s: &str) -> Result<WebhookEvent, WebhookRejection> {
        WebhookEvent::parse(s.as_bytes())
    }

    #[test]
    fn full_event() {
        let e = parse(
            r#"{"id":"  evt_1 ","type":"tunnel.created","created_at":"2026-01-01T00:00:00Z",
                "user_id":"u","workspace_id":null,"project_id":"p","object":{"id":"t"},"extra":1}"#,
        )
        .unwrap();
        assert_eq!(e.id(), "evt_1");
        assert_eq!(e.event_type(), WebhookEventType::TunnelCreated);
        assert_eq!(e.created_at(), Some("2026-01-01T00:00:00Z"));
        assert_eq!(e.user_id(), Some("u"));
        assert_eq!(e.workspace_id(), None);
        assert_eq!(e.project_id(), Some("p"));
        assert_eq!(e.cluster_id(), None);
        assert_eq!(e.object()["id"], "t");
        assert_eq!(e.raw()["extra"], 1);
    }

    #[test]
    fn invalid_shapes_are_payload_errors() {
        for bad in [
            "",
            "[]",
            "null",
            "{",
            r#"{"type":"tunnel.created","object":{}}"#,
            r#"{"id":" ","type":"tunnel.created","object":{}}"#,
            r#"{"id":1,"type":"tunnel.created","object":{}}"#,
            r#"{"id":"e","object":{}}"#,
            r#"{"id":"e","type":"tunnel.updated","object":{}}"#,
            r#"{"id":"e","type":" tunnel.created","object":{}}"#,
            r#"{"id":"e","type":"TUNNEL.CREATED","object":{}}"#,
            r#"{"id":"e","type":"tunnel.created"}"#,
            r#"{"id":"e","type":"tunnel.created","object":[]}"#,
            r#"{"id":"e","type":"tunnel.created","object":null}"#,
            r#"{"id":"e","type":"tunnel.created","object":{},"created_at":5}"#,
            r#"{"id":"e","type":"tunnel.created","object":{},"cluster_id":true}"#,
        ] {
            let err = parse(bad).unwrap_err();
            assert_eq!(err.kind(), RejectionKind::InvalidPayload, "{bad}");
        }
        let err = WebhookEvent::parse(b"\xff{}").unwrap_err();
        assert_eq!(err.kind(), RejectionKind::InvalidPayload);
    }

    #[test]
    fn event_type_round_trips() {
        for t in WebhookEventType::ALL {
            assert_eq!(t.as_str().parse::<WebhookEventType>().unwrap(), t);
            assert_eq!(serde_json::to_value(t).unwrap(), t.as_str());
        }
        let err = "tunnel.updated".parse::<WebhookEventType>().unwrap_err();
        assert_eq!(err.code(), code::WEBHOOK_PAYLOAD);
    }
}
