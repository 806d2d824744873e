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

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::{sleep_until, Instant, MissedTickBehavior};
use tracing::Instrument;

use super::liveness::{self, Liveness};
use super::proxy::{self, ProxyContext};
use super::reconnect::{loss_is_transient, reopen_is_transient, ConnectionStatus, ReconnectPolicy};
use super::{handshake, Command, NewTunnel, Session, SessionInfo};
use crate::client::Client;
use crate::error::{code, Chain, Error, ErrorKind, Result};
use crate::proto::{
    self, encode_frame, message::Payload, CloseControlChannelReq, CloseTunnelReq, CloseTunnelRsp,
    Message, OpenTunnelReq, OpenTunnelRsp, ProxyConnReq, TunnelProperties,
};
use crate::stream::RstreamStream;
use crate::transport::EngineStream;
use crate::tunnel::TunnelShared;

/// Frames queued for the writer. Bounded: when the engine stops reading
/// and this fills up, the connection counts as lost.
const OUTBOX: usize = 512;
/// Frames read ahead of the control task.
const INBOX: usize = 64;
/// Housekeeping period: re-creation retries and deadlines, abandoned
/// requests, orphaned tunnels.
const TICK: Duration = Duration::from_secs(1);
/// Added to the liveness timeout to bound how long the engine may keep our
/// previous connection's tunnels ("ghosts") after we lost it.
const GHOST_MARGIN: Duration = Duration::from_secs(5);
/// "Never" for deadlines: a year away, far enough and still addable.
const FAR: Duration = Duration::from_secs(86_400 * 365);

/// `now + d`, capped at [`FAR`]: never overflows, whatever `d` is.
fn after(d: Duration) -> Instant {
    Instant::now() + d.min(FAR)
}

/// Everything the task starts from.
pub(super) struct Start {
    pub(super) client: Client,
    pub(super) policy: ReconnectPolicy,
    pub(super) session: Session,
    pub(super) commands: mpsc::UnboundedReceiver<Command>,
    pub(super) status: watch::Sender<ConnectionStatus>,
    pub(super) info: watch::Sender<Arc<SessionInfo>>,
}

/// Spawns the control task inside its `rstream.control` span, a child of
/// the caller's current span (so a user's span around `connect()` is its
/// parent). `client_id` is recorded per connection: it changes on every
/// reconnect.
pub(super) fn spawn(start: Start) {
    let opts = &start.client.inner().options;
    let span = tracing::info_span!("rstream.control", client_id = tracing::field::Empty);
    let supervisor = Supervisor {
        span: span.clone(),
        backlog: opts.accept_backlog.max(1),
        max_concurrent: opts.max_concurrent_handshakes.max(1),
        max_inflight: opts.max_concurrent_handshakes.max(1) + opts.handshake_queue,
        op: opts.operation_timeout,
        client: start.client.clone(),
        policy: start.policy,
        commands: start.commands,
        commands_open: true,
        status: start.status,
        info: start.info,
        slots: HashMap::new(),
        next_key: 1,
        queued: Vec::new(),
        attempt: 0,
        ghost_until: None,
    };
    tokio::spawn(supervisor.run(start.session).instrument(span));
}

/// A tunnel, as the supervisor keeps it across connections.
struct Slot {
    streams: mpsc::Sender<RstreamStream>,
    shared: Arc<TunnelShared>,
    /// The validated properties the user asked for.
    requested: TunnelProperties,
    /// The engine id on the current connection; `None` while (re)creating.
    engine_id: Option<Arc<str>>,
    /// Ask for the previously assigned hostname/port when re-creating.
    sticky: bool,
    /// Failed re-creation attempts on this connection.
    retries: u32,
    /// When to try re-creating it again.
    retry_at: Option<Instant>,
    /// A close was asked for (explicitly or by dropping the `Tunnel`).
    closing: bool,
    closers: Vec<oneshot::Sender<Result<()>>>,
}

