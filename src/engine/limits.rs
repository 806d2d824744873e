//! Bounds on concurrent connections: the established connections of the
//! engine port (see [`admission`](super::admission)) and the downstream
//! connections of the published endpoints each number at most N at once.
//! One more is refused, and a `WARN` says so, at most once per
//! [`WARN_EVERY`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// Rate limit for one warning: at most one per [`WARN_EVERY`], carrying
/// the number of occurrences since the last one.
#[derive(Default)]
pub(crate) struct Warned {
    last: Option<Instant>,
    /// Occurrences not reported yet.
    unreported: u64,
}

impl Warned {
    /// Counts one occurrence; returns how many to report when a warning is
    /// due now (then the count starts again), `None` when one was logged
    /// less than [`WARN_EVERY`] ago.
    pub(crate) fn note(&mut self) -> Option<u64> {
        self.unreported += 1;
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < WARN_EVERY)
        {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.unreported))
    }
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
    /// the limit is reached: the caller refuses the connection.
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
        let Some(refused) = warned.note() else {
            return;
        };
        tracing::warn!(
            limit = self.max,
            option = self.option,
            refused,
            %peer,
            "connection limit reached on {}: new connections are refused",
            self.what
        );
    }
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

    #[test]
    fn warnings_are_rate_limited_and_count() {
        let mut warned = Warned::default();
        assert_eq!(warned.note(), Some(1));
        assert_eq!(warned.note(), None);
        assert_eq!(warned.note(), None);
        warned.last = Instant::now().checked_sub(WARN_EVERY);
        assert_eq!(warned.note(), Some(3));
    }
}
