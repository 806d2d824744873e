//! One connection to the engine: its reader and writer tasks, the bounded
//! outbox the control task pushes frames into without waiting, and its
//! teardown.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::task::{AbortHandle, JoinHandle, JoinSet};
use tokio::time::Instant;
use tracing::Instrument;

use super::liveness::Liveness;
use super::proxy::ProxyContext;
use super::requests::Pending;
use crate::error::{code, Error, ErrorKind, Result};
use crate::link::EngineLink;
use crate::proto::{
    self, encode_frame, message::Payload, CloseControlChannelReq, CloseTunnelReq, Message,
};
use crate::transport::EngineStream;

/// Frames queued for the writer. Bounded: when the engine stops reading
/// and this fills up, the connection counts as lost.
const OUTBOX: usize = 512;
/// Frames read ahead of the control task.
const INBOX: usize = 64;

/// "Never" for deadlines: a year away, far enough and still addable.
pub(super) const FAR: Duration = Duration::from_secs(86_400 * 365);

/// `now + d`, capped at [`FAR`]: never overflows, whatever `d` is.
pub(super) fn after(d: Duration) -> Instant {
    Instant::now() + d.min(FAR)
}

/// A `CloseControlChannelReq` went out: until when to wait for the answer,
/// and who waits.
pub(super) struct Closing {
    pub(super) deadline: Instant,
    pub(super) waiters: Vec<oneshot::Sender<Result<()>>>,
}

/// One connection to the engine.
pub(super) struct Conn {
    pub(super) out: mpsc::Sender<Bytes>,
    pub(super) incoming: mpsc::Receiver<Result<Message>>,
    pub(super) writer: JoinHandle<Result<()>>,
    pub(super) reader: AbortHandle,
    pub(super) liveness: Liveness,
    /// Engine tunnel id → slot key, for this connection.
    pub(super) ids: HashMap<Arc<str>, u64>,
    pub(super) opens: HashMap<String, Pending>,
    pub(super) handshakes: JoinSet<()>,
    pub(super) proxy: Arc<ProxyContext>,
    pub(super) closing: Option<Closing>,
    /// Every tunnel was re-created (or given up on).
    pub(super) restored: bool,
}

impl Conn {
    /// Spawns the reader and the writer of a new connection.
    pub(super) fn start(
        io: EngineStream,
        liveness: Liveness,
        link: Arc<EngineLink>,
        max_concurrent: usize,
    ) -> Conn {
        #[cfg(feature = "quic")]
        let router = match &io {
            EngineStream::Quic(q) => Some(q.datagram_router()),
            EngineStream::Tls(_) => None,
        };
        let (rd, wr) = tokio::io::split(io);
        let (out, out_rx) = mpsc::channel(OUTBOX);
        let (in_tx, incoming) = mpsc::channel(INBOX);
        let writer = tokio::spawn(write_loop(wr, out_rx).in_current_span());
        let reader = tokio::spawn(read_loop(rd, in_tx).in_current_span()).abort_handle();
        Conn {
            proxy: Arc::new(ProxyContext {
                permits: Arc::new(Semaphore::new(max_concurrent)),
                link,
                out: out.clone(),
                #[cfg(feature = "quic")]
                router,
            }),
            out,
            incoming,
            writer,
            reader,
            liveness,
            ids: HashMap::new(),
            opens: HashMap::new(),
            handshakes: JoinSet::new(),
            closing: None,
            restored: false,
        }
    }

    /// Queues a frame for the writer without waiting.
    pub(super) fn push(&self, frame: Bytes) -> Result<()> {
        self.out.try_send(frame).map_err(|e| match e {
            TrySendError::Full(_) => Error::new(
                ErrorKind::Timeout,
                code::CONTROL_STALLED,
                format!("the engine stopped reading: {OUTBOX} frames are waiting to be written"),
            ),
            TrySendError::Closed(_) => lost("control channel writer stopped"),
        })
    }

    /// Queues a frame, waiting up to `op` for room in the outbox. Only
    /// `restore` waits, before the connection loop runs: there may be more
    /// re-creation requests than the outbox holds.
    pub(super) async fn push_within(&self, frame: Bytes, op: Duration) -> Result<()> {
        tokio::time::timeout(op, self.out.send(frame))
            .await
            .map_err(|_| {
                Error::timeout(format!(
                    "could not send the re-creation requests within {op:?}"
                ))
            })?
            .map_err(|_| lost("control channel writer stopped"))
    }

    pub(super) fn send(&self, payload: Payload) -> Result<()> {
        self.push(encode_frame(&Message::new(payload))?)
    }

    pub(super) fn close_tunnel(&self, id: &str) -> Result<()> {
        self.send(Payload::CloseTunnelReq(CloseTunnelReq {
            tunnel_id: id.to_owned(),
        }))
    }

    pub(super) fn begin_close(
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

pub(super) enum Step {
    Continue,
    /// The channel closed cleanly (`CloseControlChannelRsp`).
    Closed,
}

/// How one connection ended.
pub(super) enum End {
    Clean,
    Failed(Error),
}

/// Stops a connection's tasks. After a clean close the writer may flush
/// (and send `close_notify`) for up to a second.
pub(super) async fn teardown(conn: Conn, clean: bool) {
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
