//! The control channel: one TLS connection to the engine over which tunnels
//! are created and closed, downstream connections are announced, and
//! heartbeats keep both sides honest.
//!
//! [`ControlChannel`] is a cheap-to-clone handle; one background task owns
//! the connection (one reader, one serialized writer) and the tunnels. The
//! channel closes gracefully when [`close`](ControlChannel::close) is
//! called, or when the last handle *and* the last [`Tunnel`] created on it
//! are dropped.
//!
//! # Reconnects
//!
//! When the connection is lost (engine restart, liveness expiry, TCP reset,
//! a stalled engine) the task reconnects following the channel's
//! [`ReconnectPolicy`] — capped exponential backoff with jitter — and
//! re-creates every open tunnel with the properties it was created with,
//! plus the hostname and port the engine assigned, so published addresses
//! stay the same where the engine honours them. The same [`Tunnel`] values
//! keep yielding connections. Watch it happen with
//! [`ControlChannel::status`]; opt out with [`ReconnectPolicy::disabled`]
//! and [`Client::connect_with`](crate::Client::connect_with). `docs/RELIABILITY.md` lists what survives
//! which fault.

mod connection;
mod liveness;
#[cfg(feature = "quic")]
mod plane_a;
mod proxy;
mod reconnect;
mod requests;
mod slots;
mod task;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use crate::datagram::{DatagramTunnel, Registry};
use crate::error::{code, Error, ErrorKind, Result};
use crate::link::EngineLink;
use crate::proto::{
    message::Payload, read_answer, write_frame, ControlChannelLiveness, Message,
    OpenControlChannelReq, OpenControlChannelRsp, TunnelProperties,
};
use crate::stream::RstreamStream;
use crate::transport::EngineStream;
use crate::tunnel::{Tunnel, TunnelOptions, TunnelShared};

/// What the engine says about itself ([`ControlChannel::server_details`]).
pub use crate::proto::ServerDetails;
pub use reconnect::{
    ConnectOptions, ConnectionStatus, Jitter, ReconnectPolicy, DEFAULT_STABLE_AFTER,
    MAX_RECONNECT_DELAY,
};

use liveness::Liveness;

/// Requests from handles to the control task.
enum Command {
    OpenTunnel {
        properties: Box<TunnelProperties>,
        reply: oneshot::Sender<Result<NewTunnel>>,
    },
    CloseTunnel {
        /// The tunnel's stable key (see `TunnelShared::key`).
        key: u64,
        reply: Option<oneshot::Sender<Result<()>>>,
    },
    Close {
        reply: oneshot::Sender<Result<()>>,
    },
}

/// What the task hands back for a created tunnel.
struct NewTunnel {
    streams: mpsc::Receiver<RstreamStream>,
    shared: Arc<TunnelShared>,
}

/// What one successful `OpenControlChannelReq` exchange produced.
pub(crate) struct Session {
    pub(crate) io: EngineStream,
    pub(crate) liveness: Liveness,
    pub(crate) info: Arc<SessionInfo>,
}

/// The engine's identity for the current connection.
#[derive(Debug)]
pub(crate) struct SessionInfo {
    pub(crate) client_id: String,
    pub(crate) server: ServerDetails,
}

struct Shared {
    // Unbounded on purpose: every command is a user call that awaits its
    // reply (or a tunnel's drop), so the queue is bounded by the callers.
    commands: mpsc::UnboundedSender<Command>,
    status: watch::Receiver<ConnectionStatus>,
    session: watch::Receiver<Arc<SessionInfo>>,
    operation_timeout: Duration,
    policy: ReconnectPolicy,
    /// Accepted datagram channels, for the engine's `DatagramChannelClose`.
    datagrams: Arc<Registry>,
}

/// A handle to an open control channel. Clone it freely.
#[derive(Clone)]
pub struct ControlChannel {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ControlChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlChannel")
            .field("client_id", &self.shared.session.borrow().client_id)
            .field("status", &*self.shared.status.borrow())
            .finish()
    }
}

/// One `OpenControlChannelReq` exchange on a fresh connection: TLS, the
/// request, the engine's answer and liveness negotiation.
pub(crate) async fn handshake(link: &EngineLink) -> Result<Session> {
    let engine = link.engine().await?;
    let mut io = link.dialer.connect(&engine.endpoint, &engine.sni).await?;
    let proposed = link.options.heartbeat_interval_ms;
    // A fresh app token per (re)connect when the client has app credentials.
    let bearer = link.options.bearer(&engine.endpoint.to_string())?;
    let request = OpenControlChannelReq {
        client_details: Some(link.details(bearer.as_ref().map(|t| t.expose().to_owned()))),
        liveness: proposed.map(|ms| ControlChannelLiveness {
            heartbeat_interval_ms: ms,
            heartbeat_timeout_ms: 0,
        }),
    };
    let op = link.options.operation_timeout;
    let exchange = async {
        write_frame(
            &mut io,
            &Message::new(Payload::OpenControlChannelReq(request)),
        )
        .await?;
        // An engine that closes the connection before answering (a restart
        // under way) is a transport loss, not a protocol error, so a
        // reconnect tries again.
        read_answer::<OpenControlChannelRsp, _>(&mut io, || {
            connection::lost("engine closed the connection before answering")
        })
        .await
    };
    let first = tokio::time::timeout(op, exchange)
        .await
        .map_err(|_| Error::timeout(format!("no OpenControlChannelRsp within {op:?}")))??;
    let ok = first.into_result()?;
    let liveness = Liveness::negotiate(proposed, ok.liveness)?;
    tracing::debug!(client_id = %ok.client_id, mode = ?liveness.mode(), "control channel open");
    Ok(Session {
        io,
        liveness,
        info: Arc::new(SessionInfo {
            client_id: ok.client_id,
            server: ok.server_details.unwrap_or_default(),
        }),
    })
}