/// A user's `create_tunnel` waiting for a connection.
struct QueuedOpen {
    properties: Box<TunnelProperties>,
    reply: oneshot::Sender<Result<NewTunnel>>,
}

/// An `OpenTunnelReq` awaiting its answer.
enum Pending {
    User {
        properties: Box<TunnelProperties>,
        reply: oneshot::Sender<Result<NewTunnel>>,
    },
    Recreate {
        key: u64,
        deadline: Instant,
    },
}

struct Closing {
    deadline: Instant,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

/// One connection to the engine.
struct Conn {
    out: mpsc::Sender<Bytes>,
    incoming: mpsc::Receiver<Result<Message>>,
    writer: JoinHandle<Result<()>>,
    reader: AbortHandle,
    liveness: Liveness,
    /// Engine tunnel id → slot key, for this connection.
    ids: HashMap<Arc<str>, u64>,
    opens: HashMap<String, Pending>,
    handshakes: JoinSet<()>,
    proxy: Arc<ProxyContext>,
    closing: Option<Closing>,
    /// Every tunnel was re-created (or given up on).
    restored: bool,
}

impl Conn {
    /// Queues a frame for the writer without waiting.
    fn push(&self, frame: Bytes) -> Result<()> {
        self.out.try_send(frame).map_err(|e| match e {
            TrySendError::Full(_) => Error::new(
                ErrorKind::Timeout,
                code::CONTROL_STALLED,
                format!("the engine stopped reading: {OUTBOX} frames are waiting to be written"),
            ),
            TrySendError::Closed(_) => lost("control channel writer stopped"),
        })
    }

    fn send(&self, payload: Payload) -> Result<()> {
        self.push(encode_frame(&Message::new(payload))?)
    }

    fn close_tunnel(&self, id: &str) -> Result<()> {
        self.send(Payload::CloseTunnelReq(CloseTunnelReq {
            tunnel_id: id.to_owned(),
        }))
    }

    fn begin_close(
        &mut self,
        reply: Option<oneshot::Sender<Result<()>>>,
        op: Duration,
    ) -> Result<Step> {
        if let Some(closing) = &mut self.closing {
            closing.waiters.extend(reply);
            return Ok(Step::Continue);
        }
        self.closing = Some(Closing {
            deadline: after(op),
            waiters: reply.into_iter().collect(),
        });
        self.send(Payload::CloseControlChannelReq(CloseControlChannelReq {}))?;
        Ok(Step::Continue)
    }
}

enum Step {
    Continue,
    /// The channel closed cleanly (`CloseControlChannelRsp`).
    Closed,
}

/// How one connection ended.
enum End {
    Clean,
    Failed(Error),
}

/// What to do after a failed re-creation.
#[derive(Debug, PartialEq, Eq)]
enum Action {
    Retry,
    DropSticky,
    Permanent,
}

struct Supervisor {
    /// `rstream.control`, the task's span.
    span: tracing::Span,
    client: Client,
    policy: ReconnectPolicy,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    status: watch::Sender<ConnectionStatus>,
    info: watch::Sender<Arc<SessionInfo>>,
    slots: HashMap<u64, Slot>,
    next_key: u64,
    queued: Vec<QueuedOpen>,
    /// Reconnect attempts since the last healthy connection (one that was
    /// restored and stayed up for the policy's `stable_after`).
    attempt: u32,
    /// Until when the engine may still hold our previous connection's tunnels.
    ghost_until: Option<Instant>,
    backlog: usize,
    max_concurrent: usize,
    max_inflight: usize,
    op: Duration,
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

