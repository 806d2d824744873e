//! The task behind a control channel.
//!
//! A supervisor owns what outlives one connection — the tunnels (under a
//! stable key, since engine ids change), user requests waiting for a
//! connection, the published status — and drives one connection at a time:
//! one reader task, one writer task, pending requests by id, heartbeats and
//! liveness, proxy dispatch. When a connection is lost it reconnects (as
//! the [`ReconnectPolicy`] allows) and re-creates every tunnel.
//!
//! The connection loop never awaits while handling an event: frames go to
//! the writer with `try_send`, so an engine that stops reading cannot stall
//! heartbeats, liveness or the handling of commands (a full outbox is a
//! lost connection).
//!
//! The supervisor's methods are split by concern: this file holds its
//! state, the event loop and the end of the channel; `connection.rs` the
//! I/O of one connection; `requests.rs` the bookkeeping of `OpenTunnelReq`s;
//! `slots.rs` the tunnels and their re-creation; `reconnect.rs` the
//! reconnect loop; `proxy.rs` the dispatch of `ProxyConnReq`s.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tracing::Instrument;

use super::connection::{after, lost, teardown, Conn, End, Step, FAR};
use super::liveness;
use super::reconnect::{loss_is_transient, ConnectionStatus, ReconnectPolicy};
use super::requests::{Pending, QueuedOpen};
use super::slots::Slot;
use super::{Command, Session, SessionInfo};
use crate::error::{Chain, Error, ErrorKind, Result};
use crate::link::EngineLink;
use crate::proto::{message::Payload, CloseTunnelRsp, Message};

/// Housekeeping period: re-creation retries and deadlines, abandoned
/// requests, orphaned tunnels.
const TICK: Duration = Duration::from_secs(1);
/// Added to the liveness timeout to bound how long the engine may keep our
/// previous connection's tunnels ("ghosts") after we lost it.
const GHOST_MARGIN: Duration = Duration::from_secs(5);

/// Everything the task starts from.
pub(super) struct Start {
    pub(super) link: Arc<EngineLink>,
    pub(super) policy: ReconnectPolicy,
    pub(super) session: Session,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) status: watch::Sender<ConnectionStatus>,
    pub(super) info: watch::Sender<Arc<SessionInfo>>,
    pub(super) datagrams: Arc<crate::datagram::Registry>,
}

/// Spawns the control task inside its `rstream.control` span, a child of
/// the caller's current span (so a user's span around `connect()` is its
/// parent). `client_id` is recorded per connection: it changes on every
/// reconnect.
pub(super) fn spawn(start: Start) {
    let opts = &start.link.options;
    let span = tracing::info_span!("rstream.control", client_id = tracing::field::Empty);
    let supervisor = Supervisor {
        span: span.clone(),
        backlog: opts.accept_backlog.max(1),
        max_concurrent: opts.max_concurrent_handshakes.max(1),
        max_inflight: opts.max_concurrent_handshakes.max(1) + opts.handshake_queue,
        op: opts.operation_timeout,
        link: start.link.clone(),
        policy: start.policy,
        commands: start.commands,
        commands_open: true,
        status: start.status,
        info: start.info,
        datagrams: start.datagrams,
        slots: HashMap::new(),
        next_key: 1,
        queued: Vec::new(),
        attempt: 0,
        ghost_until: None,
    };
    tokio::spawn(supervisor.run(start.session).instrument(span));
}

/// The control task's state. Its fields are `pub(super)` because its
/// methods live in the sibling files, one concern each (see the module
/// docs); nothing outside `control` sees it.
pub(super) struct Supervisor {
    /// `rstream.control`, the task's span.
    pub(super) span: tracing::Span,
    pub(super) link: Arc<EngineLink>,
    pub(super) policy: ReconnectPolicy,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) commands_open: bool,
    pub(super) status: watch::Sender<ConnectionStatus>,
    pub(super) info: watch::Sender<Arc<SessionInfo>>,
    /// Accepted datagram channels, closed by `DatagramChannelClose`.
    pub(super) datagrams: Arc<crate::datagram::Registry>,
    pub(super) slots: HashMap<u64, Slot>,
    pub(super) next_key: u64,
    pub(super) queued: Vec<QueuedOpen>,
    /// Reconnect attempts since the last healthy connection (one that was
    /// restored and stayed up for the policy's `stable_after`).
    pub(super) attempt: u32,
    /// Until when the engine may still hold our previous connection's tunnels.
    pub(super) ghost_until: Option<Instant>,
    pub(super) backlog: usize,
    pub(super) max_concurrent: usize,
    pub(super) max_inflight: usize,
    pub(super) op: Duration,
}

