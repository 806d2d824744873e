//! Request bookkeeping: `OpenTunnelReq`s waiting for a connection or for
//! their answer, and what an answer does to them.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::connection::{lost, Conn};
use super::slots::Slot;
use super::task::Supervisor;
use super::NewTunnel;
use crate::error::{Error, Result};
use crate::proto::{
    encode_frame, message::Payload, Message, OpenTunnelReq, OpenTunnelRsp, TunnelProperties,
};
use crate::tunnel::TunnelShared;

/// A user's `create_tunnel` waiting for a connection.
pub(super) struct QueuedOpen {
    pub(super) properties: Box<TunnelProperties>,
    pub(super) reply: oneshot::Sender<Result<NewTunnel>>,
}

/// An `OpenTunnelReq` awaiting its answer.
pub(super) enum Pending {
    User {
        properties: Box<TunnelProperties>,
        reply: oneshot::Sender<Result<NewTunnel>>,
    },
    Recreate {
        key: u64,
        deadline: Instant,
    },
}

impl Supervisor {
    /// Sends a user's `OpenTunnelReq`. An oversized request, or a full
    /// outbox, is the caller's error, not the channel's.
    pub(super) fn open_tunnel(
        &mut self,
        conn: &mut Conn,
        properties: Box<TunnelProperties>,
        reply: oneshot::Sender<Result<NewTunnel>>,
    ) -> Result<()> {
        match open_request((*properties).clone()) {
            Ok((request_id, frame)) => match conn.out.try_send(frame) {
                Ok(()) => {
                    conn.opens
                        .insert(request_id, Pending::User { properties, reply });
                }
                Err(TrySendError::Full(_)) => {
                    let _ = reply.send(Err(Error::timeout(
                        "control channel busy: the engine is not reading",
                    )));
                }
                Err(TrySendError::Closed(_)) => {
                    self.queued.push(QueuedOpen { properties, reply });
                    return Err(lost("control channel writer stopped"));
                }
            },
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
        Ok(())
    }

    pub(super) fn on_open_tunnel_rsp(&mut self, conn: &mut Conn, rsp: OpenTunnelRsp) -> Result<()> {
        let Some(pending) = conn.opens.remove(&rsp.request_id) else {
            tracing::debug!(request_id = %rsp.request_id, "OpenTunnelRsp for an unknown request");
            return Ok(());
        };
        let outcome = match rsp.into_result() {
            Err(e) => Err(e),
            Ok(props) => {
                if props.id.as_deref().is_none_or(str::is_empty) {
                    let err = Error::protocol("OpenTunnelRsp without a tunnel id");
                    if let Pending::User { reply, .. } = pending {
                        let _ = reply.send(Err(err.clone()));
                    }
                    return Err(err);
                }
                Ok(props)
            }
        };
        match pending {
            Pending::User { properties, reply } => {
                self.on_created(conn, properties, reply, outcome)
            }
            Pending::Recreate { key, .. } => self.on_recreated(conn, key, outcome),
        }
    }

    /// A user's tunnel was created (or refused).
    pub(super) fn on_created(
        &mut self,
        conn: &mut Conn,
        requested: Box<TunnelProperties>,
        reply: oneshot::Sender<Result<NewTunnel>>,
        outcome: Result<TunnelProperties>,
    ) -> Result<()> {
        let props = match outcome {
            Ok(p) => p,
            Err(e) => {
                let _ = reply.send(Err(e));
                return Ok(());
            }
        };
        let id: Arc<str> = Arc::from(props.id.as_deref().unwrap_or_default());
        if reply.is_closed() {
            // The caller gave up: don't orphan the tunnel on the engine.
            return conn.close_tunnel(&id);
        }
        let key = self.next_key;
        self.next_key += 1;
        // Datagram tunnels queue fewer channels (DATAGRAM_ACCEPT_BACKLOG).
        let backlog = if requested.r#type.as_deref() == Some("datagram") {
            self.backlog.min(crate::datagram::DATAGRAM_ACCEPT_BACKLOG)
        } else {
            self.backlog
        };
        let shared = match TunnelShared::new(key, props, backlog) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let _ = reply.send(Err(e));
                return conn.close_tunnel(&id);
            }
        };
        let (streams, rx) = mpsc::channel(backlog.max(1));
        self.slots.insert(
            key,
            Slot {
                streams,
                shared: shared.clone(),
                requested: *requested,
                engine_id: Some(id.clone()),
                sticky: true,
                retries: 0,
                retry_at: None,
                closing: false,
                closers: Vec::new(),
            },
        );
        conn.ids.insert(id.clone(), key);
        if reply
            .send(Ok(NewTunnel {
                streams: rx,
                shared,
            }))
            .is_err()
        {
            self.slots.remove(&key);
            conn.ids.remove(&id);
            conn.close_tunnel(&id)?;
        }
        Ok(())
    }
}

/// An `OpenTunnelReq` frame and its fresh request id.
pub(super) fn open_request(properties: TunnelProperties) -> Result<(String, Bytes)> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let frame = encode_frame(&Message::new(Payload::OpenTunnelReq(OpenTunnelReq {
        request_id: request_id.clone(),
        tunnel_properties: Some(properties),
    })))?;
    Ok((request_id, frame))
}