impl ControlChannel {
    /// Opens a control channel with the default [`ConnectOptions`].
    pub(crate) async fn open(link: Arc<EngineLink>) -> Result<ControlChannel> {
        ControlChannel::open_with(link, ConnectOptions::default()).await
    }

    /// Opens a control channel, then starts the background task.
    pub(crate) async fn open_with(
        link: Arc<EngineLink>,
        options: ConnectOptions,
    ) -> Result<ControlChannel> {
        let session = handshake(&link).await?;
        let operation_timeout = link.options.operation_timeout;
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let (status_tx, status) = watch::channel(ConnectionStatus::Connected);
        let (session_tx, session_rx) = watch::channel(session.info.clone());
        let datagrams = Arc::new(Registry::default());
        task::spawn(task::Start {
            datagrams: datagrams.clone(),
            link,
            policy: options.reconnect.clone(),
            session,
            commands: commands_rx,
            status: status_tx,
            info: session_tx,
        });
        Ok(ControlChannel {
            shared: Arc::new(Shared {
                commands,
                status,
                session: session_rx,
                operation_timeout,
                policy: options.reconnect,
                datagrams,
            }),
        })
    }

    /// Creates a (bytestream) tunnel. Options are validated before
    /// anything is sent. Datagram options are refused
    /// (`ERR_RSTREAM_UNSUPPORTED_TUNNEL`): use
    /// [`create_datagram_tunnel`](Self::create_datagram_tunnel).
    ///
    /// While the channel is reconnecting, the request waits for the new
    /// connection (bounded by the operation timeout).
    ///
    /// # Errors
    ///
    /// Validation errors, the engine's refusal (with its code, see
    /// [`Error::engine_code`]), a timeout, or a closed channel.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe in the strict sense: if the future is dropped after
    /// the request went out, the tunnel the engine creates is closed again
    /// at once (nothing leaks, but the work is lost).
    pub async fn create_tunnel(&self, options: TunnelOptions) -> Result<Tunnel> {
        if options.is_datagram() {
            return Err(Error::unsupported(
                code::UNSUPPORTED_TUNNEL,
                "datagram tunnels are created with ControlChannel::create_datagram_tunnel",
            ));
        }
        self.create(options).await
    }

    /// Creates a datagram tunnel: `options` as given, with `type =
    /// "datagram"` (start from [`TunnelOptions::datagram`]). A published
    /// one gets a UDP address; each peer is a
    /// [`DatagramChannel`](crate::datagram::DatagramChannel). With
    /// `TunnelOptions::http().http_version(HttpVersion::H3)` it is an
    /// HTTP/3 upstream: an `https://` address whose requests the engine
    /// forwards over HTTP/3 to this tunnel, served with
    /// `rstream::http3::serve` (docs/HTTP3.md).
    ///
    /// ```no_run
    /// # async fn run(control: rstream::ControlChannel) -> rstream::Result<()> {
    /// use rstream::TunnelOptions;
    /// let mut tunnel = control
    ///     .create_datagram_tunnel(TunnelOptions::datagram().publish())
    ///     .await?;
    /// println!("{}", tunnel.forwarding_address()); // 127.0.0.1:PORT (udp)
    /// let channel = tunnel.accept().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`create_tunnel`](Self::create_tunnel); and
    /// `ERR_RSTREAM_UNSUPPORTED_TUNNEL` when the engine created something
    /// other than a datagram tunnel (the type it returns decides; that
    /// tunnel is closed again).
    pub async fn create_datagram_tunnel(&self, options: TunnelOptions) -> Result<DatagramTunnel> {
        let tunnel = self.create(options.into_datagram()).await?;
        let kind = tunnel.properties().r#type.clone();
        if kind.as_deref().map(str::trim) != Some("datagram") {
            let _ = tunnel.close().await;
            return Err(Error::unsupported(
                code::UNSUPPORTED_TUNNEL,
                format!("the engine created a tunnel of type {kind:?}, not a datagram tunnel"),
            ));
        }
        Ok(DatagramTunnel::new(tunnel))
    }

