//! The engine's internal event bus: what webhooks and Engine API watches
//! are fed from.

use std::net::SocketAddr;
use std::time::SystemTime;

use crate::proto::{ClientDetails, ControlChannelLiveness, TunnelProperties};

/// Capacity of the broadcast channel behind [`LocalEngine::subscribe`](super::LocalEngine::subscribe).
pub(crate) const CAPACITY: usize = 1024;

/// A connected client (one control channel).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Engine-assigned client id (a UUID).
    pub id: String,
    /// What the client said about itself, with the token removed.
    pub details: ClientDetails,
    /// The client's TCP peer address.
    pub peer_addr: SocketAddr,
    /// The negotiated liveness (`None`: the client sent no heartbeats proposal).
    pub liveness: Option<ControlChannelLiveness>,
    /// When the control channel opened.
    pub created_at: SystemTime,
}

/// An open tunnel.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TunnelInfo {
    /// Engine-assigned tunnel id.
    pub id: String,
    /// The owning client's id.
    pub client_id: String,
    /// The properties as returned to the client (id, name, labels,
    /// hostname/port for published tunnels, …).
    pub properties: TunnelProperties,
    /// When the tunnel was created.
    pub created_at: SystemTime,
}

/// Something that happened in the engine, in order.
///
/// Deleted events carry the last state of the object and the time of the
/// deletion. A client's tunnels are deleted (one event each) before the
/// client itself.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EngineEvent {
    /// A control channel opened.
    ClientCreated {
        /// The client.
        client: ClientInfo,
    },
    /// A control channel closed (cleanly or not).
    ClientDeleted {
        /// The client, as it was.
        client: ClientInfo,
        /// When it was deleted.
        at: SystemTime,
    },
    /// A tunnel was created.
    TunnelCreated {
        /// The tunnel.
        tunnel: TunnelInfo,
    },
    /// A tunnel was closed, by its client or because its client went away.
    TunnelDeleted {
        /// The tunnel, as it was.
        tunnel: TunnelInfo,
        /// When it was deleted.
        at: SystemTime,
    },
}

impl EngineEvent {
    /// The webhook / watch event type: `client.created`, `client.deleted`,
    /// `tunnel.created` or `tunnel.deleted`.
    pub fn event_type(&self) -> &'static str {
        match self {
            EngineEvent::ClientCreated { .. } => "client.created",
            EngineEvent::ClientDeleted { .. } => "client.deleted",
            EngineEvent::TunnelCreated { .. } => "tunnel.created",
            EngineEvent::TunnelDeleted { .. } => "tunnel.deleted",
        }
    }

    /// When it happened.
    pub fn at(&self) -> SystemTime {
        match self {
            EngineEvent::ClientCreated { client } => client.created_at,
            EngineEvent::TunnelCreated { tunnel } => tunnel.created_at,
            EngineEvent::ClientDeleted { at, .. } | EngineEvent::TunnelDeleted { at, .. } => *at,
        }
    }
}
