//! The control channel: one TLS connection to the engine over which tunnels
//! are created and closed, downstream connections are announced, and
//! heartbeats keep both sides honest.
//!
//! [`ControlChannel`] is a cheap-to-clone handle; one background task owns
//! the connection (one reader, one serialized writer). The channel closes
//! gracefully when [`close`](ControlChannel::close) is called, or when the
//! last handle *and* the last [`Tunnel`](crate::Tunnel) created on it are
//! dropped.

mod liveness;
mod proxy;
mod task;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::proto::{
    message::Payload, open_control_channel_rsp, read_frame, write_frame, ControlChannelLiveness,
    Message, OpenControlChannelReq, ServerDetails, TunnelProperties,
};
use crate::tunnel::{Tunnel, TunnelOptions, TunnelShared};
use crate::stream::RstreamStream;

use liveness::Liveness;

/// Requests from handles to the control task.
pub(crate) enum Command {
    OpenTunnel {
        properties: TunnelProperties,
        reply: oneshot::Sender<Result<NewTunnel>>,
    },
    CloseTunnel {
        id: Arc<str>,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Close {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// What the task hands back for a created tunnel.
pub(crate) struct NewTunnel {
    pub(crate) properties: TunnelProperties,
    pub(crate) streams: mpsc::Receiver<RstreamStream>,
    pub(crate) shared: Arc<TunnelShared>,
}

struct Shared {
    // Unbounded on purpose: every command is a user call that awaits its
    // reply (or a tunnel's drop), so the queue is bounded by the callers.
    commands: mpsc::UnboundedSender<Command>,
    client_id: String,
    server: ServerDetails,
    closed: watch::Receiver<Option<Error>>,
    operation_timeout: Duration,
}

/// A handle to an open control channel. Clone it freely.
#[derive(Clone)]
pub struct ControlChannel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ControlChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlChannel")
            .field("client_id", &self.shared.client_id)
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl ControlChannel {
    /// Opens a control channel: TLS, `OpenControlChannelReq`, the engine's
    /// answer and liveness negotiation, then the background task.
    pub(crate) async fn open(client: Client) -> Result<ControlChannel> {
        let inner = client.inner();
        let engine = inner.engine().await?;
        let mut io = inner.dialer.connect(&engine.endpoint, &engine.sni).await?;
        let proposed = inner.options.heartbeat_interval_ms;
        let request = OpenControlChannelReq {
            client_details: Some(inner.details(inner.options.token.as_ref().map(|t| t.expose().to_owned()))),
            liveness: proposed.map(|ms| ControlChannelLiveness {
                heartbeat_interval_ms: ms,
                heartbeat_timeout_ms: 0,
            }),
        };
        write_frame(&mut io, &Message::new(Payload::OpenControlChannelReq(request))).await?;
        let op = inner.options.operation_timeout;
        let first = tokio::time::timeout(op, read_frame(&mut io))
            .await
            .map_err(|_| Error::timeout(format!("no OpenControlChannelRsp within {op:?}")))??;
        let ok = match first.and_then(|m| m.payload) {
            Some(Payload::OpenControlChannelRsp(rsp)) => match rsp.payload {
                Some(open_control_channel_rsp::Payload::Ok(ok)) => ok,
                Some(open_control_channel_rsp::Payload::Error(e)) => {
                    return Err(Error::engine(e.code, e.message.as_deref()))
                }
                None => return Err(Error::protocol("OpenControlChannelRsp with neither ok nor error")),
            },
            Some(other) => {
                return Err(Error::protocol(format!(
                    "expected OpenControlChannelRsp, got {}",
                    other.name()
                )))
            }
            None => return Err(Error::protocol("engine closed the connection before answering")),
        };
        let liveness = Liveness::negotiate(proposed, ok.liveness)?;
        tracing::debug!(client_id = %ok.client_id, mode = ?liveness.mode(), "control channel open");
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (closed_tx, closed) = watch::channel(None);
        task::spawn(client.clone(), io, liveness, commands_rx, closed_tx);
        Ok(ControlChannel {
            shared: Arc::new(Shared {
                commands,
                client_id: ok.client_id,
                server: ok.server_details.unwrap_or_default(),
                closed,
                operation_timeout: op,
            }),
        })
    }

    /// Creates a tunnel. Options are validated before anything is sent.
    ///
    /// # Errors
    ///
    /// Validation errors, the engine's refusal (with its code, see
    /// [`Error::engine_code`]), a timeout, or a closed channel.
    pub async fn create_tunnel(&self, options: TunnelOptions) -> Result<Tunnel> {
        let properties = options.to_properties()?;
        let (reply, rx) = oneshot::channel();
        self.send(Command::OpenTunnel { properties, reply })?;
        let new = self.wait(rx, "OpenTunnelRsp").await?;
        Tunnel::new(new, self.clone())
    }

    /// Closes the channel gracefully (`CloseControlChannelReq` and the
    /// engine's answer). Every tunnel created on it closes; streams already
    /// accepted keep flowing.
    pub async fn close(&self) -> Result<()> {
        if self.is_closed() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::Close { reply })?;
        // The task itself bounds the wait by the operation timeout.
        match rx.await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    /// The engine-assigned client id.
    pub fn client_id(&self) -> &str {
        &self.shared.client_id
    }

    /// What the engine said about itself.
    pub fn server_details(&self) -> &ServerDetails {
        &self.shared.server
    }

    /// Whether the channel has ended.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.borrow().is_some()
    }

    /// Resolves with the reason once the channel has ended.
    ///
    /// The future is `'static`: take it before moving handles elsewhere.
    pub fn closed(&self) -> impl Future<Output = Error> + Send + 'static {
        let mut rx = self.shared.closed.clone();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone().unwrap_or_else(|| Error::control_closed("control channel closed")),
                Err(_) => Error::control_closed("control channel closed"),
            }
        }
    }

    pub(crate) fn closed_error(&self) -> Error {
        self.shared
            .closed
            .borrow()
            .clone()
            .unwrap_or_else(|| Error::control_closed("control channel closed"))
    }

    pub(crate) fn send(&self, cmd: Command) -> Result<()> {
        self.shared.commands.send(cmd).map_err(|_| self.closed_error())
    }

    pub(crate) async fn wait<T>(&self, rx: oneshot::Receiver<Result<T>>, what: &str) -> Result<T> {
        let op = self.shared.operation_timeout;
        match tokio::time::timeout(op, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => Err(Error::timeout(format!("no {what} within {op:?}"))),
        }
    }
}
