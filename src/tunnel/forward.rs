//! [`Tunnel::forward_to`]: relay every connection to a local TCP service.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::Tunnel;
use crate::error::{Error, ErrorKind, Result};
use crate::stream::RstreamStream;

/// Default bound on connecting to the local service: 10 s.
pub const DEFAULT_FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on relays running at once for one `forward_to`: 1,024.
pub const DEFAULT_MAX_RELAYS: usize = 1024;
/// The largest connect timeout kept (1 hour); larger ones are clamped.
const MAX_FORWARD_CONNECT_TIMEOUT: Duration = Duration::from_secs(3600);

/// Bounds of [`Tunnel::forward_to_with`]; [`Tunnel::forward_to`] uses the
/// defaults.
///
/// ```
/// use std::time::Duration;
/// use rstream::tunnel::ForwardOptions;
///
/// let options = ForwardOptions::new()
///     .connect_timeout(Duration::from_secs(3))
///     .max_relays(256);
/// assert_eq!(options.relay_limit(), 256);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use = "a builder does nothing unless its result is used"]
pub struct ForwardOptions {
    connect_timeout: Duration,
    max_relays: usize,
}

impl Default for ForwardOptions {
    fn default() -> Self {
        ForwardOptions {
            connect_timeout: DEFAULT_FORWARD_CONNECT_TIMEOUT,
            max_relays: DEFAULT_MAX_RELAYS,
        }
    }
}

impl ForwardOptions {
    /// The defaults: 10 s connect timeout, 1,024 relays.
    pub fn new() -> Self {
        ForwardOptions::default()
    }

    /// How long connecting to the local service may take before that one
    /// downstream connection is closed and logged (default
    /// [`DEFAULT_FORWARD_CONNECT_TIMEOUT`], 10 s; clamped to 1 ms ..= 1 hour).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout.clamp(Duration::from_millis(1), MAX_FORWARD_CONNECT_TIMEOUT);
        self
    }

    /// How many relays may run at once (default [`DEFAULT_MAX_RELAYS`],
    /// 1,024; at least 1). At the cap `forward_to` stops accepting until a
    /// relay ends: new downstream connections wait in the tunnel's accept
    /// backlog and, once that is full, are refused at once (as for any
    /// tunnel that does not accept). Reaching the cap is logged once per
    /// episode (`warn`).
    pub fn max_relays(mut self, relays: usize) -> Self {
        self.max_relays = relays.max(1);
        self
    }

    /// The connect timeout in use.
    pub fn connect_timeout_value(&self) -> Duration {
        self.connect_timeout
    }

    /// The relay cap in use.
    pub fn relay_limit(&self) -> usize {
        self.max_relays
    }
}

impl Tunnel {
    /// Relays every accepted connection to `addr` (e.g. `"127.0.0.1:8000"`),
    /// both ways with half-close, until the tunnel closes. Bounded by the
    /// [`ForwardOptions`] defaults: 10 s to connect to `addr`, at most 1,024
    /// relays at once; see [`forward_to_with`](Self::forward_to_with).
    ///
    /// A refused, failed or timed-out local connection is logged and closes
    /// only that downstream connection. Returns the reason the tunnel
    /// closed.
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
    pub async fn forward_to(self, addr: impl Into<String>) -> Result<()> {
        self.forward_to_with(addr, ForwardOptions::default()).await
    }

    /// [`forward_to`](Self::forward_to) with explicit bounds: the connect
    /// timeout to the local service and the cap on relays at once (at the
    /// cap, accepting pauses until a relay ends; see
    /// [`ForwardOptions::max_relays`]).
    pub async fn forward_to_with(
        mut self,
        addr: impl Into<String>,
        options: ForwardOptions,
    ) -> Result<()> {
        let addr: String = addr.into();
        let mut relays = JoinSet::new();
        let mut saturated = false;
        // At the cap `accept` is not polled; this still ends the loop when
        // the tunnel closes meanwhile.
        let closed = self.closed();
        tokio::pin!(closed);
        let reason = loop {
            let room = relays.len() < options.max_relays;
            if !room && !saturated {
                saturated = true;
                tracing::warn!(
                    %addr,
                    max_relays = options.max_relays,
                    "forward_to: relay cap reached; new connections wait until one ends"
                );
            } else if room {
                saturated = false;
            }
            tokio::select! {
                accepted = self.accept(), if room => match accepted {
                    Ok(stream) => {
                        let in_spans = stream.in_spans();
                        relays.spawn(in_spans(relay(
                            stream,
                            addr.clone(),
                            options.connect_timeout,
                        )));
                    }
                    Err(e) => break e,
                },
                Some(_) = relays.join_next(), if !relays.is_empty() => {}
                reason = &mut closed, if !room => break reason,
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

async fn relay(mut stream: RstreamStream, addr: String, connect_timeout: Duration) {
    let mut local = match tokio::time::timeout(connect_timeout, TcpStream::connect(&addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::warn!(%addr, error = %e, "forward_to: cannot reach the local service");
            return;
        }
        Err(_) => {
            tracing::warn!(%addr, timeout = ?connect_timeout, "forward_to: connecting to the local service timed out");
            return;
        }
    };
    let _ = local.set_nodelay(true);
    match tokio::io::copy_bidirectional(&mut stream, &mut local).await {
        Ok((down, up)) => tracing::trace!(%addr, down, up, "relay finished"),
        Err(e) => tracing::debug!(%addr, error = %e, "relay ended with an error"),
    }
}
