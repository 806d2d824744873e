//! Bounds on concurrent connections: the engine port and the published
//! endpoints each hold at most N connections at once (counted from accept
//! until the socket is closed, wherever it ends up). One more is closed at
//! once, and a `WARN` says so, at most once per [`WARN_EVERY`].

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// At most one warning per limit in this period; refusals in between are
/// counted and reported with the next one.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// A cap on connections held at once.
pub(crate) struct ConnectionLimit {
    permits: Arc<Semaphore>,
    max: usize,
    /// What is limited, for the warning.
    what: &'static str,
    /// The builder option that sets it, for the warning.
    option: &'static str,
    warned: Mutex<Warned>,
}

#[derive(Default)]
struct Warned {
    last: Option<Instant>,
    /// Refusals not reported yet.
    unreported: u64,
}

impl ConnectionLimit {
    /// `max` is clamped into `1..=Semaphore::MAX_PERMITS`.
    pub(crate) fn new(max: usize, what: &'static str, option: &'static str) -> Self {
        let max = max.clamp(1, Semaphore::MAX_PERMITS);
        ConnectionLimit {
            permits: Arc::new(Semaphore::new(max)),
            max,
            what,
            option,
            warned: Mutex::new(Warned::default()),
        }
    }

    /// A permit for one more connection, or `None` (after logging) when
    /// the limit is reached: the caller closes the connection at once.
    pub(crate) fn admit(&self, peer: SocketAddr) -> Option<OwnedSemaphorePermit> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                self.refused(peer);
                None
            }
        }
    }

    fn refused(&self, peer: SocketAddr) {
        tracing::debug!(%peer, limit = self.max, what = self.what, "connection refused: limit reached");
        let mut warned = self.warned.lock().unwrap_or_else(|e| e.into_inner());
        warned.unreported += 1;
        let now = Instant::now();
        if warned
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            return;
        }
        tracing::warn!(
            limit = self.max,
            option = self.option,
            refused = warned.unreported,
            %peer,
            "connection limit reached on {}: new connections are closed at once",
            self.what
        );
        warned.last = Some(now);
        warned.unreported = 0;
    }
}

/// A connection that holds its place under a [`ConnectionLimit`] until it
/// is dropped, wherever it is handed over to (a proxy connection ends up
/// in the task of the downstream it serves).
#[derive(Debug)]
pub(crate) struct Admitted<T> {
    io: T,
    _permit: OwnedSemaphorePermit,
}

impl<T> Admitted<T> {
    pub(crate) fn new(io: T, permit: OwnedSemaphorePermit) -> Self {
        Admitted {
            io,
            _permit: permit,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Admitted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Admitted<T> {
    forward_async_write!(io);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_come_back_when_dropped() {
        let limit = ConnectionLimit::new(2, "test", "max_test");
        let peer = SocketAddr::from(([127, 0, 0, 1], 1));
        let a = limit.admit(peer).expect("first");
        let _b = limit.admit(peer).expect("second");
        assert!(limit.admit(peer).is_none());
        assert!(limit.admit(peer).is_none());
        drop(a);
        assert!(limit.admit(peer).is_some());
        assert_eq!(ConnectionLimit::new(0, "test", "max_test").max, 1);
        assert_eq!(
            ConnectionLimit::new(usize::MAX, "test", "max_test").max,
            Semaphore::MAX_PERMITS
        );
    }
}
