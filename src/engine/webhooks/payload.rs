//! Webhook event bodies (PROTOCOL.md §7): the envelope, with the Engine
//! API's own typed [`ClientRecord`] / [`TunnelRecord`] as `object`, built
//! by the same functions the Engine API uses
//! ([`client_object`] / [`tunnel_object`]), so a webhook and an API call
//! always describe an object the same way.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::Serialize;

use crate::api::{ClientRecord, Status, TunnelRecord};
use crate::engine::api::{client_object, tunnel_object};
use crate::engine::dates::rfc3339;
use crate::engine::events::EngineEvent;
use crate::webhook::{WebhookEvent, WebhookEventType};

/// An event ready to send: the body, and the body parsed back as the
/// receiver will see it (its id and type label the delivery records).
pub(super) struct Job {
    pub(super) event: WebhookEvent,
    pub(super) body: Bytes,
}

/// The JSON envelope. `user_id`, `workspace_id`, `project_id` and
/// `cluster_id` are always present and `null`: a local engine has no
/// account.
#[derive(Serialize)]
struct Payload {
    id: String,
    #[serde(rename = "type")]
    event_type: &'static str,
    created_at: String,
    user_id: Option<String>,
    workspace_id: Option<String>,
    project_id: Option<String>,
    cluster_id: Option<String>,
    object: Object,
}

/// The event's object: the Engine API's record, `online` in created
/// events and `offline` in deleted ones.
#[derive(Serialize)]
#[serde(untagged)]
enum Object {
    Client(Box<ClientRecord>),
    Tunnel(Box<TunnelRecord>),
}

impl Object {
    fn id(&self) -> &str {
        match self {
            Object::Client(c) => &c.id,
            Object::Tunnel(t) => &t.id,
        }
    }
}

impl Job {
    /// The body (and parsed event) for `event`, or `None` for an event
    /// type webhooks do not carry.
    pub(super) fn for_event(event: &EngineEvent) -> Option<Job> {
        let body = payload(event)?;
        let bytes = match serde_json::to_vec(&body) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "webhook: cannot serialise an event");
                return None;
            }
        };
        match WebhookEvent::from_json(&bytes) {
            Ok(event) => Some(Job { event, body: bytes }),
            Err(e) => {
                tracing::warn!(error = %e, "webhook: built an invalid event body");
                None
            }
        }
    }
}

/// The envelope for `event`.
fn payload(event: &EngineEvent) -> Option<Payload> {
    let object = match event {
        EngineEvent::ClientCreated { client } => {
            Object::Client(Box::new(client_object(client, Status::Online)))
        }
        EngineEvent::ClientDeleted { client, .. } => {
            Object::Client(Box::new(client_object(client, Status::Offline)))
        }
        EngineEvent::TunnelCreated { tunnel } => {
            Object::Tunnel(Box::new(tunnel_object(tunnel, Status::Online)))
        }
        EngineEvent::TunnelDeleted { tunnel, .. } => {
            Object::Tunnel(Box::new(tunnel_object(tunnel, Status::Offline)))
        }
        // Events webhooks do not carry (none yet).
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let event_type: WebhookEventType = event.event_type().parse().ok()?;
    Some(Payload {
        id: event_id(event_type, object.id(), event.at()),
        event_type: event_type.as_str(),
        created_at: rfc3339(event.at()),
        user_id: None,
        workspace_id: None,
        project_id: None,
        cluster_id: None,
        object,
    })
}

/// The event id: `evt_` + 32 hex characters derived from the event (its
/// type, its object's id and its time), so every endpoint sees the same id
/// for the same event, and retries keep it.
fn event_id(event_type: WebhookEventType, object_id: &str, at: SystemTime) -> String {
    use sha2::{Digest as _, Sha256};
    let nanos = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos();
    let mut h = Sha256::new();
    h.update(b"rstream-local-engine event\0");
    h.update(event_type.as_str().as_bytes());
    h.update(b"\0");
    h.update(object_id.as_bytes());
    h.update(b"\0");
    h.update(nanos.to_be_bytes());
    format!("evt_{}", hex::encode(&h.finalize()[..16]))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::Value;

    use super::*;
    use crate::engine::events::{ClientInfo, TunnelInfo};
    use crate::proto::{ClientDetails, TunnelProperties};

    #[test]
    fn bodies_are_valid_events() {
        let client = ClientInfo {
            id: "c1".into(),
            details: ClientDetails {
                agent: Some("rstream-rust-runtime".into()),
                version: Some("0.1.0".into()),
                ..Default::default()
            }
            .into(),
            peer_addr: "127.0.0.1:5000".parse().unwrap(),
            liveness: None,
            created_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            identity: None,
            identity_name: None,
        };
        let created = EngineEvent::ClientCreated { client };
        let job = Job::for_event(&created).unwrap();
        // The same event always gets the same id (for every endpoint).
        assert_eq!(Job::for_event(&created).unwrap().event.id(), job.event.id());
        assert_eq!(job.event.id().len(), 4 + 32);
        assert_eq!(job.event.event_type(), WebhookEventType::ClientCreated);
        assert!(job.event.id().starts_with("evt_"));
        assert_eq!(job.event.created_at(), Some("2023-11-14T22:13:20.000Z"));
        assert_eq!(job.event.object()["id"], "c1");
        assert_eq!(job.event.object()["status"], "online");
        assert_eq!(job.event.object()["agent"], "rstream-rust-runtime");
        assert!(job.event.object().get("token").is_none());
        assert_eq!(job.event.raw()["cluster_id"], Value::Null);
        // The object is the Engine API's Client, field for field (no
        // `creation_date`: the API's Client has none).
        let EngineEvent::ClientCreated { client } = &created else {
            unreachable!()
        };
        assert_eq!(
            Value::Object(job.event.object().clone()),
            serde_json::to_value(client_object(client, Status::Online)).unwrap()
        );
        assert!(job.event.object().get("creation_date").is_none());

        let mut properties = TunnelProperties {
            id: Some("t1".into()),
            name: Some("web".into()),
            publish: Some(true),
            protocol: Some("http".into()),
            hostname: Some("127.0.0.1".into()),
            port: Some(4443),
            ..Default::default()
        };
        properties.labels.insert("env".into(), "dev".into());
        let tunnel = TunnelInfo {
            id: "t1".into(),
            client_id: "c1".into(),
            properties: properties.into(),
            created_at: UNIX_EPOCH,
        };
        let job = Job::for_event(&EngineEvent::TunnelDeleted {
            tunnel,
            at: UNIX_EPOCH + Duration::from_secs(60),
        })
        .unwrap();
        let o = job.event.object();
        assert_eq!(job.event.event_type(), WebhookEventType::TunnelDeleted);
        assert_eq!(job.event.created_at(), Some("1970-01-01T00:01:00.000Z"));
        assert_eq!(o["id"], "t1");
        assert_eq!(o["client_id"], "c1");
        assert_eq!(o["status"], "offline");
        assert_eq!(o["port"], 4443);
        assert_eq!(o["publish"], true);
        assert_eq!(o["labels"]["env"], "dev");
        assert!(o.get("trusted_ips").is_none());
        assert_eq!(o["creation_date"], "1970-01-01T00:00:00.000Z");
    }
}
