//! The task behind a control channel: one reader, one serialized writer,
//! pending requests by id, heartbeats and liveness, proxy dispatch.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, Instant, MissedTickBehavior};

use super::liveness::{self, Liveness};
use super::proxy::{self, ProxyContext};
use super::{Command, NewTunnel};
use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::proto::{
    self, encode_frame, message::Payload, open_tunnel_rsp, CloseControlChannelReq, CloseTunnelReq,
    CloseTunnelRsp, Message, OpenTunnelReq, OpenTunnelRsp, ProxyConnReq,
};
use crate::stream::RstreamStream;
use crate::transport::EngineStream;
use crate::tunnel::TunnelShared;

/// Frames queued for the writer. Small: producers wait when the engine
/// stops reading instead of growing memory.
const OUTBOX: usize = 256;
/// Frames read ahead of the control task.
const INBOX: usize = 64;

pub(super) fn spawn(
    client: Client,
    io: EngineStream,
    liveness: Liveness,
    commands: mpsc::UnboundedReceiver<Command>,
    closed: watch::Sender<Option<Error>>,
) {
    let (rd, wr) = tokio::io::split(io);
    let (out_tx, out_rx) = mpsc::channel(OUTBOX);
    let (in_tx, in_rx) = mpsc::channel(INBOX);
    let writer = tokio::spawn(write_loop(wr, out_rx));
    let reader = tokio::spawn(read_loop(rd, in_tx));
    let opts = &client.inner().options;
    let proxy = Arc::new(ProxyContext {
        permits: Arc::new(Semaphore::new(opts.max_concurrent_handshakes)),
        client: client.clone(),
        out: out_tx.clone(),
    });
    let max_inflight = opts.max_concurrent_handshakes + opts.handshake_queue;
    let backlog = opts.accept_backlog;
    let task = Task {
        out: out_tx,
        liveness,
        tunnels: HashMap::new(),
        opens: HashMap::new(),
        closes: HashMap::new(),
        closing: None,
        handshakes: JoinSet::new(),
        proxy,
        max_inflight,
        backlog,
    };
    tokio::spawn(async move {
        let (reader_abort, writer_abort) = (reader.abort_handle(), writer.abort_handle());
        let exit = task.run(in_rx, commands, writer, &closed).await;
        match &exit {
            Ok(()) => tracing::debug!("control channel closed"),
            Err(e) => tracing::warn!(code = e.code(), error = %e, "control channel lost"),
        }
        // Whatever happened, the connection is gone now.
        reader_abort.abort();
        writer_abort.abort();
    });
}

struct Slot {
    streams: mpsc::Sender<RstreamStream>,
    shared: Arc<TunnelShared>,
}

struct Task {
    out: mpsc::Sender<Bytes>,
    liveness: Liveness,
    tunnels: HashMap<Arc<str>, Slot>,
    opens: HashMap<String, oneshot::Sender<Result<NewTunnel>>>,
    closes: HashMap<Arc<str>, Vec<oneshot::Sender<Result<()>>>>,
    closing: Option<Closing>,
    handshakes: JoinSet<()>,
    proxy: Arc<ProxyContext>,
    max_inflight: usize,
    backlog: usize,
}

struct Closing {
    deadline: Instant,
    waiters: Vec<oneshot::Sender<Result<()>>>,
}

/// What ended the main loop: `Ok` for a clean close.
type Exit = Result<()>;

