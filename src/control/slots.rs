//! The tunnels a control channel keeps across connections ("slots"):
//! closing them, and re-creating them after a reconnect with the address
//! the engine assigned before, retrying as [`classify`] decides.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::connection::{after, Conn, Step};
use super::reconnect::{ConnectionStatus, ReconnectPolicy};
use super::requests::{open_request, Pending, QueuedOpen};
use super::task::Supervisor;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::TunnelProperties;
use crate::stream::RstreamStream;
use crate::tunnel::TunnelShared;

/// A tunnel, as the supervisor keeps it across connections.
pub(super) struct Slot {
    pub(super) streams: mpsc::Sender<RstreamStream>,
    pub(super) shared: Arc<TunnelShared>,
    /// The validated properties the user asked for.
    pub(super) requested: TunnelProperties,
    /// The engine id on the current connection; `None` while (re)creating.
    pub(super) engine_id: Option<Arc<str>>,
    /// Ask for the previously assigned hostname/port when re-creating.
    pub(super) sticky: bool,
    /// Failed re-creation attempts on this connection.
    pub(super) retries: u32,
    /// When to try re-creating it again.
    pub(super) retry_at: Option<Instant>,
    /// A close was asked for (explicitly or by dropping the `Tunnel`).
    pub(super) closing: bool,
    pub(super) closers: Vec<oneshot::Sender<Result<()>>>,
}

/// What to do after a failed re-creation.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Retry,
    DropSticky,
    Permanent,
}

impl Supervisor {
    /// Re-creates every tunnel and sends the requests that waited for a
    /// connection. Waits for room in the outbox (bounded by the operation
    /// timeout): there may be more requests than the outbox holds.
    pub(super) async fn restore(&mut self, conn: &mut Conn) -> Result<()> {
        let keys: Vec<u64> = self.slots.keys().copied().collect();
        let queued = std::mem::take(&mut self.queued);
        let op = self.op;
        for key in keys {
            if let Some((request_id, frame)) = self.recreate_request(key) {
                conn.push_within(frame, op).await?;
                conn.opens.insert(
                    request_id,
                    Pending::Recreate {
                        key,
                        deadline: after(op),
                    },
                );
            }
        }
        for q in queued {
            if q.reply.is_closed() {
                continue;
            }
            let (request_id, frame) = match open_request((*q.properties).clone()) {
                Ok(r) => r,
                Err(e) => {
                    let _ = q.reply.send(Err(e));
                    continue;
                }
            };
            conn.push_within(frame, op).await?;
            conn.opens.insert(
                request_id,
                Pending::User {
                    properties: q.properties,
                    reply: q.reply,
                },
            );
        }
        self.check_restored(conn);
        Ok(())
    }

    /// The request re-creating `key`; on an encoding failure the tunnel is
    /// closed with that error and `None` returned.
    pub(super) fn recreate_request(&mut self, key: u64) -> Option<(String, Bytes)> {
        let slot = self.slots.get_mut(&key)?;
        slot.retry_at = None;
        match open_request(recreate_properties(slot)) {
            Ok(r) => Some(r),
            Err(e) if slot.sticky => {
                slot.sticky = false;
                open_request(slot.requested.clone())
                    .inspect_err(|_| self.close_slot(key, e))
                    .ok()
            }
            Err(e) => {
                self.close_slot(key, e);
                None
            }
        }
    }

    pub(super) fn send_recreate(&mut self, conn: &mut Conn, key: u64) -> Result<()> {
        if let Some((request_id, frame)) = self.recreate_request(key) {
            conn.push(frame)?;
            conn.opens.insert(
                request_id,
                Pending::Recreate {
                    key,
                    deadline: after(self.op),
                },
            );
        }
        Ok(())
    }

    /// Moves to `Connected` once nothing is left to re-create.
    pub(super) fn check_restored(&mut self, conn: &mut Conn) {
        if conn.restored {
            return;
        }
        let recreating = conn
            .opens
            .values()
            .any(|p| matches!(p, Pending::Recreate { .. }))
            || self.slots.values().any(|s| s.retry_at.is_some());
        if recreating {
            return;
        }
        conn.restored = true;
        let was_reconnecting = !self.status.borrow().is_connected();
        if was_reconnecting {
            tracing::info!(tunnels = self.slots.len(), "control channel reconnected");
            self.status.send_replace(ConnectionStatus::Connected);
        }
    }

