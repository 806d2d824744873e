//! [`LiveInventory`]: a watch folded into an always-current map of tunnels
//! and clients.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::models::{ClientRecord, Event, EventObject, EventType, TunnelRecord};
use super::Watch;
use crate::error::{code, Error, ErrorKind, Result};

/// What a [`LiveInventory`] knows at one moment.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct InventorySnapshot {
    /// Clients by id.
    pub clients: BTreeMap<String, ClientRecord>,
    /// Tunnels by id.
    pub tunnels: BTreeMap<String, TunnelRecord>,
    /// Whether a `state.initial` has been received (before that the maps
    /// are empty because nothing is known yet, not because nothing exists).
    pub synced: bool,
    /// The `snapshot_at` of the last `state.initial`.
    pub snapshot_at: Option<String>,
    /// Incremented on every applied event (a cheap change marker).
    pub version: u64,
    /// Set when the watch ended for good (authentication, validation…);
    /// the maps then stop changing.
    pub error: Option<Error>,
}

impl InventorySnapshot {
    /// Applies one event: `state.initial` replaces everything, deltas
    /// insert or remove one object.
    pub fn apply(&mut self, event: &Event) {
        match (&event.event_type, &event.object) {
            (EventType::StateInitial, EventObject::Initial(s)) => {
                self.clients = s
                    .clients
                    .iter()
                    .map(|c| (c.id.clone(), c.clone()))
                    .collect();
                self.tunnels = s
                    .tunnels
                    .iter()
                    .map(|t| (t.id.clone(), t.clone()))
                    .collect();
                self.snapshot_at = s.snapshot_at.clone();
                self.synced = true;
            }
            (EventType::ClientCreated | EventType::ClientUpdated, EventObject::Client(c)) => {
                self.clients.insert(c.id.clone(), (**c).clone());
            }
            (EventType::ClientDeleted, EventObject::Client(c)) => {
                self.clients.remove(&c.id);
            }
            (EventType::TunnelCreated | EventType::TunnelUpdated, EventObject::Tunnel(t)) => {
                self.tunnels.insert(t.id.clone(), (**t).clone());
            }
            (EventType::TunnelDeleted, EventObject::Tunnel(t)) => {
                self.tunnels.remove(&t.id);
            }
            _ => return,
        }
        self.version += 1;
    }
}

/// An always-current view of an engine's tunnels and clients, kept by a
/// (resilient) [`Watch`] running in a background task.
///
/// Read it at any time ([`snapshot`](Self::snapshot), [`tunnels`](Self::tunnels),
/// [`tunnel`](Self::tunnel), …) or react to changes through
/// [`subscribe`](Self::subscribe) (a `tokio::sync::watch` receiver). The
/// task stops when the `LiveInventory` is dropped.
///
/// ```no_run
/// # async fn run(api: rstream::api::EngineApi) -> rstream::Result<()> {
/// use rstream::api::{TunnelFilters, WatchParams};
///
/// let inventory = api.live_inventory(WatchParams::new().tunnels(TunnelFilters::new().label_any("service")));
/// inventory.synced().await?;
/// let mut changes = inventory.subscribe();
/// loop {
///     for tunnel in changes.borrow_and_update().tunnels.values() {
///         println!("{} -> {:?}", tunnel.labels["service"], tunnel.display_host());
///     }
///     if changes.changed().await.is_err() { break; }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct LiveInventory {
    state: watch::Receiver<Arc<InventorySnapshot>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for LiveInventory {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LiveInventory {
    /// Folds `watch` (make it [`resilient`](Watch::resilient) to survive
    /// engine restarts) into a live inventory. Must be called inside a
    /// tokio runtime.
    pub fn new(watch: Watch) -> Self {
        let (tx, state) = watch::channel(Arc::new(InventorySnapshot::default()));
        let task = tokio::spawn(fold(watch, tx));
        LiveInventory { state, task }
    }

    /// The current state (cheap: an `Arc`).
    pub fn snapshot(&self) -> Arc<InventorySnapshot> {
        self.state.borrow().clone()
    }

    /// A receiver notified on every change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<InventorySnapshot>> {
        self.state.clone()
    }

    /// The current tunnels, by id order.
    pub fn tunnels(&self) -> Vec<TunnelRecord> {
        self.state.borrow().tunnels.values().cloned().collect()
    }

    /// The current clients, by id order.
    pub fn clients(&self) -> Vec<ClientRecord> {
        self.state.borrow().clients.values().cloned().collect()
    }

    /// One tunnel by id.
    pub fn tunnel(&self, id: &str) -> Option<TunnelRecord> {
        self.state.borrow().tunnels.get(id).cloned()
    }

    /// One client by id.
    pub fn client(&self, id: &str) -> Option<ClientRecord> {
        self.state.borrow().clients.get(id).cloned()
    }

    /// Waits for the first `state.initial`; fails if the watch ended
    /// before (with its error).
    pub async fn synced(&self) -> Result<Arc<InventorySnapshot>> {
        self.wait_for(|_| true).await
    }

    /// Waits until `predicate` holds for a synced state (e.g. "the tunnel
    /// named `api` is there"); fails if the watch ends first.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is consumed.
    pub async fn wait_for(
        &self,
        mut predicate: impl FnMut(&InventorySnapshot) -> bool,
    ) -> Result<Arc<InventorySnapshot>> {
        let mut rx = self.state.clone();
        loop {
            {
                let s = rx.borrow_and_update();
                if s.synced && predicate(&s) {
                    return Ok(s.clone());
                }
                if let Some(e) = &s.error {
                    return Err(e.clone());
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::new(
                    ErrorKind::Closed,
                    code::WATCH_CLOSED,
                    "the live inventory stopped",
                ));
            }
        }
    }
}

async fn fold(mut watch: Watch, tx: watch::Sender<Arc<InventorySnapshot>>) {
    while let Some(item) = watch.next().await {
        match item {
            Ok(event) => tx.send_modify(|s| Arc::make_mut(s).apply(&event)),
            Err(error) => {
                tracing::warn!(code = error.code(), %error, "live inventory watch ended");
                tx.send_modify(|s| Arc::make_mut(s).error = Some(error));
                return;
            }
        }
    }
}