impl Supervisor {
    async fn run(mut self, first: Session) {
        let mut session = first;
        loop {
            let up_since = Instant::now();
            let mut conn = self.start(session);
            let end = self.drive(&mut conn).await;
            // Only a connection that stayed up resets the backoff: one that
            // is accepted and dropped at once is a failed attempt.
            let healthy = conn.restored
                && conn.liveness.confirmed()
                && up_since.elapsed() >= self.policy.stable_uptime();
            let grace = conn
                .liveness
                .timeout()
                .unwrap_or(self.op)
                .saturating_add(GHOST_MARGIN);
            let closing = conn.closing.take();
            let opens = std::mem::take(&mut conn.opens);
            teardown(conn, matches!(end, End::Clean)).await;

            let error = match end {
                End::Clean => None,
                // After our `CloseControlChannelReq`, the engine ending the
                // connection before its `CloseControlChannelRsp` was read
                // (it stops reading once it has the request: a message
                // still queued, a `DatagramChannelClose` say, then fails
                // to write) is the close that was asked for. Only running
                // out of time is an error.
                End::Failed(e) if closing.is_some() && e.kind() != ErrorKind::Timeout => {
                    tracing::debug!(error = %Chain(&e), "control channel ended while closing");
                    None
                }
                End::Failed(e) => Some(e),
            };
            let retry = match &error {
                Some(e) => closing.is_none() && self.policy.is_enabled() && loss_is_transient(e),
                None => false,
            };
            if !retry {
                self.finish(error.clone(), opens.into_values());
                if let Some(closing) = closing {
                    for w in closing.waiters {
                        let _ = w.send(error.clone().map_or(Ok(()), Err));
                    }
                }
                return;
            }
            let Some(error) = error else { return };
            self.on_lost(opens.into_values(), grace);
            if healthy {
                self.attempt = 0;
            }
            match self.reconnect(error).await {
                Some(next) => session = next,
                None => return,
            }
        }
    }

    /// Starts a new connection and publishes its identity.
    fn start(&mut self, session: Session) -> Conn {
        self.span
            .record("client_id", session.info.client_id.as_str());
        self.info.send_replace(session.info);
        Conn::start(
            session.io,
            session.liveness,
            self.link.clone(),
            self.max_concurrent,
        )
    }

