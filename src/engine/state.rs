//! The engine's state: clients, tunnels (by id and by name) and the
//! streams waiting for their owner. One `Mutex` (see `Inner::state`),
//! small critical sections, no `.await` under it. Events are emitted under
//! the lock, so their order matches the state's. `ClientInfo` and
//! `TunnelInfo` share what clients sent (`Arc`), so the copies handed to
//! events, listings and watch snapshots under the lock are cheap.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use ipnet::IpNet;
use subtle::ConstantTimeEq;
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinHandle;

use super::events::{Bus, ClientInfo, EngineEvent, TunnelInfo, Watcher};
use super::streams::ServerTls;
use crate::proto::{self, ErrorCode, Message};

/// Downstream peers allowed to reach a tunnel; empty = everyone.
pub(crate) type TrustedIps = Arc<[IpNet]>;

/// Whether `ip` may reach a tunnel with this allow-list.
pub(crate) fn allowed(trusted: &[IpNet], ip: IpAddr) -> bool {
    trusted.is_empty() || trusted.iter().any(|net| net.contains(&ip))
}

/// What a pending stream's waiter hears.
pub(crate) enum PendingEvent {
    /// The owner's proxy connection arrived (secret checked, `ProxyRsp` sent).
    Connected(Box<ServerTls>),
    /// The owner's `ProxyConnRsp`.
    Answered(Result<(), proto::Error>),
}

struct ClientEntry {
    info: ClientInfo,
    tunnels: HashSet<String>,
    /// The DATAGRAM router of a control channel over QUIC (plane A).
    #[cfg(feature = "quic")]
    router: Option<Arc<crate::datagram::quic::Router>>,
}

struct TunnelEntry {
    info: TunnelInfo,
    owner: mpsc::Sender<Message>,
    trusted: TrustedIps,
    endpoint: Option<JoinHandle<()>>,
    pending: usize,
}

struct PendingEntry {
    tunnel_id: String,
    client_id: String,
    secret: String,
    events: mpsc::Sender<PendingEvent>,
    connected: bool,
    answered: bool,
}

/// A stream registered as pending: what the waiter needs.
pub(crate) struct PendingStart {
    pub(crate) stream_id: String,
    pub(crate) secret: String,
    pub(crate) owner: mpsc::Sender<Message>,
    pub(crate) events: mpsc::Receiver<PendingEvent>,
    /// The owner's DATAGRAM router when the stream is a plane-A channel:
    /// a datagram tunnel without guaranteed delivery whose owner's control
    /// channel is on QUIC (DATAGRAM_QUIC.md §2).
    #[cfg(feature = "quic")]
    pub(crate) plane_a: Option<Arc<crate::datagram::quic::Router>>,
}

/// A tunnel found for a dial.
pub(crate) struct DialTarget {
    pub(crate) id: String,
    pub(crate) trusted: TrustedIps,
    /// The tunnel's record, for connect scopes.
    pub(crate) info: TunnelInfo,
}

pub(crate) struct State {
    clients: HashMap<String, ClientEntry>,
    tunnels: HashMap<String, TunnelEntry>,
    names: HashMap<String, String>,
    pending: HashMap<String, PendingEntry>,
    events: Bus,
}

fn error(code: ErrorCode, message: impl Into<String>) -> proto::Error {
    proto::Error::new(code, message)
}

impl State {
    pub(crate) fn new(events: Bus) -> Self {
        State {
            clients: HashMap::new(),
            tunnels: HashMap::new(),
            names: HashMap::new(),
            pending: HashMap::new(),
            events,
        }
    }

    fn emit(&mut self, event: EngineEvent) {
        self.events.emit(event);
    }

    pub(crate) fn subscribe(&self) -> broadcast::Receiver<EngineEvent> {
        self.events.subscribe()
    }

    /// A new Engine API watch and the snapshot it starts from, atomically.
    pub(crate) fn watch(&mut self, capacity: usize) -> (Watcher, Vec<ClientInfo>, Vec<TunnelInfo>) {
        (self.events.watch(capacity), self.clients(), self.tunnels())
    }

    pub(crate) fn clients(&self) -> Vec<ClientInfo> {
        self.clients.values().map(|c| c.info.clone()).collect()
    }

    pub(crate) fn tunnels(&self) -> Vec<TunnelInfo> {
        self.tunnels.values().map(|t| t.info.clone()).collect()
    }

    /// One client, by id (without copying the others).
    pub(crate) fn client(&self, id: &str) -> Option<ClientInfo> {
        self.clients.get(id).map(|c| c.info.clone())
    }

    /// One tunnel, by id (without copying the others).
    pub(crate) fn tunnel(&self, id: &str) -> Option<TunnelInfo> {
        self.tunnels.get(id).map(|t| t.info.clone())
    }

    // ----- clients -----

    pub(crate) fn add_client(&mut self, info: ClientInfo) {
        self.clients.insert(
            info.id.clone(),
            ClientEntry {
                info: info.clone(),
                tunnels: HashSet::new(),
                #[cfg(feature = "quic")]
                router: None,
            },
        );
        self.emit(EngineEvent::ClientCreated { client: info });
    }

