//! Tunnels: create them with [`ControlChannel::create_tunnel`], then accept
//! the downstream connections they receive.

mod address;
mod forward;
#[cfg(feature = "axum")]
mod listener;
mod options;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::{mpsc, oneshot, watch};

pub use address::forwarding_address;
#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use listener::TunnelAddr;
pub use options::{HttpVersion, Protocol, TlsMode, TunnelOptions};

use crate::control::{Command, ControlChannel, NewTunnel};
use crate::error::{Error, Result};
use crate::proto::TunnelProperties;
use crate::stream::RstreamStream;

/// State shared between a [`Tunnel`] and the control task.
#[derive(Debug)]
pub(crate) struct TunnelShared {
    id: Arc<str>,
    closed: watch::Sender<Option<Error>>,
    waker: AtomicWaker,
}

impl TunnelShared {
    pub(crate) fn new(id: Arc<str>) -> Self {
        TunnelShared {
            id,
            closed: watch::Sender::new(None),
            waker: AtomicWaker::new(),
        }
    }

    pub(crate) fn id(&self) -> &Arc<str> {
        &self.id
    }

    /// Marks the tunnel closed (first reason wins) and wakes its acceptor.
    pub(crate) fn close(&self, reason: Error) {
        self.closed.send_if_modified(|v| {
            if v.is_none() {
                *v = Some(reason);
                true
            } else {
                false
            }
        });
        self.waker.wake();
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.borrow().is_some()
    }

    fn closed_error(&self) -> Option<Error> {
        self.closed.borrow().clone()
    }
}

/// A tunnel created on a control channel.
///
/// Accept its downstream connections with [`accept`](Tunnel::accept), or use
/// it as a `Stream` of connections. Dropping it closes it on the engine.
///
/// When the tunnel closes (explicitly, by the engine, or because its control
/// channel ended) `accept` returns the reason, connections delivered but not
/// yet accepted are closed, and connections already accepted keep flowing.
pub struct Tunnel {
    id: Arc<str>,
    properties: Arc<TunnelProperties>,
    address: String,
    control: ControlChannel,
    streams: mpsc::Receiver<RstreamStream>,
    shared: Arc<TunnelShared>,
    ended: bool,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field("id", &self.id)
            .field("address", &self.address)
            .field("closed", &self.shared.is_closed())
            .finish()
    }
}

impl Tunnel {
    pub(crate) fn new(new: NewTunnel, control: ControlChannel) -> Result<Self> {
        let address = forwarding_address(&new.properties)?;
        Ok(Tunnel {
            id: new.shared.id().clone(),
            properties: Arc::new(new.properties),
            address,
            control,
            streams: new.streams,
            shared: new.shared,
            ended: false,
        })
    }

    /// The engine-assigned tunnel id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The tunnel name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.properties.name.as_deref()
    }

    /// The properties the engine returned (hostname, port, labels…).
    pub fn properties(&self) -> &TunnelProperties {
        &self.properties
    }

    /// Where downstream clients reach the tunnel, e.g. `https://host:port`,
    /// `host:port (tcp)` or `rstrm://name (unpublished)`.
    pub fn forwarding_address(&self) -> &str {
        &self.address
    }

    /// The control channel this tunnel lives on.
    pub fn control(&self) -> &ControlChannel {
        &self.control
    }

    /// Waits for the next downstream connection.
    ///
    /// # Errors
    ///
    /// Once the tunnel is closed, every call returns the reason.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: if the future is dropped before it completes, no
    /// connection is lost; it stays queued for the next call.
    pub async fn accept(&mut self) -> Result<RstreamStream> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next downstream connection (see [`accept`](Tunnel::accept)).
    pub fn poll_accept(&mut self, cx: &mut Context<'_>) -> Poll<Result<RstreamStream>> {
        self.shared.waker.register(cx.waker());
        if let Some(reason) = self.shared.closed_error() {
            // Delivered-but-unaccepted connections are closed with the tunnel.
            self.streams.close();
            while self.streams.try_recv().is_ok() {}
            return Poll::Ready(Err(reason));
        }
        match self.streams.poll_recv(cx) {
            Poll::Ready(Some(s)) => Poll::Ready(Ok(s)),
            Poll::Ready(None) => Poll::Ready(Err(self
                .shared
                .closed_error()
                .unwrap_or_else(|| Error::tunnel_closed("tunnel closed")))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the tunnel is closed.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Resolves with the reason once the tunnel is closed. The future owns
    /// what it needs (`'static`), so take it before handing the tunnel to
    /// `axum::serve` and pass it to graceful shutdown.
    pub fn closed(&self) -> impl Future<Output = Error> + Send + 'static {
        let mut rx = self.shared.closed.subscribe();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(v) => v.clone().unwrap_or_else(|| Error::tunnel_closed("tunnel closed")),
                Err(_) => Error::tunnel_closed("tunnel closed"),
            }
        }
    }

    /// Closes the tunnel on the engine and waits for the acknowledgement.
    /// After a timeout the tunnel stays open and `close` may be retried.
    pub async fn close(&self) -> Result<()> {
        if self.is_closed() {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.control.send(Command::CloseTunnel {
            id: self.id.clone(),
            reply: Some(reply),
        })?;
        self.control.wait(rx, "CloseTunnelRsp").await
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if !self.shared.is_closed() {
            let _ = self.control.send(Command::CloseTunnel {
                id: self.id.clone(),
                reply: None,
            });
        }
    }
}

impl futures_core::Stream for Tunnel {
    type Item = Result<RstreamStream>;

    /// Yields connections; after the tunnel closes, one `Err` with the
    /// reason, then `None`.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match this.poll_accept(cx) {
            Poll::Ready(Ok(s)) => Poll::Ready(Some(Ok(s))),
            Poll::Ready(Err(e)) => {
                this.ended = true;
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