    /// Runs one connection until it ends.
    async fn drive(&mut self, conn: &mut Conn) -> End {
        if let Err(e) = self.restore(conn).await {
            return End::Failed(e);
        }
        let far = after(FAR);
        let mut heartbeat = tokio::time::interval(
            conn.liveness
                .interval()
                .unwrap_or(Duration::from_secs(3600)),
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let has_heartbeats = conn.liveness.interval().is_some();
        let timeout = conn.liveness.timeout();
        let mut deadline = pin!(sleep_until(timeout.map_or(far, after)));
        let mut tick = tokio::time::interval_at(Instant::now() + TICK, TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            let close_deadline = conn.closing.as_ref().map_or(far, |c| c.deadline);
            let step: Result<Step> = tokio::select! {
                biased;
                frame = conn.incoming.recv() => match frame {
                    Some(Ok(msg)) => {
                        if let Some(t) = timeout {
                            deadline.as_mut().reset(after(t));
                        }
                        self.on_frame(conn, msg)
                    }
                    Some(Err(e)) => Err(e),
                    None => Err(lost("control channel reader stopped")),
                },
                res = &mut conn.writer => Err(match res {
                    Ok(Err(e)) => e,
                    _ => lost("control channel writer stopped"),
                }),
                _ = &mut deadline, if timeout.is_some() => {
                    Err(liveness::expired(timeout.unwrap_or_default()))
                }
                _ = sleep_until(close_deadline), if conn.closing.is_some() => {
                    Err(Error::timeout("no CloseControlChannelRsp in time"))
                }
                _ = heartbeat.tick(), if has_heartbeats => match conn.liveness.next_heartbeat() {
                    Some(hb) => conn.send(Payload::Heartbeat(hb)).map(|()| Step::Continue),
                    None => Ok(Step::Continue),
                },
                _ = tick.tick() => self.housekeeping(conn),
                cmd = self.commands.recv(), if self.commands_open && conn.closing.is_none() => {
                    match cmd {
                        Some(cmd) => self.on_command(conn, cmd),
                        None => {
                            // Every handle and tunnel is gone: close gracefully.
                            self.commands_open = false;
                            conn.begin_close(None, self.op)
                        }
                    }
                }
                Some(_) = conn.handshakes.join_next(), if !conn.handshakes.is_empty() => {
                    Ok(Step::Continue)
                }
            };
            match step {
                Ok(Step::Continue) => {}
                Ok(Step::Closed) => return End::Clean,
                Err(e) => return End::Failed(e),
            }
        }
    }

    /// Handles one frame.
    fn on_frame(&mut self, conn: &mut Conn, msg: Message) -> Result<Step> {
        let Some(payload) = msg.payload else {
            return Ok(Step::Continue);
        };
        match payload {
            Payload::OpenTunnelRsp(rsp) => self.on_open_tunnel_rsp(conn, rsp)?,
            Payload::CloseTunnelRsp(CloseTunnelRsp { tunnel_id }) => {
                if let Some(key) = conn.ids.remove(tunnel_id.as_str()) {
                    let by_us = self.slots.get(&key).is_some_and(|s| s.closing);
                    let reason = if by_us {
                        Error::tunnel_closed("tunnel closed")
                    } else {
                        Error::tunnel_closed("tunnel closed by the engine")
                    };
                    self.close_slot(key, reason);
                }
            }
            Payload::CloseControlChannelRsp(_) => return Ok(Step::Closed),
            Payload::Heartbeat(hb) => conn.liveness.on_heartbeat(hb)?,
            Payload::ProxyConnReq(req) => self.on_proxy_conn_req(conn, req)?,
            Payload::DatagramChannelClose(close) => {
                self.datagrams.close(&close.stream_id, close.error);
            }
            Payload::ServerMessage(m) => {
                tracing::info!(message = %m.message, "message from the engine");
            }
            other => tracing::debug!(frame = other.name(), "ignored frame on control channel"),
        }
        Ok(Step::Continue)
    }

    fn on_command(&mut self, conn: &mut Conn, cmd: Command) -> Result<Step> {
        match cmd {
            Command::OpenTunnel { properties, reply } => {
                self.open_tunnel(conn, properties, reply)?
            }
            Command::CloseTunnel { key, reply } => self.on_close_tunnel(conn, key, reply)?,
            Command::Close { reply } => return conn.begin_close(Some(reply), self.op),
        }
        Ok(Step::Continue)
    }

    /// Ends the channel for good: every tunnel closes, every waiting
    /// request fails, the status becomes `Closed`.
    pub(super) fn finish(&mut self, error: Option<Error>, opens: impl Iterator<Item = Pending>) {
        let reason = error
            .clone()
            .unwrap_or_else(|| Error::control_closed("control channel closed"));
        match &error {
            None => tracing::debug!("control channel closed"),
            Some(e) => {
                tracing::warn!(code = e.code(), error = %Chain(e), "control channel closed")
            }
        }
        for pending in opens {
            if let Pending::User { reply, .. } = pending {
                let _ = reply.send(Err(reason.clone()));
            }
        }
        for q in self.queued.drain(..) {
            let _ = q.reply.send(Err(reason.clone()));
        }
        let keys: Vec<u64> = self.slots.keys().copied().collect();
        for key in keys {
            self.close_slot(key, reason.clone());
        }
        self.status.send_replace(ConnectionStatus::Closed { error });
    }
}