    /// A tunnel was re-created after a reconnect (or refused).
    pub(super) fn on_recreated(
        &mut self,
        conn: &mut Conn,
        key: u64,
        outcome: Result<TunnelProperties>,
    ) -> Result<()> {
        let Some(slot) = self.slots.get_mut(&key) else {
            // Closed meanwhile: close what the engine just made.
            if let Ok(props) = &outcome {
                conn.close_tunnel(props.id.as_deref().unwrap_or_default())?;
            }
            return Ok(());
        };
        match outcome {
            Ok(props) => {
                let id: Arc<str> = Arc::from(props.id.as_deref().unwrap_or_default());
                match slot.shared.rebind(props) {
                    Ok(previous) => {
                        let current = slot.shared.current();
                        // Logged in the tunnel's span (its new id recorded).
                        let _span = slot.shared.span().enter();
                        if previous.address != current.address {
                            tracing::warn!(
                                tunnel = %id,
                                previous = %previous.address,
                                address = %current.address,
                                "tunnel re-created at a different address"
                            );
                        } else {
                            tracing::info!(
                                tunnel = %id,
                                previous_id = %previous.id,
                                address = %current.address,
                                "tunnel re-created"
                            );
                        }
                        slot.engine_id = Some(id.clone());
                        slot.retries = 0;
                        slot.retry_at = None;
                        conn.ids.insert(id, key);
                    }
                    Err(e) => {
                        conn.close_tunnel(&id)?;
                        self.fail_slot(key, e);
                    }
                }
            }
            Err(e) => {
                let now = Instant::now();
                let in_ghost = self.ghost_until.is_some_and(|t| now < t);
                let sticky = slot.sticky && recreate_properties(slot) != slot.requested;
                let span = slot.shared.span().clone();
                let _span = span.enter();
                match classify(&e, sticky, in_ghost, slot.retries + 1, &self.policy) {
                    Action::Retry => {
                        slot.retries += 1;
                        let delay = self.policy.backoff(slot.retries);
                        slot.retry_at = Some(now + delay);
                        tracing::debug!(
                            name = ?slot.requested.name,
                            retry = slot.retries,
                            delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                            code = e.code(),
                            error = %e,
                            "re-creating the tunnel failed; retrying"
                        );
                    }
                    Action::DropSticky => {
                        tracing::warn!(
                            name = ?slot.requested.name,
                            code = e.code(),
                            error = %e,
                            "the engine refused the tunnel's previous address; re-creating it with its original properties"
                        );
                        slot.sticky = false;
                        self.send_recreate(conn, key)?;
                    }
                    Action::Permanent => self.fail_slot(key, e),
                }
            }
        }
        self.check_restored(conn);
        Ok(())
    }

    pub(super) fn fail_slot(&mut self, key: u64, e: Error) {
        if let Some(slot) = self.slots.get(&key) {
            let _span = slot.shared.span().enter();
            tracing::error!(
                name = ?slot.requested.name,
                code = e.code(),
                error = %e,
                "re-creating the tunnel failed permanently; the tunnel is closed"
            );
        }
        self.close_slot(key, e);
    }

    pub(super) fn on_close_tunnel(
        &mut self,
        conn: &mut Conn,
        key: u64,
        reply: Option<oneshot::Sender<Result<()>>>,
    ) -> Result<()> {
        let Some(slot) = self.slots.get_mut(&key) else {
            // Unknown or already closed: nothing to send.
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return Ok(());
        };
        let Some(id) = slot.engine_id.clone() else {
            // Being re-created: it does not exist on the engine right now.
            self.close_slot(key, Error::tunnel_closed("tunnel closed"));
            if let Some(r) = reply {
                let _ = r.send(Ok(()));
            }
            return Ok(());
        };
        slot.closing = true;
        slot.closers.retain(|w| !w.is_closed());
        let first = slot.closers.is_empty();
        match reply {
            Some(r) => slot.closers.push(r),
            // A dropped tunnel: nobody waits, but the close goes out.
            None if first => {}
            None => return Ok(()),
        }
        if first {
            conn.close_tunnel(&id)?;
        }
        Ok(())
    }