    /// Records the DATAGRAM router of a client whose control channel is
    /// on QUIC: its datagram tunnels' channels use plane A.
    #[cfg(feature = "quic")]
    pub(crate) fn set_client_router(
        &mut self,
        client_id: &str,
        router: Arc<crate::datagram::quic::Router>,
    ) {
        if let Some(client) = self.clients.get_mut(client_id) {
            client.router = Some(router);
        }
    }

    /// The DATAGRAM router of `client_id`'s control channel, when it is on
    /// QUIC (a dial on the same connection must not take plane A).
    #[cfg(feature = "quic")]
    pub(crate) fn client_router(
        &self,
        client_id: &str,
    ) -> Option<Arc<crate::datagram::quic::Router>> {
        self.clients.get(client_id)?.router.clone()
    }

    /// Removes a client and all its tunnels. Returns the tunnels' endpoint
    /// tasks, already aborted (await them to know the ports are free).
    pub(crate) fn remove_client(&mut self, client_id: &str) -> Vec<JoinHandle<()>> {
        let Some(entry) = self.clients.remove(client_id) else {
            return Vec::new();
        };
        let mut handles = Vec::new();
        for tunnel_id in &entry.tunnels {
            if let Some(h) = self.drop_tunnel(tunnel_id) {
                handles.push(h);
            }
        }
        self.emit(EngineEvent::ClientDeleted {
            client: entry.info,
            at: SystemTime::now(),
        });
        handles
    }

    /// Removes everything (engine shutdown).
    pub(crate) fn drain(&mut self) -> Vec<JoinHandle<()>> {
        let ids: Vec<String> = self.clients.keys().cloned().collect();
        let mut handles = Vec::new();
        for id in ids {
            handles.extend(self.remove_client(&id));
        }
        // Tunnels without a client cannot exist, but be thorough.
        let ids: Vec<String> = self.tunnels.keys().cloned().collect();
        for id in ids {
            handles.extend(self.drop_tunnel(&id));
        }
        self.pending.clear();
        handles
    }

    // ----- tunnels -----

