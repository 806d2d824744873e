//! [`Tunnel::forward_to`]: relay every connection to a local TCP service.

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::Tunnel;
use crate::error::{Error, ErrorKind, Result};
use crate::stream::RstreamStream;

impl Tunnel {
    /// Relays every accepted connection to `addr` (e.g. `"127.0.0.1:8000"`),
    /// both ways with half-close, until the tunnel closes.
    ///
    /// A refused or failed local connection is logged and closes only that
    /// downstream connection. Returns the reason the tunnel closed.
    ///
    /// While the control channel reconnects, relays in flight keep running
    /// and `forward_to` waits for the re-created tunnel. When the tunnel ends
    /// for good after a lost control channel (reconnect disabled or given
    /// up), relays in flight still survive; they are stopped after a hard
    /// close (explicit close, the engine closing the tunnel or the channel, a
    /// protocol error, a permanent re-creation failure).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future drops the tunnel (closing it on the engine) and
    /// aborts the relays it started.
    pub async fn forward_to(mut self, addr: impl Into<String>) -> Result<()> {
        let addr: String = addr.into();
        let mut relays = JoinSet::new();
        let reason = loop {
            tokio::select! {
                accepted = self.accept() => match accepted {
                    Ok(stream) => {
                        relays.spawn(relay(stream, addr.clone()));
                    }
                    Err(e) => break e,
                },
                Some(_) = relays.join_next(), if !relays.is_empty() => {}
            }
        };
        if is_soft_loss(&reason) {
            relays.detach_all();
        } else {
            relays.abort_all();
        }
        Err(reason)
    }
}

/// Whether the control channel was lost (rather than closed on purpose).
fn is_soft_loss(e: &Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::Io | ErrorKind::Timeout | ErrorKind::Tls
    )
}

async fn relay(mut stream: RstreamStream, addr: String) {
    let mut local = match TcpStream::connect(&addr).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%addr, error = %e, "forward_to: cannot reach the local service");
            return;
        }
    };
    let _ = local.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut stream, &mut local).await {
        Ok((down, up)) => tracing::trace!(%addr, down, up, "relay finished"),
        Err(e) => tracing::debug!(%addr, error = %e, "relay ended with an error"),
    }
}