impl Task {
    async fn run(
        mut self,
        mut incoming: mpsc::Receiver<Result<Message>>,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut writer: tokio::task::JoinHandle<Result<()>>,
        closed: &watch::Sender<Option<Error>>,
    ) -> Exit {
        let far = Instant::now() + std::time::Duration::from_secs(86_400 * 365);
        let mut heartbeat = tokio::time::interval(
            self.liveness
                .interval()
                .unwrap_or(std::time::Duration::from_secs(3600)),
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let has_heartbeats = self.liveness.interval().is_some();
        let timeout = self.liveness.timeout();
        let mut deadline = pin!(sleep_until(timeout.map_or(far, |t| Instant::now() + t)));
        let mut commands_open = true;

        let exit: Exit = loop {
            let close_deadline = self.closing.as_ref().map_or(far, |c| c.deadline);
            tokio::select! {
                biased;
                frame = incoming.recv() => match frame {
                    Some(Ok(msg)) => {
                        if let Some(t) = timeout {
                            deadline.as_mut().reset(Instant::now() + t);
                        }
                        match self.on_frame(msg).await {
                            Ok(true) => break Ok(()),
                            Ok(false) => {}
                            Err(e) => break Err(e),
                        }
                    }
                    Some(Err(e)) => break Err(e),
                    None => break Err(lost("control channel reader stopped")),
                },
                res = &mut writer => break Err(match res {
                    Ok(Err(e)) => e,
                    _ => Error::control_closed("control channel writer stopped"),
                }),
                _ = &mut deadline, if timeout.is_some() => {
                    break Err(liveness::expired(timeout.unwrap_or_default()));
                }
                _ = sleep_until(close_deadline), if self.closing.is_some() => {
                    break Err(Error::timeout("no CloseControlChannelRsp in time"));
                }
                _ = heartbeat.tick(), if has_heartbeats => {
                    if let Some(hb) = self.liveness.next_heartbeat() {
                        if let Err(e) = self.send(Payload::Heartbeat(hb)).await {
                            break Err(e);
                        }
                    }
                    // Forget requests whose caller gave up (timed out).
                    self.opens.retain(|_, tx| !tx.is_closed());
                }
                cmd = commands.recv(), if commands_open && self.closing.is_none() => {
                    let res = match cmd {
                        Some(cmd) => self.on_command(cmd).await,
                        None => {
                            // Every handle and tunnel is gone: close gracefully.
                            commands_open = false;
                            self.begin_close(None).await
                        }
                    };
                    if let Err(e) = res {
                        break Err(e);
                    }
                }
                Some(_) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {}
            }
        };
        self.finish(&exit, closed);
        if exit.is_ok() {
            // Clean close: let the writer flush and send close_notify.
            drop(self.out);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), writer).await;
        }
        exit
    }

    async fn send(&self, payload: Payload) -> Result<()> {
        let frame = encode_frame(&Message::new(payload))?;
        self.out
            .send(frame)
            .await
            .map_err(|_| Error::control_closed("control channel writer stopped"))
    }

    /// Handles one frame; `Ok(true)` means the channel closed cleanly.
    async fn on_frame(&mut self, msg: Message) -> Result<bool> {
        let Some(payload) = msg.payload else {
            return Ok(false);
        };
        match payload {
            Payload::OpenTunnelRsp(rsp) => self.on_open_tunnel_rsp(rsp).await?,
            Payload::CloseTunnelRsp(CloseTunnelRsp { tunnel_id }) => {
                if let Some((id, _)) = self.tunnels.get_key_value(tunnel_id.as_str()) {
                    let id = id.clone();
                    self.close_tunnel(&id, Error::tunnel_closed("tunnel closed by the engine"));
                }
            }
            Payload::CloseControlChannelRsp(_) => return Ok(true),
            Payload::Heartbeat(hb) => self.liveness.on_heartbeat(hb)?,
            Payload::ProxyConnReq(req) => self.on_proxy_conn_req(req).await?,
            Payload::ServerMessage(m) => {
                tracing::info!(message = %m.message, "message from the engine");
            }
            other => tracing::debug!(frame = other.name(), "ignored frame on control channel"),
        }
        Ok(false)
    }

    async fn on_open_tunnel_rsp(&mut self, rsp: OpenTunnelRsp) -> Result<()> {
        let Some(reply) = self.opens.remove(&rsp.request_id) else {
            tracing::debug!(request_id = %rsp.request_id, "OpenTunnelRsp for an unknown request");
            return Ok(());
        };
        match rsp.payload {
            None => {
                let _ = reply.send(Err(Error::protocol("OpenTunnelRsp with neither properties nor error")));
            }
            Some(open_tunnel_rsp::Payload::Error(e)) => {
                let _ = reply.send(Err(Error::engine(e.code, e.message.as_deref())));
            }
            Some(open_tunnel_rsp::Payload::TunnelProperties(props)) => {
                let Some(id) = props.id.clone().filter(|id| !id.is_empty()) else {
                    let err = Error::protocol("OpenTunnelRsp without a tunnel id");
                    let _ = reply.send(Err(err.clone()));
                    return Err(err);
                };
                let id: Arc<str> = Arc::from(id);
                if reply.is_closed() {
                    // The caller timed out: don't orphan the tunnel on the engine.
                    return self.send(Payload::CloseTunnelReq(CloseTunnelReq { tunnel_id: id.to_string() })).await;
                }
                let (tx, rx) = mpsc::channel(self.backlog);
                let shared = Arc::new(TunnelShared::new(id.clone()));
                self.tunnels.insert(
                    id.clone(),
                    Slot {
                        streams: tx,
                        shared: shared.clone(),
                    },
                );
                let new = NewTunnel {
                    properties: props,
                    streams: rx,
                    shared,
                };
                if reply.send(Ok(new)).is_err() {
                    self.tunnels.remove(&id);
                    self.send(Payload::CloseTunnelReq(CloseTunnelReq { tunnel_id: id.to_string() })).await?;
                }
            }
        }
        Ok(())
    }

    async fn on_proxy_conn_req(&mut self, req: ProxyConnReq) -> Result<()> {
        let Some(slot) = self.tunnels.get(req.tunnel_id.as_str()) else {
            return self.refuse(req.stream_id, "unknown tunnel").await;
        };
        let target = match proxy::target(&self.proxy.client, &req) {
            Ok(t) => t,
            Err(e) => return self.refuse(req.stream_id, e.message()).await,
        };
        if self.handshakes.len() >= self.max_inflight {
            return Err(Error::new(
                ErrorKind::Protocol,
                "ERR_RSTREAM_CONTROL_OVERLOAD",
                format!(
                    "more than {} proxy connections pending: control channel overloaded",
                    self.max_inflight
                ),
            ));
        }
        let job = proxy::Job {
            req,
            target,
            streams: slot.streams.clone(),
            tunnel: slot.shared.clone(),
        };
        self.handshakes.spawn(proxy::run(self.proxy.clone(), job));
        Ok(())
    }

    async fn refuse(&self, stream_id: String, why: &str) -> Result<()> {
        tracing::debug!(%stream_id, why, "refusing proxy connection");
        self.send(Payload::ProxyConnRsp(proxy::refusal(stream_id, why)))
            .await
    }

    async fn on_command(&mut self, cmd: Command) -> Result<()> {
        match cmd {
            Command::OpenTunnel { properties, reply } => {
                let request_id = uuid::Uuid::new_v4().to_string();
                let request = Message::new(Payload::OpenTunnelReq(OpenTunnelReq {
                    request_id: request_id.clone(),
                    tunnel_properties: Some(properties),
                }));
                // An oversized request is the caller's error, not the channel's.
                match encode_frame(&request) {
                    Ok(frame) => {
                        self.out
                            .send(frame)
                            .await
                            .map_err(|_| Error::control_closed("control channel writer stopped"))?;
                        self.opens.insert(request_id, reply);
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            Command::CloseTunnel { id, reply } => {
                if !self.tunnels.contains_key(&id) {
                    // Unknown or already closed: nothing to send.
                    if let Some(r) = reply {
                        let _ = r.send(Ok(()));
                    }
                    return Ok(());
                }
                let waiters = self.closes.entry(id.clone()).or_default();
                waiters.retain(|w| !w.is_closed());
                let first = waiters.is_empty();
                match reply {
                    Some(r) => waiters.push(r),
                    // A dropped tunnel: nobody waits, but the close goes out.
                    None if first => {}
                    None => return Ok(()),
                }
                if first {
                    self.send(Payload::CloseTunnelReq(CloseTunnelReq { tunnel_id: id.to_string() }))
                        .await?;
                }
            }
            Command::Close { reply } => self.begin_close(Some(reply)).await?,
        }
        Ok(())
    }

    async fn begin_close(&mut self, reply: Option<oneshot::Sender<Result<()>>>) -> Result<()> {
        if let Some(closing) = &mut self.closing {
            closing.waiters.extend(reply);
            return Ok(());
        }
        self.send(Payload::CloseControlChannelReq(CloseControlChannelReq {}))
            .await?;
        let deadline = Instant::now() + self.proxy.client.inner().options.operation_timeout;
        self.closing = Some(Closing {
            deadline,
            waiters: reply.into_iter().collect(),
        });
        Ok(())
    }

    fn close_tunnel(&mut self, id: &Arc<str>, reason: Error) {
        if let Some(slot) = self.tunnels.remove(id) {
            slot.shared.close(reason);
        }
        for w in self.closes.remove(id).unwrap_or_default() {
            let _ = w.send(Ok(()));
        }
    }

    /// Fails everything still waiting and closes every tunnel.
    fn finish(&mut self, exit: &Exit, closed: &watch::Sender<Option<Error>>) {
        let reason = match exit {
            Ok(()) => Error::control_closed("control channel closed"),
            Err(e) => e.clone(),
        };
        let ids: Vec<Arc<str>> = self.tunnels.keys().cloned().collect();
        for id in ids {
            self.close_tunnel(&id, reason.clone());
        }
        for (_, r) in self.opens.drain() {
            let _ = r.send(Err(reason.clone()));
        }
        if let Some(closing) = self.closing.take() {
            for w in closing.waiters {
                let _ = w.send(exit.clone());
            }
        }
        // Abort queued and running handshakes: their connections close and
        // nothing more is sent on this channel.
        self.handshakes.abort_all();
        closed.send_replace(Some(reason));
    }
}

/// The connection dropped under us (EOF, reset): a transport loss, not a close.
fn lost(why: &str) -> Error {
    Error::new(ErrorKind::Io, "ERR_RSTREAM_CONTROL_LOST", format!("control channel lost: {why}"))
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
