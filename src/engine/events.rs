//! The engine's internal event bus: what webhooks and Engine API watches
//! are fed from.
//!
//! One [`Bus`], written under the state lock (so events are in state
//! order), with two kinds of readers:
//! - [`LocalEngine::subscribe`](super::LocalEngine::subscribe): a
//!   `broadcast` receiver (a shared ring of [`CAPACITY`] events; a slow
//!   receiver gets `Lagged` and skips ahead);
//! - Engine API watches ([`Bus::watch`]): each has its own bounded queue;
//!   one that falls behind is disconnected (its queue closes and
//!   [`Watcher::recv`] says why) instead of growing memory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{broadcast, mpsc};

use crate::proto::{ClientDetails, ControlChannelLiveness, TunnelProperties};

/// Capacity of the broadcast channel behind [`LocalEngine::subscribe`](super::LocalEngine::subscribe).
pub(crate) const CAPACITY: usize = 1024;

/// Default queue of one Engine API watch, in events.
pub(crate) const WATCH_QUEUE: usize = 1024;

/// An event with its position on the bus.
#[derive(Clone, Debug)]
pub(crate) struct Sequenced {
    /// Engine-run-unique event id (`evt_<run>_<n>`).
    pub(crate) id: Arc<str>,
    pub(crate) event: Arc<EngineEvent>,
}

struct WatchSender {
    tx: mpsc::Sender<Sequenced>,
    lagged: Arc<AtomicBool>,
}

/// The event bus (see the module docs).
pub(crate) struct Bus {
    broadcast: broadcast::Sender<EngineEvent>,
    watchers: Vec<WatchSender>,
    run: String,
    seq: u64,
}

impl Bus {
    pub(crate) fn new() -> Self {
        let (broadcast, _) = broadcast::channel(CAPACITY);
        Bus {
            broadcast,
            watchers: Vec::new(),
            run: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            seq: 0,
        }
    }

    /// Delivers `event` to every reader. Never blocks: a watch whose queue
    /// is full is dropped (and learns why from [`Watcher::recv`]).
    pub(crate) fn emit(&mut self, event: EngineEvent) {
        self.seq += 1;
        if self.watchers.is_empty() {
            // No receiver is fine.
            let _ = self.broadcast.send(event);
            return;
        }
        let _ = self.broadcast.send(event.clone());
        let item = Sequenced {
            id: Arc::from(format!("evt_{}_{}", self.run, self.seq)),
            event: Arc::new(event),
        };
        self.watchers.retain(|w| match w.tx.try_send(item.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                w.lagged.store(true, Ordering::Release);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// A broadcast receiver (`LocalEngine::subscribe`).
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.broadcast.subscribe()
    }

    /// A new watch with a queue of `capacity` events, starting after the
    /// last emitted event (take the snapshot under the same lock).
    pub(crate) fn watch(&mut self, capacity: usize) -> Watcher {
        self.watchers.retain(|w| !w.tx.is_closed());
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let lagged = Arc::new(AtomicBool::new(false));
        self.watchers.push(WatchSender {
            tx,
            lagged: lagged.clone(),
        });
        Watcher {
            rx,
            lagged,
            capacity: capacity.max(1),
            snapshot_id: format!("evt_{}_{}_initial", self.run, self.seq),
        }
    }
}

/// Why a watch ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WatchEnd {
    /// It fell behind by a full queue and was disconnected.
    Lagged {
        /// The queue size it overflowed.
        capacity: usize,
    },
    /// The engine is stopping.
    Closed,
}

/// One Engine API watch's bounded queue.
pub(crate) struct Watcher {
    rx: mpsc::Receiver<Sequenced>,
    lagged: Arc<AtomicBool>,
    capacity: usize,
    /// The id of this watch's `state.initial` event.
    pub(crate) snapshot_id: String,
}

impl Watcher {
    /// The next event, in order. Cancel safe.
    pub(crate) async fn recv(&mut self) -> Result<Sequenced, WatchEnd> {
        match self.rx.recv().await {
            Some(item) => Ok(item),
            None if self.lagged.load(Ordering::Acquire) => Err(WatchEnd::Lagged {
                capacity: self.capacity,
            }),
            None => Err(WatchEnd::Closed),
        }
    }
}

/// A connected client (one control channel).
///
/// Cheap to clone: what the client sent ([`details`](Self::details)) is
/// shared, not copied, by the engine's state, every event, listing and
/// watch snapshot.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Engine-assigned client id (a UUID).
    pub id: String,
    /// What the client said about itself, with the token removed (shared).
    pub details: Arc<ClientDetails>,
    /// The client's TCP peer address.
    pub peer_addr: SocketAddr,
    /// The negotiated liveness (`None`: the client sent no heartbeats proposal).
    pub liveness: Option<ControlChannelLiveness>,
    /// When the control channel opened.
    pub created_at: SystemTime,
    /// The agent's verified client certificate (mTLS), as
    /// `sha256:<hex>` of the leaf certificate's DER; `None` for a client
    /// that authenticated with a token (or not at all).
    pub identity: Option<String>,
    /// The subject common name of that certificate, if it has one.
    pub identity_name: Option<String>,
}

/// An open tunnel.
///
/// Cheap to clone: the [`properties`](Self::properties) (labels and all)
/// are shared, not copied, by the engine's state, every event, listing
/// and watch snapshot.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct TunnelInfo {
    /// Engine-assigned tunnel id.
    pub id: String,
    /// The owning client's id.
    pub client_id: String,
    /// The properties as returned to the client (id, name, labels,
    /// hostname/port for published tunnels, …), shared.
    pub properties: Arc<TunnelProperties>,
    /// When the tunnel was created.
    pub created_at: SystemTime,
}

/// Something that happened in the engine, in order.
///
/// Cheap to clone (each broadcast receiver gets a clone): the client's
/// details and the tunnel's properties are shared ([`Arc`]).
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