    /// Spawns the reader and the writer of a new connection.
    fn start(&mut self, session: Session) -> Conn {
        let (rd, wr) = tokio::io::split(session.io);
        let (out, out_rx) = mpsc::channel(OUTBOX);
        let (in_tx, incoming) = mpsc::channel(INBOX);
        let writer = tokio::spawn(write_loop(wr, out_rx).in_current_span());
        let reader = tokio::spawn(read_loop(rd, in_tx).in_current_span()).abort_handle();
        self.span
            .record("client_id", session.info.client_id.as_str());
        self.info.send_replace(session.info);
        Conn {
            proxy: Arc::new(ProxyContext {
                permits: Arc::new(Semaphore::new(self.max_concurrent)),
                client: self.client.clone(),
                out: out.clone(),
            }),
            out,
            incoming,
            writer,
            reader,
            liveness: session.liveness,
            ids: HashMap::new(),
            opens: HashMap::new(),
            handshakes: JoinSet::new(),
            closing: None,
            restored: false,
        }
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

    /// Re-creates every tunnel and sends the requests that waited for a
    /// connection. Waits for room in the outbox (bounded by the operation
    /// timeout): there may be more requests than the outbox holds.
    async fn restore(&mut self, conn: &mut Conn) -> Result<()> {
        let keys: Vec<u64> = self.slots.keys().copied().collect();
        let queued = std::mem::take(&mut self.queued);
        let op = self.op;
        let stalled = || {
            Error::timeout(format!(
                "could not send the re-creation requests within {op:?}"
            ))
        };
        for key in keys {
            if let Some((request_id, frame)) = self.recreate_request(key) {
                tokio::time::timeout(op, conn.out.send(frame))
                    .await
                    .map_err(|_| stalled())?
                    .map_err(|_| lost("control channel writer stopped"))?;
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
            tokio::time::timeout(op, conn.out.send(frame))
                .await
                .map_err(|_| stalled())?
                .map_err(|_| lost("control channel writer stopped"))?;
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
    fn recreate_request(&mut self, key: u64) -> Option<(String, Bytes)> {
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

    fn send_recreate(&mut self, conn: &mut Conn, key: u64) -> Result<()> {
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
    fn check_restored(&mut self, conn: &mut Conn) {
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
            Payload::ServerMessage(m) => {
                tracing::info!(message = %m.message, "message from the engine");
            }
            other => tracing::debug!(frame = other.name(), "ignored frame on control channel"),
        }
        Ok(Step::Continue)
    }

    fn on_open_tunnel_rsp(&mut self, conn: &mut Conn, rsp: OpenTunnelRsp) -> Result<()> {
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
    fn on_created(
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
        let shared = match TunnelShared::new(key, props) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                let _ = reply.send(Err(e));
                return conn.close_tunnel(&id);
            }
        };
        let (streams, rx) = mpsc::channel(self.backlog);
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

    /// A tunnel was re-created after a reconnect (or refused).
    fn on_recreated(
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

    fn fail_slot(&mut self, key: u64, e: Error) {
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

    fn on_proxy_conn_req(&mut self, conn: &mut Conn, req: ProxyConnReq) -> Result<()> {
        let slot = conn
            .ids
            .get(req.tunnel_id.as_str())
            .and_then(|key| self.slots.get(key));
        let Some(slot) = slot else {
            return refuse(conn, req.stream_id, "unknown tunnel");
        };
        let target = match proxy::target(&self.client, &req) {
            Ok(t) => t,
            Err(e) => return refuse(conn, req.stream_id, e.message()),
        };
        if conn.handshakes.len() >= self.max_inflight {
            return Err(Error::new(
                ErrorKind::Protocol,
                code::CONTROL_OVERLOAD,
                format!(
                    "more than {} proxy connections pending: control channel overloaded",
                    self.max_inflight
                ),
            ));
        }
        let source_ip = req.source_ip.as_ref().and_then(|ip| ip.to_ip());
        // One span per stream, not per request; cheap when disabled.
        let span = tracing::info_span!(
            parent: slot.shared.span(),
            "rstream.stream",
            stream_id = %req.stream_id,
            source_ip = tracing::field::Empty,
        );
        if let Some(ip) = source_ip {
            span.record("source_ip", tracing::field::display(ip));
        }
        let job = proxy::Job {
            req,
            source_ip,
            target,
            streams: slot.streams.clone(),
            tunnel: slot.shared.clone(),
            span: span.clone(),
        };
        // The tunnel's span is entered too: `EnvFilter` span directives
        // only see entered spans.
        let tunnel_span = slot.shared.span().clone();
        conn.handshakes.spawn(
            proxy::run(conn.proxy.clone(), job)
                .instrument(span)
                .instrument(tunnel_span),
        );
        Ok(())
    }

    fn on_command(&mut self, conn: &mut Conn, cmd: Command) -> Result<Step> {
        match cmd {
            Command::OpenTunnel { properties, reply } => {
                // An oversized request, or a full outbox, is the caller's
                // error, not the channel's.
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
            }
            Command::CloseTunnel { key, reply } => self.on_close_tunnel(conn, key, reply)?,
            Command::Close { reply } => return conn.begin_close(Some(reply), self.op),
        }
        Ok(Step::Continue)
    }

    fn on_close_tunnel(
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
    fn housekeeping(&mut self, conn: &mut Conn) -> Result<Step> {
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
    fn close_slot(&mut self, key: u64, reason: Error) {
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
    fn on_lost(&mut self, opens: impl Iterator<Item = Pending>, grace: Duration) {
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

    /// Reconnects with backoff, serving commands meanwhile. `None` when the
    /// channel ended instead (status already `Closed`).
    async fn reconnect(&mut self, mut last: Error) -> Option<Session> {
        loop {
            self.attempt = self.attempt.saturating_add(1);
            if !self.policy.allows(self.attempt) {
                let tried = self.attempt - 1;
                let err = Error::new(
                    last.kind(),
                    code::RECONNECT_GAVE_UP,
                    format!("gave up reconnecting after {tried} attempts"),
                )
                .with_source(last);
                tracing::error!(attempts = tried, error = %Chain(&err), "control channel closed: reconnecting gave up");
                self.finish(Some(err), std::iter::empty());
                return None;
            }
            let delay = self.policy.backoff(self.attempt);
            self.status.send_replace(ConnectionStatus::Reconnecting {
                attempt: self.attempt,
                last_error: last.clone(),
            });
            tracing::warn!(
                attempt = self.attempt,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                code = last.code(),
                error = %Chain(&last),
                "control channel lost; reconnecting"
            );
            if let Err(stop) = self.serve_while(tokio::time::sleep(delay)).await {
                self.stop(stop);
                return None;
            }
            let client = self.client.clone();
            match self
                .serve_while(async move { handshake(&client).await })
                .await
            {
                Err(stop) => {
                    self.stop(stop);
                    return None;
                }
                Ok(Ok(session)) => {
                    tracing::info!(
                        attempt = self.attempt,
                        tunnels = self.slots.len(),
                        "control channel reopened; re-creating tunnels"
                    );
                    return Some(session);
                }
                Ok(Err(e)) if reopen_is_transient(&e) => {
                    tracing::debug!(attempt = self.attempt, code = e.code(), error = %Chain(&e), "reconnect attempt failed");
                    last = e;
                }
                Ok(Err(e)) => {
                    tracing::error!(
                        attempt = self.attempt,
                        code = e.code(),
                        error = %Chain(&e),
                        "control channel closed: reconnecting failed permanently"
                    );
                    self.finish(Some(e), std::iter::empty());
                    return None;
                }
            }
        }
    }

    /// Runs `fut` while answering commands as a disconnected channel does.
    /// `Err` when the channel must end instead (explicit close, or every
    /// handle dropped), carrying the close's reply if any.
    async fn serve_while<T>(
        &mut self,
        fut: impl Future<Output = T>,
    ) -> std::result::Result<T, Option<oneshot::Sender<Result<()>>>> {
        let mut fut = pin!(fut);
        loop {
            tokio::select! {
                out = &mut fut => return Ok(out),
                cmd = self.commands.recv(), if self.commands_open => match cmd {
                    None => {
                        self.commands_open = false;
                        return Err(None);
                    }
                    Some(Command::Close { reply }) => return Err(Some(reply)),
                    Some(Command::OpenTunnel { properties, reply }) => {
                        self.queued.push(QueuedOpen { properties, reply });
                    }
                    Some(Command::CloseTunnel { key, reply }) => {
                        self.close_slot(key, Error::tunnel_closed("tunnel closed"));
                        if let Some(r) = reply {
                            let _ = r.send(Ok(()));
                        }
                    }
                },
            }
        }
    }

    /// Ends the channel cleanly while disconnected.
    fn stop(&mut self, reply: Option<oneshot::Sender<Result<()>>>) {
        self.finish(None, std::iter::empty());
        if let Some(r) = reply {
            let _ = r.send(Ok(()));
        }
    }

    /// Ends the channel for good: every tunnel closes, every waiting
    /// request fails, the status becomes `Closed`.
    fn finish(&mut self, error: Option<Error>, opens: impl Iterator<Item = Pending>) {
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

/// Stops a connection's tasks. After a clean close the writer may flush
/// (and send `close_notify`) for up to a second.
async fn teardown(conn: Conn, clean: bool) {
    let Conn {
        out,
        writer,
        reader,
        handshakes,
        proxy,
        ..
    } = conn;
    reader.abort();
    // Aborts queued and running handshakes: their connections close and
    // nothing more is sent on this connection.
    drop(handshakes);
    drop(proxy);
    drop(out);
    if clean {
        let abort = writer.abort_handle();
        if tokio::time::timeout(Duration::from_secs(1), writer)
            .await
            .is_err()
        {
            abort.abort();
        }
    } else {
        writer.abort();
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

/// An `OpenTunnelReq` frame and its fresh request id.
fn open_request(properties: TunnelProperties) -> Result<(String, Bytes)> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let frame = encode_frame(&Message::new(Payload::OpenTunnelReq(OpenTunnelReq {
        request_id: request_id.clone(),
        tunnel_properties: Some(properties),
    })))?;
    Ok((request_id, frame))
}

fn refuse(conn: &Conn, stream_id: String, why: &str) -> Result<()> {
    tracing::debug!(%stream_id, why, "refusing proxy connection");
    conn.send(Payload::ProxyConnRsp(proxy::refusal(stream_id, why)))
}

/// The connection dropped under us (EOF, reset): a transport loss, not a close.
pub(super) fn lost(why: &str) -> Error {
    Error::new(
        ErrorKind::Io,
        code::CONTROL_LOST,
        format!("control channel lost: {why}"),
    )
}

async fn read_loop(rd: ReadHalf<EngineStream>, tx: mpsc::Sender<Result<Message>>) {
    let mut rd = BufReader::new(rd);
    loop {
        let res = proto::read_frame(&mut rd).await;
        let end = !matches!(res, Ok(Some(_)));
        let item = match res {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(lost("engine closed the connection")),
            Err(e) => Err(e),
        };
        if tx.send(item).await.is_err() || end {
            return;
        }
    }
}

async fn write_loop(mut wr: WriteHalf<EngineStream>, mut rx: mpsc::Receiver<Bytes>) -> Result<()> {
    let io = |e| Error::io("writing to the control channel", e);
    while let Some(frame) = rx.recv().await {
        wr.write_all(&frame).await.map_err(io)?;
        // Coalesce whatever else is queued into one flush.
        while let Ok(frame) = rx.try_recv() {
            wr.write_all(&frame).await.map_err(io)?;
        }
        wr.flush().await.map_err(io)?;
    }
    wr.shutdown().await.map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recreate_failures() {
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