    /// Periodic work: abandoned requests, re-creations that got no answer
    /// in time, scheduled retries, tunnels whose handle vanished.
    pub(super) fn housekeeping(&mut self, conn: &mut Conn) -> Result<Step> {
        let now = Instant::now();
        conn.opens.retain(|_, p| match p {
            Pending::User { reply, .. } => !reply.is_closed(),
            Pending::Recreate { .. } => true,
        });
        let expired: Vec<(String, u64)> = conn
            .opens
            .iter()
            .filter_map(|(id, p)| match p {
                Pending::Recreate { key, deadline } if *deadline <= now => Some((id.clone(), *key)),
                _ => None,
            })
            .collect();
        for (request_id, key) in expired {
            conn.opens.remove(&request_id);
            let op = self.op;
            self.on_recreated(
                conn,
                key,
                Err(Error::timeout(format!("no OpenTunnelRsp within {op:?}"))),
            )?;
        }
        let due: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.retry_at.is_some_and(|t| t <= now))
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            self.send_recreate(conn, key)?;
        }
        // A `create_tunnel` future dropped after its answer arrived leaves a
        // tunnel nobody can accept on: close it.
        let orphans: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.streams.is_closed() && !s.closing)
            .map(|(k, _)| *k)
            .collect();
        for key in orphans {
            self.on_close_tunnel(conn, key, None)?;
        }
        self.check_restored(conn);
        Ok(Step::Continue)
    }

    /// Removes a tunnel: its acceptor gets `reason`, its closers `Ok`.
    pub(super) fn close_slot(&mut self, key: u64, reason: Error) {
        if let Some(slot) = self.slots.remove(&key) {
            slot.shared.close(reason);
            for w in slot.closers {
                let _ = w.send(Ok(()));
            }
        }
    }

    /// The connection is gone but the channel lives on: requests in flight
    /// wait for the next connection, tunnels being closed are closed (they
    /// died with the connection), the rest will be re-created.
    pub(super) fn on_lost(&mut self, opens: impl Iterator<Item = Pending>, grace: Duration) {
        for pending in opens {
            if let Pending::User { properties, reply } = pending {
                if !reply.is_closed() {
                    self.queued.push(QueuedOpen { properties, reply });
                }
            }
        }
        let gone: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.closing || s.streams.is_closed())
            .map(|(k, _)| *k)
            .collect();
        for key in gone {
            self.close_slot(key, Error::tunnel_closed("tunnel closed"));
        }
        for slot in self.slots.values_mut() {
            slot.engine_id = None;
            slot.retry_at = None;
            slot.retries = 0;
            slot.sticky = true;
        }
        self.ghost_until = Some(after(grace));
    }
}

/// The properties that re-create `slot`: what the user asked for, plus
/// (when sticky) the hostname and non-default port the engine assigned, so
/// the published address stays the same where the engine honours them.
fn recreate_properties(slot: &Slot) -> TunnelProperties {
    let mut p = slot.requested.clone();
    if !slot.sticky {
        return p;
    }
    let assigned = slot.shared.current().properties.clone();
    let tcp = p.protocol.as_deref().map(str::trim) == Some("tcp");
    // `tcp` tunnels take no hostname (PROTOCOL.md §6), only a port.
    if p.hostname.is_none() && !tcp {
        if let Some(h) = assigned
            .hostname
            .as_deref()
            .filter(|h| !h.trim().is_empty())
        {
            p.hostname = Some(h.to_owned());
        }
    }
    if p.port.is_none() && (tcp || p.hostname.is_some()) {
        if let Some(port) = assigned.port.filter(|n| *n != 0 && (tcp || *n != 443)) {
            p.port = Some(port);
        }
    }
    p
}

/// Decides what a failed re-creation leads to.
///
/// - Authentication errors are permanent.
/// - Within the grace period after a loss, transient errors and the 2000s
///   to 4000s classes are retried: the engine may still hold the previous
///   connection's tunnel (same name, same port) until it notices the loss.
/// - Then, if the request carried the previously assigned address, retry
///   at once without it (the engine may not honour it).
/// - Then transient errors are retried (as many times as the policy's
///   attempt limit allows); everything else is permanent.
fn classify(
    e: &Error,
    sticky: bool,
    in_ghost: bool,
    retry: u32,
    policy: &ReconnectPolicy,
) -> Action {
    if e.kind() == ErrorKind::Auth {
        return Action::Permanent;
    }
    let maybe_ghost = matches!(e.engine_code(), Some(2000..=4999));
    if in_ghost && (e.is_transient() || maybe_ghost) {
        return Action::Retry;
    }
    if sticky {
        return Action::DropSticky;
    }
    if e.is_transient() && policy.allows(retry) {
        return Action::Retry;
    }
    Action::Permanent
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn recreate_failures() {
        let policy = ReconnectPolicy::new().max_attempts(3);
        let auth = Error::engine(1000, None);
        let invalid = Error::engine(2000, Some("a tunnel named \"x\" already exists"));
        let capacity = Error::engine(7000, None);
        let unsupported = Error::engine(5000, None);
        assert_eq!(classify(&auth, true, true, 1, &policy), Action::Permanent);
        assert_eq!(classify(&invalid, true, true, 1, &policy), Action::Retry);
        assert_eq!(classify(&capacity, true, true, 1, &policy), Action::Retry);
        assert_eq!(
            classify(&invalid, true, false, 1, &policy),
            Action::DropSticky
        );
        assert_eq!(
            classify(&unsupported, true, true, 1, &policy),
            Action::DropSticky
        );
        assert_eq!(
            classify(&invalid, false, false, 1, &policy),
            Action::Permanent
        );
        assert_eq!(classify(&capacity, false, false, 3, &policy), Action::Retry);
        assert_eq!(
            classify(&capacity, false, false, 4, &policy),
            Action::Permanent
        );
        let timeout = Error::timeout("no answer");
        assert_eq!(classify(&timeout, false, false, 1, &policy), Action::Retry);
    }
}