    /// Checks, before any port is bound, that `client_id` may create one
    /// more tunnel named `name`.
    pub(crate) fn check_new_tunnel(
        &self,
        client_id: &str,
        name: Option<&str>,
        max_per_client: usize,
    ) -> Result<(), proto::Error> {
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| error(ErrorCode::InvalidStream, "the control channel is closing"))?;
        if client.tunnels.len() >= max_per_client {
            return Err(error(
                ErrorCode::CapacityExhausted,
                format!(
                    "this client already has {max_per_client} tunnels (the local engine's limit)"
                ),
            ));
        }
        if let Some(name) = name {
            if self.names.contains_key(name) || self.tunnels.contains_key(name) {
                return Err(error(
                    ErrorCode::InvalidRequest,
                    format!("a tunnel named {name:?} already exists on this engine"),
                ));
            }
        }
        Ok(())
    }

    /// Adds a tunnel (re-checking what [`check_new_tunnel`](Self::check_new_tunnel)
    /// checked). On failure the endpoint task is aborted.
    pub(crate) fn insert_tunnel(
        &mut self,
        info: TunnelInfo,
        owner: mpsc::Sender<Message>,
        trusted: TrustedIps,
        endpoint: Option<JoinHandle<()>>,
        max_per_client: usize,
    ) -> Result<(), proto::Error> {
        let name = info.properties.name.clone();
        let checked = self
            .check_new_tunnel(&info.client_id, name.as_deref(), max_per_client)
            .and_then(|()| {
                if self.tunnels.contains_key(&info.id) || self.names.contains_key(&info.id) {
                    Err(error(
                        ErrorCode::Internal,
                        "tunnel id collision, please retry",
                    ))
                } else {
                    Ok(())
                }
            });
        if let Err(e) = checked {
            if let Some(h) = endpoint {
                h.abort();
            }
            return Err(e);
        }
        if let Some(client) = self.clients.get_mut(&info.client_id) {
            client.tunnels.insert(info.id.clone());
        }
        if let Some(name) = name {
            self.names.insert(name, info.id.clone());
        }
        self.tunnels.insert(
            info.id.clone(),
            TunnelEntry {
                info: info.clone(),
                owner,
                trusted,
                endpoint,
                pending: 0,
            },
        );
        self.emit(EngineEvent::TunnelCreated { tunnel: info });
        Ok(())
    }

    /// Closes a tunnel owned by `client_id`. `None` if there is no such
    /// tunnel (or another client owns it); else its aborted endpoint task.
    pub(crate) fn remove_tunnel(
        &mut self,
        client_id: &str,
        tunnel_id: &str,
    ) -> Option<Option<JoinHandle<()>>> {
        if self.tunnels.get(tunnel_id)?.info.client_id != client_id {
            return None;
        }
        if let Some(client) = self.clients.get_mut(client_id) {
            client.tunnels.remove(tunnel_id);
        }
        Some(self.drop_tunnel(tunnel_id))
    }

    fn drop_tunnel(&mut self, tunnel_id: &str) -> Option<JoinHandle<()>> {
        let entry = self.tunnels.remove(tunnel_id)?;
        if let Some(name) = &entry.info.properties.name {
            if self.names.get(name).map(String::as_str) == Some(tunnel_id) {
                self.names.remove(name);
            }
        }
        // Waiters of this tunnel's pending streams see their channel close.
        self.pending.retain(|_, p| p.tunnel_id != tunnel_id);
        if let Some(h) = &entry.endpoint {
            h.abort();
        }
        self.emit(EngineEvent::TunnelDeleted {
            tunnel: entry.info,
            at: SystemTime::now(),
        });
        entry.endpoint
    }

    /// Finds a tunnel by id, else by name.
    pub(crate) fn find_tunnel(&self, id_or_name: &str) -> Option<DialTarget> {
        let id = if self.tunnels.contains_key(id_or_name) {
            id_or_name
        } else {
            self.names.get(id_or_name)?.as_str()
        };
        let entry = self.tunnels.get(id)?;
        Some(DialTarget {
            id: id.to_owned(),
            trusted: entry.trusted.clone(),
            info: entry.info.clone(),
        })
    }

    // ----- pending streams -----

    /// Registers a stream waiting for `tunnel_id`'s owner.
    pub(crate) fn open_pending(
        &mut self,
        tunnel_id: &str,
        max_pending: usize,
    ) -> Result<PendingStart, proto::Error> {
        let tunnel = self.tunnels.get_mut(tunnel_id).ok_or_else(|| {
            error(
                ErrorCode::TunnelNotFound,
                format!("tunnel {tunnel_id:?} not found"),
            )
        })?;
        if tunnel.pending >= max_pending {
            return Err(error(
                ErrorCode::CapacityExhausted,
                format!(
                    "tunnel {tunnel_id:?} already has {max_pending} streams waiting for its client"
                ),
            ));
        }
        tunnel.pending += 1;
        let stream_id = uuid::Uuid::new_v4().to_string();
        let secret = hex::encode(rand::random::<[u8; 32]>());
        // One connection and one answer at most: never blocks a sender.
        let (tx, rx) = mpsc::channel(2);
        self.pending.insert(
            stream_id.clone(),
            PendingEntry {
                tunnel_id: tunnel_id.to_owned(),
                client_id: tunnel.info.client_id.clone(),
                secret: secret.clone(),
                events: tx,
                connected: false,
                answered: false,
            },
        );
        #[cfg(feature = "quic")]
        let plane_a = {
            let p = &tunnel.info.properties;
            let datagram = p.r#type.as_deref() == Some("datagram")
                && p.datagram_guaranteed_delivery != Some(true);
            let client_id = &tunnel.info.client_id;
            datagram
                .then(|| self.clients.get(client_id)?.router.clone())
                .flatten()
        };
        Ok(PendingStart {
            stream_id,
            secret,
            owner: tunnel.owner.clone(),
            events: rx,
            #[cfg(feature = "quic")]
            plane_a,
        })
    }

    /// The waiter is done (spliced, failed or gone).
    pub(crate) fn close_pending(&mut self, stream_id: &str) {
        if let Some(p) = self.pending.remove(stream_id) {
            if let Some(t) = self.tunnels.get_mut(&p.tunnel_id) {
                t.pending = t.pending.saturating_sub(1);
            }
        }
    }

    /// A proxy connection presents `stream_id` and `token`: on a match
    /// (first time only) returns where to hand the connection.
    pub(crate) fn claim_pending(
        &mut self,
        stream_id: &str,
        token: Option<&str>,
    ) -> Option<mpsc::Sender<PendingEvent>> {
        let p = self.pending.get_mut(stream_id)?;
        let token = token?;
        let matches: bool = p.secret.as_bytes().ct_eq(token.as_bytes()).into();
        if !matches || p.connected {
            return None;
        }
        p.connected = true;
        Some(p.events.clone())
    }

    /// The owner answered a `ProxyConnReq` (ignored unless it is the owner
    /// and the first answer).
    pub(crate) fn answer_pending(
        &mut self,
        client_id: &str,
        stream_id: &str,
        result: Result<(), proto::Error>,
    ) {
        let Some(p) = self.pending.get_mut(stream_id) else {
            return;
        };
        if p.client_id != client_id || p.answered {
            return;
        }
        p.answered = true;
        let _ = p.events.try_send(PendingEvent::Answered(result));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trusted_ips() {
        let list: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()];
        assert!(allowed(&list, "10.1.2.3".parse().unwrap()));
        assert!(allowed(&list, "::1".parse().unwrap()));
        assert!(!allowed(&list, "127.0.0.1".parse().unwrap()));
        assert!(allowed(&[], "127.0.0.1".parse().unwrap()));
    }
}