    async fn create(&self, options: TunnelOptions) -> Result<Tunnel> {
        let properties = Box::new(options.to_properties()?);
        let (reply, rx) = oneshot::channel();
        self.send(Command::OpenTunnel { properties, reply })?;
        let new = self.wait(rx, "OpenTunnelRsp").await?;
        let handle = TunnelHandle {
            control: self.clone(),
            key: new.shared.key(),
        };
        Ok(Tunnel::new(new.streams, new.shared, handle))
    }

    /// Closes the channel gracefully (`CloseControlChannelReq` and the
    /// engine's answer) and stops reconnecting. Every tunnel created on it
    /// closes; streams already accepted keep flowing. While reconnecting,
    /// the channel closes at once. The engine ending the connection after
    /// the request, before its answer is read, is a close too (`Ok`); an
    /// answer that does not come within the operation timeout is an error.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: once polled, the close proceeds whether or not the
    /// future is then dropped.
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

    /// The engine-assigned client id of the current connection (it changes
    /// when the channel reconnects).
    pub fn client_id(&self) -> String {
        self.shared.session.borrow().client_id.clone()
    }

    /// What the engine said about itself on the current connection.
    pub fn server_details(&self) -> ServerDetails {
        self.shared.session.borrow().server.clone()
    }

    /// The datagram channels accepted on this control channel's tunnels.
    pub(crate) fn datagrams(&self) -> &Arc<Registry> {
        &self.shared.datagrams
    }

    /// The channel's reconnect policy.
    pub fn reconnect_policy(&self) -> &ReconnectPolicy {
        &self.shared.policy
    }

    /// The channel's status — connected, reconnecting (with the attempt and
    /// the last error) or closed — as a `watch` receiver: read it with
    /// `borrow()`, wait for changes with `changed()` or `wait_for()`.
    ///
    /// ```no_run
    /// # async fn run(control: rstream::ControlChannel) {
    /// use rstream::control::ConnectionStatus;
    /// let mut status = control.status();
    /// while status.changed().await.is_ok() {
    ///     match &*status.borrow_and_update() {
    ///         ConnectionStatus::Reconnecting { attempt, last_error, .. } => {
    ///             eprintln!("reconnecting (attempt {attempt}): {last_error}")
    ///         }
    ///         ConnectionStatus::Closed { .. } => break,
    ///         _ => {}
    ///     }
    /// }
    /// # }
    /// ```
    pub fn status(&self) -> watch::Receiver<ConnectionStatus> {
        self.shared.status.clone()
    }

    /// Whether the channel has ended for good (a reconnect in progress is
    /// not an end).
    pub fn is_closed(&self) -> bool {
        self.shared.status.borrow().is_closed()
    }

    /// Resolves with the reason once the channel has ended for good (not on
    /// a reconnect). After a clean close the reason has kind
    /// [`ErrorKind::Closed`].
    ///
    /// The future is `'static`: take it before moving handles elsewhere.
    pub fn closed(&self) -> impl Future<Output = Error> + Send + 'static {
        let mut rx = self.shared.status.clone();
        async move {
            match rx.wait_for(ConnectionStatus::is_closed).await {
                Ok(status) => closed_reason(&status),
                Err(_) => Error::control_closed("control channel closed"),
            }
        }
    }

    fn closed_error(&self) -> Error {
        let status = self.shared.status.borrow();
        if status.is_closed() {
            closed_reason(&status)
        } else {
            Error::control_closed("control channel closed")
        }
    }

    fn send(&self, cmd: Command) -> Result<()> {
        self.shared
            .commands
            .send(cmd)
            .map_err(|_| self.closed_error())
    }

    async fn wait<T>(&self, rx: oneshot::Receiver<Result<T>>, what: &str) -> Result<T> {
        let op = self.shared.operation_timeout;
        match tokio::time::timeout(op, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.closed_error()),
            Err(_) => Err(Error::timeout(format!("no {what} within {op:?}"))),
        }
    }
}

/// A tunnel's link to its control channel, and the only way tunnel code
/// talks to the control task: the task's commands and replies stay private
/// to this module, and `tunnel` sees one small handle instead.
pub(crate) struct TunnelHandle {
    control: ControlChannel,
    /// The tunnel's stable key in the task (engine ids change).
    key: u64,
}

impl TunnelHandle {
    /// The channel the tunnel lives on.
    pub(crate) fn control(&self) -> &ControlChannel {
        &self.control
    }

    /// Closes the tunnel on the engine and waits for the acknowledgement
    /// (bounded by the operation timeout).
    pub(crate) async fn close(&self) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.control.send(Command::CloseTunnel {
            key: self.key,
            reply: Some(reply),
        })?;
        self.control.wait(rx, "CloseTunnelRsp").await
    }

    /// Asks for the close without waiting for it (the tunnel was dropped).
    pub(crate) fn release(&self) {
        let _ = self.control.send(Command::CloseTunnel {
            key: self.key,
            reply: None,
        });
    }
}

fn closed_reason(status: &ConnectionStatus) -> Error {
    match status {
        ConnectionStatus::Closed { error: Some(e) } => e.clone(),
        _ => Error::new(
            ErrorKind::Closed,
            code::CONTROL_CLOSED,
            "control channel closed",
        ),
    }
}
